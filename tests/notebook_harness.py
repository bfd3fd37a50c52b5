"""Run a notebook headless with papermill-style parameters and a stall watchdog.

Why not a fixed per-cell timeout: on a loaded machine a working cell can be ten times slower than on a
quiet one, and a stuck one should not take 15 minutes to report. The watchdog instead fails a cell
when the kernel has shown *no sign of life* for ``stall_s`` seconds: no message on IOPub and no CPU
progress of the kernel or any process it started (psutil). A cell that computes, however slowly,
keeps its CPU time growing and is never interrupted.

When a cell is declared stuck the failure message carries what one needs to see why:

- the cell's index and source, and its last outputs;
- the kernel's message log for the cell (``status busy`` / ``execute_input`` / ``status idle``
  tell whether the kernel ever read the request);
- the Python stack of every thread in the kernel (py-spy when installed, else ``faulthandler``
  registered on SIGUSR1 at kernel start) and the kernel's process tree.

Why a notebook could hang on a busy machine (what this harness works around): jupyter_client's
``Session.send`` writes to an asyncio socket through a raw shadow of it, so the send runs libzmq's
command processing and can swallow the socket's edge-triggered wake-up; pyzmq's asyncio wrapper, which
did not see that send, never re-checks. nbclient sends on the shell channel from inside its IOPub
handler (its Output-widget mimic answers ``clear_output`` with a ``comm_msg``) while it awaits the
``execute_reply`` on that channel, with no timeout. When the reply lands in that window, which load
widens, it sits unread in the socket and nbclient waits forever on an idle kernel. The client here
re-checks the socket after each send (``socket.get(zmq.EVENTS)`` re-arms pyzmq's wake-up) and never
waits on a channel for more than ``RECHECK_S`` without polling it directly.

Parameters follow papermill's convention: the values are written as assignments into a new cell,
tagged ``injected-parameters``, right after the cell tagged ``parameters`` (whose defaults they
override).
"""

from __future__ import annotations

import collections
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from queue import Empty
from typing import Any

import nbformat
import psutil
import zmq
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, DeadKernelError

STALL_S = float(os.environ.get("WORKBENCH_NB_STALL_S", "240"))  # no output and no CPU progress
RECHECK_S = 1.0  # longest wait on a kernel channel before polling its socket directly
CPU_PROGRESS_S = 0.5  # kernel-tree CPU seconds within the stall window that count as "working"


class NotebookStalled(AssertionError):
    """A cell showed no output and no CPU progress for the stall window; the message says where."""


def inject_parameters(nb: nbformat.NotebookNode, parameters: dict[str, Any]) -> None:
    """Insert a cell tagged ``injected-parameters`` after the cell tagged ``parameters`` (papermill).

    Values are written with ``repr``; ``Path`` values as ``Path('...')`` so notebooks keep path types.
    """
    index = next((i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])), None)
    if index is None:
        raise ValueError("the notebook has no cell tagged 'parameters'")
    unknown = [k for k in parameters if f"{k} =" not in nb.cells[index].source]
    if unknown:
        raise ValueError(f"not parameters of this notebook: {unknown}")
    lines = ["# Injected parameters"]
    for key, value in parameters.items():
        text = f"Path({str(value)!r})" if isinstance(value, Path) else repr(value)
        lines.append(f"{key} = {text}")
    cell = nbformat.v4.new_code_cell("\n".join(lines), metadata={"tags": ["injected-parameters"]})
    nb.cells.insert(index + 1, cell)


