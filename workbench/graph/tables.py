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

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
from numba import njit

from workbench.graph.top_tokens import by_token_id, edge_top_token_ids, node_top_token_ids
from workbench.pair_counts import pair_counts, pair_edges


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

    @functools.cached_property
    def by_token_id(self) -> tuple[np.ndarray, np.ndarray]:
        """The routing (L, T, k) with tokens sorted by token id, and those ids (T,): what the top-token
        passes read (``workbench.graph.top_tokens.by_token_id``), made once."""
        return by_token_id(self.expert_ids, self.token_ids)

    def _layer_major(self) -> tuple[np.ndarray, np.ndarray]:
        """Layer-major copies for the k × k kernel: ids (L, T, k) int32 and weights (L, T, k) float64, or
        (L, 0, k) when ids only. On strided views of the (T, L, k) routing the kernel ran 3-4 times
        slower (every token's k ids on another cache line)."""
        _, n_layers, k = self.expert_ids.shape
        ids_lt = np.ascontiguousarray(self.expert_ids.transpose(1, 0, 2), dtype=np.int32)
        if self.weighted and self.gate_weights is not None:
            return ids_lt, np.ascontiguousarray(self.gate_weights.transpose(1, 0, 2), dtype=np.float64)
        return ids_lt, np.zeros((n_layers, 0, k))

    def pair_edges(self) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
        """For each layer pair p, all its edges: ``(p, codes src*E+dst (sorted), counts, weights)``.

        Counting runs in the compiled k × k kernel into one dense E × E accumulator that is reused,
        so memory is O(E² + T·k) whatever the number of pairs. Weights are counts when ids only.
        """
        ne = self.n_experts
        cnt_buf = np.zeros(ne * ne, dtype=np.int64)
        w_buf = np.zeros(ne * ne, dtype=np.float64)
        ids_lt, w_lt = self._layer_major()
        for p in range(ids_lt.shape[0] - 1):
            yield (p, *pair_edges(ids_lt[p], ids_lt[p + 1], w_lt[p], w_lt[p + 1], ne, cnt_buf, w_buf))

    def pair_dense(self) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
        """For each layer pair p, its dense edges: ``(p, counts (E²,) int64, weight sums (E²,) float64)``
        at ``src*E + dst``; weights None when ids only. The arrays are reused: read them before the next step.

        The same kernel and float additions as ``pair_edges`` (whose weights are these cells'), for
        callers that combine two selections cell by cell (``workbench.graph.difference``).
        """
        ne = self.n_experts
        cnt_buf = np.zeros(ne * ne, dtype=np.int64)
        w_buf = np.zeros(ne * ne, dtype=np.float64)
        ids_lt, w_lt = self._layer_major()
        every = np.zeros(0, dtype=np.bool_)
        for p in range(ids_lt.shape[0] - 1):
            pair_counts(ids_lt[p], ids_lt[p + 1], w_lt[p], w_lt[p + 1], every, ne, cnt_buf, w_buf)
            yield p, cnt_buf, (w_buf if w_lt.shape[1] else None)
            cnt_buf.fill(0)
            w_buf.fill(0.0)

    def decoded_tokens(self, limit: int = 512) -> list[str]:
        """The selected tokens as text (first ``limit``), decoded with the store's vocabulary."""
        return [self._decode(t) for t in self.token_ids[:limit].tolist()]

    def node_top_ids(self, nodes: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``n`` most frequent token ids routed to each node code of ``nodes`` (distinct, (N,)) and
        their counts: (N, n) int64 each, count descending, ties by the smaller id; unused slots id −1, count 0.

        One compiled pass over the routing grouped by token id (``workbench.graph.top_tokens``)."""
        nodes = np.asarray(nodes, dtype=np.int64)
        return node_top_token_ids(self.by_token_id, nodes, self.n_experts, n)

    def edge_top_ids(self, edges: EdgeTable, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``n`` most frequent token ids that take each edge of ``edges`` (the kept edges), in its row
        order, and their counts: (M, n) int64 each, as ``node_top_ids``.

        A token takes edge ``(p, a, b)`` when ``a`` is among its top-k at ``layers[p]`` and ``b`` at
        ``layers[p + 1]``. One compiled pass per layer pair with kept edges
        (``workbench.graph.top_tokens``): O(T·k²) per pair, memory O(E² + M·n). All slots unused where
        the routing is not held in memory (selections counted by dask blocks) or ``n`` is 0.
        """
        if n <= 0 or len(edges) == 0 or self.expert_ids.shape[0] == 0:
            return np.full((len(edges), max(n, 0)), -1, dtype=np.int64), np.zeros((len(edges), max(n, 0)), np.int64)
        return edge_top_token_ids(self.by_token_id, edges.pair, edges.src, edges.dst, self.n_experts, n)

    def top_tokens(self, nodes: np.ndarray, n: int = 5) -> dict[int, list[tuple[str, int]]]:
        """The ``n`` most frequent tokens routed to each node code ``layer_pos * E + expert`` in ``nodes``.

        Returns ``{node_code: [(decoded token, count), ...]}`` ordered by count (ties: smaller id).
        """
        out: dict[int, list[tuple[str, int]]] = {c: [] for c in nodes.tolist()}
        if n <= 0 or nodes.size == 0 or self.n_tokens == 0:
            return out
        ids, counts = self.node_top_ids(nodes, n)
        text = self._texts(ids, counts, str)
        for c, row_t, row_c in zip(nodes.tolist(), ids.tolist(), counts.tolist(), strict=True):
            out[c] = [(text[t], m) for t, m in zip(row_t, row_c, strict=True) if m > 0]
        return out

    def edge_top_tokens(self, edges: EdgeTable, n: int = 3) -> list[list[tuple[str, int]]]:
        """``edge_top_ids`` decoded: per edge ``[(token text, count), ...]``, empty where none (see there)."""
        ids, counts = self.edge_top_ids(edges, n)
        text = self._texts(ids, counts, str)
        return [
            [(text[t], m) for t, m in zip(row_t, row_c, strict=True) if m > 0]
            for row_t, row_c in zip(ids.tolist(), counts.tolist(), strict=True)
        ]

    def top_texts(self, ids: np.ndarray, counts: np.ndarray, text_of: Callable[[str], str] = str) -> list[str]:
        """Rows of ``node_top_ids``/``edge_top_ids`` as hover text, ``"tok (count) · tok (count)"``, one str
        per row ("" for none), each token written ``text_of(decoded token)``.

        Made straight from the arrays: each distinct id is decoded once and no list or tuple per row
        survives (22k edges' worth of those cost more in garbage-collector passes than in building)."""
        rows, n = ids.shape
        if n == 0:
            return [""] * rows
        text = self._texts(ids, counts, text_of)
        flat = zip(ids.ravel().tolist(), counts.ravel().tolist(), strict=True)
        pieces = [f"{text[t]} ({m})" if m > 0 else "" for t, m in flat]
        return [" · ".join(p for p in pieces[i : i + n] if p) for i in range(0, len(pieces), n)]

    def _texts(self, ids: np.ndarray, counts: np.ndarray, text_of: Callable[[str], str]) -> dict[int, str]:
        return {t: text_of(self._decode(t)) for t in np.unique(ids[counts > 0]).tolist()}

    def _decode(self, token_id: int) -> str:
        return self.vocab[token_id] if 0 <= token_id < len(self.vocab) else f"<{token_id}>"


@njit(nogil=True, cache=True)
def _node_counts(
    ids: np.ndarray, weights: np.ndarray, dom: np.ndarray, node_gate: np.ndarray, node_domain: np.ndarray
) -> None:  # pragma: no cover (compiled)
    """``node_domain[dom[t], l, ids[t, l, j]] += 1`` and ``node_gate[l, ids[t, l, j]] += weights[t, l, j]``
    (when ``weights`` has rows) for every token t, layer l and slot j, in that order (so the float sums
    equal ``np.bincount``'s, which adds in flat index order too). Ids outside 0..E-1 are not counted, so
    callers find them by the total."""
    t_n, n_layers, k = ids.shape
    ne = node_gate.shape[1]
    weighted = weights.shape[0] > 0
    for t in range(t_n):
        d = dom[t]
        for layer in range(n_layers):
            for j in range(k):
                e = ids[t, layer, j]
                if e < 0 or e >= ne:
                    continue
                node_domain[d, layer, e] += 1
                if weighted:
                    node_gate[layer, e] += weights[t, layer, j]


def node_counts(
    ids: np.ndarray, weights: np.ndarray | None, dom: np.ndarray, n_experts: int, n_domains: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per (layer, expert): tokens routed, sum of their gate weights (zeros if ``weights`` is None), and
    tokens per domain. ``ids`` (T, L, k), ``weights`` (T, L, k), ``dom`` (T,) domain codes ->
    ``(L, E)``, ``(L, E)``, ``(D, L, E)``. NaN weights propagate into the gate sums. One compiled pass;
    ids outside 0..E-1 are left out of every count (callers compare the total with T·L·k)."""
    n_layers, k = ids.shape[1], ids.shape[2]
    node_gate = np.zeros((n_layers, n_experts))
    node_domain = np.zeros((n_domains, n_layers, n_experts), dtype=np.int64)
    w = np.asarray(weights, dtype=np.float64) if weights is not None else np.zeros((0, n_layers, k))
    _node_counts(ids, w, np.asarray(dom, dtype=np.int64), node_gate, node_domain)
    return node_domain.sum(axis=0), node_gate, node_domain


def sorted_unique(values: np.ndarray, *, counts: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct ``values`` and how often each occurs, by one sort (numpy's hash-based unique is slower here)."""
    x = np.sort(values)
    first = np.flatnonzero(np.concatenate([[True], x[1:] != x[:-1]])) if x.size else np.zeros(0, dtype=np.int64)
    return x[first], (np.diff(np.append(first, x.size)) if counts else np.zeros(0, dtype=np.int64))
