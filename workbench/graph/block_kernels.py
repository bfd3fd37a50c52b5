"""Compiled kernels of the block-wise reasoning-graph counts (``workbench.graph.chunked``).

Both read one block of routing rows as the store holds them, token-major ``ids`` (R, L_stored, k),
never transposed: ``where`` (S,) names the rows of the selected tokens in the block, in order, and
``lay`` (L,) the positions of the selected MoE layers in a stored row, so neither a selection of rows
nor one of layers costs a copy.

``block_counts`` counts one block's nodes and the k × k pairs of every layer pair. Its sums are the
definition's, added in the definition's order: for every cell, the block's terms in row order (then
slot order), starting from 0, exactly as ``pair_counts`` and ``tables._node_counts`` add them, so a
block's partial sums are bit-identical to theirs. Speed: weighted pairs go through one interleaved
(weight, count) float64 scratch of 2·E² cells per layer pair (``pair_counts.token_pairs_weighted_k``):
one cache line per increment where a separate uint16 count scratch and float64 weight matrix took two
(measured on 65,536 K2 rows: 1.0 against 1.4 ns per increment). Ids-only blocks count through the
uint16 scratch of ``pair_counts.token_pairs_k`` (0.5 ns), as the analysis engine does.

``node_token_counts`` / ``top_of_counts``: the top tokens of kept nodes. A dense table ``counts[u, r]``
(distinct token id u of the selection, node r of one group of kept nodes; an unsigned type no cell can
overflow) is added to block by block; each node's ``n`` most frequent token ids are then read off
with ``top_tokens._offer`` (ids in ascending order, a tie never displacing an earlier id), the rule
of the in-memory path.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from workbench.graph.top_tokens import _offer
from workbench.pair_counts import token_pairs_k, token_pairs_weighted_k

SCRATCH_ROWS = 65535  # selected rows per flush of the uint16 count scratch (ids only): no cell can wrap


HALF_TO_FLOAT = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)  # exact


@njit(nogil=True, cache=True, inline="always")
def gate(w: np.ndarray, table: np.ndarray | None, t: int, layer: int, j: int) -> float:  # pragma: no cover
    """Gate weight ``w[t, layer, j]`` as float64: float16 weights come as their uint16 bits and are looked up
    in ``table`` (``HALF_TO_FLOAT``: numba has no float16), others are read directly (``table`` None). numba
    compiles one version for each (a test on ``table is None`` is resolved at compile time); a run-time
    test here took the weighted pass from 0.29 to 0.53 s per 65,536 K2 rows."""
    if table is None:
        return np.float64(w[t, layer, j])
    return np.float64(table[w[t, layer, j]])


@njit(nogil=True, cache=True, inline="always")
def _token_weighted(
    ids: np.ndarray, w: np.ndarray, table: np.ndarray | None, t: int, la: int, lb: int, k: int, n_experts: int,
    acc: np.ndarray, wa: np.ndarray, wb: np.ndarray,
) -> None:  # pragma: no cover (compiled)  # fmt: skip
    """Row t's k × k weighted pairs (layers ``la`` -> ``lb``) into ``acc``; its 2k gate weights read first."""
    for j in range(k):
        wa[j] = gate(w, table, t, la, j)
        wb[j] = gate(w, table, t, lb, j)
    token_pairs_weighted_k(ids[t, la], ids[t, lb], wa, wb, k, n_experts, acc)


@njit(nogil=True, cache=True)
def _pairs_weighted(
    ids: np.ndarray, w: np.ndarray, table: np.ndarray | None, where: np.ndarray, lay: np.ndarray, n_experts: int,
    pair_cnt: np.ndarray, pair_w: np.ndarray,
) -> None:  # pragma: no cover (compiled)  # fmt: skip
    """Every layer pair's weighted k × k pairs of the selected rows: counts added into ``pair_cnt``, the
    block's weight sums written to ``pair_w``. The scratch is allocated here, so the compiler knows no
    store into it changes the ids or weights it reads."""
    k = ids.shape[2]
    ee = n_experts * n_experts
    acc = np.zeros(2 * ee, np.float64)
    wa, wb = np.empty(k, np.float64), np.empty(k, np.float64)
    for p in range(lay.shape[0] - 1):
        la, lb = lay[p], lay[p + 1]
        if k == 8:  # K2, DeepSeek-V3: literal trip counts, unrolled
            for s in range(where.shape[0]):
                _token_weighted(ids, w, table, where[s], la, lb, 8, n_experts, acc, wa, wb)
        else:
            for s in range(where.shape[0]):
                _token_weighted(ids, w, table, where[s], la, lb, k, n_experts, acc, wa, wb)
        cnt, ws = pair_cnt[p], pair_w[p]
        for c in range(ee):
            ws[c] = acc[2 * c]
            cnt[c] += np.int64(acc[2 * c + 1])
            acc[2 * c] = 0.0
            acc[2 * c + 1] = 0.0


