"""Reasoning-graph counts of large selections: a dask map-reduce over token blocks.

The in-memory path of ``count_routing`` reads the whole selection (ids, gate weights as float64, a
node-code copy): about 15 GB for 1M K2 tokens. Here every block of ``BLOCK_TOKENS`` tokens is
counted on its own (one dask task: node counts, gate sums, per-domain counts, and each layer pair's
dense ``E × E`` edge counts and weight sums), and the partial results are added by a fixed binary
tree. Memory is one block plus the dense accumulators (K2: 59 pairs × 384² × 16 B = 139 MB per
partial), whatever the selection's size, and the tasks run on whatever scheduler is active: threads
in-process, or a dask distributed cluster (``--scheduler``). The tree is the same in both, so the
sums are identical to the last bit (``tests/test_distributed_analysis.py``).

Node top tokens are a second pass over the blocks, for the nodes that survive pruning only.
"""

from __future__ import annotations

from typing import Any

import dask
import dask.array as da
import numpy as np

from workbench.graph.counts import _pair_counts, node_counts

BLOCK_TOKENS = 65_536  # tokens per task: ids 60 MB, float64 weights 250 MB for K2
CHUNKED_MIN_TOKENS = 65_536  # selections at least this large use this path (auto mode)
TOKEN_SHIFT = 2**32  # (node code, token id) packed as node * 2^32 + token in one int64

Partial = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def block_counts(
    ids: np.ndarray, weights: np.ndarray | None, dom: np.ndarray, n_experts: int, n_domains: int
) -> Partial:
    """Counts of one block. ``ids`` (T, L, k), ``weights`` (T, L, k) or None, ``dom`` (T,) domain codes.

    Returns ``(node_tokens (L, E), node_gate (L, E), node_domain (D, L, E), pair_cnt (L-1, E²),
    pair_w (L-1, E²))``; NaN gate weights propagate into ``node_gate`` (ids-only stores).
    """
    _, n_layers, k = ids.shape
    ne = n_experts
    w = np.asarray(weights, dtype=np.float64) if weights is not None else None
    weighted = w is not None
    node_tokens, node_gate, node_domain = node_counts(ids, w, dom, ne, n_domains)
    pairs = max(n_layers - 1, 0)
    pair_cnt = np.zeros((pairs, ne * ne), dtype=np.int64)
    pair_w = np.zeros((pairs, ne * ne), dtype=np.float64)
    ids_lt = np.ascontiguousarray(ids.transpose(1, 0, 2), dtype=np.int32)  # (L, T, k)
    w_lt = np.ascontiguousarray(w.transpose(1, 0, 2)) if w is not None else np.zeros((n_layers, 0, k))
    for p in range(pairs):
        _pair_counts(ids_lt[p], ids_lt[p + 1], w_lt[p], w_lt[p + 1], ne, weighted, pair_cnt[p], pair_w[p])
    return node_tokens, node_gate, node_domain, pair_cnt, pair_w


def _add(a: Partial, b: Partial) -> Partial:
    return tuple(x + y for x, y in zip(a, b, strict=True))  # type: ignore[return-value]


def tree_sum(parts: list[Any], combine: Any = _add) -> Any:
    """Combine delayed partials pairwise, level by level: a fixed tree, so any scheduler sums in one order."""
    add = dask.delayed(combine, pure=True)
    while len(parts) > 1:
        nxt = [add(parts[i], parts[i + 1]) for i in range(0, len(parts) - 1, 2)]
        if len(parts) % 2:
            nxt.append(parts[-1])
        parts = nxt
    return parts[0]


def block_bounds(n_tokens: int, block: int | None = None) -> list[tuple[int, int]]:
    """``[a, b)`` token ranges of ``block`` tokens (default ``BLOCK_TOKENS``, read at call time)."""
    size = block or BLOCK_TOKENS
    return [(a, min(a + size, n_tokens)) for a in range(0, n_tokens, size)]


def chunked_counts(
    ids: da.Array, weights: da.Array | None, dom: np.ndarray, n_experts: int, n_domains: int, block: int | None = None
) -> Partial:
    """Sum of ``block_counts`` over token blocks, computed on the active dask scheduler."""
    bounds = block_bounds(int(ids.shape[0]), block)
    count = dask.delayed(block_counts, pure=True)
    parts = []
    for a, b in bounds:
        w = weights[a:b] if weights is not None else None
        parts.append(count(ids[a:b], w, dom[a:b], n_experts, n_domains))
    (total,) = dask.compute(tree_sum(parts))
    return total  # type: ignore[no-any-return]


def block_node_tokens(ids: np.ndarray, tok: np.ndarray, wanted: np.ndarray, n_experts: int) -> tuple[np.ndarray, ...]:
    """Distinct ``node * 2^32 + token`` codes of one block for the ``wanted`` nodes (bool (L*E,)), with counts."""
    from workbench.graph.counts import sorted_unique

    n_layers = ids.shape[1]
    node_code = ids.astype(np.int64) + np.arange(n_layers, dtype=np.int64)[None, :, None] * n_experts
    hit = wanted[node_code]
    t = np.broadcast_to(np.asarray(tok, dtype=np.int64)[:, None, None], node_code.shape)[hit]
    return sorted_unique(node_code[hit] * TOKEN_SHIFT + t, counts=True)


def _merge(a: tuple[np.ndarray, ...], b: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    codes = np.concatenate([a[0], b[0]])
    uniq, inv = np.unique(codes, return_inverse=True)
    return uniq, np.bincount(inv, weights=np.concatenate([a[1], b[1]]), minlength=uniq.size).astype(np.int64)


def chunked_node_tokens(
    ids: da.Array, tok: da.Array, wanted: np.ndarray, n_experts: int, block: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(codes node * 2^32 + token, counts)`` over all blocks, merged (sorted by code)."""
    bounds = block_bounds(int(ids.shape[0]), block)
    one = dask.delayed(block_node_tokens, pure=True)
    parts = [one(ids[a:b], tok[a:b], wanted, n_experts) for a, b in bounds]
    ((codes, counts),) = dask.compute(tree_sum(parts, _merge))
    return np.asarray(codes), np.asarray(counts)
