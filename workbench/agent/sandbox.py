"""The python tool: run untrusted model-written code in a bubblewrap sandbox, with tree-wide limits.

Isolation (see :mod:`workbench.agent.bwrap` for the namespaces and what is visible inside, and
:mod:`workbench.agent.seccomp_filter` for the system calls denied): the program runs as uid 65534 with no
capabilities, in its own user, PID, mount, network, IPC, UTS and cgroup namespaces, seeing only the
read-only Python runtime, a private ``/tmp`` of ``disk_mb`` and its own ``/proc``.

Limits, per run:

- processes: a cgroup's ``pids.max`` for the whole tree where one can be created (:mod:`.cgroup`), and
  ``RLIMIT_NPROC`` inside (counted per user namespace on Linux >= 5.14, so it too bounds the tree when
  the sandbox's uid is not root outside);
- memory: ``RLIMIT_AS`` per process and the cgroup's memory limit for the whole tree (``memory_mb`` +
  ``disk_mb``, since the tmpfs is memory too);
- disk: the size of the tmpfs (``disk_mb``, all files together) and ``RLIMIT_FSIZE`` per file;
- time: ``RLIMIT_CPU`` per process and the wall clock ``timeout_s``, after which the sandbox's PID-1 is
  killed, which makes the kernel kill every process of its PID namespace, ``setsid`` or not; the cgroup
  is then emptied and removed before ``run_python`` returns;
- output: stdout and stderr are read in 64 KiB chunks; at most ``max_output_chars`` (x4 bytes) of each
  is kept and the rest is read and dropped, so a flood cannot grow the agent.

Where no sandbox can be had (no bwrap, or bwrap fails its self-check), nothing runs: the result is an
error saying how to get bubblewrap. There is no unsandboxed fallback.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from workbench.agent.bwrap import SandboxUnavailable, outer_prefix, sandbox_argv, self_check
from workbench.agent.cgroup import TreeCgroup
from workbench.agent.seccomp_filter import seccomp_fd

_LAUNCHER = r"""
import json, resource, sys
cfg = json.loads(sys.argv[1])
for name, soft, hard in cfg["rlimits"]:
    resource.setrlimit(getattr(resource, name), (soft, hard))
with open("/run/wb/code.py", encoding="utf-8", errors="replace") as fh:
    code = fh.read()
