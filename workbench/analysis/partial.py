"""Partial counts of an analysis pass and how two or more of them add up (``merge``).

A ``Partial`` holds the counts of some rows of a store: integer counts (int32 while no cell can exceed
it, see ``cap``) and floating-point sums. ``merge`` is associative and never modifies its inputs, so
dask may reduce partials by any fixed tree (``workbench.tree_reduce``); it sums tile by tile and adds
floats left to right, so the result does not depend on where the tree ran.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

INT32_MAX = int(np.iinfo(np.int32).max)
TILE = 1 << 18  # bytes of output summed over all inputs at a time in ``merge`` (fits a core's L2 cache)


@dataclass
class Partial:
    """Counts of a contiguous run of rows or chunks; ``merge`` adds two or more of them.

    Integer counts are int32 in the partials of single tasks and wherever ``cap`` says no cell can
    exceed int32, int64 otherwise; ``accumulate`` returns them all as int64.
    """

    load: np.ndarray | None = None  # (G, L, E)
    mass: np.ndarray | None = None  # (G, L, E) float64
    entropy: np.ndarray | None = None  # (G, L) float64 sum of per-token gate entropies
    entropy_n: np.ndarray | None = None  # (G, L) int64
    nan_weights: int = 0
    coact: np.ndarray | None = None  # (L, E, E), rank-ordered (symmetrise at the end)
    trans: np.ndarray | None = None  # (L-1, E, E)
    agree: np.ndarray | None = None  # (G, L, 3) int64
    unit_lo: int = 0
    unit_load: np.ndarray | None = None  # (n, L, E) for units unit_lo .. unit_lo+n-1
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    edges: dict[int, tuple[Any, Any]] = field(default_factory=dict)  # chunk -> (first row, last row) ids
    cap: int = 0  # upper bound of any integer count cell: rows counted x k²


def _sum(arrays: list[np.ndarray | None], cap: int) -> np.ndarray | None:
    """Sum of the given arrays (None = absent) into one new array, tile by tile.

    Each ``TILE``-byte tile of the output is summed over all inputs while it sits in cache, so the
    output is written once (adding the inputs one after the other would stream the whole output
    through memory per input: for K2's (59, 384, 384) transition counts, 35 MB a time). Integer sums
    stay int32 when every input is int32 and ``cap`` <= int32's maximum, else int64. Floats are added
    left to right, ((a + b) + c) + ..., so the bits do not depend on where the tree ran.
    """
    xs = [a for a in arrays if a is not None]
    if not xs:
        return None
    if len(xs) == 1:
        return xs[0]
    dtype = np.result_type(*xs)
    if dtype.kind in "iu" and cap > INT32_MAX:
        dtype = np.dtype(np.int64)
    out = np.empty(xs[0].shape, dtype)
    flat_out, flat = out.reshape(-1), [x.reshape(-1) for x in xs]
    step = max(TILE // dtype.itemsize, 1)
    for a in range(0, flat_out.size, step):
        tile = flat_out[a : a + step]
        np.add(flat[0][a : a + step], flat[1][a : a + step], out=tile)
        for x in flat[2:]:
            np.add(tile, x[a : a + step], out=tile)
    return out


def merge_ranges(lo_a: int, a: np.ndarray | None, lo_b: int, b: np.ndarray | None, cap: int) -> tuple[int, Any]:
    if a is None:
        return lo_b, b
    if b is None:
        return lo_a, a
    lo = min(lo_a, lo_b)
    hi = max(lo_a + a.shape[0], lo_b + b.shape[0])
    dtype = np.result_type(a, b) if cap <= INT32_MAX else np.dtype(np.int64)
    out = np.zeros((hi - lo, *a.shape[1:]), dtype=dtype)
    out[lo_a - lo : lo_a - lo + a.shape[0]] += a
    out[lo_b - lo : lo_b - lo + b.shape[0]] += b
    return lo, out


def merge(*parts: Partial) -> Partial:
    """Sum partial counts (associative, so dask may reduce them in any tree). Inputs are not modified."""
    cap = sum(p.cap for p in parts)
    out = Partial(cap=cap)
    out.load = _sum([p.load for p in parts], cap)
    out.mass = _sum([p.mass for p in parts], cap)
    out.entropy = _sum([p.entropy for p in parts], cap)
    out.entropy_n = _sum([p.entropy_n for p in parts], cap)
    out.nan_weights = sum(p.nan_weights for p in parts)
    out.coact = _sum([p.coact for p in parts], cap)
    out.trans = _sum([p.trans for p in parts], cap)
    out.agree = _sum([p.agree for p in parts], cap)
    for p in parts:
        out.unit_lo, out.unit_load = merge_ranges(out.unit_lo, out.unit_load, p.unit_lo, p.unit_load, cap)
        out.edges.update(p.edges)
    for name in {name for p in parts for name in p.extra}:
        out.extra[name] = _sum([p.extra.get(name) for p in parts], cap)  # type: ignore[assignment]
    return out


def widen(part: Partial) -> None:
    """Make every integer count of the final result int64 (partials may be int32)."""
    for name in ("load", "coact", "trans", "unit_load", "entropy_n", "agree"):
        x = getattr(part, name)
        if x is not None and x.dtype != np.int64:
            setattr(part, name, x.astype(np.int64))
    for name, x in part.extra.items():
        if x.dtype != np.int64:
            part.extra[name] = x.astype(np.int64)
