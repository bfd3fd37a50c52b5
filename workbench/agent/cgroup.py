"""A control group per python-tool run: process count and memory bounded for the whole process tree.

``rlimit``s count per process (``RLIMIT_AS``) or per user; a cgroup counts every process the program
starts, however it detaches (``setsid``, double fork), and can be emptied by the parent. We use cgroup v2
where the unified hierarchy has the ``pids`` and ``memory`` controllers, else the v1 ``pids`` and
``memory`` hierarchies, each under the cgroup this process is in. Where neither can be created (an
unprivileged user without delegation, a read-only /sys/fs/cgroup), ``TreeCgroup.create`` returns
``None`` and the sandbox relies on its rlimits, saying so in ``SandboxResult.isolation``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")


def _own_path(controller: str) -> str | None:
    """This process's cgroup path in the v1 hierarchy of ``controller`` (``""`` for v2), or None."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, names, path = line.split(":", 2)
        if controller in names.split(","):
            return path
    return None


def _write(path: Path, value: str) -> None:
    path.write_text(value)


@dataclass
class TreeCgroup:
    """The cgroup directories of one run (one per v1 controller, or one v2 directory) and its limits."""

    dirs: list[Path]
    version: int
    max_processes: int
    memory_bytes: int

    @classmethod
    def create(cls, max_processes: int, memory_bytes: int) -> TreeCgroup | None:
        """Make the cgroup(s) with ``pids.max`` and the memory limit set; None where not permitted."""
        name = f"wb-sandbox-{uuid.uuid4().hex[:12]}"
        made: list[Path] = []
        try:
            unified = ROOT / "cgroup.controllers"
            if unified.is_file() and {"pids", "memory"} <= set(unified.read_text().split()):
                own = _own_path("") or "/"
                parent = ROOT / own.lstrip("/")
                if not {"pids", "memory"} <= set((parent / "cgroup.subtree_control").read_text().split()):
                    return None  # would need to rearrange this process's own cgroup; not ours to do
                d = parent / name
                d.mkdir()
                made.append(d)
                _write(d / "pids.max", str(max_processes))
                _write(d / "memory.max", str(memory_bytes))
                if (d / "memory.swap.max").exists():
                    _write(d / "memory.swap.max", "0")
                return cls(made, 2, max_processes, memory_bytes)
            for ctl in ("pids", "memory"):
                own_v1 = _own_path(ctl)
                if own_v1 is None or not (ROOT / ctl).is_dir():
                    raise OSError(f"no v1 {ctl} hierarchy")
                d = ROOT / ctl / own_v1.lstrip("/") / name
                d.mkdir()
                made.append(d)
            _write(made[0] / "pids.max", str(max_processes))
            _write(made[1] / "memory.limit_in_bytes", str(memory_bytes))
            if (made[1] / "memory.memsw.limit_in_bytes").exists():
                _write(made[1] / "memory.memsw.limit_in_bytes", str(memory_bytes))
            return cls(made, 1, max_processes, memory_bytes)
        except OSError:
            for d in reversed(made):
                with contextlib.suppress(OSError):
                    d.rmdir()
            return None

    def procs_files(self) -> list[str]:
        """The ``cgroup.procs`` files a starting process writes its pid into (before it execs bwrap)."""
        return [str(d / "cgroup.procs") for d in self.dirs]

    def pids(self) -> set[int]:
        found: set[int] = set()
        for d in self.dirs:
            try:
                found.update(int(p) for p in (d / "cgroup.procs").read_text().split())
            except (OSError, ValueError):
                continue
        return found

    def oom_kills(self) -> int:
        """How many processes the memory limit killed (v2 ``memory.events``; v1 ``memory.oom_control``)."""
        d = self.dirs[0] if self.version == 2 else self.dirs[1]
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        try:
            for line in (d / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            pass
        return 0

    def kill_all(self, deadline_s: float = 30.0) -> bool:
        """SIGKILL every process in the cgroup until it is empty (or ``deadline_s`` passes); True if empty."""
        kill_file = self.dirs[0] / "cgroup.kill"
        end = time.monotonic() + deadline_s
        while True:
            pids = self.pids()
            if not pids:
                return True
            if self.version == 2 and kill_file.exists():
                with contextlib.suppress(OSError):
                    _write(kill_file, "1")
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            if time.monotonic() > end:
                return False
            time.sleep(0.01)

    def remove(self) -> None:
        """Empty and delete the cgroup directories (a cgroup with members cannot be removed)."""
        self.kill_all()
        for d in self.dirs:
            for _ in range(200):  # the kernel frees a just-emptied cgroup asynchronously
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.01)
