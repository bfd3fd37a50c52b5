"""The python tool: run untrusted model-written code in a separate, limited process.

What is enforced (and how), per run:

- a separate process (``python -I``: isolated mode, no user site, PYTHON* variables ignored) in a new
  session, so a timeout kills it and everything it started;
- wall-clock limit (``timeout_s``, killed after it) and CPU-time limit (``RLIMIT_CPU``);
- memory limit: address space ``RLIMIT_AS`` (``memory_mb``); output files ``RLIMIT_FSIZE``; at most 64
  open files ``RLIMIT_NOFILE``; no core dumps;
- a fresh temporary working directory (deleted afterwards) and a minimal environment (``HOME`` there);
- no network: the child first moves itself into a new, empty network namespace (``unshare(CLONE_NEWNET)``,
  or ``CLONE_NEWUSER|CLONE_NEWNET`` where unprivileged user namespaces are allowed), so no interface but
  a down loopback exists; where neither is permitted (some containers), only a Python-level guard
  remains (``socket`` connect/bind/DNS raise), which code using ``ctypes`` or ``os`` could bypass —
  ``SandboxResult.network`` says which applied.

The limits are set by the child itself before it reads the code, so the parent (which may run a store
writer thread) never forks with ``preexec_fn``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass

_LAUNCHER = r"""
import ctypes, json, os, resource, sys
cfg = json.loads(sys.argv[1])
net = "python-guard"
try:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(0x40000000) == 0:
        net = "netns"
    elif libc.unshare(0x10000000 | 0x40000000) == 0:
        net = "userns+netns"
except OSError:
    pass
sys.stderr.write("\x00net=" + net + "\x00")
sys.stderr.flush()
mem = cfg["memory_mb"] << 20
resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
resource.setrlimit(resource.RLIMIT_CPU, (cfg["cpu_s"], cfg["cpu_s"] + 1))
resource.setrlimit(resource.RLIMIT_FSIZE, (cfg["file_mb"] << 20, cfg["file_mb"] << 20))
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
import socket
def _blocked(*args, **kwargs):
    raise PermissionError("network access is disabled in this sandbox")
for _name in ("create_connection", "getaddrinfo", "gethostbyname", "create_server"):
    setattr(socket, _name, _blocked)
socket.socket.connect = socket.socket.connect_ex = socket.socket.bind = _blocked
code = sys.stdin.read()
del cfg, net, mem, ctypes, json, resource, _name
sys.argv = ["<tool>"]
exec(compile(code, "<tool>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
"""


@dataclass(frozen=True)
class SandboxLimits:
    """Limits of one python-tool run; defaults suit short computations."""

    timeout_s: float = 10.0  # wall clock
    cpu_s: int = 10  # RLIMIT_CPU
    memory_mb: int = 512  # RLIMIT_AS (address space, so it also bounds what numpy can allocate)
    file_mb: int = 16  # RLIMIT_FSIZE
    max_output_chars: int = 4000


@dataclass
class SandboxResult:
    stdout: str
    stderr: str
    returncode: int | None  # None after a timeout
    timed_out: bool
    network: str  # "netns", "userns+netns" or "python-guard" (see the module docstring)

    def as_tool_result(self) -> str:
        """What goes back to the model: the output, or the error as text (never an exception)."""
        if self.timed_out:
            return f"{self.stdout}Error: the program ran longer than the time limit and was stopped."
        if self.returncode != 0:
            tail = self.stderr.strip().splitlines()[-1:] or [f"exit status {self.returncode}"]
            if self.returncode is not None and self.returncode < 0:
                tail = [f"killed by signal {-self.returncode} (CPU or memory limit)"]
            return f"{self.stdout}Error: {tail[0]}"
        return self.stdout if self.stdout else "(no output)"


def run_python(code: str, limits: SandboxLimits | None = None) -> SandboxResult:
    """Run ``code`` in the sandbox and return what it printed (stdout, stderr) and how it ended."""
    lim = limits or SandboxLimits()
    cfg = {"memory_mb": lim.memory_mb, "cpu_s": max(1, int(lim.cpu_s)), "file_mb": lim.file_mb}
    with tempfile.TemporaryDirectory(prefix="wb-python-") as tmp:
        env = {"PATH": "/usr/bin:/bin", "HOME": tmp, "LANG": "C.UTF-8", "TMPDIR": tmp}
        proc = subprocess.Popen(
            [sys.executable, "-I", "-c", _LAUNCHER, json.dumps(cfg)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=tmp,
            env=env,
            start_new_session=True,  # its own process group: a timeout kills everything it started
            text=True,
            errors="replace",
        )
        try:
            out, err = proc.communicate(code, timeout=lim.timeout_s)
            timed_out = False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            out, err = proc.communicate()
            timed_out = True
    network = "python-guard"
    if err.startswith("\x00net="):
        network, _, err = err[len("\x00net=") :].partition("\x00")
    n = lim.max_output_chars
    out = out if len(out) <= n else out[:n] + f"\n... ({len(out) - n} more characters cut)"
    return SandboxResult(out, err[-n:], None if timed_out else proc.returncode, timed_out, network)
