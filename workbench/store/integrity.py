"""Reads that never answer wrong: every chunk a workbench reader fetches is checked on its way in.

zarr answers a missing chunk with the array's fill value and hands a truncated chunk to the decompressor,
which then fails with a codec traceback (or, without a checksum, may decode garbage). ``CheckedStore``
wraps the zarr store that ``open_store`` gives xarray, so every reader (selections, analyses, graphs,
widgets, lazy dask reads included) goes through these checks without knowing about them:

- a chunk key inside an array's committed grid that does not exist raises ``StoreDamagedError``: schema
  version 2 writes every chunk, even one holding only fill values, so a missing chunk is always damage;
- the chunk's crc32c (the last codec of every version 2 array, see ``codecs.py``) must match its bytes;
- a Blosc chunk must be as long as its header says (this catches truncation in version 1 stores too).

The error names the array, the chunk key, the rows it holds and ``workbench verify``. Version 1 arrays (no
checksums, all-fill chunks left unwritten) are checked as far as their format allows: a missing chunk is
refused only where a chunk of fill values cannot be real data (``ArrayLayout.must_exist``), and a
changed byte inside a version 1 chunk cannot be detected at all.

The cost is one CRC-32C over the compressed bytes per chunk (hardware-accelerated, several GB/s) and a
header read; nothing is decoded twice.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterable, Iterator
from dataclasses import dataclass
from itertools import product
from typing import Any

import google_crc32c
import numpy as np
from zarr.abc.store import ByteRequest, Store
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.storage import WrapperStore

from workbench.errors import StoreDamagedError
from workbench.store import schema as S
from workbench.store.commit import committed_arrays

BLOSC_HEADER = 16  # bytes: version, versionlz, flags, typesize, nbytes, blocksize, cbytes (little-endian)


@dataclass(frozen=True)
class ArrayLayout:
    """What the checks need to know about one array of the last commit (from the root's metadata)."""

    name: str
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    separator: str | None  # chunk key separator; None when the key encoding is not zarr v3's default
    checksum: bool  # the last codec is crc32c
    compressor: str | None  # "blosc", "zstd", ... (the first bytes-to-bytes codec)
    fill: Any
    strict: bool  # every chunk of the committed grid must exist (arrays written by schema version 2)

    @classmethod
    def from_document(cls, name: str, doc: dict[str, Any]) -> ArrayLayout:
        codecs = [c.get("name") if isinstance(c, dict) else str(c) for c in doc.get("codecs", [])]
        b2b = [c for c in codecs if c not in ("bytes", "vlen-utf8", "vlen-bytes", "transpose", "crc32c")]
        enc = doc.get("chunk_key_encoding") or {}
        sep = (enc.get("configuration") or {}).get("separator", "/") if enc.get("name") == "default" else None
        checksum = bool(codecs) and codecs[-1] == "crc32c"
        return cls(
            name=name,
            shape=tuple(int(n) for n in doc["shape"]),
            chunks=tuple(int(n) for n in doc["chunk_grid"]["configuration"]["chunk_shape"]),
            separator=sep,
            checksum=checksum,
            compressor=b2b[0] if b2b else None,
            fill=doc.get("fill_value"),
            strict=checksum,
        )

    @property
    def dim(self) -> str:
        return S.DIMS.get(self.name, ("row",))[0]

    def grid(self) -> tuple[int, ...]:
        """Chunks along each dim of the committed shape."""
        return tuple(-(-n // c) if n else 0 for n, c in zip(self.shape, self.chunks, strict=True))

    def coords(self) -> Iterator[tuple[int, ...]]:
        """Every chunk of the committed grid, in row order."""
        return product(*(range(n) for n in self.grid()))

    def key(self, coords: tuple[int, ...]) -> str:
        sep = self.separator or "/"
        return f"{self.name}/c{sep}{sep.join(map(str, coords))}"

    def parse(self, key: str) -> tuple[int, ...] | None:
        """Chunk coordinates of ``key`` when it is a chunk of this array's committed grid, else None."""
        if self.separator is None:
            return None
        head = f"{self.name}/c{self.separator}"
        if not key.startswith(head):
            return None
        try:
            coords = tuple(int(p) for p in key[len(head) :].split(self.separator))
        except ValueError:
            return None
        grid = self.grid()
        if len(coords) != len(grid) or any(not 0 <= c < n for c, n in zip(coords, grid, strict=True)):
            return None
        return coords

    def rows(self, coords: tuple[int, ...]) -> tuple[int, int]:
        """Rows [start, stop) along the first dim that the chunk holds within the committed length."""
        a = coords[0] * self.chunks[0]
        return a, min(a + self.chunks[0], self.shape[0])

    def must_exist(self, coords: tuple[int, ...]) -> bool:
        """Whether a missing chunk here is damage rather than a chunk of fill values zarr skipped.

        Version 2 arrays write every chunk. Version 1 arrays skipped all-fill chunks (fill 0, NaN, ""), so
        only chunks whose rows cannot all equal the fill value count: expert ids (k distinct ids per row),
        sequence ids (unique) and starts (increasing) over two or more rows, and lengths (at least 1).
        """
        if self.strict:
            return True
        a, b = self.rows(coords)
        if self.name == S.EXPERT_IDS:
            return self.shape[-1] >= 2
        if self.name in (S.SEQUENCE, S.SEQUENCE_START):
            return b - a >= 2
        return self.name == S.SEQUENCE_LENGTH


def layouts(root: dict[str, Any]) -> dict[str, ArrayLayout]:
    """The layout of every array of the last commit, by name."""
    return {name: ArrayLayout.from_document(name, doc) for name, doc in committed_arrays(root).items()}


def check_bytes(layout: ArrayLayout, data: Any) -> str | None:
    """What is wrong with the encoded bytes of one chunk (a buffer), or None when they look whole."""
    body = np.frombuffer(memoryview(data), dtype=np.uint8)
    if layout.checksum:
        if body.size < 4:
            return f"is truncated ({body.size} bytes, no room for its checksum)"
        stored = int.from_bytes(body[-4:].tobytes(), "little")
        computed = int(google_crc32c.value(body[:-4]))
        if stored != computed:
            return f"fails its crc32c checksum (stored {stored:08x}, computed {computed:08x}): truncated or altered"
        body = body[:-4]
    if layout.compressor == "blosc":
        if body.size < BLOSC_HEADER:
            return f"is truncated ({body.size} bytes, shorter than a blosc header)"
        cbytes = int.from_bytes(body[12:16].tobytes(), "little")
        if cbytes != body.size:
            return f"is truncated or padded (its blosc header says {cbytes} bytes, the chunk has {body.size})"
    return None


def damaged(where: str, layout: ArrayLayout, coords: tuple[int, ...], problem: str) -> StoreDamagedError:
    a, b = layout.rows(coords)
    return StoreDamagedError(
        f"{where} is damaged: chunk {layout.key(coords)} ({layout.dim} rows {a}:{b} of {layout.name}) {problem}; "
        f"run `workbench verify {where}` to see what is damaged and what can be salvaged"
    )


class CheckedStore(WrapperStore[Store]):
    """A read view of a store that refuses missing, truncated and checksum-failing chunks (module docstring).

    Parameters
    ----------
    store : zarr Store
        The store to read.
    root : dict
        The root ``zarr.json`` of the last commit: which arrays, shapes, chunks and codecs to check against.
    where : str
        The store as the user named it, for the error message.
    """

    def __init__(self, store: Store, root: dict[str, Any] | None = None, where: str = "") -> None:
        super().__init__(store)
        self.root, self.where = root or {}, where
        self._layouts = layouts(self.root)

    def _with_store(self, store: Store) -> CheckedStore:
        return type(self)(store, self.root, self.where)

    @property
    def inner(self) -> Store:
        """The store this view reads, unchecked (for files kept beside the arrays, e.g. the layer index)."""
        return self._store

    def locate(self, key: str) -> tuple[ArrayLayout, tuple[int, ...]] | None:
        layout = self._layouts.get(key.split("/", 1)[0])
        coords = layout.parse(key) if layout is not None else None
        return None if layout is None or coords is None else (layout, coords)

    def check(self, key: str, buf: Buffer | None, byte_range: ByteRequest | None = None) -> None:
        """Raise StoreDamagedError when ``buf`` (None: missing) is not a whole chunk ``key`` must be."""
        hit = self.locate(key)
        if hit is None:
            return
        layout, coords = hit
        if buf is None:
            if layout.must_exist(coords):
                raise damaged(self.where, layout, coords, "is missing")
            return
        if byte_range is None:
            self.check_encoded(layout, coords, buf.as_numpy_array())

    def check_encoded(self, layout: ArrayLayout, coords: tuple[int, ...], data: Any) -> None:
        """Raise StoreDamagedError when ``data``, the whole encoded chunk at ``coords``, is not whole
        (for readers that fetch a chunk's bytes themselves, ``rows.py``)."""
        problem = check_bytes(layout, data)
        if problem is not None:
            raise damaged(self.where, layout, coords, problem)

    async def get(self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None) -> Buffer | None:
        buf = await self._store.get(key, prototype, byte_range)
        self.check(key, buf, byte_range)
        return buf

    async def _get_many(
        self, requests: Iterable[tuple[str, BufferPrototype, ByteRequest | None]]
    ) -> AsyncGenerator[tuple[str, Buffer | None], None]:
        for key, prototype, byte_range in requests:
            yield key, await self.get(key, prototype, byte_range)
