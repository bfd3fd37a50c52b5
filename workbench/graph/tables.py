"""The arrays every reasoning graph is built from: node counts, and edges read out pair by pair.

A token routed to experts ``A`` (top-k at MoE layer ``l``) and ``B`` (top-k at the next MoE layer)
contributes one to the count of every one of the k × k edges ``(l, a) -> (l', b)`` and the product
of gate weights ``g_a · g_b`` to their weight. Nodes are counted with ``np.bincount`` over node
codes (``workbench.graph.ids``); edges by the compiled k × k kernel (``workbench.pair_counts``) into
one dense ``E × E`` accumulator that is read out and reset for each layer pair, so a 10k-token
selection of a K2-shaped store (60 layers, 384 experts, top-8: 38M token-edge incidences) needs only
O(E² + T·k) memory per pair and networkx is used only for the final, pruned graph (``build.py``).

``RoutingCounts`` holds one selection's counts in memory; ``workbench.graph.chunked`` subclasses it
for selections counted by dask blocks. ``workbench.graph.counts`` fills either from a store.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from workbench.graph.edge_tokens import edge_top_token_ids
from workbench.graph.ids import node_codes
from workbench.pair_counts import pair_edges


@dataclass(frozen=True)
class EdgeTable:
    """Edges between consecutive MoE layers as flat arrays, sorted by ``(pair, src, dst)``.

    ``pair`` p joins ``layers[p]`` to ``layers[p + 1]``. Shapes are all (M,).
    """

    pair: np.ndarray  # (M,) int64 layer-pair index
    src: np.ndarray  # (M,) int64 expert at layers[pair]
    dst: np.ndarray  # (M,) int64 expert at layers[pair + 1]
    count: np.ndarray  # (M,) int64 tokens that take this edge
    weight: np.ndarray  # (M,) float64 sum over those tokens of g_src * g_dst (count when ids only)

    def __len__(self) -> int:
        return int(self.pair.size)

    def take(self, keep: np.ndarray) -> EdgeTable:
        """The rows where ``keep`` (bool mask or index array) holds."""
        return EdgeTable(self.pair[keep], self.src[keep], self.dst[keep], self.count[keep], self.weight[keep])

    @staticmethod
    def empty() -> EdgeTable:
        z = np.zeros(0, dtype=np.int64)
        return EdgeTable(z, z, z, z, np.zeros(0))


@dataclass
class RoutingCounts:
    """Everything a reasoning graph needs, counted from one selection of routing held in memory.

    Node arrays are dense over (layer, expert); edges are sparse (``EdgeTable``).
    ``flow_totals[p]`` is the total weight (all edges, before pruning) between ``layers[p]`` and
    ``layers[p + 1]``, so shares stay exact after pruning.
    """

    layers: np.ndarray  # (L,) real layer indices of the MoE layers used
    n_experts: int
    top_k: int
    n_tokens: int
    weighted: bool  # False for ids-only stores (NaN gate weights): weights are counts
    node_tokens: np.ndarray  # (L, E) int64 tokens routed to (layer, expert)
    node_gate: np.ndarray  # (L, E) float64 sum of gate weights of those tokens (0 when ids only)
    domains: tuple[str, ...]  # domain names, in order of node_domain's first axis
    node_domain: np.ndarray  # (D, L, E) int64 tokens of each domain routed to (layer, expert)
    # Filled by ``workbench.graph.counts``; start empty / zero. ``count_totals`` follows from the shape.
    edges: EdgeTable = field(init=False)
    flow_totals: np.ndarray = field(init=False)  # (L - 1,) float64 total edge weight per layer pair
    count_totals: np.ndarray = field(init=False)  # (L - 1,) int64 total edge count per layer pair (= T * k * k)
    # Inputs kept for the edges and per-node top tokens (computed only for the nodes that survive pruning).
    expert_ids: np.ndarray = field(repr=False)  # (T, L, k) int16
    token_ids: np.ndarray = field(repr=False)  # (T,) int
    vocab: list[str] = field(repr=False, default_factory=list)
    positions: np.ndarray | None = field(repr=False, default=None)  # (T,) position within its sequence
    gate_weights: np.ndarray | None = field(repr=False, default=None)  # (T, L, k) float64; None if ids only

    def __post_init__(self) -> None:
        pairs = max(int(self.layers.size) - 1, 0)
        self.edges = EdgeTable.empty()
        self.flow_totals = np.zeros(pairs)
        self.count_totals = np.full(pairs, self.n_tokens * self.top_k * self.top_k, dtype=np.int64)

    @property
    def mean_gate(self) -> np.ndarray:
        """(L, E) mean gate weight per node, ``node_gate / node_tokens``; NaN where unused or ids only."""
        with np.errstate(invalid="ignore", divide="ignore"):
            out = self.node_gate / self.node_tokens
        if not self.weighted:
            out[:] = np.nan
        return out

    def pair_edges(self) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
        """For each layer pair p, all its edges: ``(p, codes src*E+dst (sorted), counts, weights)``.

        Counting runs in the compiled k × k kernel into one dense E × E accumulator that is reused,
        so memory is O(E² + T·k) whatever the number of pairs. Weights are counts when ids only.
        """
        ne = self.n_experts
        _, n_layers, k = self.expert_ids.shape
        cnt_buf = np.zeros(ne * ne, dtype=np.int64)
        w_buf = np.zeros(ne * ne, dtype=np.float64)
        ids_lt = np.ascontiguousarray(self.expert_ids.transpose(1, 0, 2), dtype=np.int32)  # (L, T, k)
        weighted = self.weighted and self.gate_weights is not None
        w_lt = (
            np.ascontiguousarray(self.gate_weights.transpose(1, 0, 2), dtype=np.float64)  # (L, T, k)
            if weighted and self.gate_weights is not None
            else np.zeros((n_layers, 0, k))
        )
        for p in range(n_layers - 1):
            yield (p, *pair_edges(ids_lt[p], ids_lt[p + 1], w_lt[p], w_lt[p + 1], ne, cnt_buf, w_buf))

    def decoded_tokens(self, limit: int = 512) -> list[str]:
        """The selected tokens as text (first ``limit``), decoded with the store's vocabulary."""
        return [self._decode(t) for t in self.token_ids[:limit].tolist()]

    def node_token_counts(self, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """How often each token id is routed to each ``wanted`` node (bool over node codes, (L·E,)).

        Returns ``(codes node_code * shift + token_id (sorted, distinct), counts, shift)``.
        """
        codes = node_codes(self.expert_ids, self.n_experts)  # (T, L, k)
        hit = wanted[codes]  # (T, L, k)
        tok = np.broadcast_to(self.token_ids.astype(np.int64)[:, None, None], codes.shape)[hit]
        shift = int(max(int(self.token_ids.max(initial=0)) + 1, len(self.vocab), 1))
        pair_codes, counts = sorted_unique(codes[hit] * shift + tok, counts=True)
        return pair_codes, counts, shift

    def top_tokens(self, nodes: np.ndarray, n: int = 5) -> dict[int, list[tuple[str, int]]]:
        """The ``n`` most frequent tokens routed to each node code ``layer_pos * E + expert`` in ``nodes``.

        Returns ``{node_code: [(decoded token, count), ...]}`` ordered by count (ties: smaller id).
        """
        out: dict[int, list[tuple[str, int]]] = {c: [] for c in nodes.tolist()}
        if n <= 0 or nodes.size == 0 or self.n_tokens == 0:
            return out
        wanted = np.zeros(self.layers.size * self.n_experts, dtype=bool)
        wanted[nodes] = True
        pair_codes, counts, shift = self.node_token_counts(wanted)
        for c, items in _top_per_group(pair_codes, counts, shift, n).items():
            out[c] = [(self._decode(t), m) for t, m in items]
        return out

    def edge_top_tokens(self, edges: EdgeTable, n: int = 3) -> list[list[tuple[str, int]]]:
        """The ``n`` most frequent tokens that take each edge of ``edges`` (the kept edges), in its row order.

        A token takes edge ``(p, a, b)`` when ``a`` is among its top-k at ``layers[p]`` and ``b`` at
        ``layers[p + 1]``. One compiled pass per layer pair with kept edges
        (``workbench.graph.edge_tokens``): O(T·k²) per pair, memory O(E² + M·n). Empty lists where the
        routing is not held in memory (selections counted by dask blocks) or ``n`` is 0. Ties: the
        smaller token id first.
        """
        if n <= 0 or len(edges) == 0 or self.expert_ids.shape[0] == 0:
            return [[] for _ in range(len(edges))]
        ids, counts = edge_top_token_ids(
            self.expert_ids, self.token_ids, edges.pair, edges.src, edges.dst, self.n_experts, n
        )
        return [
            [(self._decode(t), c) for t, c in zip(row_t, row_c, strict=True) if c > 0]
            for row_t, row_c in zip(ids.tolist(), counts.tolist(), strict=True)
        ]

    def _decode(self, token_id: int) -> str:
        return self.vocab[token_id] if 0 <= token_id < len(self.vocab) else f"<{token_id}>"


def _top_per_group(codes: np.ndarray, counts: np.ndarray, shift: int, n: int) -> dict[int, list[tuple[int, int]]]:
    """For codes ``group * shift + token`` (distinct) with ``counts``: each group's ``n`` most frequent tokens.

    Returns ``{group: [(token id, count), ...]}``, by count descending, ties by the smaller token id.
    """
    group, tok = np.divmod(codes, shift)
    order = np.lexsort((tok, -counts, group))  # by group, then count desc, then token id
    group, tok, counts = group[order], tok[order], counts[order]
    first = np.flatnonzero(np.concatenate([[True], group[1:] != group[:-1]]))  # start of each group's run
    rank = np.arange(group.size) - np.repeat(first, np.diff(np.append(first, group.size)))
    out: dict[int, list[tuple[int, int]]] = {}
    for g, t, m in zip(group[rank < n].tolist(), tok[rank < n].tolist(), counts[rank < n].tolist(), strict=True):
        out.setdefault(g, []).append((t, m))
    return out


def node_counts(
    ids: np.ndarray, weights: np.ndarray | None, dom: np.ndarray, n_experts: int, n_domains: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per (layer, expert): tokens routed, sum of their gate weights (zeros if ``weights`` is None), and
    tokens per domain. ``ids`` (T, L, k), ``weights`` (T, L, k), ``dom`` (T,) domain codes ->
    ``(L, E)``, ``(L, E)``, ``(D, L, E)``. NaN weights propagate into the gate sums."""
    n_layers = ids.shape[1]
    ne = n_experts
    code = node_codes(ids, ne)  # (T, L, k)
    flat = code.ravel()
    node_tokens = np.bincount(flat, minlength=n_layers * ne).reshape(n_layers, ne)
    node_gate = (
        np.bincount(flat, weights=np.asarray(weights, dtype=np.float64).ravel(), minlength=n_layers * ne).reshape(
            n_layers, ne
        )
        if weights is not None
        else np.zeros((n_layers, ne))
    )
    d_code = (np.broadcast_to(dom[:, None, None], code.shape) * (n_layers * ne) + code).ravel()
    node_domain = np.bincount(d_code, minlength=n_domains * n_layers * ne).reshape(n_domains, n_layers, ne)
    return node_tokens, node_gate, node_domain


def sorted_unique(values: np.ndarray, *, counts: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct ``values`` and how often each occurs, by one sort (numpy's hash-based unique is slower here)."""
    x = np.sort(values)
    first = np.flatnonzero(np.concatenate([[True], x[1:] != x[:-1]])) if x.size else np.zeros(0, dtype=np.int64)
    return x[first], (np.diff(np.append(first, x.size)) if counts else np.zeros(0, dtype=np.int64))
