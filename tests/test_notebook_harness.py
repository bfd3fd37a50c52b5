"""The notebook harness: the lost channel wake-up behind issue 18, parameters, the stall watchdog.

The wake-up tests replay, deterministically and without a kernel, the sequence that made nbclient hang
on a loaded machine: a client awaits a reply on an asyncio DEALER; the reply arrives; before the
event loop runs again, something drains the socket's edge-triggered wake-up through a raw (shadow)
socket, as jupyter_client's ``Session.send`` does when nbclient answers an Output widget on the
shell channel. A ROUTER socket plays the kernel.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
import zmq
import zmq.asyncio
from jupyter_client.channels import AsyncZMQSocketChannel
from jupyter_client.session import Session
from notebook_harness import NotebookStalled, harden_channel, inject_parameters, run_notebook


@pytest.fixture
def sockets() -> Iterator[tuple[zmq.Socket, zmq.asyncio.Socket, zmq.asyncio.Context]]:
    """A sync ROUTER (the kernel) and an asyncio DEALER (the client) connected over tcp."""
    ctx, actx = zmq.Context(), zmq.asyncio.Context()
    router = ctx.socket(zmq.ROUTER)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    dealer = actx.socket(zmq.DEALER)
    dealer.connect(f"tcp://127.0.0.1:{port}")
    yield router, dealer, actx
    dealer.close(linger=0)
    router.close(linger=0)
    actx.term()
    ctx.term()


async def _lost_wakeup(router: zmq.Socket, dealer: zmq.asyncio.Socket, *, harden: bool, send_after: bool) -> str:
    session = Session(key=b"")
    channel = AsyncZMQSocketChannel(dealer, session)
    found: list[str] = []
    if harden:
        harden_channel(channel, lambda: found.append("recheck"))
    channel.send(session.msg("kernel_info_request"))
    ident = router.recv_multipart()[0]  # blocking: the "kernel" learns the client's identity
    waiting = asyncio.ensure_future(channel.get_msg())
    for _ in range(5):
        await asyncio.sleep(0)  # the client's poll is registered with the event loop
    session.send(router, "execute_reply", {"status": "ok"}, ident=ident)
    # no await from here on: the loop cannot react. Drain the wake-up as a raw send does.
    raw = zmq.Socket.shadow(dealer.underlying)
    while not raw.get(zmq.EVENTS) & zmq.POLLIN:
        time.sleep(0.01)
    if send_after:
        channel.send(session.msg("comm_msg", {"comm_id": "x", "data": {}}))  # what nbclient's widget mimic sends
    done, _ = await asyncio.wait([waiting], timeout=10)
    if not done:
        waiting.cancel()
        return "hung"
    assert waiting.result()["msg_type"] == "execute_reply"
    return "found by " + (found[0] if found else "wake-up")


def test_a_plain_jupyter_client_channel_misses_a_reply_whose_wakeup_was_drained(sockets) -> None:
    router, dealer, _ = sockets
    # the cause of issue 18, shown on the library versions installed here
    outcome = asyncio.run(_lost_wakeup(router, dealer, harden=False, send_after=True))
    assert outcome == "hung", "jupyter_client/pyzmq no longer lose this wake-up: harden_channel may go"


def test_the_harness_channel_rearms_after_its_send(sockets) -> None:
    router, dealer, _ = sockets
    assert asyncio.run(_lost_wakeup(router, dealer, harden=True, send_after=True)) == "found by wake-up"


def test_the_harness_channel_finds_a_reply_after_any_lost_wakeup_within_a_second(sockets) -> None:
    router, dealer, _ = sockets
    assert asyncio.run(_lost_wakeup(router, dealer, harden=True, send_after=False)) == "found by recheck"


def _notebook(path: Path, *sources: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell('N = 1\nWHO = "default"', metadata={"tags": ["parameters"]})]
    nb.cells += [nbformat.v4.new_code_cell(s) for s in sources]
    nbformat.write(nb, path)
    return path


def test_parameters_are_injected_after_the_parameters_cell_as_papermill_does(tmp_path: Path) -> None:
    nb = nbformat.read(_notebook(tmp_path / "p.ipynb", "print(N, WHO)"), as_version=4)
    inject_parameters(nb, {"N": 3, "WHO": Path("/x")})
    assert nb.cells[1].metadata["tags"] == ["injected-parameters"]
    assert nb.cells[1].source.splitlines()[1:] == ["N = 3", "WHO = Path('/x')"]
    with pytest.raises(ValueError, match="not parameters of this notebook"):
        inject_parameters(nb, {"NOPE": 1})


@pytest.mark.slow
def test_a_slow_cell_passes_and_a_stuck_cell_fails_fast_with_its_stack(tmp_path: Path) -> None:
    busy = "import time\nt = time.process_time()\nwhile time.process_time() - t < 6 * N:\n    pass\nprint('done', N)"
    nb = run_notebook(_notebook(tmp_path / "busy.ipynb", busy), {"N": 1}, stall_s=4)  # computing > stall_s
    assert "done 1" in nb.cells[-1].outputs[0]["text"]

    stuck = _notebook(tmp_path / "stuck.ipynb", "import threading\nprint('waiting')\nthreading.Event().wait()")
    t0 = time.monotonic()
    with pytest.raises(NotebookStalled) as info:
        run_notebook(stuck, stall_s=5)
    report = str(info.value)
    assert time.monotonic() - t0 < 300, "a stuck cell must not take the old 15 minutes"
    assert "threading.Event().wait()" in report and "waiting" in report  # the cell and its last output
    assert "iopub execute_input" in report  # the message log: the kernel did read the request
    assert "stuck.ipynb" in report and ("py-spy dump" in report or "faulthandler" in report)
    assert "wait (threading.py" in report or 'threading.py", line' in report  # the kernel's main-thread stack