@njit(nogil=True, cache=True)
def _pairs_ids(
    ids: np.ndarray, where: np.ndarray, s0: int, s1: int, la: int, lb: int, n_experts: int, scratch: np.ndarray
) -> None:  # pragma: no cover (compiled)
    k = ids.shape[2]
    for s in range(s0, s1):
        t = where[s]
        if k == 8:
            token_pairs_k(ids[t, la], ids[t, lb], 8, n_experts, scratch)
        else:
            token_pairs_k(ids[t, la], ids[t, lb], k, n_experts, scratch)


@njit(nogil=True, cache=True)
def block_counts(
    ids: np.ndarray,
    w: np.ndarray,
    table: np.ndarray | None,
    where: np.ndarray,
    dom: np.ndarray,
    lay: np.ndarray,
    n_experts: int,
    pair_cnt: np.ndarray,
    pair_w: np.ndarray,
    node_domain: np.ndarray,
    node_gate: np.ndarray,
) -> bool:  # pragma: no cover (compiled)
    """Count one block; returns False (no pair counted) when an id lies outside 0..E-1.

    Parameters
    ----------
    ids : (R, L_stored, k) int, as stored
    w : (R, L_stored, k) gate weights as stored (float16 as its uint16 bits), or (0, L_stored, k) for ids only
    table : ``HALF_TO_FLOAT`` when ``w`` holds float16 bits, else None
    where : (S,) int64 rows of the selected tokens, ascending; ``dom`` (S,) int64 their domain codes
    lay : (L,) int64 positions of the selected layers in a stored row
    pair_cnt : (L-1, E²) int64, added to (cell ``a·E + b`` of pair p: tokens with a at layer p, b at p+1)
    pair_w : (L-1, E²) float64, overwritten with this block's weight sums (untouched for ids only)
    node_domain : (D, L, E) int64, added to; ``node_gate`` (L, E) float64, overwritten with the block's
        gate sums. Ids outside 0..E-1 are left out of the node counts (callers compare the total).
    """
    n_experts_sq = n_experts * n_experts
    weighted = w.shape[0] > 0
    k = ids.shape[2]
    node_gate[:] = 0.0
    in_range = True
    for s in range(where.shape[0]):  # rows outside, layers inside: each cell still adds in row order
        t = where[s]
        d = dom[s]
        for p in range(lay.shape[0]):
            la = lay[p]
            for j in range(k):
                e = ids[t, la, j]
                if e < 0 or e >= n_experts:
                    in_range = False
                    continue
                node_domain[d, p, e] += 1
                if weighted:
                    node_gate[p, e] += gate(w, table, t, la, j)
    if not in_range:
        return False
    if weighted:
        _pairs_weighted(ids, w, table, where, lay, n_experts, pair_cnt, pair_w)
        return True
    scratch = np.zeros(n_experts_sq, np.uint16)
    for p in range(lay.shape[0] - 1):
        cnt = pair_cnt[p]
        for s0 in range(0, where.shape[0], SCRATCH_ROWS):
            _pairs_ids(ids, where, s0, min(where.shape[0], s0 + SCRATCH_ROWS), lay[p], lay[p + 1], n_experts, scratch)
            for c in range(n_experts_sq):
                if scratch[c]:
                    cnt[c] += scratch[c]
                    scratch[c] = 0
    return True


@njit(nogil=True, cache=True)
def node_token_counts(
    ids: np.ndarray, where: np.ndarray, rank: np.ndarray, lay: np.ndarray, p0: int, p1: int, lut: np.ndarray,
    n_experts: int, out: np.ndarray,
) -> None:  # pragma: no cover (compiled)  # fmt: skip
    """``out[rank[s], lut[p·E + e]]`` += 1 for every selected token s (row ``where[s]``), layer p in
    ``p0..p1-1`` (those of the group's nodes) and expert e of its top-k there, where the table row
    ``lut[...] >= 0`` (a node of this group). ``ids`` (R, L_stored, k) in 0..E-1 (checked by the counting
    pass), ``out`` (U, N_group) int32/int64."""
    k = ids.shape[2]
    for s in range(where.shape[0]):
        t = where[s]
        row = out[rank[s]]
        for p in range(p0, p1):
            la = lay[p]
            base = p * n_experts
            for j in range(k):
                r = lut[base + ids[t, la, j]]
                if r >= 0:
                    row[r] += 1


@njit(nogil=True, cache=True)
def top_of_counts(
    counts: np.ndarray, token_of: np.ndarray, top_tok: np.ndarray, top_cnt: np.ndarray
) -> None:  # pragma: no cover
    """Each column r's ``n`` largest ``counts[u, r]`` (> 0) into rows r of ``top_tok`` (token id
    ``token_of[u]``, ascending in u) / ``top_cnt`` (N, n), count descending, ties by the smaller id.
    ``top_cnt`` starts at 0 and ``top_tok`` at −1. Zeroes ``counts``."""
    n_rows = counts.shape[1]
    every = np.arange(n_rows)
    for u in range(counts.shape[0]):
        _offer(counts[u], every, n_rows, token_of[u], top_tok, top_cnt)
