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
One token's k × k increments are ``token_pairs``, which the analysis engine's fused kernel
(``workbench.analysis.kernels.routing_counts``) inlines too; for k = 8 (K2, DeepSeek-V3) its loops have a
literal trip count the compiler unrolls (measured: the fused analysis pass 1.4-1.5× faster than with
generic loops; ``pair_counts`` itself, whose uint16 scratch flush weighs more, 1.07×).

This module imports nothing from the workbench: ``workbench.analysis`` and ``workbench.graph`` both use it.
"""

from __future__ import annotations

import numpy as np
from numba import njit

BLOCK = 65535  # tokens per flush of the uint16 scratch


@njit(nogil=True, cache=True, inline="always")
def token_pairs_k(a: np.ndarray, b: np.ndarray, k: int, n_experts: int, out: np.ndarray) -> None:  # pragma: no cover
    """``out[a_i·E + b_j] += 1`` for i, j < ``k``: one token's k × k pairs (``token_pairs`` with k given;
    inlined callers pass a literal k so its loops unroll)."""
    for i in range(k):
        base = np.int64(a[i]) * n_experts
        for j in range(k):
            out[base + b[j]] += 1


@njit(nogil=True, cache=True, inline="always")
def token_pairs_weighted_k(
    a: np.ndarray, b: np.ndarray, wa: np.ndarray, wb: np.ndarray, k: int, n_experts: int, acc: np.ndarray
) -> None:  # pragma: no cover (compiled)
    """One token's k × k pairs with their gate products into an interleaved float64 scratch ``acc`` (2·E²):
    ``acc[2c] += wa_i · wb_j`` (in float64) and ``acc[2c + 1] += 1`` at ``c = a_i·E + b_j``, so a pair's
    weight and count share a cache line (``workbench.graph.block_kernels``). The terms of a cell are added
    in the order ``_add_pairs`` adds them, so its weight sum is bit-identical; counts are exact below 2⁵³."""
    for i in range(k):
        base = np.int64(a[i]) * n_experts
        x = np.float64(wa[i])
        for j in range(k):
            c = 2 * (base + b[j])
            acc[c] += x * np.float64(wb[j])
            acc[c + 1] += 1.0


@njit(nogil=True, cache=True, inline="always")
def token_pairs(a: np.ndarray, b: np.ndarray, n_experts: int, out: np.ndarray) -> None:  # pragma: no cover (compiled)
    """``out[a_i·E + b_j] += 1`` for the k × k pairs of one token: ``a``, ``b`` (k,) its ids at the two
    layers (in 0..E-1, not checked here), ``out`` (E·E,) counts of any integer dtype."""
    k = a.shape[0]
    if k == 8:  # a literal trip count: unrolled
        token_pairs_k(a, b, 8, n_experts, out)
    else:
        token_pairs_k(a, b, k, n_experts, out)


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
    none = np.zeros(0, np.int64)
    if kept * k * k < n_experts * n_experts:  # sparse: add into cnt directly
        _add_pairs(a, b, wa, wb, weighted, keep, every, 0, t_n, n_experts, cnt, wsum, none)
        return
    scratch = np.zeros(n_experts * n_experts, np.uint16)
    for start in range(0, t_n, BLOCK):
        _add_pairs(a, b, wa, wb, weighted, keep, every, start, min(t_n, start + BLOCK), n_experts, scratch, wsum, none)
        for c in range(scratch.shape[0]):
            if scratch[c]:
                cnt[c] += scratch[c]
                scratch[c] = 0


@njit(nogil=True, cache=True)
def _add_pairs(
    a: np.ndarray,
    b: np.ndarray,
    wa: np.ndarray,
    wb: np.ndarray,
    weighted: bool,
    keep: np.ndarray,
    every: bool,
    start: int,
    stop: int,
    n_experts: int,
    out: np.ndarray,
    wsum: np.ndarray,
    touched: np.ndarray,
) -> int:  # pragma: no cover (compiled)
    """``out[a·E + b] += 1`` (and ``wsum[a·E + b] += wa · wb``) for each k × k pair of the kept tokens
    ``start..stop-1``. With a non-empty ``touched``, each cell that leaves 0 is appended to it; returns
    how many were."""
    k = a.shape[1]
    track = touched.shape[0] > 0
    m = 0
    for t in range(start, stop):
        if not every and not keep[t]:
            continue
        if not weighted and not track:
            token_pairs(a[t], b[t], n_experts, out)
            continue
        for i in range(k):
            base = a[t, i] * n_experts
            for j in range(k):
                c = base + b[t, j]
                if track and out[c] == 0:
                    touched[m] = c
                    m += 1
                out[c] += 1
                if weighted:
                    wsum[c] += wa[t, i] * wb[t, j]
    return m


@njit(nogil=True, cache=True)
def pair_edges(
    a: np.ndarray, b: np.ndarray, wa: np.ndarray, wb: np.ndarray, n_experts: int, cnt: np.ndarray, wsum: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover (compiled)
    """The edges of one layer pair: ``pair_counts`` of all tokens into the zeroed ``cnt``/``wsum``, read
    out in code order and reset to zero. Returns ``(codes a·E + b, counts, weights)`` (M,) each; the
    weights are the counts when ``wa`` is empty (ids only).

    A selection with fewer incidences than cells (|T|·k² < E², e.g. one step of a transcript) records
    the cells it touches and sorts those, so it never scans all E² cells (147k for K2, per pair).
    """
    t_n, k = a.shape
    weighted = wa.shape[0] > 0
    if t_n * k * k >= n_experts * n_experts:
        pair_counts(a, b, wa, wb, np.zeros(0, np.bool_), n_experts, cnt, wsum)
        m = 0
        for c in range(cnt.shape[0]):
            if cnt[c]:
                m += 1
        codes = np.empty(m, np.int64)
        i = 0
        for c in range(cnt.shape[0]):
            if cnt[c]:
                codes[i] = c
                i += 1
    else:
        touched = np.empty(max(t_n * k * k, 1), np.int64)
        m = _add_pairs(a, b, wa, wb, weighted, np.zeros(0, np.bool_), True, 0, t_n, n_experts, cnt, wsum, touched)
        codes = _radix_sort(touched[:m], n_experts)
    counts = np.empty(codes.shape[0], np.int64)
    weights = np.empty(codes.shape[0], np.float64)
    for i in range(codes.shape[0]):
        c = codes[i]
        counts[i] = cnt[c]
        weights[i] = wsum[c] if weighted else cnt[c]
        cnt[c] = 0
        wsum[c] = 0.0
    return codes, counts, weights


@njit(nogil=True, cache=True)
def _radix_sort(codes: np.ndarray, n_experts: int) -> np.ndarray:  # pragma: no cover (compiled)
    """Codes ``a·E + b`` (distinct, in 0..E²-1) sorted by two stable counting sorts (b, then a): O(M + E)."""
    out = np.empty_like(codes)
    tmp = np.empty_like(codes)
    for digit in range(2):  # 0: by b = code % E, 1: by a = code // E
        src = codes if digit == 0 else tmp
        dst = tmp if digit == 0 else out
        start = np.zeros(n_experts + 1, np.int64)
        for c in src:
            start[(c % n_experts if digit == 0 else c // n_experts) + 1] += 1
        for e in range(n_experts):
            start[e + 1] += start[e]
        for c in src:
            d = c % n_experts if digit == 0 else c // n_experts
            dst[start[d]] = c
            start[d] += 1
    return out
