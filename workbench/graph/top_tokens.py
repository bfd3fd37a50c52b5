"""The most frequent tokens of each kept node and edge of a reasoning graph: compiled passes by token id.

A token ``t`` is routed to node ``(l, e)`` when ``e ∈ K_l(t)`` (its top-k set at MoE layer ``l``) and
takes edge ``(a, b)`` of the layer pair ``l → l'`` when ``a ∈ K_l(t)`` and ``b ∈ K_l'(t)``. For hover
texts ("which tokens go here?") we want, per kept node or edge, the ``n`` token ids that do so most
often. Counting (element, token id) pairs with a sort costs O(T·L·k log) for the nodes and O(T·k² log)
per layer pair for the edges, which for 10k K2 tokens is most of a second. These kernels instead visit
the tokens grouped by token id (one stable argsort of the ids, shared by every pass), count each
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
    order: np.ndarray,
    tok_sorted: np.ndarray,
    lut: np.ndarray,
    src_kept: np.ndarray,
    n_experts: int,
    top_tok: np.ndarray,
    top_cnt: np.ndarray,
) -> None:  # pragma: no cover (compiled)
    """Fill rows of ``top_tok``/``top_cnt`` (M, n) for the edges ``lut`` maps to, from one layer pair.

    ``a``, ``b`` (T, k): expert ids at the two layers; ``order`` (T,): token indices sorted by token id,
    ``tok_sorted`` (T,): the ids in that order; ``lut`` (E·E,): edge row of ``src·E + dst`` or −1;
    ``src_kept`` (E,): whether any kept edge leaves that expert (the k × k loop skips the others).
    ``top_cnt`` starts at 0 and ``top_tok`` at −1; each row ends by count descending.
    """
    n_rows = top_cnt.shape[0]
    scratch = np.zeros(n_rows, np.int64)
    touched = np.empty(n_rows, np.int64)
    n_tok, k = a.shape
    i = 0
    while i < n_tok:
        tid = tok_sorted[i]
        j = i
        n_touched = 0
        while j < n_tok and tok_sorted[j] == tid:
            t = order[j]
            for x in range(k):
                src = a[t, x]
                if not src_kept[src]:
                    continue
                base = src * n_experts
                for y in range(k):
                    r = lut[base + b[t, y]]
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
    order: np.ndarray,
    tok_sorted: np.ndarray,
    lut: np.ndarray,
    n_experts: int,
    top_tok: np.ndarray,
    top_cnt: np.ndarray,
) -> None:  # pragma: no cover (compiled)
    """Fill rows of ``top_tok``/``top_cnt`` (N, n) for the nodes ``lut`` maps to, from all layers.

    ``ids`` (T, L, k): expert ids; ``lut`` (L·E,): row of node code ``layer_pos·E + expert`` or −1;
    ``order``, ``tok_sorted`` as in ``edge_top_tokens_pair``.
    """
    n_rows = top_cnt.shape[0]
    scratch = np.zeros(n_rows, np.int64)
    touched = np.empty(n_rows, np.int64)
    n_tok, n_layers, k = ids.shape
    i = 0
    while i < n_tok:
        tid = tok_sorted[i]
        j = i
        n_touched = 0
        while j < n_tok and tok_sorted[j] == tid:
            t = order[j]
            for layer in range(n_layers):
                base = layer * n_experts
                for x in range(k):
                    r = lut[base + ids[t, layer, x]]
                    if r >= 0:
                        if scratch[r] == 0:
                            touched[n_touched] = r
                            n_touched += 1
                        scratch[r] += 1
            j += 1
        _offer(scratch, touched, n_touched, tid, top_tok, top_cnt)
        i = j


def token_order(token_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(order, ids in that order)``: token indices sorted by token id (stable), (T,) each, int64."""
    tok = np.asarray(token_ids, dtype=np.int64)
    order = np.argsort(tok, kind="stable")
    return order, tok[order]


def _empty(m: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((m, max(n, 1)), -1, dtype=np.int64), np.zeros((m, max(n, 1)), dtype=np.int64)


def node_top_token_ids(
    expert_ids: np.ndarray, token_ids: np.ndarray, nodes: np.ndarray, n_experts: int, n: int,
    order: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Per node code ``nodes[i]`` (``layer_pos·E + expert``, distinct): its ``n`` most frequent token ids.

    ``expert_ids`` (T, L, k), ``token_ids`` (T,); ``order`` = ``token_order(token_ids)`` if the caller
    has it. Returns ``(ids, counts)``, both (N, n) int64, count descending; unused slots: id −1, count 0.
    """
    top_tok, top_cnt = _empty(int(nodes.size), n)
    if n <= 0 or nodes.size == 0 or expert_ids.shape[0] == 0:
        return top_tok[:, :n], top_cnt[:, :n]
    perm, tok_sorted = order if order is not None else token_order(token_ids)
    lut = np.full(expert_ids.shape[1] * n_experts, -1, dtype=np.int64)
    lut[nodes] = np.arange(nodes.size)
    node_top_tokens_all(expert_ids, perm, tok_sorted, lut, int(n_experts), top_tok, top_cnt)
    return top_tok, top_cnt


def edge_top_token_ids(
    expert_ids: np.ndarray,
    token_ids: np.ndarray,
    pair: np.ndarray,
    src: np.ndarray,
    dst: np.ndarray,
    n_experts: int,
    n: int,
    order: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per edge ``(pair[i], src[i], dst[i])``: its ``n`` most frequent token ids and their counts.

    ``expert_ids`` (T, L, k) with ``pair`` p joining layer positions p and p + 1; ``token_ids`` (T,);
    ``order`` = ``token_order(token_ids)`` if the caller has it. Returns ``(ids, counts)``, both (M, n)
    int64, count descending; unused slots hold id −1, count 0.
    """
    m = int(pair.size)
    top_tok, top_cnt = _empty(m, n)
    if n <= 0 or m == 0 or expert_ids.shape[0] == 0:
        return top_tok[:, :n], top_cnt[:, :n]
    perm, tok_sorted = order if order is not None else token_order(token_ids)
    ne = int(n_experts)
    lut = np.full(ne * ne, -1, dtype=np.int32)  # K2: 590 KB, stays in cache
    src_kept = np.zeros(ne, dtype=np.bool_)
    for p in np.unique(pair).tolist():
        rows = np.flatnonzero(pair == p)
        s = src[rows].astype(np.int64)
        codes = s * ne + dst[rows].astype(np.int64)
        lut[codes] = np.arange(rows.size, dtype=np.int32)
        src_kept[s] = True
        sub_tok, sub_cnt = _empty(rows.size, n)
        a = np.ascontiguousarray(expert_ids[:, p, :])  # (T, k) copies: strided views are 3-4 times slower
        b = np.ascontiguousarray(expert_ids[:, p + 1, :])
        edge_top_tokens_pair(a, b, perm, tok_sorted, lut, src_kept, ne, sub_tok, sub_cnt)
        top_tok[rows], top_cnt[rows] = sub_tok, sub_cnt
        lut[codes] = -1
        src_kept[s] = False
    return top_tok, top_cnt
