"""The python tool's seccomp filter: system calls a sandboxed program never needs, denied with EPERM.

The BPF program is compiled by libseccomp (the library Docker, systemd and Flatpak use) through the
``pyseccomp`` ctypes binding, and written to a memory file that bubblewrap loads with ``--seccomp FD``
just before it executes the program. It is a deny list on top of what the namespaces already prevent:
the calls that attack the kernel or cross namespaces (ptrace, mount, unshare, setns, keyctl, bpf,
perf_event_open, userfaultfd, io_uring, kernel modules, ...), so that a kernel bug reachable only through
one of them is out of reach too. Everything a Python program computing something needs stays allowed.
"""

from __future__ import annotations

import os

# Denied with EPERM. Grouped by why: cross-namespace / tracing, filesystem views, kernel attack surface,
# and host-wide actions (the namespaces and dropped capabilities refuse most of these already).
DENIED_SYSCALLS: tuple[str, ...] = (
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    "setns", "unshare", "mount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "fsopen",
    "fsconfig", "fsmount", "fspick", "mount_setattr", "name_to_handle_at", "open_by_handle_at",
    "keyctl", "add_key", "request_key", "bpf", "perf_event_open", "userfaultfd", "io_uring_setup",
    "io_uring_enter", "io_uring_register", "personality", "lookup_dcookie", "fanotify_init",
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load", "reboot", "swapon",
    "swapoff", "acct", "quotactl", "syslog", "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
    "sethostname", "setdomainname", "vhangup", "iopl", "ioperm",
)  # fmt: skip

# CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET, NEWTIME
_CLONE_NEW = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000, 0x00000080)


def seccomp_fd() -> tuple[int | None, str]:
    """Compile the filter into a sealed-off memory file; return ``(fd, description)``.

    ``fd`` is ``None`` (with the reason in the description) where libseccomp or its binding is missing;
    the sandbox then runs without a filter and says so in ``SandboxResult.isolation``.
    """
    try:
        import pyseccomp as sc
    except (ImportError, OSError) as err:  # OSError: the binding found no libseccomp.so
        return None, f"no seccomp filter ({type(err).__name__}: {err}; pip install pyseccomp, apt install libseccomp2)"
    flt = sc.SyscallFilter(defaction=sc.ALLOW)
    denied = 0
    for name in DENIED_SYSCALLS:
        try:
            flt.add_rule(sc.ERRNO(1), name)  # EPERM
            denied += 1
        except (ValueError, RuntimeError, OSError):  # a name this kernel/libseccomp does not know
            continue
    # clone() that would make a namespace is denied by its flags argument; clone3 passes its flags in
    # memory a filter cannot read, so it answers ENOSYS and the C library falls back to clone()
    for flag in _CLONE_NEW:
        flt.add_rule(sc.ERRNO(1), "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    flt.add_rule(sc.ERRNO(38), "clone3")
    fd = os.memfd_create("wb-seccomp")  # close-on-exec; pass_fds makes it inheritable for bwrap only
    with os.fdopen(os.dup(fd), "wb") as fh:
        flt.export_bpf(fh)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd, f"seccomp ({denied} system calls and namespace-making clone denied)"
