"""Where a routing store lives: a local path or any fsspec URL, turned into a zarr store and a writer lock.

Plain paths use zarr's ``LocalStore``, which writes every key to a temporary file and renames it into
place, so a reader (or a killed writer) never sees half a chunk. ``file://`` and other local fsspec URLs go
through zarr's ``FsspecStore``; because fsspec's local ``pipe_file`` writes in place, they get the same
write-then-rename treatment here. Object stores (s3, gcs, az, memory) replace an object atomically on PUT.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zarr.abc.store import Store
from zarr.core.buffer import Buffer
from zarr.storage import FsspecStore, LocalStore

from workbench.store.lock import WriterLock

_LOCAL_PROTOCOLS = ("file", "local")


class _AtomicFsspecStore(FsspecStore):
    """FsspecStore whose ``set`` writes ``<key>.<uuid>.partial`` and moves it over the key."""

    async def set(self, key: str, value: Buffer, byte_range: tuple[int, int] | None = None) -> None:
        if byte_range is not None:
            raise NotImplementedError("partial writes are not used by the routing store")
        if not self._is_open:
            await self._open()
        self._check_writable()
        path = f"{self.path.rstrip('/')}/{key}" if self.path else key
        tmp = f"{path}.{uuid.uuid4().hex}.partial"
        await self.fs._pipe_file(tmp, value.to_bytes())
        await self.fs._mv(tmp, path)


def is_url(path_or_url: str) -> bool:
    return "://" in path_or_url or "::" in path_or_url


@dataclass
class StoreLocation:
    """A store's address resolved once: the zarr store, and the filesystem details locks and repair need."""

    where: str  # as the user named it
    store: Store
    local_dir: Path | None  # the store directory on this machine, when it is local
    fs: Any = None  # fsspec filesystem (sync) for URLs
    root: str = ""  # path of the store inside ``fs``

    def writer_lock(self) -> WriterLock:
        return WriterLock(self.where, local_dir=self.local_dir, fs=self.fs, root=self.root)

    def exists(self) -> bool:
        if self.local_dir is not None:
            return self.local_dir.exists()
        return bool(self.fs.exists(self.root))

    def is_dir_or_missing(self) -> bool:
        if self.local_dir is not None:
            return not self.local_dir.exists() or self.local_dir.is_dir()
        return not self.fs.exists(self.root) or self.fs.isdir(self.root)

    def list_top(self) -> list[str]:
        """Names directly inside the store directory ([] when it does not exist)."""
        if self.local_dir is not None:
            return sorted(p.name for p in self.local_dir.iterdir()) if self.local_dir.is_dir() else []
        if not self.fs.exists(self.root):
            return []
        return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(self.root, detail=False))


def resolve(
    path_or_url: str | Path, storage_options: dict[str, Any] | None = None, *, read_only: bool
) -> StoreLocation:
    """Resolve a path or fsspec URL. Nothing is created here."""
    where = str(path_or_url)
    if not is_url(where):
        if storage_options:
            raise ValueError("storage_options only apply to fsspec URLs (e.g. s3://bucket/store.zarr)")
        local = Path(where).expanduser().absolute()
        store: Store = LocalStore(local, read_only=read_only)
        return StoreLocation(where, store, local)
    from fsspec.core import url_to_fs

    opts = dict(storage_options or {})
    fs, root = url_to_fs(where, **opts)
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    local_dir = Path(root) if any(p in _LOCAL_PROTOCOLS for p in protocols) else None
    if local_dir is not None:
        opts.setdefault("auto_mkdir", True)  # fsspec's local filesystem does not create parents by default
        cls: type[FsspecStore] = _AtomicFsspecStore
    else:
        cls = FsspecStore
    return StoreLocation(where, cls.from_url(where, storage_options=opts, read_only=read_only), local_dir, fs, root)
