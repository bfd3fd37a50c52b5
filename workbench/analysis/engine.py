"""One pass over a routing store, chunk by chunk: per-chunk partial counts, reduced across chunks.

The graph is plain dask (delayed tasks over the stored token chunks, a tree reduction on top), so
it runs the same on the threaded scheduler and on a ``dask.distributed`` cluster: with a
``Client`` active, ``dask.compute`` sends the tasks to its workers. Memory stays bounded by a few
chunks plus a few partial count arrays per worker; the store is never loaded whole.

Consecutive-token pairs that straddle two chunks are counted on the client from each chunk's first
and last rows (returned by the chunk tasks), with the same kernel, so no pair is lost or doubled.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

import dask
import numpy as np
from dask.delayed import Delayed, delayed

from workbench.analysis import kernels as K
from workbench.analysis.inputs import MetricInputError, RoutingInputs
from workbench.tree_reduce import tree_reduce

SPLIT_EVERY = 8  # partials merged per reduction task (each a few (G, L, E) count arrays)


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


@dataclass
class Partial:
    """Counts of a contiguous run of chunks; ``merge`` adds two of them."""

    load: np.ndarray | None = None  # (G, L, E) int64
    mass: np.ndarray | None = None  # (G, L, E) float64
    entropy: np.ndarray | None = None  # (G, L) float64 sum of per-token gate entropies
    entropy_n: np.ndarray | None = None  # (G, L) int64
    nan_weights: int = 0
    coact: np.ndarray | None = None  # (L, E, E) int64, rank-ordered (symmetrise at the end)
    trans: np.ndarray | None = None  # (L-1, E, E) int64
    agree: np.ndarray | None = None  # (G, L, 3) int64
    unit_lo: int = 0
    unit_load: np.ndarray | None = None  # (n, L, E) int64 for units unit_lo .. unit_lo+n-1
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    edges: dict[int, tuple[Any, Any]] = field(default_factory=dict)  # chunk -> (first row, last row) ids


def _add(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    if a is None:
        return b
    if b is None:
        return a
    return a + b


def _merge_ranges(lo_a: int, a: np.ndarray | None, lo_b: int, b: np.ndarray | None) -> tuple[int, np.ndarray | None]:
    if a is None:
        return lo_b, b
    if b is None:
        return lo_a, a
    lo = min(lo_a, lo_b)
    hi = max(lo_a + a.shape[0], lo_b + b.shape[0])
    out = np.zeros((hi - lo, *a.shape[1:]), dtype=np.int64)
    out[lo_a - lo : lo_a - lo + a.shape[0]] += a
    out[lo_b - lo : lo_b - lo + b.shape[0]] += b
    return lo, out


def merge(*parts: Partial) -> Partial:
    """Sum partial counts (associative, so dask may reduce them in any tree)."""
    out = Partial()
    for p in parts:
        out.load = _add(out.load, p.load)
        out.mass = _add(out.mass, p.mass)
        out.entropy = _add(out.entropy, p.entropy)
        out.entropy_n = _add(out.entropy_n, p.entropy_n)
        out.nan_weights += p.nan_weights
        out.coact = _add(out.coact, p.coact)
        out.trans = _add(out.trans, p.trans)
        out.agree = _add(out.agree, p.agree)
        out.unit_lo, out.unit_load = _merge_ranges(out.unit_lo, out.unit_load, p.unit_lo, p.unit_load)
        for name, arr in p.extra.items():
            out.extra[name] = _add(out.extra.get(name), arr)  # type: ignore[assignment]
        out.edges.update(p.edges)
    return out


def chunk_stats(
    index: int,
    ids: np.ndarray,
    weights: np.ndarray | None,
    group: np.ndarray,
    seq: np.ndarray,
    n_groups: int,
    n_experts: int,
    want: Want,
    extra_codes: dict[str, np.ndarray],
    unit: np.ndarray | None = None,
) -> Partial:
    """All wanted counts of one chunk: ``ids`` (T_c, L, k), ``group``/``seq``/``unit`` (T_c,)."""
    ids_lt = K.layer_major(np.asarray(ids).astype(np.int16, copy=False))  # (L, T_c, k)
    if ids_lt.size and (ids_lt.min() < 0 or ids_lt.max() >= n_experts):
        raise MetricInputError(
            f"expert ids outside 0..{n_experts - 1} in token chunk {index}; the store does not match its config"
        )
    part = Partial()
    if want.load:
        part.load = K.load_counts(ids_lt, group, n_groups, n_experts).astype(np.int64)
    if want.weights and weights is not None:
        w_lt = K.layer_major(np.asarray(weights).astype(np.float32, copy=False))  # (L, T_c, k)
        mass, ent, cnt, nan = K.weight_sums(ids_lt, w_lt, group, n_groups, n_experts)
        part.mass, part.entropy, part.entropy_n, part.nan_weights = mass, ent, cnt, int(nan)
    if want.coactivation is not None:
        part.coact = K.coactivation_counts(ids_lt, group, n_experts, want.coactivation == "adjacent").astype(np.int64)
    if want.transitions:
        part.trans = K.transition_counts(ids_lt, group, n_experts).astype(np.int64)
    if want.agreement:
        part.agree = K.agreement_counts(ids_lt, group, seq, n_groups)
        part.edges[index] = (np.array(ids[:1]), np.array(ids[-1:]))
    if want.per_unit and unit is not None:
        sel = unit >= 0
        if sel.any():
            # Units are numbered in row order, so a chunk only touches a short range of them.
            lo, hi = int(unit[sel].min()), int(unit[sel].max())
            local = np.where(sel, unit - lo, -1).astype(np.int32)
            part.unit_lo = lo
            part.unit_load = K.load_counts(ids_lt, local, hi - lo + 1, n_experts).astype(np.int64)
    for name, codes in extra_codes.items():
        n = dict(want.extra)[name]
        part.extra[name] = K.load_counts(ids_lt, codes, n, n_experts).astype(np.int64)
    return part


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
    id_blocks = inputs.ids.to_delayed().ravel()
    w_blocks = inputs.weights.to_delayed().ravel() if (want.weights and inputs.weights is not None) else None
    tasks: list[Delayed] = []
    kept: list[int] = []
    for i in range(len(bounds) - 1):
        a, b = int(bounds[i]), int(bounds[i + 1])
        g = inputs.group[a:b]
        if not (g >= 0).any():
            continue  # nothing selected here: the chunk is never read
        kept.append(i)
        tasks.append(
            delayed(chunk_stats)(
                i,
                id_blocks[i],
                w_blocks[i] if w_blocks is not None else None,
                np.ascontiguousarray(g),
                np.ascontiguousarray(inputs.seq[a:b]),
                inputs.n_groups,
                inputs.n_experts,
                want,
                {name: np.ascontiguousarray(c[a:b]) for name, c in extra_codes.items()},
                np.ascontiguousarray(unit[a:b]) if unit is not None else None,
            )
        )
    if not tasks:
        return Partial()
    root = tree_reduce(tasks, merge, split_every=SPLIT_EVERY)
    if progress and interactive(sys.stderr):
        from dask.diagnostics import ProgressBar

        with ProgressBar(minimum=2.0, out=sys.stderr):
            (result,) = dask.compute(root)
    else:
        (result,) = dask.compute(root)
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
        extra = K.agreement_counts(K.layer_major(pair.astype(np.int16)), g, s, inputs.n_groups)
        result.agree = _add(result.agree, extra)
