"""One pass over a routing store, block by block: partial counts, reduced by fixed trees.

The graph is plain dask (delayed tasks over the stored token blocks, tree reductions on top), so it
runs the same on the threaded scheduler and on a ``dask.distributed`` cluster: with a ``Client``
active, ``dask.compute`` sends the tasks to its workers. The store is never loaded whole.

- Integer counts (loads, co-activation, transitions, per-unit and extra loads) are counted in runs of
  rows of a block (``row_runs``: about ``TASK_PAIRS`` pair increments each, so both threads stay busy
  to the end) by one fused kernel over the rows as stored (``kernels.routing_counts``). Run j adds into
  the int32 arrays of chain j mod C (``range_counts``), C = ``n_chains()``, the threads that will count
  at once, so a pass allocates C sets of count arrays rather than one per run (on 2 cores, 2 chains
  rather than 4 took the 1M-token K2 pass from 4.0-4.3 to 3.2-3.5 s); the chains' results are summed by
  a tree (``merge``). Integer sums are exact, so C changes no count.
- Gate-weight sums and consecutive-token agreement come from one task per block (``block_stats``) and
  their own fixed tree over the blocks, so floating-point sums add in an order that depends neither on
  the scheduler nor on how the blocks were cut into runs.

Consecutive-token pairs that straddle two blocks are counted on the client from each block's first
and last rows (returned by the block tasks), with the same kernel, so no pair is lost or doubled.

Reading: on a store's own Dataset (``open_store``) each task reads its rows itself, straight from the
store's chunks into a reused buffer (``inputs.ids_rows``, ``workbench.store.rows``), and counting runs
are cut at the store's chunk boundaries so no chunk is decoded twice; with two threads one decodes while
the other counts, and a pass holds a few run-sized buffers rather than every block it reads. Otherwise
(an in-memory or modified Dataset) the tasks take dask's blocks of ``inputs.ids``. The values, and so
every count and sum, are the same either way.
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import dask
import numpy as np
from dask.delayed import Delayed, delayed

from workbench.analysis import kernels as K
from workbench.analysis.inputs import MetricInputError, RoutingInputs
from workbench.analysis.partial import INT32_MAX, Partial, merge, merge_ranges, widen
from workbench.store.rows import TokenRows, borrow
from workbench.tree_reduce import tree_reduce

__all__ = ["Partial", "Want", "accumulate", "merge", "n_chains", "range_counts", "row_runs"]

SPLIT_EVERY = 8  # partials merged per reduction task
# Pair increments per counting task: a dask block whose pair counts need more is counted by several tasks
# over runs of its rows (about 0.3 s of one core each), so two threads stay busy to the end of a pass.
TASK_PAIRS = 400_000_000


def n_chains() -> int:
    """Accumulator chains of a pass: the threads that will count at once, those of the active
    ``dask.distributed`` client's workers, else dask's ``num_workers`` or the CPU count (at least 1).

    Only integer counts go through the chains (exact sums), so the result does not depend on it; the
    floating-point sums have their own tree over the stored blocks.
    """
    dist = sys.modules.get("distributed")  # no client can be active unless it was imported
    if dist is not None:
        try:
            return max(1, sum(dist.default_client().nthreads().values()))
        except ValueError:  # no client
            pass
    return max(1, int(dask.config.get("num_workers", None) or os.cpu_count() or 1))


@dataclass(frozen=True)
class Want:
    """Which statistics one pass computes."""

    load: bool = True  # (G, L, E) counts by the main grouping
    weights: bool = False  # gate-weight mass and gate entropy by the main grouping
    coactivation: str | None = None  # "all" | "adjacent" | None
    transitions: bool = False
    agreement: bool = False
    per_unit: bool = False  # (U, L, E) counts per resampling unit (a sequence, or a sequence's segment)
    extra: tuple[tuple[str, int], ...] = ()  # extra load-like groupings: (name, n_groups), codes given separately

    def pairs_per_token(self, n_layers: int, k: int) -> int:
        """Counter increments one selected token costs (loads, co-activation, transitions): sizes the tasks."""
        n = n_layers * k * (1 + int(self.per_unit) + len(self.extra))
        if self.coactivation is not None:
            n += n_layers * ((k - 1) if self.coactivation == "adjacent" else k * (k - 1) // 2)
        if self.transitions:
            n += max(n_layers - 1, 0) * k * k
        return n


def _ids(block: Any) -> np.ndarray:
    """A stored block of ids as int16 (T, L, k), C-contiguous: no copy for what the store hands out."""
    return np.ascontiguousarray(np.asarray(block), dtype=np.int16)


@contextmanager
def _rows(block: Any, row0: int, lo: int, hi: int) -> Iterator[np.ndarray]:
    """Rows ``lo:hi`` of the block at global row ``row0``: read from the store into a borrowed buffer when
    ``block`` is a ``TokenRows`` (valid inside the ``with`` only), else a view of the block in memory."""
    if isinstance(block, TokenRows):
        with block.rows(row0 + lo, row0 + hi) as rows:
            yield rows
    else:
        yield np.asarray(block)[lo:hi]


def _check(bad: int, row0: int, n_experts: int) -> None:
    if bad >= 0:
        raise MetricInputError(
            f"expert id outside 0..{n_experts - 1} at token row {row0 + bad}; the store does not match its config"
        )


def range_counts(
    into: Partial | None,
    row0: int,
    block: Any,
    lo: int,
    hi: int,
    group: np.ndarray,
    n_groups: int,
    n_experts: int,
    want: Want,
    extra_codes: dict[str, np.ndarray],
    unit: np.ndarray | None = None,
) -> Partial:
    """Add the loads, pair counts, per-unit and extra loads of rows ``lo:hi`` of one block into ``into``.

    ``block`` (T_b, L, k) is the stored chunk of ids starting at global row ``row0`` (or a ``TokenRows``
    that reads the rows from the store); ``group``, ``unit`` and the ``extra_codes`` (hi - lo,) are the
    codes of the rows counted. ``into`` is the
    accumulator of a chain of runs (``accumulate``): the previous run's result, owned by this chain
    alone, whose int32 arrays are added to in place and returned (``None``: allocate it). Reusing
    them saves what fresh count arrays cost: for K2, 70 MB of new pages per run, which this
    virtualised machine faults in at up to 2.6 s per GB.
    """
    with _rows(block, row0, lo, hi) as rows:
        return _range_counts(into, row0 + lo, _ids(rows), group, n_groups, n_experts, want, extra_codes, unit)


def _range_counts(
    into: Partial | None,
    row0: int,
    ids: np.ndarray,
    group: np.ndarray,
    n_groups: int,
    n_experts: int,
    want: Want,
    extra_codes: dict[str, np.ndarray],
    unit: np.ndarray | None,
) -> Partial:
    """``range_counts`` on the rows ``ids`` (T_r, L, k) in memory, the first at global row ``row0``."""
    lo, hi = 0, ids.shape[0]
    _, n_layers, k = ids.shape
    _check(K.first_bad_row(ids, n_experts), row0, n_experts)
    part = into if into is not None else _new_accumulator(want, n_groups, n_layers, n_experts)
    part.cap += (hi - lo) * k * k
    ee = n_experts * n_experts
    load = part.load if part.load is not None else np.zeros((0, 0, 0), np.int32)
    coact = part.coact.reshape(n_layers, ee) if part.coact is not None else np.zeros((1, 0), np.int32)
    trans = part.trans.reshape(-1, ee) if part.trans is not None and part.trans.size else np.zeros((1, 0), np.int32)
    if load.size or coact.size or trans.size:
        K.routing_counts(ids, group, n_experts, load, coact, want.coactivation == "adjacent", trans)
    if want.per_unit and unit is not None:
        sel = unit >= 0
        if sel.any():
            # Units are numbered in row order, so a run of rows only touches a short range of them.
            u_lo, u_hi = int(unit[sel].min()), int(unit[sel].max())
            local = np.where(sel, unit - u_lo, -1).astype(np.int32)
            counts = np.zeros((u_hi - u_lo + 1, n_layers, n_experts), np.int32)
            K.load_counts(ids, local, counts)
            part.unit_lo, part.unit_load = merge_ranges(part.unit_lo, part.unit_load, u_lo, counts, part.cap)
    for name, codes in extra_codes.items():
        K.load_counts(ids, codes, part.extra[name])
    return part


def _new_accumulator(want: Want, n_groups: int, n_layers: int, n_experts: int) -> Partial:
    """Zeroed int32 count arrays for what ``want`` asks (the first run of a chain)."""
    e = n_experts
    part = Partial()
    if want.load:
        part.load = np.zeros((n_groups, n_layers, e), np.int32)
    if want.coactivation is not None:
        part.coact = np.zeros((n_layers, e, e), np.int32)
    if want.transitions:
        part.trans = np.zeros((max(n_layers - 1, 0), e, e), np.int32)
    for name, n in want.extra:
        part.extra[name] = np.zeros((n, n_layers, e), np.int32)
    return part


def block_stats(
    index: int,
    row0: int,
    block: Any,
    weights: Any,
    group: np.ndarray,
    seq: np.ndarray,
    n_groups: int,
    n_experts: int,
    want: Want,
) -> Partial:
    """Gate-weight sums and consecutive-token agreement of one whole block (T_b, L, k) at global row ``row0``.

    Floating-point sums run over the whole block in row order, so they do not depend on how the pair
    counts of the block were split into tasks. ``block`` and ``weights`` are the block's arrays, or
    ``TokenRows`` reading its ``len(group)`` rows from the store.
    """
    n = len(group)
    part = Partial()
    with _rows(block, row0, 0, n) as rows:
        ids = _ids(rows)
        if want.weights and weights is not None:
            _check(K.first_bad_row(ids, n_experts), row0, n_experts)
            with _rows(weights, row0, 0, n) as stored, borrow(ids.shape, np.float32) as w:
                w[...] = stored  # float16 -> float32, exact
                mass, ent, cnt, nan = K.weight_sums(ids, w, group, n_groups, n_experts)
            part.mass, part.entropy, part.entropy_n, part.nan_weights = mass, ent, cnt, int(nan)
        if want.agreement:
            part.agree = K.agreement_counts(ids, group, seq, n_groups)
            part.edges[index] = (np.array(ids[:1]), np.array(ids[-1:]))
    return part


def row_runs(n_rows: int, n_layers: int, k: int, want: Want, *, row0: int = 0, align: int = 1) -> list[tuple[int, int]]:
    """Split ``n_rows`` rows into near-equal runs of about ``TASK_PAIRS`` pair increments each (and few
    enough rows that no int32 count can overflow: k² per row at most).

    ``align``: cut only at global rows (``row0`` + local row) that are multiples of it, the store's chunk
    rows when tasks read their rows from the store, so no chunk is decoded by two runs; unless a run would
    then hold too many rows for int32 counts.
    """
    per_row = max(want.pairs_per_token(n_layers, k), 1)
    n = max(1, -(-n_rows * per_row // TASK_PAIRS), -(-n_rows * k * k // INT32_MAX))
    edges = np.linspace(0, n_rows, n + 1)
    if align > 1:
        cut = np.clip(np.round((row0 + edges) / align) * align - row0, 0, n_rows)
        cut[0], cut[-1] = 0, n_rows
        if np.diff(cut).max() * k * k <= INT32_MAX:
            edges = cut
    edges = edges.round().astype(np.int64)
    return [(int(a), int(b)) for a, b in itertools.pairwise(edges) if b > a]


def accumulate(
    inputs: RoutingInputs,
    want: Want,
    extra_codes: dict[str, np.ndarray] | None = None,
    *,
    unit: np.ndarray | None = None,
    progress: bool = False,
) -> Partial:
    """Run one pass over the selected chunks and return the reduced counts.

    ``progress``: show dask's progress bar on stderr for a pass over 2 s, where someone watches (a terminal
    or a notebook, ``interactive``); in a log file its redraws would be ~30 lines of noise.

    ``extra_codes`` maps each name in ``want.extra`` to per-token codes (T,) int32 (-1 = skip);
    ``unit`` (T,) int32 numbers the resampling units for ``want.per_unit`` in row order.
    """
    extra_codes = extra_codes or {}
    bounds = np.concatenate([[0], np.cumsum(inputs.token_chunks)]).astype(np.int64)
    n_blocks = len(bounds) - 1
    id_blocks: Any
    w_blocks: Any = None
    align = 1
    if inputs.ids_rows is not None:  # every task reads its rows from the store (module docstring)
        id_blocks = [delayed(inputs.ids_rows, pure=True)] * n_blocks  # one key in the graph, shared
        align = inputs.ids_rows.layout.chunks[0]
    else:
        id_blocks = inputs.ids.to_delayed().ravel()
    if want.weights and inputs.weights is not None:
        if inputs.weights_rows is not None:
            w_blocks = [delayed(inputs.weights_rows, pure=True)] * n_blocks
        else:
            w_blocks = inputs.weights.to_delayed().ravel()
    n_layers, k = int(inputs.ids.shape[1]), int(inputs.ids.shape[2])
    count, stats = delayed(range_counts, pure=True), delayed(block_stats, pure=True)
    by_rows = want.load or want.coactivation is not None or want.transitions or want.per_unit or bool(want.extra)
    # Runs of rows are counted by C chains of tasks, run j by chain j % C: each run adds into its
    # chain's accumulator, so a pass allocates C sets of count arrays, not one per run. A chain starts
    # a new accumulator before its int32 counts could overflow (cap: rows x k² per cell at most).
    chains = n_chains()
    heads: list[Delayed | None] = [None] * chains
    caps = [0] * chains
    runs: list[Delayed] = []  # finished accumulators (integer counts)
    blocks: list[Delayed] = []  # gate-weight sums and agreement of whole blocks
    kept: list[int] = []
    j = 0
    for i in range(len(bounds) - 1):
        a, b = int(bounds[i]), int(bounds[i + 1])
        if not (inputs.group[a:b] >= 0).any():
            continue  # nothing selected here: the chunk is never read
        kept.append(i)
        for lo, hi in row_runs(b - a, n_layers, k, want, row0=a, align=align) if by_rows else []:
            g = inputs.group[a + lo : a + hi]
            if not (g >= 0).any():
                continue
            ch = j % chains
            j += 1
            if caps[ch] + (hi - lo) * k * k > INT32_MAX and heads[ch] is not None:
                runs.append(heads[ch])  # type: ignore[arg-type]
                heads[ch], caps[ch] = None, 0
            caps[ch] += (hi - lo) * k * k
            heads[ch] = count(
                heads[ch],
                a,
                id_blocks[i],
                lo,
                hi,
                np.ascontiguousarray(g),
                inputs.n_groups,
                inputs.n_experts,
                want,
                {name: np.ascontiguousarray(c[a + lo : a + hi]) for name, c in extra_codes.items()},
                np.ascontiguousarray(unit[a + lo : a + hi]) if unit is not None else None,
            )
        if want.weights or want.agreement:
            blocks.append(
                stats(
                    i,
                    a,
                    id_blocks[i],
                    w_blocks[i] if w_blocks is not None else None,
                    np.ascontiguousarray(inputs.group[a:b]),
                    np.ascontiguousarray(inputs.seq[a:b]),
                    inputs.n_groups,
                    inputs.n_experts,
                    want,
                )
            )
    if not kept:
        return Partial()
    runs += [h for h in heads if h is not None]
    # Two fixed trees (workbench.tree_reduce): integer counts of the runs, and the per-block floating-point
    # sums, which thus add up in the same order whatever the scheduler and however the runs were cut.
    trees = [tree_reduce(parts, merge, split_every=SPLIT_EVERY) for parts in (runs, blocks) if parts]
    root = trees[0] if len(trees) == 1 else delayed(merge, pure=True)(*trees)
    if progress and interactive(sys.stderr):
        from dask.diagnostics import ProgressBar

        with ProgressBar(minimum=2.0, out=sys.stderr):
            (result,) = dask.compute(root)
    else:
        (result,) = dask.compute(root)
    widen(result)
    if want.agreement:
        _add_boundary_pairs(result, inputs, bounds, kept)
    return result


def interactive(stream: Any) -> bool:
    """Whether ``stream`` is watched by someone: a terminal (a TTY) or a Jupyter kernel's output."""
    try:
        if stream.isatty():
            return True
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
    shell = sys.modules.get("IPython")
    ip = getattr(shell, "get_ipython", lambda: None)() if shell is not None else None
    return ip is not None and "IPKernelApp" in getattr(ip, "config", {})


def _add_boundary_pairs(result: Partial, inputs: RoutingInputs, bounds: np.ndarray, kept: list[int]) -> None:
    """Count the pairs (last row of chunk i, first row of chunk i+1) with the same kernel."""
    for i in kept:
        if i + 1 not in result.edges:
            continue
        last, first = result.edges[i][1], result.edges[i + 1][0]
        row = int(bounds[i + 1])  # global row of ``first``
        pair = np.concatenate([last, first])  # (2, L, k)
        g = np.ascontiguousarray(inputs.group[row - 1 : row + 1])
        s = np.ascontiguousarray(inputs.seq[row - 1 : row + 1])
        extra = K.agreement_counts(pair.astype(np.int16), g, s, inputs.n_groups)
        result.agree = extra if result.agree is None else result.agree + extra
