"""The layer index: an optional layer-major copy of a store's routing, kept inside the store.

A store's chunks hold all layers of a block of tokens (``expert_ids`` (token, layer, k)), which suits
recording and whole-store analyses; but a question about one layer (an expert page, the atlas) then
decodes every layer. The layer index holds the same routing transposed, chunked one layer at a time:

    layer_index/index.json              the pointer: which build is current, the store it indexes
    layer_index/<build>/expert_ids      (layer, token, k) int16, chunks (1, INDEX_CHUNK, k)
    layer_index/<build>/gate_weights    (layer, token, k) float16 (stores with gate weights)
    layer_index/<build>/load            (layer, expert) int64: tokens routed to each expert (whole store)

It is derived data: built on demand (``build_index``, ``workbench index STORE``; ``workbench atlas``
builds it when missing), never by the writer. Its arrays use the store's codecs, crc32c included, and
are read through the same checks as the store (``CheckedStore``). It is written crash-safe: a build
writes a fresh ``<build>`` group, then the pointer (one key, replaced by rename), then deletes older
builds, so a kill leaves the previous index or none, never half of one. The pointer records the
store's *fingerprint* (committed counts, creation and last-commit times, routing signature); an append
changes it, and readers then ignore the stale index (``open_index`` returns None) until it is rebuilt.
The build holds the store's writer lock, so no append runs meanwhile.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.abc.store import Store
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from workbench.errors import StoreDamagedError, StoreError
from workbench.store import codecs
from workbench.store import schema as S
from workbench.store.commit import array_document, check_root, open_root, read_json, read_root, write_json
from workbench.store.integrity import ArrayLayout, CheckedStore, layouts

GROUP = "layer_index"
POINTER = f"{GROUP}/index.json"
INDEX_CHUNK = 1 << 17  # tokens per index chunk: 2 MB of raw ids at k = 8
LOAD = "load"
FORMAT = 1


def fingerprint(attrs: dict[str, Any]) -> str:
    """A digest of what makes a store's committed routing what it is; any commit changes it."""
    keys = ("committed", "created", "updated", "routing_signature", "tokenizer_digest", "schema_version")
    blob = json.dumps([attrs.get(k) for k in keys], sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


class IndexCheckedStore(CheckedStore):
    """``CheckedStore`` for the arrays of one index build (keys ``layer_index/<build>/<name>/c/...``)."""

    def __init__(self, store: Store, root: dict[str, Any] | None = None, where: str = "", prefix: str = "") -> None:
        super().__init__(store, root, where)
        self.prefix = prefix

    def _with_store(self, store: Store) -> IndexCheckedStore:
        return type(self)(store, self.root, self.where, self.prefix)

    def locate(self, key: str) -> tuple[ArrayLayout, tuple[int, ...]] | None:
        if not key.startswith(self.prefix):
            return None
        return super().locate(key[len(self.prefix) :])


@dataclass
class LayerIndex:
    """An open, fresh layer index. ``ids``/``weights`` are zarr arrays (layer, token, k) read through checks."""

    where: str
    build: str
    ids: zarr.Array
    weights: zarr.Array | None
    load: np.ndarray  # (layer, expert) int64 over the whole store
    built: str

    def layer_ids(self, positions: list[int] | int) -> np.ndarray:
        """Expert ids of the layers at ``positions`` (positional along ``layer``): (n, token, k) or (token, k)."""
        return self._read(self.ids, positions)

    def layer_weights(self, positions: list[int] | int) -> np.ndarray | None:
        """Gate weights (float16, as stored) like ``layer_ids``; None on an ids-only store."""
        if self.weights is None:
            return None
        return self._read(self.weights, positions)

    def _read(self, arr: zarr.Array, positions: list[int] | int) -> np.ndarray:
        try:
            if isinstance(positions, int):
                return np.asarray(arr[positions])
            if positions and positions == list(range(positions[0], positions[-1] + 1)):
                return np.asarray(arr[positions[0] : positions[-1] + 1])
            return np.stack([np.asarray(arr[p]) for p in positions]) if positions else np.asarray(arr[0:0])
        except StoreDamagedError as err:
            raise StoreDamagedError(
                f"the layer index of {self.where} is damaged ({str(err).split(' is damaged: ', 1)[-1].split(';')[0]}); "
                f"rebuild it with `workbench index {self.where} --force`"
            ) from None


def _pointer(store: Store) -> dict[str, Any] | None:
    try:
        return read_json(store, POINTER)
    except StoreError:
        return None  # an unreadable pointer is no index (a rebuild replaces it)


def _open_build(store: Store, where: str, pointer: dict[str, Any]) -> LayerIndex:
    build = str(pointer["build"])
    docs = pointer["arrays"]
    root = {"consolidated_metadata": {"metadata": docs}}
    prefix = f"{GROUP}/{build}/"
    checked = IndexCheckedStore(store, root, where, prefix)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ids = zarr.open_array(checked, path=prefix + S.EXPERT_IDS, mode="r", zarr_format=3)
        weights = (
            zarr.open_array(checked, path=prefix + S.GATE_WEIGHTS, mode="r", zarr_format=3)
            if S.GATE_WEIGHTS in docs
            else None
        )
        load_arr = zarr.open_array(checked, path=prefix + LOAD, mode="r", zarr_format=3)
    for name, arr in ((S.EXPERT_IDS, ids), (S.GATE_WEIGHTS, weights), (LOAD, load_arr)):
        if arr is not None and list(arr.shape) != list(docs[name]["shape"]):
            raise StoreDamagedError(
                f"the layer index of {where} does not match its record ({name}); rebuild it with "
                f"`workbench index {where} --force`"
            )
    try:
        load = np.asarray(load_arr[:]).astype(np.int64)
    except StoreDamagedError:
        raise StoreDamagedError(
            f"the layer index of {where} is damaged (its load table); rebuild it with `workbench index {where} --force`"
        ) from None
    return LayerIndex(where, build, ids, weights, load, str(pointer.get("built", "")))


def _status(pointer: dict[str, Any] | None, attrs: dict[str, Any]) -> str:
    """ "fresh", "stale" (the store changed since the build) or "missing" (no index, or another format)."""
    if pointer is None or pointer.get("format") != FORMAT:
        return "missing"
    return "fresh" if pointer.get("fingerprint") == fingerprint(attrs) else "stale"


def index_status(store: Store, attrs: dict[str, Any]) -> dict[str, Any]:
    """The layer index of the store with root attributes ``attrs``: ``{"status", "built", "tokens"}``.

    ``status`` is "fresh" (expert pages read it), "stale" (the store changed since the build: pages read
    the token-major chunks until ``workbench index --force``) or "missing"; ``built`` is the build's UTC
    time and ``tokens`` its token count (None when missing). ``workbench info`` reports it.
    """
    pointer = _pointer(store)
    status = _status(pointer, attrs)
    if status == "missing" or pointer is None:
        return {"status": status, "built": None, "tokens": None}
    return {"status": status, "built": pointer.get("built"), "tokens": pointer.get("tokens")}


def open_index(ds: Any) -> LayerIndex | None:
    """The fresh layer index of the store ``ds`` was opened from (``open_store``), or None.

    None when ``ds`` was not opened by ``open_store`` (or is a part of such a Dataset: rows or layers
    selected), the store has no index, or it changed since the index was built (stale). Raises
    ``StoreDamagedError`` (one line, how to rebuild) for a damaged index.
    """
    handle = ds.encoding.get("routing_store") if hasattr(ds, "encoding") else None
    if not isinstance(handle, CheckedStore):
        return None
    pointer = _pointer(handle.inner)
    if pointer is None or _status(pointer, ds.attrs) != "fresh":
        return None
    committed = ds.attrs.get("committed") or {}
    whole = (
        ds.sizes.get(S.TOKEN) == pointer.get("tokens") == committed.get("tokens")
        and ds.sizes.get(S.LAYER) == pointer.get("layers")
        and ds.sizes.get(S.SEQUENCE) == committed.get("sequences")
    )
    if not whole:  # a sub-Dataset (``isel``/``select`` keep the encoding): its rows are not the index's
        return None
    return _open_build(handle.inner, handle.where, pointer)


def _builds(store: Store) -> list[str]:
    async def names() -> list[str]:
        return [p async for p in store.list_dir(GROUP + "/")]

    try:
        return [n.rstrip("/") for n in sync(names()) if not n.endswith(".json")]
    except (FileNotFoundError, NotADirectoryError):
        return []


def _create(store: Store, path: str, shape: tuple[int, ...], chunks: tuple[int, ...], name: str) -> zarr.Array:
    dtype = "int64" if name == LOAD else S.DTYPES[name]
    comp = codecs.compressors(S.EXPERT_IDS if name == LOAD else name, dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return zarr.create_array(
            store, name=path, shape=shape, chunks=chunks, dtype=dtype, compressors=comp,
            fill_value=0 if name == LOAD else codecs.fill_value(name), zarr_format=3,
            dimension_names=(S.LAYER, S.EXPERT) if name == LOAD else (S.LAYER, S.TOKEN, S.K),
            config=codecs.ARRAY_CONFIG, overwrite=True,
        )  # fmt: skip


def build_index(
    path_or_url: str | Path, *, storage_options: dict[str, Any] | None = None, force: bool = False,
    progress: bool = False, block_tokens: int = INDEX_CHUNK,
) -> dict[str, Any]:  # fmt: skip
    """Build (or rebuild) the layer index of a committed store; returns its pointer record.

    A fresh index is kept as it is unless ``force``. Takes the store's writer lock for the build (an
    append waits for nothing: it is refused while the index builds). Reads every committed routing chunk
    once, through the store's checks, ``block_tokens`` tokens at a time (memory: about
    ``block_tokens`` x layers x k x 4 bytes). Raises ``StoreError`` for a path that is not a store or a
    store that cannot be written, ``StoreDamagedError`` when a routing chunk it reads is damaged.
    """
    t0 = time.perf_counter()
    loc, root, attrs = open_root(path_or_url, storage_options, read_only=False)
    pointer = _pointer(loc.store)
    if pointer is not None and _status(pointer, attrs) == "fresh" and not force:
        return dict(pointer, status="fresh")
    lock = loc.writer_lock().acquire()
    try:
        root = read_root(loc) or root  # the commit we index, read under the lock
        attrs = check_root(root, loc.where)
        record = _write_build(loc.store, loc.where, root, attrs, block_tokens, progress)
        write_json(loc.store, POINTER, record)  # the index's commit point
        for old in _builds(loc.store):
            if old != record["build"]:
                sync(loc.store.delete_dir(f"{GROUP}/{old}"))
    except OSError as err:
        raise StoreError(f"cannot write the layer index into {loc.where} ({err}); is the store writable?") from None
    finally:
        lock.release()
    return dict(record, status="built", seconds=time.perf_counter() - t0)


def _write_build(
    store: Store, where: str, root: dict[str, Any], attrs: dict[str, Any], block: int, progress: bool
) -> dict[str, Any]:
    from tqdm.auto import tqdm

    checked = CheckedStore(store, root, where)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        group = zarr.open_group(checked, mode="r", zarr_format=3, use_consolidated=True)
    src_ids = group[S.EXPERT_IDS]
    assert isinstance(src_ids, zarr.Array)
    n, n_layers, k = src_ids.shape
    n_experts = int(attrs["model"]["n_routed_experts"])
    has_w = bool(attrs.get("has_gate_weights", True)) and S.GATE_WEIGHTS in group
    src_w = group[S.GATE_WEIGHTS] if has_w else None
    assert src_w is None or isinstance(src_w, zarr.Array)
    build = uuid.uuid4().hex[:12]
    prefix = f"{GROUP}/{build}/"
    chunk = max(1, min(INDEX_CHUNK, n))
    out_ids = _create(store, prefix + S.EXPERT_IDS, (n_layers, n, k), (1, chunk, k), S.EXPERT_IDS)
    out_w = _create(store, prefix + S.GATE_WEIGHTS, (n_layers, n, k), (1, chunk, k), S.GATE_WEIGHTS) if has_w else None
    load = np.zeros((n_layers, n_experts), dtype=np.int64)
    step = max(chunk, (block // chunk) * chunk)
    offsets = (np.arange(n_layers, dtype=np.int64) * n_experts)[None, :, None]
    for a in tqdm(range(0, n, step), desc="layer index", unit="block", disable=not progress):
        b = min(a + step, n)
        ids = np.asarray(src_ids[a:b])  # (t, L, k), checked on read
        load += np.bincount((ids + offsets).reshape(-1), minlength=n_layers * n_experts).reshape(n_layers, n_experts)
        out_ids[:, a:b, :] = np.ascontiguousarray(ids.transpose(1, 0, 2))
        del ids
        if out_w is not None and src_w is not None:
            out_w[:, a:b, :] = np.ascontiguousarray(np.asarray(src_w[a:b]).transpose(1, 0, 2))
    out_load = _create(store, prefix + LOAD, load.shape, load.shape, LOAD)
    out_load[:] = load
    arrays = {S.EXPERT_IDS: out_ids, LOAD: out_load, **({S.GATE_WEIGHTS: out_w} if out_w is not None else {})}
    return {
        "format": FORMAT, "build": build, "fingerprint": fingerprint(attrs),
        "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "tokens": int(n), "layers": int(n_layers),
        "arrays": {name: array_document(arr) for name, arr in arrays.items()},
    }  # fmt: skip


def verify_index(store: Store, where: str, attrs: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(notes, problems) about a store's layer index: absent/stale is a note; a damaged chunk a problem."""
    from workbench.store.integrity import check_bytes

    pointer = _pointer(store)
    if pointer is None:
        return [], []
    if pointer.get("format") != FORMAT:
        return [f"layer index of an unknown format; rebuild it with `workbench index {where} --force`"], []
    notes = []
    if pointer.get("fingerprint") != fingerprint(attrs):
        notes.append(f"the layer index is stale (the store changed since it was built); `workbench index {where}`")
    problems = []
    prefix = f"{GROUP}/{pointer['build']}/"
    for lay in layouts({"consolidated_metadata": {"metadata": pointer.get("arrays", {})}}).values():
        for coords in lay.coords():
            raw = sync(store.get(prefix + lay.key(coords), prototype=default_buffer_prototype()))
            problem = "is missing" if raw is None else check_bytes(lay, raw.as_numpy_array())
            if problem is not None:
                problems.append(
                    f"layer index chunk {prefix}{lay.key(coords)} {problem}; rebuild it with "
                    f"`workbench index {where} --force`"
                )
    return notes, problems
