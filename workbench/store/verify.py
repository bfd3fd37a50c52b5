"""``verify_store``: read every committed chunk of a routing store and say what is damaged and what is not.

The store's fsck (``workbench verify STORE``). It checks, against the last commit (the root ``zarr.json``):

1. the commit record: every array of the schema is there with the schema's dims and dtype, the committed
   counts match the arrays' lengths, and the layer/k/expert dims match the model;
2. every chunk of every array: present, whole (crc32c, blosc header), decodable, and free of fill values
   inside committed rows (fill values cannot pass for data, ``schema.FILL``) and of out-of-range expert ids;
3. the tables against each other (``consistency.py``): sequences tile the token rows, ids are non-empty
   and unique, every token's sequence row and position agree with the sequence table, spans lie inside
   their sequence and agree with the tokens' segment and step.

From the damaged rows it derives which sequences are affected and which are intact (salvageable). The
optional layer index (``layer_index.py``) is checked too: a stale index is a note, a damaged chunk of it a
problem whose message says how to rebuild it.
``check_append`` is the cheap subset a writer runs before appending (see its docstring).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from tqdm.auto import tqdm
from zarr.abc.store import ByteRequest, Store
from zarr.core.buffer import Buffer, BufferPrototype, default_buffer_prototype
from zarr.core.sync import sync

from workbench.errors import StoreDamagedError
from workbench.store import schema as S
from workbench.store.commit import check_root, committed_arrays, open_root, read_json
from workbench.store.consistency import Tables, check_tables
from workbench.store.integrity import ArrayLayout, CheckedStore, check_bytes, damaged, layouts
from workbench.store.layer_index import verify_index

STRING_VARS = (S.SEQUENCE, S.SEQUENCE_DOMAIN, S.SEQUENCE_SOURCE, S.SPAN_LABEL)
# Arrays verify keeps in memory for the table checks (all 1-d and small: ~17 bytes per token).
KEPT = (S.SEQUENCE_INDEX, S.POSITION, S.SEGMENT, S.STEP, *S.SEQUENCE_VARS, S.SEQUENCE, *S.SPAN_VARS)
_COUNT = {S.TOKEN: "tokens", S.SEQUENCE: "sequences", S.SPAN: "spans"}


@dataclass
class ChunkDamage:
    """One damaged chunk: which array, its key, the rows it holds along its first dim, and what is wrong."""

    array: str
    key: str
    dim: str
    rows: tuple[int, int]
    problem: str


@dataclass
class VerifyReport:
    """What ``verify_store`` found. ``ok`` when nothing is damaged; ``notes`` are harmless findings."""

    where: str
    schema_version: int
    checksums: str  # "every array", "none", or "some arrays"
    committed: dict[str, int]
    arrays: int = 0
    chunks: int = 0
    unwritten: int = 0  # version 1 chunks zarr skipped because they held only fill values
    damage: list[ChunkDamage] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    sequences: int = 0
    damaged_sequences: list[str] = field(default_factory=list)
    intact_sequences: list[str] = field(default_factory=list)
    intact_tokens: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.damage and not self.problems

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ok"] = self.ok
        return out

    def summary(self) -> str:
        """One line: clean, or how much is damaged and how much can be salvaged."""
        if self.ok:
            return f"{self.where} is intact: {self.chunks:,} chunks of {self.arrays} arrays checked"
        arrays = sorted({d.array for d in self.damage})
        parts = []
        if self.damage:
            parts.append(f"{len(self.damage)} damaged chunk(s) in {', '.join(arrays)}")
        if self.problems:
            parts.append(f"{len(self.problems)} inconsistenc{'y' if len(self.problems) == 1 else 'ies'}")
        return (
            f"{self.where} is damaged: {'; '.join(parts)}; {len(self.damaged_sequences)} of {self.sequences} "
            f"sequences affected, {len(self.intact_sequences)} intact ({self.intact_tokens:,} tokens)"
        )

    def lines(self, show: int = 10) -> list[str]:
        """The human report (``workbench verify`` prints it)."""
        c = self.committed
        out = [
            f"store       {self.where}",
            f"schema      v{self.schema_version}; checksums: {self.checksums}",
            f"committed   {c['tokens']:,} tokens, {c['sequences']:,} sequences, {c['spans']:,} spans",
            f"checked     {self.chunks:,} chunks of {self.arrays} arrays in {self.seconds:.1f} s"
            + (f" ({self.unwritten} all-fill chunks unwritten, version 1)" if self.unwritten else ""),
        ]
        out += [f"note        {n}" for n in self.notes]
        for d in self.damage[:show]:
            out.append(f"DAMAGED     {d.key}  ({d.dim} rows {d.rows[0]}:{d.rows[1]} of {d.array}) {d.problem}")
        if len(self.damage) > show:
            out.append(f"DAMAGED     ... and {len(self.damage) - show} more chunks (--json lists all)")
        for p in self.problems[:show]:
            out.append(f"INCONSISTENT {p}")
        if len(self.problems) > show:
            out.append(f"INCONSISTENT ... and {len(self.problems) - show} more (--json lists all)")
        if self.ok:
            out.append("result      intact")
            return out
        shown = ", ".join(self.damaged_sequences[:show]) + (" ..." if len(self.damaged_sequences) > show else "")
        out.append(f"affected    {len(self.damaged_sequences)} sequences: {shown or '-'}")
        out.append(
            f"salvage     {len(self.intact_sequences)} of {self.sequences} sequences ({self.intact_tokens:,} tokens) "
            "have every row intact; `workbench verify --json` lists them"
        )
        return out


def _expected(attrs: dict[str, Any]) -> dict[str, tuple[str, tuple[int | None, ...]]]:
    """Schema dtype and shape of every array the store must hold (None: the committed count along a dim)."""
    model = attrs.get("model") or {}
    sizes = {
        S.LAYER: len(model.get("moe_layers") or []),
        S.K: model.get("top_k"),
        S.EXPERT: model.get("n_routed_experts"),
    }
    out = {}
    for name, dims in S.DIMS.items():
        if name == S.ROUTER_SCORES and not attrs.get("has_router_scores"):
            continue
        dtype = "string" if name in STRING_VARS else S.DTYPES.get(name, "int16")
        shape = tuple(sizes.get(d) if d not in _COUNT else attrs["committed"][_COUNT[d]] for d in dims)
        out[name] = (dtype, shape)
    return out


def check_record(root: dict[str, Any], attrs: dict[str, Any]) -> list[str]:
    """The commit record against the schema: arrays, dims, dtypes, lengths. Problems, one line each."""
    docs = committed_arrays(root)
    problems = []
    for name, (dtype, shape) in _expected(attrs).items():
        doc = docs.get(name)
        if doc is None:
            problems.append(f"array {name} is missing from the commit record")
            continue
        if doc.get("data_type") != dtype:
            problems.append(f"array {name} has dtype {doc.get('data_type')}, the schema says {dtype}")
        if tuple(doc.get("dimension_names") or ()) != S.DIMS[name]:
            problems.append(f"array {name} has dims {doc.get('dimension_names')}, the schema says {list(S.DIMS[name])}")
        if tuple(doc["shape"]) != shape:
            problems.append(f"array {name} has shape {tuple(doc['shape'])}; the commit record says {shape}")
    return problems


def _bad_values(layout: ArrayLayout, values: np.ndarray, n_experts: int) -> str | None:
    """Fill values (strict arrays) or impossible ids inside the committed rows of one decoded chunk."""
    if layout.strict and layout.name != S.GENERATED:
        fill = S.FILL.get(layout.name)
        hit = np.isneginf(values) if fill == float("-inf") else values == fill
        if np.any(hit):
            rows = np.nonzero(hit.reshape(hit.shape[0], -1).any(axis=1))[0]
            return f"holds the fill value {fill!r} in {rows.size} committed rows (first at chunk row {rows[0]})"
    if layout.name == S.EXPERT_IDS and values.size and (values.min() < 0 or values.max() >= n_experts):
        if not layout.strict and not values.any():
            return None
        return f"holds expert ids outside 0..{n_experts - 1}"
    return None


class _Prefetched(CheckedStore):
    """A ``CheckedStore`` that serves a chunk verify already fetched once, so each chunk is read once."""

    def __init__(self, store: Store, root: dict[str, Any] | None = None, where: str = "") -> None:
        super().__init__(store, root, where)
        self.fetched: dict[str, Buffer] = {}

    def _with_store(self, store: Store) -> _Prefetched:
        return type(self)(store, self.root, self.where)

    async def get(self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None) -> Buffer | None:
        buf = self.fetched.pop(key, None) if byte_range is None else None
        if buf is None:
            return await super().get(key, prototype, byte_range)
        self.check(key, buf)
        return buf


def _read_chunk(
    store: Store, arr: zarr.Array, layout: ArrayLayout, coords: tuple[int, ...], n_experts: int
) -> tuple[str | None, np.ndarray | None, bool]:
    """(problem, values when kept, unwritten) for one chunk; ``arr`` is opened on a ``CheckedStore``."""
    region = tuple(
        slice(c * n, min((c + 1) * n, size)) for c, n, size in zip(coords, layout.chunks, layout.shape, strict=True)
    )
    key = layout.key(coords)
    raw = sync(store.get(key, prototype=default_buffer_prototype()))
    if raw is None and layout.must_exist(coords):
        return "is missing", None, True
    problem = None if raw is None else check_bytes(layout, raw.as_numpy_array())
    if problem is not None:
        return problem, None, False
    if raw is not None and isinstance(arr.store, _Prefetched):
        arr.store.fetched[key] = raw  # decoded below without a second read
    try:
        values = np.asarray(arr[region])
    except StoreDamagedError as err:  # changed between the two reads
        return str(err), None, False
    except Exception as err:  # a chunk that passes its checks but does not decode (version 1: no checksum)
        return f"cannot be decoded ({type(err).__name__}: {err})", None, False
    problem = _bad_values(layout, values, n_experts)
    return problem, (values if layout.name in KEPT else None), raw is None


def verify_store(
    path_or_url: str | Path, *, storage_options: dict[str, Any] | None = None, progress: bool = False,
    workers: int = 4,
) -> VerifyReport:  # fmt: skip
    """Check every committed chunk and the tables of a routing store (module docstring). Never raises for damage.

    Raises
    ------
    StoreError
        The path is not a routing store at all (nothing to verify).
    """
    t0 = time.perf_counter()
    loc, root, attrs = open_root(path_or_url, storage_options)
    lays = layouts(root)
    flags = {lay.checksum for lay in lays.values()}
    report = VerifyReport(
        where=loc.where, schema_version=int(attrs["schema_version"]),
        checksums="every array" if flags == {True} else "none" if flags == {False} else "some arrays",
        committed=dict(attrs["committed"]),
    )  # fmt: skip
    if flags != {True}:
        report.notes.append("chunks without crc32c checksums (written before schema version 2): a changed byte "
                            "that still decodes cannot be detected")  # fmt: skip
    report.problems += check_record(root, attrs)
    for name, doc in committed_arrays(root).items():
        own = read_json(loc.store, f"{name}/zarr.json")
        if own != doc:
            what = "is missing" if own is None else "differs from the commit (an uncommitted tail?)"
            report.notes.append(f"{name}/zarr.json {what}; the next writer puts it back")
    checked = _Prefetched(loc.store, root, loc.where)
    group = zarr.open_group(checked, mode="r", zarr_format=3, use_consolidated=True)
    expected = _expected(attrs)
    names = [n for n in expected if n in lays and not any(p.startswith(f"array {n} ") for p in report.problems)]
    jobs = [(name, coords) for name in names for coords in lays[name].coords()]
    arrays = {name: _array(group, name) for name in names}
    n_experts = int((attrs.get("model") or {}).get("n_routed_experts") or 0)
    kept: dict[str, list[tuple[int, np.ndarray]]] = {n: [] for n in names if n in KEPT}
    bad_rows: dict[str, list[tuple[int, int]]] = {S.TOKEN: [], S.SEQUENCE: [], S.SPAN: []}
    report.arrays, report.chunks = len(names), len(jobs)

    def work(job: tuple[str, tuple[int, ...]]) -> tuple[str | None, np.ndarray | None, bool]:
        name, coords = job
        return _read_chunk(loc.store, arrays[name], lays[name], coords, n_experts)

    with (
        ThreadPoolExecutor(max_workers=max(1, workers)) as pool,
        tqdm(total=len(jobs), unit="chunk", desc="verify", disable=not progress) as bar,
    ):
        for (name, coords), (problem, values, unwritten) in zip(jobs, pool.map(work, jobs), strict=True):
            bar.update(1)
            lay = lays[name]
            report.unwritten += int(unwritten and problem is None)  # version 1: zarr skipped an all-fill chunk
            if problem is not None:
                report.damage.append(ChunkDamage(name, lay.key(coords), lay.dim, lay.rows(coords), problem))
                if lay.dim in bad_rows:
                    bad_rows[lay.dim].append(lay.rows(coords))
            elif values is not None and name in kept:
                kept[name].append((lay.rows(coords)[0], values))
    tables = Tables.build(attrs, expected, kept, bad_rows)
    result = check_tables(tables)
    report.problems += result.problems
    report.sequences = tables.n_sequences
    report.damaged_sequences, report.intact_sequences = result.damaged, result.intact
    report.intact_tokens = result.intact_tokens
    index_notes, index_problems = verify_index(loc.store, loc.where, attrs)  # derived data: a note or a problem
    report.notes += index_notes
    report.problems += index_problems
    report.seconds = time.perf_counter() - t0
    return report


def check_append(where: str, store: Store, root: dict[str, Any]) -> None:
    """Refuse (StoreDamagedError) to append to a damaged store, cheaply; called before a writer writes.

    Checks the commit record against the schema, that every chunk the commit needs exists (one listing
    per array), and reads in full (checksum, decode, fill values) the tail chunk of every array, the one
    chunk an append rewrites together with committed rows, and the sequence ids the writer loads anyway.
    A changed byte inside an older chunk is left to ``workbench verify`` and to the readers, which refuse
    it: finding it here would mean reading the whole store before every append.
    """
    attrs = check_root(root, where)
    problems = check_record(root, attrs)
    if problems:
        raise StoreDamagedError(
            f"{where} is damaged ({problems[0]}); appending to it is refused: run `workbench verify {where}`"
        )
    checked = CheckedStore(store, root, where)
    lays = layouts(root)
    n_experts = int((attrs.get("model") or {}).get("n_routed_experts") or 0)

    async def keys(prefix: str) -> set[str]:
        return {k async for k in store.list_prefix(prefix)}

    group = zarr.open_group(checked, mode="r", zarr_format=3, use_consolidated=True)
    for name, lay in lays.items():
        if not lay.shape or not lay.shape[0]:
            continue
        present = sync(keys(f"{name}/c"))
        for coords in lay.coords():
            if lay.key(coords) not in present and lay.must_exist(coords):
                raise _refused(where, lay, coords, "is missing")
        last = lay.grid()[0] - 1
        for coords in lay.coords():
            if coords[0] != last:
                continue
            problem, _, _ = _read_chunk(store, _array(group, name), lay, coords, n_experts)
            if problem is not None:
                raise _refused(where, lay, coords, problem)
    np.asarray(_array(group, S.SEQUENCE)[:])  # every sequence chunk, through the checks


def _array(group: zarr.Group, name: str) -> zarr.Array:
    arr = group[name]
    assert isinstance(arr, zarr.Array)
    return arr


def _refused(where: str, lay: ArrayLayout, coords: tuple[int, ...], problem: str) -> StoreDamagedError:
    err = damaged(where, lay, coords, problem)
    return StoreDamagedError(str(err).replace("; run `workbench verify", "; appending to it is refused (it would "
                                              "commit fill values as data): run `workbench verify"))  # fmt: skip
