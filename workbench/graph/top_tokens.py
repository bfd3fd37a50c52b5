"""The most frequent tokens of each kept node and edge of a reasoning graph: compiled passes by token id.

A token ``t`` is routed to node ``(l, e)`` when ``e ∈ K_l(t)`` (its top-k set at MoE layer ``l``) and
takes edge ``(a, b)`` of the layer pair ``l → l'`` when ``a ∈ K_l(t)`` and ``b ∈ K_l'(t)``. For hover
texts ("which tokens go here?") we want, per kept node or edge, the ``n`` token ids that do so most
often. Counting (element, token id) pairs with a sort costs O(T·L·k log) for the nodes and O(T·k² log)
per layer pair for the edges, which for 10k K2 tokens is most of a second. These kernels instead visit
the tokens grouped by token id (one stable argsort of the ids and one layer-major copy of the routing
in that order, ``by_token_id``, shared by every pass, so each pass reads memory in sequence), count each
group's hits per element in a scratch array, and offer each (count, token id) to the element's running
top-``n`` list: O(T·L·k) for the nodes and O(T·k² + touched·n) per layer pair for the edges, no
allocation per token. A token hits an element at most once (its k expert ids are distinct), so counts
are numbers of tokens. Ties go to the smaller token id: groups arrive in ascending id order and an
equal count never displaces an earlier entry. (The same order as sorting by count descending, then
token id ascending.)

This module imports nothing from the workbench; ``workbench.graph.tables`` calls it.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(nogil=True, cache=True)
def _offer(
    scratch: np.ndarray, touched: np.ndarray, n_touched: int, tid: int, top_tok: np.ndarray, top_cnt: np.ndarray
) -> None:  # pragma: no cover (compiled)
    """Offer the counts of one token-id group (rows ``touched[:n_touched]`` of ``scratch``) to the
    rows' top-n lists, and reset ``scratch``."""
    n = top_cnt.shape[1]
    for q in range(n_touched):
        r = touched[q]
        c = scratch[r]
        scratch[r] = 0
        if c > top_cnt[r, n - 1]:
            pos = n - 1
            while pos > 0 and top_cnt[r, pos - 1] < c:
                top_cnt[r, pos] = top_cnt[r, pos - 1]
                top_tok[r, pos] = top_tok[r, pos - 1]
                pos -= 1
            top_cnt[r, pos] = c
            top_tok[r, pos] = tid


@njit(nogil=True, cache=True)
def edge_top_tokens_pair(
    a: np.ndarray,
    b: np.ndarray,
    tok_sorted: np.ndarray,
    src_row: np.ndarray,
    dst_col: np.ndarray,
    lut: np.ndarray,
    top_tok: np.ndarray,
    top_cnt: np.ndarray,
) -> None:  # pragma: no cover (compiled)
    """Fill rows of ``top_tok``/``top_cnt`` (M, n) for the kept edges of one layer pair.

    ``a``, ``b`` (T, k): expert ids at the two layers, rows in token-id order; ``tok_sorted`` (T,): the
    ids in that order; ``src_row`` (E,): index of the expert among the pair's kept sources or −1,
    ``dst_col`` (E,) the same for targets; ``lut`` (S·D,): edge row of ``src_row·D + dst_col`` or −1.
    A token's k × k loop only visits its kept sources and targets, and the table stays small (a few
    kept experts a side) where an E × E one would not fit in cache. ``top_cnt`` starts at 0 and
    ``top_tok`` at −1; each row ends by count descending.
    """
    n_rows = top_cnt.shape[0]
    n_dst = max(int(dst_col.max()) + 1, 1)
    scratch = np.zeros(n_rows, np.int64)
    touched = np.empty(n_rows, np.int64)
    n_tok, k = a.shape
    cols = np.empty(k, np.int64)
    i = 0
    while i < n_tok:
        tid = tok_sorted[i]
        j = i
        n_touched = 0
        while j < n_tok and tok_sorted[j] == tid:
            n_cols = 0
            for y in range(k):
                c = dst_col[b[j, y]]
                if c >= 0:
                    cols[n_cols] = c
                    n_cols += 1
            if n_cols:
                for x in range(k):
                    s = src_row[a[j, x]]
                    if s < 0:
                        continue
                    base = s * n_dst
                    for q in range(n_cols):
                        r = lut[base + cols[q]]
                        if r >= 0:
                            if scratch[r] == 0:
                                touched[n_touched] = r
                                n_touched += 1
                            scratch[r] += 1
            j += 1
        _offer(scratch, touched, n_touched, tid, top_tok, top_cnt)
        i = j


