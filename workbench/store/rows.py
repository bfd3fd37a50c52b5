"""Reading runs of token rows of a store array straight from its chunks, into buffers the caller owns.

Reading through zarr (``array[a:b]``, and dask blocks over it) hands back a NEW array per read and
decodes every chunk into a temporary first, then copies it in. For a pass over a 1M-token K2 store that
is 960 MB of expert ids in fresh pages, which this kind of virtualised machine faults in at up to
2.6 s per GB, plus a copy of each byte. ``TokenRows`` instead fetches the encoded chunks of rows
``[a, b)`` (concurrently, through the store's ``CheckedStore``: missing, truncated and checksum-failing
chunks are refused exactly as for any other read, see ``integrity.py``) and decompresses each one
directly into its place in a buffer the caller passes; ``borrow`` lends reused buffers, so a pass
faults in a few run-sized buffers once instead of every block it reads.

It serves arrays laid out the way this workbench writes them: chunks along ``token`` only (whole rows),
``bytes`` (little-endian) then Blosc, optionally then ``crc32c`` (``codecs.py``). For anything else
(another codec chain, a Dataset not opened by ``open_store``, a part of one: rows selected or data
replaced) ``token_rows`` answers None and callers read through dask as before. The bytes decoded are
those zarr would decode, with the same library (numcodecs' Blosc), so every value is identical.

``spans`` groups selected rows into runs worth reading as one range (gaps shorter than a chunk), and
``read_spans`` reads several variables' runs (``workbench.graph.read``, for a selection's routing).
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
import numcodecs.blosc
import numpy as np
import xarray as xr
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import LocalStore

from workbench.store import schema as S
from workbench.store.commit import committed_arrays
from workbench.store.integrity import ArrayLayout, CheckedStore, damaged

ARRAYS_KEY = "routing_store_arrays"  # ds.encoding: {variable: dask name of the store's own lazy array}
BLOSC_OVERHEAD = 16 + 4 + 48  # most bytes an encoded chunk exceeds its raw size by: blosc header, crc32c, slack
KEEP_BYTES = 256 << 20  # most bytes of idle buffers ``borrow`` keeps for the next borrower


@dataclass(frozen=True)
class TokenRows:
    """Rows of one token-chunked array of a committed store, read chunk by chunk (module docstring).

    ``layers``: positions along the second dim to keep (``rows`` gathers them), None for all.
    Pickles (the store does), so dask.distributed workers read the store themselves.
    """

    store: CheckedStore
    layout: ArrayLayout
    dtype: np.dtype[Any]
    layers: tuple[int, ...] | None = None

    def __dask_tokenize__(self) -> tuple[Any, ...]:
        """What makes two readers read the same values: the store, the committed array and the layers."""
        return ("TokenRows", self.store.where, self.layout, str(self.dtype), self.layers)

    @property
    def row_shape(self) -> tuple[int, ...]:
        """Shape of one stored row (all layers)."""
        return self.layout.shape[1:]

    def read_into(self, a: int, b: int, out: np.ndarray) -> np.ndarray:
        """Decode rows ``[a, b)`` (all layers) into ``out`` (b - a, *row_shape), C-contiguous; returns it.

        Raises ``StoreDamagedError`` for a missing, truncated or altered chunk, and for one whose decoded
        size is not its chunk's (so no row of ``out`` is left holding what a borrowed buffer held before).
        """
        lay, step = self.layout, self.layout.chunks[0]
        if not (0 <= a <= b <= lay.shape[0]):
            raise IndexError(f"rows {a}:{b} outside {lay.name}'s 0:{lay.shape[0]}")
        if out.shape != (b - a, *self.row_shape) or out.dtype != self.dtype or not out.flags.c_contiguous:
            raise ValueError(f"out must be C-contiguous {self.dtype} of shape {(b - a, *self.row_shape)}")
        first, last = a // step, -(-b // step)
        coords = [(c, *([0] * (len(lay.shape) - 1))) for c in range(first, last)]
        chunk_nbytes = step * int(np.prod(self.row_shape)) * self.dtype.itemsize
        local = self.store.inner.root if isinstance(self.store.inner, LocalStore) else None
        with borrow((chunk_nbytes + BLOSC_OVERHEAD,), np.uint8) as spare:
            if local is None:
                encoded: Iterable[Any] = (
                    None if x is None else x.as_numpy_array() for x in _fetch(self.store, coords, lay)
                )
            else:
                encoded = (_read_file(self.store, local, lay, c, spare) for c in coords)
            self._decode(a, b, out, coords, encoded, chunk_nbytes)
        return out

    def _decode(
        self, a: int, b: int, out: np.ndarray, coords: list[tuple[int, ...]], encoded: Iterable[Any], chunk_nbytes: int
    ) -> None:
        """Decompress each checked chunk of ``encoded`` (bytes, None: absent and allowed to be) into ``out``."""
        step = self.layout.chunks[0]
        scratch: np.ndarray | None = None
        with ExitStack() as stack:
            for c, body in zip(coords, encoded, strict=True):
                if body is not None and (c[0] * step < a or (c[0] + 1) * step > b) and scratch is None:
                    scratch = stack.enter_context(borrow((step, *self.row_shape), self.dtype))
                self._decode_one(a, b, out, c, body, chunk_nbytes, scratch)

    def _decode_one(
        self, a: int, b: int, out: np.ndarray, c: tuple[int, ...], body: Any, chunk_nbytes: int, scratch: Any
    ) -> None:
        """Chunk ``c`` (encoded ``body``) into its rows of ``out``: straight into place when all its rows are
        wanted, else through ``scratch`` (one chunk's rows)."""
        lay, step = self.layout, self.layout.chunks[0]
        lo, hi = max(a, c[0] * step), min(b, (c[0] + 1) * step)  # rows of this chunk wanted
        dest = out[lo - a : hi - a]
        if body is None:  # allowed only where a chunk of fill values is legitimate (version 1 stores)
            dest[...] = lay.fill
            return
        if lay.checksum:
            body = body[:-4]  # CheckedStore.get verified these 4 bytes against the rest
        if int.from_bytes(body[4:8].tobytes(), "little") != chunk_nbytes:
            raise damaged(self.store.where, lay, c, f"does not decode to {chunk_nbytes} bytes")
        if hi - lo == step:
            numcodecs.blosc.decompress(body, dest)  # straight into place
        else:  # the first, last or (committed) tail chunk: only some of its rows are wanted
            numcodecs.blosc.decompress(body, scratch)
            dest[...] = scratch[lo - c[0] * step : hi - c[0] * step]

    @contextmanager
    def rows(self, a: int, b: int) -> Iterator[np.ndarray]:
        """Rows ``[a, b)`` with the kept ``layers``, in a borrowed buffer valid inside the ``with`` only."""
        with borrow((b - a, *self.row_shape), self.dtype) as full:
            self.read_into(a, b, full)
            if self.layers is None:
                yield full
                return
            with borrow((b - a, len(self.layers), *self.row_shape[1:]), self.dtype) as part:
                np.take(full, self.layers, axis=1, out=part)
                yield part


def _fetch(store: CheckedStore, coords: list[tuple[int, ...]], layout: ArrayLayout) -> list[Any]:
    """The encoded chunks at ``coords`` (None: absent and allowed to be), fetched concurrently through the
    store's ``get`` (which checks them): for object stores, where each request waits on the network."""
    proto = default_buffer_prototype()

    async def get_all() -> list[Any]:
        return list(await asyncio.gather(*(store.get(layout.key(c), proto) for c in coords)))

    return sync(get_all())


def _read_file(store: CheckedStore, root: Path, layout: ArrayLayout, coords: tuple[int, ...], spare: np.ndarray) -> Any:
    """The encoded chunk at ``coords`` of a local store read into ``spare`` (reused: no new pages per chunk),
    checked as ``CheckedStore.get`` checks it; None when absent and allowed to be."""
    key = layout.key(coords)
    try:
        with open(root / key, "rb", buffering=0) as f:
            size = os.fstat(f.fileno()).st_size
            data = spare[:size] if size <= spare.size else np.empty(size, np.uint8)  # larger: damaged, see below
            got = f.readinto(data.data)
    except FileNotFoundError:
        store.check(key, None)  # raises unless a missing chunk is legitimate here
        return None
    data = data[:got]
    store.check_encoded(layout, coords, data)
    return data


def token_rows(ds: xr.Dataset, name: str, layers: Any = None) -> TokenRows | None:
    """A ``TokenRows`` over ``ds[name]`` when ``ds`` is a store opened by ``open_store`` and ``ds[name]`` is
    still the store's own whole lazy array, in a layout ``TokenRows`` reads; else None (read through dask).

    ``layers``: a positional indexer along the second dim (``select.layer_indexer``); a slice keeps all.
    """
    store = ds.encoding.get("routing_store")
    own = (ds.encoding.get(ARRAYS_KEY) or {}).get(name)
    if not isinstance(store, CheckedStore) or name not in ds or own is None:
        return None
    if getattr(ds[name].data, "name", None) != own:  # rows selected, data replaced, rechunked: not the store's
        return None
    doc = committed_arrays(store.root).get(name)
    if doc is None or not readable(doc):
        return None
    layout = ArrayLayout.from_document(name, doc)
    if tuple(ds[name].shape) != layout.shape:
        return None
    keep = None if layers is None or isinstance(layers, slice) else tuple(int(i) for i in np.asarray(layers))
    return TokenRows(store, layout, np.dtype(doc["data_type"]), keep)


def readable(doc: dict[str, Any]) -> bool:
    """Whether an array's metadata is a layout ``TokenRows`` decodes: regular chunks holding whole rows,
    bytes (little-endian, or one-byte values) + blosc (+ crc32c), default chunk keys, no sharding."""
    codecs = [c if isinstance(c, dict) else {"name": c} for c in doc.get("codecs", [])]
    names = [c.get("name") for c in codecs]
    if names not in (["bytes", "blosc"], ["bytes", "blosc", "crc32c"]):
        return False
    dtype = np.dtype(doc.get("data_type", "V"))
    endian = (codecs[0].get("configuration") or {}).get("endian", sys.byteorder)
    if dtype.itemsize > 1 and (endian != "little" or sys.byteorder != "little"):
        return False
    grid = doc.get("chunk_grid") or {}
    chunks = (grid.get("configuration") or {}).get("chunk_shape") or []
    shape = doc.get("shape") or []
    enc = doc.get("chunk_key_encoding") or {}
    return (
        grid.get("name") == "regular"
        and len(chunks) == len(shape) >= 1
        and list(chunks[1:]) == list(shape[1:])
        and enc.get("name") == "default"
        and not doc.get("storage_transformers")
    )


def spans(rows: np.ndarray, gap: int) -> list[tuple[int, int]]:
    """``[a, b)`` ranges covering sorted ``rows``; runs whose gap is below ``gap`` rows share a range."""
    if rows.size == 0:
        return []
    cut = np.flatnonzero(np.diff(rows) > gap) + 1
    starts = rows[np.concatenate([[0], cut])]
    stops = rows[np.concatenate([cut - 1, [rows.size - 1]])] + 1
    return list(zip(starts.tolist(), stops.tolist(), strict=True))


def read_spans(ds: xr.Dataset, names: list[str], runs: list[tuple[int, int]]) -> dict[str, np.ndarray]:
    """Each per-token variable's rows of ``runs`` ([a, b) ranges, e.g. ``spans``), concatenated in memory.

    Read straight from the store's chunks into the result where ``ds`` is a store's own (``token_rows``),
    the others through dask, all in one ``compute``; a chunk only the gap between two runs holds is never
    decoded.
    """
    n = sum(b - a for a, b in runs)
    whole: dict[str, np.ndarray] = {}
    lazy: dict[str, list[Any]] = {}
    for name in names:
        reader = token_rows(ds, name)
        if reader is None:
            lazy[name] = [ds[name].isel({S.TOKEN: slice(a, b)}).data for a, b in runs]
            continue
        out = np.empty((n, *reader.row_shape), reader.dtype)
        at = 0
        for a, b in runs:
            reader.read_into(a, b, out[at : at + b - a])
            at += b - a
        whole[name] = out
    if lazy:
        arrays = dask.compute(*[x for parts in lazy.values() for x in parts])
        for j, name in enumerate(lazy):
            whole[name] = np.asarray(np.concatenate(arrays[j * len(runs) : (j + 1) * len(runs)]))
    return whole


class _Pool:
    """Idle byte buffers kept for reuse, at most ``KEEP_BYTES`` of them (the largest that fit). Thread-safe."""

    def __init__(self) -> None:
        self._free: list[np.ndarray] = []
        self._lock = threading.Lock()

    def take(self, nbytes: int) -> np.ndarray:
        with self._lock:
            fits = [i for i, b in enumerate(self._free) if b.size >= nbytes]
            if fits:
                return self._free.pop(min(fits, key=lambda i: self._free[i].size))
        return np.empty(max(nbytes, 1), np.uint8)

    def give(self, buf: np.ndarray) -> None:
        with self._lock:
            kept, total = [], 0
            for b in sorted([*self._free, buf], key=lambda x: -x.size):  # the largest that fit the budget
                if total + b.size <= KEEP_BYTES:
                    kept.append(b)
                    total += b.size
            self._free = kept


_POOL = _Pool()


@contextmanager
def borrow(shape: tuple[int, ...], dtype: Any) -> Iterator[np.ndarray]:
    """An uninitialised C-contiguous array of ``shape`` and ``dtype``, valid inside the ``with`` only.

    Its memory is reused from earlier borrowers when one large enough is idle (module docstring).
    """
    dt = np.dtype(dtype)
    n = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
    buf = _POOL.take(n)
    try:
        yield buf[:n].view(dt).reshape(shape)
    finally:
        _POOL.give(buf)