del cfg, fh, json, resource, name, soft, hard
sys.argv = ["<tool>"]
exec(compile(code, "<tool>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
"""
CHUNK = 1 << 16


@dataclass(frozen=True)
class SandboxLimits:
    """Limits of one python-tool run; defaults suit short computations."""

    timeout_s: float = 10.0  # wall clock for the whole run
    cpu_s: int = 10  # RLIMIT_CPU, per process
    memory_mb: int = 512  # RLIMIT_AS per process; with disk_mb, the cgroup's memory limit for the tree
    file_mb: int = 16  # RLIMIT_FSIZE, per file
    disk_mb: int = 64  # size of the private /tmp (all files together)
    max_processes: int = 32  # pids.max of the cgroup and RLIMIT_NPROC
    max_output_chars: int = 4000  # of stdout and of stderr, each


@dataclass
class SandboxResult:
    stdout: str
    stderr: str
    returncode: int | None  # None after a timeout or when nothing ran
    timed_out: bool
    isolation: str  # what applied: bwrap version, namespaces, uid, seccomp, cgroup or rlimits only
    refused: str | None = None  # why nothing ran (no sandbox); then as_tool_result() is this line

    def as_tool_result(self) -> str:
        """What goes back to the model (never an exception).

        The format is the one the mini K2 was trained on: what the program printed; after an uncaught
        exception, the traceback's last line (``KeyError: 'k'``) after the output; ``(no output)``.
        Sandbox-level failures (time limit, killed, refused) are ``Error: ...`` lines.
        """
        if self.refused:
            return f"Error: {self.refused}"
        if self.timed_out:
            return f"{self.stdout}Error: the program ran longer than the time limit and was stopped."
        if self.returncode is not None and self.returncode > 128:
            return f"{self.stdout}Error: killed by signal {self.returncode - 128} (CPU, memory or process limit)"
        if self.returncode != 0:
            tail = self.stderr.strip().splitlines()[-1:] or [f"Error: exit status {self.returncode}"]
            return f"{self.stdout}{tail[0]}"
        return self.stdout if self.stdout else "(no output)"


class _Bounded:
    """Keep the first ``cap`` bytes of a stream; count (and drop) the rest."""

    def __init__(self, cap: int) -> None:
        self.cap, self.buf, self.total = cap, bytearray(), 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.cap - len(self.buf)
        if room > 0:
            self.buf += chunk[:room]

    def text(self, max_chars: int) -> str:
        text = self.buf.decode("utf-8", errors="replace")
        if len(text) > max_chars or self.total > len(self.buf):
            text = text[:max_chars] + f"\n... (output cut at {max_chars} characters; {self.total} bytes in all)\n"
        return text


def sandbox_available() -> str:
    """The isolation description of a working sandbox; raises ``SandboxUnavailable`` (how to get one)."""
    runtime, version = self_check()
    who = "uid 65534 inside and outside" if runtime.run_as_nobody else "uid 65534 inside"
    return f"{version}: user/pid/mount/net/ipc/uts/cgroup namespaces, {who}, no capabilities, {runtime.python}"


def _rlimits(lim: SandboxLimits) -> list[tuple[str, int, int]]:
    mem, fsize = lim.memory_mb << 20, lim.file_mb << 20
    cpu = max(1, int(lim.cpu_s))
    return [
        ("RLIMIT_AS", mem, mem), ("RLIMIT_CPU", cpu, cpu + 1), ("RLIMIT_FSIZE", fsize, fsize),
        ("RLIMIT_NOFILE", 64, 64), ("RLIMIT_CORE", 0, 0), ("RLIMIT_NPROC", lim.max_processes, lim.max_processes),
    ]  # fmt: skip


def _memfd(name: str, data: bytes) -> int:
    fd = os.memfd_create(name)
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def run_python(code: str, limits: SandboxLimits | None = None) -> SandboxResult:
    """Run ``code`` in the sandbox; return what it printed and how it ended. Never raises."""
    lim = limits or SandboxLimits()
    try:
        base = sandbox_available()
    except SandboxUnavailable as err:
        return SandboxResult("", "", None, False, "none", refused=str(err))
    if not isinstance(code, str):
        return SandboxResult("", "", None, False, base, refused=f"code must be text, not {type(code).__name__}")
    try:
        return _run(code, lim, base)
    except (OSError, ValueError, subprocess.SubprocessError) as err:
        return SandboxResult("", "", None, False, base, refused=f"the sandbox failed to start: {err}")


def _run(code: str, lim: SandboxLimits, base: str) -> SandboxResult:
    runtime, _ = self_check()
    cg = TreeCgroup.create(lim.max_processes, (lim.memory_mb + lim.disk_mb) << 20)
    limits_desc = (
        f"cgroup v{cg.version}: pids.max {lim.max_processes}, memory {lim.memory_mb + lim.disk_mb} MiB for the tree"
        if cg
        else f"no cgroup (rlimits only: RLIMIT_NPROC {lim.max_processes}; memory per process only)"
    )
    try:
        sec_fd, sec_desc = seccomp_fd()
        isolation = f"{base}; {sec_desc}; {limits_desc}; /tmp {lim.disk_mb} MiB"
        fds = [_memfd("wb-launcher", _LAUNCHER.encode()), _memfd("wb-code", code.encode("utf-8", "surrogatepass"))]
        if sec_fd is not None:
            fds.append(sec_fd)
        info_r, info_w = os.pipe()
        try:
            argv = sandbox_argv(runtime, tmp_bytes=lim.disk_mb << 20, info_fd=info_w, seccomp_fd=sec_fd,
                                data_fds={"/run/wb/launcher.py": fds[0], "/run/wb/code.py": fds[1]})  # fmt: skip
            argv.append(json.dumps({"rlimits": _rlimits(lim)}))
            proc = subprocess.Popen(
                outer_prefix(runtime, cg.procs_files() if cg else []) + argv,
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=(*fds, info_w),
                start_new_session=True, env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},  # nothing of the agent's env
            )  # fmt: skip
        finally:
            os.close(info_w)
            for fd in fds:
                os.close(fd)
        try:
            out, err, info, timed_out = _collect(proc, info_r, lim)
        finally:
            os.close(info_r)
    finally:
        if cg is not None:
            cg.remove()
    n = lim.max_output_chars
    if "child-pid" not in info and not timed_out:  # bwrap (or the cgroup step) failed before the program ran
        why = (err.text(n).strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        return SandboxResult(
            "", err.text(n), proc.returncode, False, isolation, refused=f"the sandbox did not start: {why}"
        )
    return SandboxResult(out.text(n), err.text(n)[-n:], None if timed_out else proc.returncode, timed_out, isolation)


def _collect(proc: subprocess.Popen[bytes], info_r: int, lim: SandboxLimits) -> tuple[_Bounded, _Bounded, dict, bool]:
    """Drain stdout/stderr/info in bounded chunks until the sandbox exits or the time limit passes."""
    cap = max(1, lim.max_output_chars) * 4 + 16
    out, err, info_buf = _Bounded(cap), _Bounded(cap), _Bounded(4096)
    sel = selectors.DefaultSelector()
    assert proc.stdout is not None and proc.stderr is not None
    streams = {proc.stdout.fileno(): out, proc.stderr.fileno(): err, info_r: info_buf}
    for fd in streams:
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ)
    deadline = time.monotonic() + lim.timeout_s
    timed_out = False
    try:
        while streams and not timed_out:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            for key, _ in sel.select(timeout=min(left, 0.5)):
                try:
                    chunk = os.read(key.fd, CHUNK)
                except BlockingIOError:
                    continue
                if chunk:
                    streams[key.fd].add(chunk)
                else:
                    sel.unregister(key.fd)
                    del streams[key.fd]
        if not timed_out:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                timed_out = True
    finally:
        sel.close()
    info = _parse_info(info_buf)
    if timed_out:
        _kill_sandbox(proc, info)
    return out, err, info, timed_out


def _parse_info(buf: _Bounded) -> dict:
    try:
        return dict(json.loads(buf.buf.decode() or "{}"))
    except (ValueError, TypeError):
        return {}


def _parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
        return int(stat.rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _kill_sandbox(proc: subprocess.Popen[bytes], info: dict) -> None:
    """Kill the sandbox's PID 1 (the kernel then kills its whole PID namespace) and bwrap; reap them."""
    child = info.get("child-pid")
    pids = [proc.pid]
    if isinstance(child, int) and _parent_of(child) == proc.pid:  # bwrap's own child, nothing else
        pids.insert(0, child)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()  # bwrap exits only after its PID-1 child, which exits after every process of the namespace
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
