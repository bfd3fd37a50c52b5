"""Reasoning-graph counts of large selections: a dask map-reduce over token blocks.

The in-memory path (``RoutingCounts``) reads the whole selection (ids, gate weights as float64, a
node-code copy): about 15 GB for 1M K2 tokens. Here every block of ``BLOCK_TOKENS`` tokens is
counted on its own (one dask task: node counts, gate sums, per-domain counts, and each layer pair's
dense ``E × E`` edge counts and weight sums, by the same k × k kernel), and the partial results are
added by the fixed tree of ``workbench.tree_reduce``. Memory is one block plus the dense
accumulators (K2: 59 pairs × 384² × 16 B = 139 MB per partial), whatever the selection's size, and
the tasks run on whatever scheduler is active: threads in-process, or a dask distributed cluster
(``--scheduler``). The tree is the same in both, so the sums are identical to the last bit
(``tests/test_distributed_analysis.py``).

Node top tokens are a second pass over the blocks, for the nodes that survive pruning only.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import dask
import dask.array as da
import numpy as np

from workbench.graph.ids import node_codes
from workbench.graph.tables import RoutingCounts, node_counts, sorted_unique
from workbench.pair_counts import pair_counts
from workbench.tree_reduce import tree_reduce

BLOCK_TOKENS = 65_536  # tokens per task: ids 60 MB, float64 weights 250 MB for K2
CHUNKED_MIN_TOKENS = 65_536  # selections at least this large use this path (auto mode)
TOKEN_SHIFT = 2**32  # (node code, token id) packed as node * 2^32 + token in one int64

Partial = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@dataclass
class ChunkedRoutingCounts(RoutingCounts):
    """``RoutingCounts`` of a selection counted by blocks: edges already summed into dense (L-1, E²)
    arrays, and the selection's ids / token ids kept lazy (dask) for the top-token pass."""

    pair_cnt: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((0, 0), dtype=np.int64))
    pair_w: np.ndarray | None = field(repr=False, default=None)  # None when ids only
    lazy_ids: Any = field(repr=False, default=None)  # dask (T, L, k)
    lazy_tokens: Any = field(repr=False, default=None)  # dask (T,)

    def pair_edges(self) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
        """For each layer pair p: ``(p, codes src*E+dst (sorted), counts, weights)`` from the summed blocks."""
        for p in range(self.pair_cnt.shape[0]):
            nz = np.flatnonzero(self.pair_cnt[p])
            cnt = self.pair_cnt[p, nz]
            use_w = self.weighted and self.pair_w is not None
            yield p, nz, cnt, (self.pair_w[p, nz] if use_w else cnt.astype(np.float64))  # type: ignore[index]

    def pair_dense(self) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
        """For each layer pair p: ``(p, counts (E²,), weight sums (E²,) or None if ids only)``, summed blocks."""
        use_w = self.weighted and self.pair_w is not None
        for p in range(self.pair_cnt.shape[0]):
            yield p, self.pair_cnt[p], (self.pair_w[p] if use_w else None)  # type: ignore[index]

    def node_top_ids(self, nodes: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """As ``RoutingCounts.node_top_ids``, by a second pass over the blocks for the ``nodes`` only."""
        wanted = np.zeros(self.layers.size * self.n_experts, dtype=bool)
        wanted[nodes] = True
        codes, counts = chunked_node_tokens(self.lazy_ids, self.lazy_tokens, wanted, self.n_experts)
        return top_per_node(codes, counts, TOKEN_SHIFT, nodes, n)


def top_per_node(
    codes: np.ndarray, counts: np.ndarray, shift: int, nodes: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """From distinct codes ``node * shift + token`` and their ``counts``: each of ``nodes``' ``n`` most
    frequent token ids and counts, (N, n) each (``nodes`` distinct), by count descending, ties by the smaller token id;
    unused slots id −1, count 0."""
    group, tok = np.divmod(codes, shift)
    order = np.lexsort((tok, -counts, group))  # by group, then count desc, then token id
    group, tok, counts = group[order], tok[order], counts[order]
    first = np.flatnonzero(np.concatenate([[True], group[1:] != group[:-1]]))  # start of each group's run
    rank = np.arange(group.size) - np.repeat(first, np.diff(np.append(first, group.size)))
    keep = rank < n
    sorter = np.argsort(nodes)
    row = sorter[np.searchsorted(nodes, group[keep], sorter=sorter)]  # nodes are distinct
    top_tok = np.full((nodes.size, n), -1, dtype=np.int64)
    top_cnt = np.zeros((nodes.size, n), dtype=np.int64)
    top_tok[row, rank[keep]] = tok[keep]
    top_cnt[row, rank[keep]] = counts[keep]
    return top_tok, top_cnt


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
    node_tokens, node_gate, node_domain = node_counts(ids, w, dom, ne, n_domains)
    pairs = max(n_layers - 1, 0)
    pair_cnt = np.zeros((pairs, ne * ne), dtype=np.int64)
    pair_w = np.zeros((pairs, ne * ne), dtype=np.float64)
    ids_lt = np.ascontiguousarray(ids.transpose(1, 0, 2), dtype=np.int32)  # (L, T, k)
    w_lt = np.ascontiguousarray(w.transpose(1, 0, 2)) if w is not None else np.zeros((n_layers, 0, k))
    every = np.zeros(0, dtype=np.bool_)
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= ne):
        pairs = 0  # the kernel must not index outside E²; the caller refuses the routing by the node total
    for p in range(pairs):
        pair_counts(ids_lt[p], ids_lt[p + 1], w_lt[p], w_lt[p + 1], every, ne, pair_cnt[p], pair_w[p])
    return node_tokens, node_gate, node_domain, pair_cnt, pair_w


def _add(*parts: Partial) -> Partial:
    return tuple(functools.reduce(operator.add, xs) for xs in zip(*parts, strict=True))  # type: ignore[return-value]


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
    (total,) = dask.compute(tree_reduce(parts, _add))
    return total  # type: ignore[no-any-return]


def block_node_tokens(ids: np.ndarray, tok: np.ndarray, wanted: np.ndarray, n_experts: int) -> tuple[np.ndarray, ...]:
    """Distinct ``node * 2^32 + token`` codes of one block for the ``wanted`` nodes (bool (L*E,)), with counts."""
    code = node_codes(ids, n_experts)
    hit = wanted[code]
    t = np.broadcast_to(np.asarray(tok, dtype=np.int64)[:, None, None], code.shape)[hit]
    return sorted_unique(code[hit] * TOKEN_SHIFT + t, counts=True)


def _merge(*parts: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    codes = np.concatenate([p[0] for p in parts])
    uniq, inv = np.unique(codes, return_inverse=True)
    counts = np.concatenate([p[1] for p in parts])
    return uniq, np.bincount(inv, weights=counts, minlength=uniq.size).astype(np.int64)


def chunked_node_tokens(
    ids: da.Array, tok: da.Array, wanted: np.ndarray, n_experts: int, block: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(codes node * 2^32 + token, counts)`` over all blocks, merged (sorted by code)."""
    bounds = block_bounds(int(ids.shape[0]), block)
    one = dask.delayed(block_node_tokens, pure=True)
    parts = [one(ids[a:b], tok[a:b], wanted, n_experts) for a, b in bounds]
    ((codes, counts),) = dask.compute(tree_reduce(parts, _merge))
    return np.asarray(codes), np.asarray(counts)
