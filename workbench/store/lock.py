"""The single-writer lock of a routing store.

Local stores (plain paths and ``file://`` URLs) use ``fcntl.flock`` on ``<store>/.workbench-writer.lock``:
the kernel releases it when the process exits or is killed, so a crashed recording never leaves a stale
lock behind. ``memory://`` stores live inside one process and use a per-process registry.

Other fsspec filesystems (s3, gcs, ...) have no lock the OS releases for us. There the writer creates an
advisory lock object ``.workbench-writer.lock`` holding host, pid and time, refuses to write while one
exists, and deletes it on close. It narrows, but does not close, the race between two writers starting at
the same instant, and a killed writer leaves it behind: the refusal message names the file to delete.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from workbench.errors import StoreError

LOCK_NAME = ".workbench-writer.lock"

_memory_locks: set[str] = set()
_memory_guard = threading.Lock()


def _holder_text(raw: str) -> str:
    try:
        info = json.loads(raw)
        return f"pid {info.get('pid')} on {info.get('host')} since {info.get('since')}"
    except (ValueError, AttributeError):
        return "another process"


def _stamp() -> str:
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": since})


class WriterLock:
    """Exclusive writer lock of one store; ``acquire()`` raises StoreError when another writer holds it.

    Parameters
    ----------
    where : str
        The store as the user named it (for messages).
    local_dir : Path or None
        The store directory when it is on the local filesystem (flock).
    fs, root : fsspec filesystem and path, for stores on other filesystems.
    """

    def __init__(self, where: str, *, local_dir: Path | None = None, fs: Any = None, root: str = "") -> None:
        self.where, self.local_dir, self.fs, self.root = where, local_dir, fs, root.rstrip("/")
        self._fd: int | None = None
        self._memory_key: str | None = None
        self._remote_path: str | None = None

    @property
    def kind(self) -> str:
        if self.local_dir is not None:
            return "flock"
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        return "memory" if "memory" in protocols else "advisory"

    def acquire(self) -> WriterLock:
        if self.local_dir is not None:
            self._acquire_flock(self.local_dir)
        elif self.kind == "memory":
            with _memory_guard:
                if self.root in _memory_locks:
                    raise StoreError(f"another writer in this process is writing to {self.where}; close it first")
                _memory_locks.add(self.root)
                self._memory_key = self.root
        else:
            self._acquire_advisory()
        return self

    def _acquire_flock(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder_text(os.pread(fd, 4096, 0).decode(errors="replace"))
            os.close(fd)
            raise StoreError(
                f"another writer ({holder}) is writing to {self.where}; wait for it to finish or write to another store"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, _stamp().encode(), 0)
        self._fd = fd

    def _acquire_advisory(self) -> None:
        path = f"{self.root}/{LOCK_NAME}"
        if self.fs.exists(path):
            holder = _holder_text(self.fs.cat_file(path).decode(errors="replace"))
            raise StoreError(
                f"{self.where} has a writer lock ({holder}); if no writer is running (e.g. it was killed), "
                f"delete {path} and run again"
            )
        self.fs.pipe_file(path, _stamp().encode())
        self._remote_path = path

    def probe(self) -> None:
        """Raise StoreError if another writer holds the lock now (acquires and releases at once)."""
        if self.local_dir is not None and not (self.local_dir / LOCK_NAME).exists():
            return
        if self.local_dir is None and self.kind == "advisory":  # look only: never write to a remote store here
            path = f"{self.root}/{LOCK_NAME}"
            if self.fs.exists(path):
                holder = _holder_text(self.fs.cat_file(path).decode(errors="replace"))
                raise StoreError(f"{self.where} has a writer lock ({holder}); if no writer is running, delete {path}")
            return
        self.acquire()
        self.release()

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
        if self._memory_key is not None:
            with _memory_guard:
                _memory_locks.discard(self._memory_key)
            self._memory_key = None
        if self._remote_path is not None:
            with contextlib.suppress(OSError, FileNotFoundError):
                self.fs.rm_file(self._remote_path)
            self._remote_path = None

    def __enter__(self) -> WriterLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
