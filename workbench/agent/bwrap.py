"""The bubblewrap command line of the python tool, the Python runtime it exposes, and a self-check.

bubblewrap (``bwrap``, Debian's ``bubblewrap``, what Flatpak runs apps in) builds the sandbox from new
namespaces: user (the program is uid/gid 65534 and holds no capability), PID (it sees only its own
processes; when the sandbox's init dies the kernel kills them all), mount (a fresh root with nothing but
the read-only Python runtime, a size-bounded private ``/tmp``, a minimal ``/dev`` and the new PID
namespace's ``/proc``), network (only a loopback of its own: no route out, no host or abstract unix
socket), IPC, UTS and cgroup. ``--die-with-parent`` ties it to the agent; ``--new-session`` detaches it
from the agent's terminal; ``--disable-userns`` forbids nested user namespaces.

When the agent runs as root, bubblewrap itself is started as uid/gid 65534 (``setpriv``), so even outside
its namespaces the program would own nothing; that needs an interpreter every user may read, so a
world-readable ``python3`` is preferred over one under a private home (e.g. pyenv under /root).
"""

from __future__ import annotations

import functools
import os
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

NOBODY = 65534
INSTALL_HINT = "install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; Fedora: dnf install bubblewrap)"
SYSTEM_LIB_DIRS = ("/usr/lib", "/usr/lib64", "/lib", "/lib64", "/usr/lib32", "/lib32")


class SandboxUnavailable(RuntimeError):
    """No working bubblewrap sandbox on this machine; the message says why and how to get one."""


def _world_readable(path: Path) -> bool:
    """Every directory above ``path`` is searchable by others and ``path`` is readable+executable by others."""
    try:
        p = path.resolve()
        if (p.stat().st_mode & 0o005) != 0o005:
            return False
        return all(a.stat().st_mode & stat.S_IXOTH for a in p.parents)
    except OSError:
        return False


@dataclass(frozen=True)
class Runtime:
    """The interpreter the sandbox runs, the host paths it needs (bound read-only) and the uid to run as."""

    python: str  # absolute path, as seen inside the sandbox (same as on the host)
    prefix: str
    binds: tuple[str, ...]  # host directories bound read-only at the same path
    symlinks: tuple[tuple[str, str], ...]  # (target, link) recreated inside, e.g. ("usr/lib", "/lib")
    run_as_nobody: bool


def _runtime_for(python: Path, as_nobody: bool) -> Runtime:
    exe = python.resolve()
    prefix = exe.parent.parent
    binds, links = [str(prefix)], []
    for d in SYSTEM_LIB_DIRS:
        p = Path(d)
        if p.is_symlink():
            links.append((os.readlink(p), d))
        elif p.is_dir() and not any(str(p).startswith(b.rstrip("/") + "/") or str(p) == b for b in binds):
            binds.append(d)
    return Runtime(str(exe), str(prefix), tuple(binds), tuple(links), as_nobody)


def find_runtime() -> Runtime:
    """The running interpreter's base install, or (when root and it is private) a world-readable python3."""
    base = Path(getattr(sys, "_base_executable", sys.executable))
    root = os.geteuid() == 0
    if not root:
        return _runtime_for(base, False)
    setpriv = shutil.which("setpriv")
    if setpriv:
        for cand in (base, Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"),
                     Path("/usr/bin/python3"), Path("/usr/local/bin/python3")):  # fmt: skip
            if cand.exists() and _world_readable(cand) and _world_readable(cand.resolve().parent.parent / "lib"):
                return _runtime_for(cand, True)
    return _runtime_for(base, False)  # bubblewrap as root: still uid 65534 without capabilities inside


def bwrap_path() -> str | None:
    """``$WORKBENCH_BWRAP`` where set (a path; missing or empty means none), else ``bwrap`` on PATH."""
    if "WORKBENCH_BWRAP" in os.environ:
        given = os.environ["WORKBENCH_BWRAP"]
        return given if given and os.access(given, os.X_OK) else None
    return shutil.which("bwrap") or ("/usr/bin/bwrap" if os.access("/usr/bin/bwrap", os.X_OK) else None)