def harden_channel(channel: Any, on_recheck: Callable[[], None] = lambda: None) -> None:
    """Make a lost wake-up on a jupyter_client asyncio channel cost at most RECHECK_S (see the module docstring).

    ``send`` re-arms pyzmq's reader after jupyter_client's raw send; ``get_msg`` waits in steps of
    RECHECK_S, each ending in a direct poll of the socket. ``on_recheck`` is called when a message was
    found only by such a poll (a wake-up was lost despite the re-arm).
    """
    send, get_msg = channel.send, channel.get_msg

    def send_and_rearm(msg: dict[str, Any]) -> None:
        send(msg)
        channel.socket.get(zmq.EVENTS)  # pyzmq's asyncio socket re-schedules its reader if a message waits

    async def get_msg_polling(timeout: float | None = None) -> dict[str, Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            step = RECHECK_S if deadline is None else max(0.0, min(RECHECK_S, deadline - time.monotonic()))
            started = time.monotonic()
            try:
                msg = await get_msg(timeout=step)
            except Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    raise
                continue
            if step and time.monotonic() - started >= 0.98 * step:
                on_recheck()
            return msg

    channel.send, channel.get_msg = send_and_rearm, get_msg_polling


def _tree_cpu(proc: psutil.Process) -> float:
    """CPU seconds of a process, its reaped children and its live descendants."""
    total = 0.0
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:  # the kernel has exited
        return total
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            pass
    return total


class WatchedClient(NotebookClient):
    """nbclient's client that remembers the message log, the running cell and the kernel's liveness."""

    def __init__(self, nb: nbformat.NotebookNode, *, dump_file: Path, **kw: Any) -> None:
        # faulthandler on SIGUSR1 writes every thread's stack to dump_file, without a name in the user namespace
        hook = (
            "__import__('faulthandler').register(__import__('signal').SIGUSR1, "
            f"file=open({str(dump_file)!r}, 'w'), all_threads=True)"
        )
        super().__init__(nb, extra_arguments=[f"--IPKernelApp.exec_lines={hook}"], **kw)
        self.dump_file = dump_file
        self.messages: collections.deque[str] = collections.deque(maxlen=40)
        self.last_activity = time.monotonic()
        self.cell_index: int | None = None
        self.cell_started = 0.0
        self.rechecked = 0

    async def async_start_new_kernel_client(self) -> Any:
        kc = await super().async_start_new_kernel_client()
        for channel in (kc.shell_channel, kc.iopub_channel):
            harden_channel(channel, self._count_recheck)
        return kc

    def _count_recheck(self) -> None:
        self.rechecked += 1

    def log_message(self, text: str) -> None:
        self.messages.append(f"{time.strftime('%H:%M:%S')} {text}")
        self.last_activity = time.monotonic()

    async def async_execute_cell(self, cell: Any, cell_index: int, *args: Any, **kw: Any) -> Any:
        if cell.cell_type == "code" and cell.source.strip():
            self.cell_index, self.cell_started = cell_index, time.monotonic()
            self.log_message(f"-> execute_request cell {cell_index}")
        result = await super().async_execute_cell(cell, cell_index, *args, **kw)
        if cell.cell_type == "code" and cell.source.strip():
            self.log_message(f"<- execute_reply cell {cell_index}")
        return result

    def process_message(self, msg: dict[str, Any], cell: Any, cell_index: int) -> Any:
        kind, content = msg["msg_type"], msg.get("content", {})
        detail = content.get("execution_state") or content.get("name") or ""
        self.log_message(f"   iopub {kind} {detail}".rstrip())
        return super().process_message(msg, cell, cell_index)

    def kernel_process(self) -> psutil.Process | None:
        provisioner = getattr(self.km, "provisioner", None)
        pid = getattr(provisioner, "pid", None) or getattr(getattr(provisioner, "process", None), "pid", None)
        try:
            return psutil.Process(pid) if pid else None
        except psutil.Error:
            return None


def kernel_stacks(client: WatchedClient, proc: psutil.Process) -> str:
    """Every thread's Python stack in the kernel: py-spy when it is installed and allowed, else faulthandler."""
    spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if spy:
        r = subprocess.run([spy, "dump", "--pid", str(proc.pid)], capture_output=True, text=True, timeout=60)
        if r.returncode == 0 and r.stdout.strip():
            return "py-spy dump:\n" + r.stdout
    try:
        os.kill(proc.pid, signal.SIGUSR1)
    except OSError as err:
        return f"(no stack: {err})"
    # the handler writes from the signal itself (no GIL needed); give a starved machine a moment
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        time.sleep(1)
        if client.dump_file.exists() and client.dump_file.stat().st_size:
            time.sleep(1)
            return "faulthandler (SIGUSR1):\n" + client.dump_file.read_text()
    return "(the kernel wrote no stack within 30 s of SIGUSR1)"


def probe_channels(client: WatchedClient) -> str:
    """Where the missing reply is: waiting unread on our shell socket, or never sent (a second connection
    asks the kernel for kernel_info; if the stuck reply then arrives, the kernel had it queued)."""
    from jupyter_client import BlockingKernelClient

    lines = []
    try:  # a read-only look at the socket nbclient's loop owns; nbclient is blocked in poll on it
        events = client.kc.shell_channel.socket.getsockopt(zmq.EVENTS)  # type: ignore[union-attr]
        lines.append(f"nbclient's shell socket: {'a message is waiting unread' if events & zmq.POLLIN else 'empty'}")
    except Exception as err:  # diagnostics only: say why and go on
        lines.append(f"nbclient's shell socket: unreadable ({err})")
    before = len(client.messages)
    second = BlockingKernelClient()
    second.load_connection_info(client.km.get_connection_info())  # type: ignore[union-attr]
    second.start_channels()
    try:
        second.kernel_info()
        reply = second.get_shell_msg(timeout=30)
        lines.append(f"kernel_info on a second connection: answered ({reply['content'].get('status')})")
    except Exception as err:
        lines.append(f"kernel_info on a second connection: no answer ({type(err).__name__})")
    finally:
        second.stop_channels()
    deadline = time.monotonic() + 10  # give the stuck reply a chance to come through after the nudge
    while not (arrived := [m for m in list(client.messages)[before:] if "execute_reply" in m]):
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    lines.append("after that nudge the stuck execute_reply " + ("arrived" if arrived else "still did not arrive"))
    return "\n".join(lines)


def process_tree(proc: psutil.Process) -> str:
    rows = []
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error as err:
        return f"  (gone: {err})"
    for p in procs:
        with contextlib.suppress(psutil.Error):
            rows.append(f"  pid {p.pid} {p.status()} cpu {_tree_cpu(p):.1f}s: {' '.join(p.cmdline())[:160]}")
    return "\n".join(rows)


def _report(client: WatchedClient, reason: str, proc: psutil.Process) -> str:
    cell = client.nb.cells[client.cell_index] if client.cell_index is not None else None
    outputs = []
    for out in (cell.get("outputs", []) if cell is not None else [])[-3:]:
        body = out.get("text") or out.get("data", {}).get("text/plain") or out.get("evalue") or ""
        outputs.append(f"  [{out.get('output_type')}] {str(body)[-600:]}")
    return "\n".join(
        [
            f"{reason}",
            f"cell {client.cell_index} (running {time.monotonic() - client.cell_started:.0f} s):"
            if cell is not None
            else "before the first cell (kernel_info)",
            *(f"  | {line}" for line in (cell.source if cell is not None else "").splitlines()),
            "last outputs:",
            *(outputs or ["  (none)"]),
            "kernel message log (newest last):",
            *(f"  {m}" for m in client.messages),
            "kernel process tree:",
            process_tree(proc),
            kernel_stacks(client, proc),
            probe_channels(client),
            f"load average: {os.getloadavg()}",
        ]
    )


def _watch(client: WatchedClient, stop: threading.Event, stall_s: float, failure: list[str]) -> None:
    """Poll every few seconds; on a stall write the report into ``failure`` and kill the kernel."""
    proc, cpu_mark, mark_at = None, 0.0, time.monotonic()
    while not stop.wait(2.0):
        if proc is None:
            proc = client.kernel_process()
            if proc is None:
                continue
            cpu_mark, mark_at = _tree_cpu(proc), time.monotonic()
        cpu = _tree_cpu(proc)
        now = time.monotonic()
        if cpu - cpu_mark >= CPU_PROGRESS_S or client.last_activity > mark_at:
            cpu_mark, mark_at = cpu, now  # alive: computing or talking
            continue
        if now - mark_at < stall_s:
            continue
        failure.append(
            _report(client, f"stalled: no output and < {CPU_PROGRESS_S} s kernel CPU for {now - mark_at:.0f} s", proc)
        )
        with contextlib.suppress(psutil.Error):
            proc.kill()  # nbclient then raises DeadKernelError within a second
        return


def run_notebook(
    path: Path, parameters: dict[str, Any] | None = None, *, cwd: Path | None = None, stall_s: float = STALL_S
) -> nbformat.NotebookNode:
    """Execute a notebook in a fresh ``python3`` kernel; raise on a cell error or a stall (with diagnostics)."""
    nb = nbformat.read(path, as_version=4)
    if parameters:
        inject_parameters(nb, parameters)
    with tempfile.TemporaryDirectory(prefix="nbwatch-") as tmp:
        client = WatchedClient(
            nb,
            dump_file=Path(tmp) / "stack.txt",
            timeout=None,  # the watchdog decides when a cell is stuck
            startup_timeout=300,
            iopub_timeout=120,  # outputs may trail the execute_reply on a loaded machine; wait for them
            kernel_name="python3",
            resources={"metadata": {"path": str(cwd or path.parent)}},
        )
        failure: list[str] = []
        stop = threading.Event()
        watcher = threading.Thread(target=_watch, args=(client, stop, stall_s, failure), daemon=True)
        watcher.start()
        try:
            client.execute()
        except (DeadKernelError, CellExecutionError, RuntimeError) as err:
            if failure:
                raise NotebookStalled(f"{path.name}: {failure[0]}") from err
            raise
        finally:
            stop.set()
            watcher.join(timeout=120)
    # how often a message was found by a direct poll rather than a wake-up (0 on a healthy client)
    nb.metadata["notebook_harness"] = {"rechecked": client.rechecked}
    return nb