@njit(nogil=True, cache=True)
def node_top_tokens_all(
    ids: np.ndarray,
    tok_sorted: np.ndarray,
    lut: np.ndarray,
    n_experts: int,
    top_tok: np.ndarray,
    top_cnt: np.ndarray,
) -> None:  # pragma: no cover (compiled)
    """Fill rows of ``top_tok``/``top_cnt`` (N, n) for the nodes ``lut`` maps to, from all layers.

    ``ids`` (L, T, k): expert ids, layer-major, tokens in token-id order; ``tok_sorted`` (T,): the ids
    in that order; ``lut`` (L·E,): row of node code ``layer_pos·E + expert`` or −1.
    """
    n_rows = top_cnt.shape[0]
    scratch = np.zeros(n_rows, np.int64)
    touched = np.empty(n_rows, np.int64)
    n_layers, n_tok, k = ids.shape
    i = 0
    while i < n_tok:
        tid = tok_sorted[i]
        stop = i
        while stop < n_tok and tok_sorted[stop] == tid:
            stop += 1
        n_touched = 0
        for layer in range(n_layers):
            base = layer * n_experts
            for j in range(i, stop):
                for x in range(k):
                    r = lut[base + ids[layer, j, x]]
                    if r >= 0:
                        if scratch[r] == 0:
                            touched[n_touched] = r
                            n_touched += 1
                        scratch[r] += 1
        _offer(scratch, touched, n_touched, tid, top_tok, top_cnt)
        i = stop


def by_token_id(expert_ids: np.ndarray, token_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The routing as the kernels read it: ``(ids (L, T, k) layer-major with tokens sorted by token id
    (stable), the token ids in that order (T,) int64)``. One gather of the routing, shared by every pass."""
    tok = np.asarray(token_ids, dtype=np.int64)
    order = np.argsort(tok, kind="stable")
    return np.ascontiguousarray(expert_ids[order].transpose(1, 0, 2)), tok[order]


def _empty(m: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((m, max(n, 0)), -1, dtype=np.int64), np.zeros((m, max(n, 0)), dtype=np.int64)


def node_top_token_ids(
    routing: tuple[np.ndarray, np.ndarray], nodes: np.ndarray, n_experts: int, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per node code ``nodes[i]`` (``layer_pos·E + expert``, distinct): its ``n`` most frequent token ids.

    ``routing`` = ``by_token_id(expert_ids, token_ids)``. Returns ``(ids, counts)``, both (N, n) int64,
    count descending; unused slots: id −1, count 0.
    """
    ids_lt, tok_sorted = routing
    top_tok, top_cnt = _empty(int(nodes.size), n)
    if n <= 0 or nodes.size == 0 or ids_lt.shape[1] == 0:
        return top_tok, top_cnt
    lut = np.full(ids_lt.shape[0] * n_experts, -1, dtype=np.int64)
    lut[nodes] = np.arange(nodes.size)
    node_top_tokens_all(ids_lt, tok_sorted, lut, int(n_experts), top_tok, top_cnt)
    return top_tok, top_cnt


def edge_top_token_ids(
    routing: tuple[np.ndarray, np.ndarray], pair: np.ndarray, src: np.ndarray, dst: np.ndarray, n_experts: int, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per edge ``(pair[i], src[i], dst[i])``: its ``n`` most frequent token ids and their counts.

    ``routing`` = ``by_token_id(expert_ids, token_ids)``, ``pair`` p joining layer positions p and p + 1.
    Returns ``(ids, counts)``, both (M, n) int64, count descending; unused slots hold id −1, count 0.
    """
    ids_lt, tok_sorted = routing
    m = int(pair.size)
    top_tok, top_cnt = _empty(m, n)
    if n <= 0 or m == 0 or ids_lt.shape[1] == 0:
        return top_tok, top_cnt
    ne = int(n_experts)
    src_row = np.full(ne, -1, dtype=np.int64)
    dst_col = np.full(ne, -1, dtype=np.int64)
    for p in np.unique(pair).tolist():
        rows = np.flatnonzero(pair == p)
        srcs, s_idx = np.unique(src[rows], return_inverse=True)
        dsts, d_idx = np.unique(dst[rows], return_inverse=True)
        src_row[srcs] = np.arange(srcs.size)
        dst_col[dsts] = np.arange(dsts.size)
        lut = np.full(srcs.size * dsts.size, -1, dtype=np.int64)
        lut[s_idx * dsts.size + d_idx] = np.arange(rows.size)
        sub_tok, sub_cnt = _empty(rows.size, n)
        edge_top_tokens_pair(ids_lt[p], ids_lt[p + 1], tok_sorted, src_row, dst_col, lut, sub_tok, sub_cnt)
        top_tok[rows], top_cnt[rows] = sub_tok, sub_cnt
        src_row[srcs] = -1
        dst_col[dsts] = -1
    return top_tok, top_cnt
