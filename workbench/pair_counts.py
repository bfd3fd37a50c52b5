"""The k × k layer-pair count: the one compiled kernel behind every count of expert pathways.

A token ``t`` routed to its top-k experts ``K_l(t)`` at one MoE layer and ``K_l'(t)`` at the next
takes all k × k pairs ``(a, b) ∈ K_l(t) × K_l'(t)``. Over the kept tokens ``T``::

    C[a, b] = |{t ∈ T : a ∈ K_l(t), b ∈ K_l'(t)}|          (Σ_ab C = |T|·k²)
    W[a, b] = Σ_{t ∈ T : a ∈ K_l(t), b ∈ K_l'(t)} g_l(t, a) · g_l'(t, b)

with ``g`` the gate weights the MoE applies (DeepSeek-V3, Liu et al. 2024, §2.1.2). ``C`` is the
layer-to-layer transition count of ``workbench.analysis`` (``transitions``, docs/metrics.md) and the
edge ``count`` of a reasoning graph; ``W`` is the graph's edge ``weight`` (docs/graphs.md). Analysis,
graphs (in memory and by dask blocks) and the widgets all count through ``pair_counts``.

Speed: when a call adds more incidences than ``C`` has cells (``|T|·k² ≥ E²``), counts go through a
uint16 scratch of E² cells (295 KB for K2's E = 384, so it stays in a core's L2 cache where an int64
matrix would not), flushed into ``C`` every ``BLOCK`` tokens; a token adds at most 1 to a cell, so
``BLOCK < 65536`` cannot overflow it. Smaller calls add into ``C`` directly, so a few hundred tokens
never pay for a scan of all E² cells. The kernel releases the GIL (dask's threads run blocks in parallel).

This module imports nothing from the workbench: ``workbench.analysis`` and ``workbench.graph`` both use it.
"""

from __future__ import annotations

import numpy as np
from numba import njit

BLOCK = 65535  # tokens per flush of the uint16 scratch


@njit(nogil=True, cache=True)
def pair_counts(
    a: np.ndarray,
    b: np.ndarray,
    wa: np.ndarray,
    wb: np.ndarray,
    keep: np.ndarray,
    n_experts: int,
    cnt: np.ndarray,
    wsum: np.ndarray,
) -> None:  # pragma: no cover (compiled)
    """Add each kept token's k × k pairs into ``cnt`` (C) and, with weights, ``wsum`` (W), at ``a·E + b``.

    Parameters
    ----------
    a, b : (T, k) int
        Expert ids of the tokens at the two layers (any integer dtype).
    wa, wb : (T, k) float, or empty
        Their gate weights; empty (0 rows) to count ids only, leaving ``wsum`` untouched.
    keep : (T,) bool, or empty
        Which tokens take part; empty for all.
    n_experts : int
        E, routed experts per layer; every id must lie in 0..E-1 (not checked here).
    cnt : (E·E,) int
        Counts, added to (int32 or int64; the caller sizes it for the total).
    wsum : (E·E,) float64, or empty
        Sums of gate-weight products, added to.
    """
    t_n, k = a.shape
    weighted = wa.shape[0] > 0
    every = keep.shape[0] == 0
    if cnt.shape[0] < n_experts * n_experts or (weighted and wsum.shape[0] < n_experts * n_experts):
        raise ValueError("pair_counts: cnt (and wsum, with weights) need n_experts**2 cells")
    if b.shape[0] != t_n or (weighted and (wa.shape != a.shape or wb.shape != b.shape)):
        raise ValueError("pair_counts: a, b (and wa, wb) must have the same shape (T, k)")
    if not every and keep.shape[0] != t_n:
        raise ValueError("pair_counts: keep must have one entry per token")
    kept = t_n if every else int(keep.sum())
    if kept * k * k < n_experts * n_experts:  # sparse: add into cnt directly
        if weighted:
            _add_pairs_weighted(a, b, wa, wb, keep, every, 0, t_n, n_experts, cnt, wsum)
        else:
            _add_pairs(a, b, keep, every, 0, t_n, n_experts, cnt)
        return
    scratch = np.zeros(n_experts * n_experts, np.uint16)
    for start in range(0, t_n, BLOCK):
        stop = min(t_n, start + BLOCK)
        if weighted:
            _add_pairs_weighted(a, b, wa, wb, keep, every, start, stop, n_experts, scratch, wsum)
        else:
            _add_pairs(a, b, keep, every, start, stop, n_experts, scratch)
        for c in range(scratch.shape[0]):
            if scratch[c]:
                cnt[c] += scratch[c]
                scratch[c] = 0


# Two loops, one with weights and one without, so neither tests ``weighted`` per incidence.
@njit(nogil=True, cache=True)
def _add_pairs(
    a: np.ndarray, b: np.ndarray, keep: np.ndarray, every: bool, start: int, stop: int, n_experts: int, out: np.ndarray
) -> None:  # pragma: no cover (compiled)
    """``out[a·E + b] += 1`` for each k × k pair of the kept tokens ``start..stop-1``."""
    k = a.shape[1]
    for t in range(start, stop):
        if not every and not keep[t]:
            continue
        for i in range(k):
            base = a[t, i] * n_experts
            for j in range(k):
                out[base + b[t, j]] += 1


@njit(nogil=True, cache=True)
def _add_pairs_weighted(
    a: np.ndarray,
    b: np.ndarray,
    wa: np.ndarray,
    wb: np.ndarray,
    keep: np.ndarray,
    every: bool,
    start: int,
    stop: int,
    n_experts: int,
    out: np.ndarray,
    wsum: np.ndarray,
) -> None:  # pragma: no cover (compiled)
    """As ``_add_pairs``, and ``wsum[a·E + b] += wa · wb``."""
    k = a.shape[1]
    for t in range(start, stop):
        if not every and not keep[t]:
            continue
        for i in range(k):
            base = a[t, i] * n_experts
            w = wa[t, i]
            for j in range(k):
                c = base + b[t, j]
                out[c] += 1
                wsum[c] += w * wb[t, j]
