"""The most frequent tokens taking each kept edge of a reasoning graph: one compiled pass per layer pair.

A token ``t`` takes edge ``(a, b)`` of the layer pair ``l → l'`` when ``a ∈ K_l(t)`` and
``b ∈ K_l'(t)`` (its top-k sets), so it takes k² edges of every pair. For the hover text of an edge
("which tokens make this transition?") we want, per kept edge, the ``n`` token ids that take it most
often. Counting (edge, token id) pairs with a sort costs O(T·k² log) per layer pair, which for 10k
K2 tokens and a few thousand kept edges is most of a second; this kernel instead visits the tokens
grouped by token id (one argsort of the ids, shared by all pairs), counts each group's hits per
edge in a scratch array, and offers each (count, token id) to the edge's running top-``n`` list:
O(T·k² + touched·n) per pair, no allocation per token. A token takes an edge at most once (its k
expert ids are distinct), so counts are numbers of tokens. Ties go to the smaller token id: groups
arrive in ascending id order and an equal count never displaces an earlier entry.

This module imports nothing from the workbench; ``workbench.graph.tables`` calls it.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(nogil=True, cache=True)
def edge_top_tokens_pair(
    a: np.ndarray,
    b: np.ndarray,
    order: np.ndarray,
    tok_sorted: np.ndarray,
    lut: np.ndarray,
    n_experts: int,
    top_tok: np.ndarray,
    top_cnt: np.ndarray,
) -> None:  # pragma: no cover (compiled)
    """Fill rows of ``top_tok``/``top_cnt`` (M, n) for the edges ``lut`` maps to, from one layer pair.

    ``a``, ``b`` (T, k): expert ids at the two layers; ``order`` (T,): token indices sorted by token id,
    ``tok_sorted`` (T,): the ids in that order; ``lut`` (E·E,): edge row of ``src·E + dst`` or −1.
    ``top_cnt`` starts at 0 and ``top_tok`` at −1; each row ends by count descending.
    """
    n_rows, n = top_cnt.shape
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
                base = a[t, x] * n_experts
                for y in range(k):
                    r = lut[base + b[t, y]]
                    if r >= 0:
                        if scratch[r] == 0:
                            touched[n_touched] = r
                            n_touched += 1
                        scratch[r] += 1
            j += 1
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
        i = j


def edge_top_token_ids(
    expert_ids: np.ndarray,
    token_ids: np.ndarray,
    pair: np.ndarray,
    src: np.ndarray,
    dst: np.ndarray,
    n_experts: int,
    n: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Per edge ``(pair[i], src[i], dst[i])``: its ``n`` most frequent token ids and their counts.

    ``expert_ids`` (T, L, k) with ``pair`` p joining layer positions p and p + 1; ``token_ids`` (T,).
    Returns ``(ids, counts)``, both (M, n) int64, count descending; unused slots hold id −1, count 0.
    """
    m = int(pair.size)
    top_tok = np.full((m, max(n, 1)), -1, dtype=np.int64)
    top_cnt = np.zeros((m, max(n, 1)), dtype=np.int64)
    if n <= 0 or m == 0 or expert_ids.shape[0] == 0:
        return top_tok[:, :n], top_cnt[:, :n]
    tok = np.asarray(token_ids, dtype=np.int64)
    order = np.argsort(tok, kind="stable")
    tok_sorted = tok[order]
    ne = int(n_experts)
    lut = np.full(ne * ne, -1, dtype=np.int32)  # K2: 590 KB, stays in cache
    for p in np.unique(pair).tolist():
        rows = np.flatnonzero(pair == p)
        codes = src[rows].astype(np.int64) * ne + dst[rows].astype(np.int64)
        lut[codes] = np.arange(rows.size, dtype=np.int32)
        a = np.ascontiguousarray(expert_ids[:, p, :], dtype=np.int64)
        b = np.ascontiguousarray(expert_ids[:, p + 1, :], dtype=np.int64)
        sub_tok = np.full((rows.size, n), -1, dtype=np.int64)
        sub_cnt = np.zeros((rows.size, n), dtype=np.int64)
        edge_top_tokens_pair(a, b, order, tok_sorted, lut, ne, sub_tok, sub_cnt)
        top_tok[rows], top_cnt[rows] = sub_tok, sub_cnt
        lut[codes] = -1
    return top_tok, top_cnt