def sandbox_argv(
    runtime: Runtime,
    *,
    tmp_bytes: int,
    info_fd: int,
    seccomp_fd: int | None,
    data_fds: dict[str, int],
) -> list[str]:
    """``bwrap ... python -I /run/wb/launcher.py`` (without the launcher's own arguments).

    ``data_fds`` maps a path inside the sandbox (under /run/wb) to a file descriptor whose content
    bubblewrap copies there read-only (the launcher and the program's source).
    """
    bw = bwrap_path()
    if bw is None:
        raise SandboxUnavailable(f"the python tool needs a sandbox and bwrap is not installed; {INSTALL_HINT}")
    argv = [
        bw,
        "--unshare-all",
        "--unshare-user",
        "--disable-userns",
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
    ]
    argv += ["--uid", str(NOBODY), "--gid", str(NOBODY), "--hostname", "sandbox", "--info-fd", str(info_fd)]
    for b in runtime.binds:
        argv += ["--ro-bind", b, b]
    for target, link in runtime.symlinks:
        argv += ["--symlink", target, link]
    argv += ["--proc", "/proc", "--dev", "/dev", "--size", str(tmp_bytes), "--tmpfs", "/tmp"]
    argv += ["--size", str(1 << 20), "--tmpfs", "/dev/shm", "--dir", "/run/wb"]
    for dest, fd in data_fds.items():
        argv += ["--ro-bind-data", str(fd), dest]
    argv += ["--remount-ro", "/dev", "--remount-ro", "/", "--chdir", "/tmp", "--clearenv"]
    for k, v in (("PATH", "/usr/bin:/bin"), ("HOME", "/tmp"), ("TMPDIR", "/tmp"), ("LANG", "C.UTF-8")):
        argv += ["--setenv", k, v]
    if seccomp_fd is not None:
        argv += ["--seccomp", str(seccomp_fd)]
    return [*argv, runtime.python, "-I", "/run/wb/launcher.py"]


def outer_prefix(runtime: Runtime, procs_files: list[str]) -> list[str]:
    """What runs before bwrap on the host: join the run's cgroup(s), then drop to uid 65534 when root."""
    pre: list[str] = []
    if procs_files:
        script = 'for f do [ "$f" = -- ] && break; echo $$ > "$f" || exit 125; shift; done; shift; exec "$@"'
        pre += ["/bin/sh", "-c", script, "sh", *procs_files, "--"]
    if runtime.run_as_nobody:
        setpriv = shutil.which("setpriv") or "setpriv"
        pre += [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--no-new-privs"]
    return pre


@functools.lru_cache(maxsize=1)
def self_check() -> tuple[Runtime, str]:
    """Start one sandbox that checks its own isolation; return the runtime and bwrap's version.

    Raises ``SandboxUnavailable`` (with how to fix it) where bwrap is missing or cannot create its
    namespaces here (e.g. user namespaces disabled, or a container without the needed privileges).
    """
    bw = bwrap_path()
    if bw is None:
        raise SandboxUnavailable(f"the python tool needs a sandbox and bwrap is not installed; {INSTALL_HINT}")
    runtime = find_runtime()
    probe = (
        "import os, socket\n"
        "assert os.getuid() == 65534 and not os.path.exists('/etc/shadow') and not os.path.exists('/work')\n"
        "assert [n for _, n in socket.if_nameindex()] == ['lo']\n"
        "print('ok')\n"
    )
    code_fd = os.memfd_create("wb-probe")
    os.write(code_fd, probe.encode())
    os.lseek(code_fd, 0, os.SEEK_SET)
    info_r, info_w = os.pipe()
    try:
        argv = sandbox_argv(runtime, tmp_bytes=1 << 20, info_fd=info_w, seccomp_fd=None,
                            data_fds={"/run/wb/launcher.py": code_fd})  # fmt: skip
        proc = subprocess.run(
            outer_prefix(runtime, []) + argv, pass_fds=(info_w, code_fd), capture_output=True, timeout=60,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as err:
        raise SandboxUnavailable(f"bwrap could not start a sandbox ({err}); {INSTALL_HINT}") from None
    finally:
        for fd in (code_fd, info_r, info_w):
            os.close(fd)
    if proc.returncode != 0 or proc.stdout.strip() != b"ok":
        why = (proc.stderr.decode(errors="replace").strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        raise SandboxUnavailable(
            f"bwrap is installed but cannot build the sandbox here ({why}); it needs unprivileged user "
            f"namespaces (sysctl kernel.unprivileged_userns_clone=1 / user.max_user_namespaces > 0)"
        )
    version = subprocess.run([bw, "--version"], capture_output=True, text=True).stdout.strip()
    return runtime, version or "bubblewrap"
