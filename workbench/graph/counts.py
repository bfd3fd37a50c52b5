"""Vectorised counting of expert pathways: the arrays every reasoning graph is built from.

A token routed to experts ``A`` (top-k at MoE layer ``l``) and ``B`` (top-k at the next MoE layer)
contributes one to the count of every one of the k × k edges ``(l, a) -> (l', b)`` and the product
of gate weights ``g_a · g_b`` to their weight. Nodes are counted with ``np.bincount`` over
``layer * E + expert``; edges by a compiled loop (numba) that adds each token's k × k pairs into a
dense ``E × E`` accumulator, one layer pair at a time, so a 10k-token selection of a K2-shaped store
(60 layers, 384 experts, top-8: 38M token-edge incidences) needs only O(T·k²) memory per pair and
networkx is used only for the final, pruned graph (see ``build.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np
import xarray as xr

from workbench.store import schema as S
from workbench.store.select import Selection, select


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


@dataclass
class RoutingCounts:
    """Everything a reasoning graph needs, counted from one selection of a routing store.

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
    # Filled by the counting (``_collect_edges``); start empty / zero. ``count_totals`` follows from the shape.
    edges: EdgeTable = field(init=False)
    flow_totals: np.ndarray = field(init=False)  # (L - 1,) float64 total edge weight per layer pair
    count_totals: np.ndarray = field(init=False)  # (L - 1,) int64 total edge count per layer pair (= T * k * k)
    # Inputs kept for per-node top tokens (computed only for the nodes that survive pruning).
    expert_ids: np.ndarray = field(repr=False)  # (T, L, k) int16
    token_ids: np.ndarray = field(repr=False)  # (T,) int
    vocab: list[str] = field(repr=False, default_factory=list)
    positions: np.ndarray | None = field(repr=False, default=None)  # (T,) position within its sequence
    gate_weights: np.ndarray | None = field(repr=False, default=None)  # (T, L, k) float64; None if ids only
    # Large selections (``workbench.graph.chunked``): edges already summed into dense (L-1, E²) arrays,
    # and the selection's ids / token ids kept lazy (dask) for the top-token pass.
    pair_cnt: np.ndarray | None = field(repr=False, default=None)
    pair_w: np.ndarray | None = field(repr=False, default=None)
    lazy_ids: Any = field(repr=False, default=None)
    lazy_tokens: Any = field(repr=False, default=None)

    def __post_init__(self) -> None:
        pairs = max(int(self.layers.size) - 1, 0)
        self.edges = _empty_edges()
        self.flow_totals = np.zeros(pairs)
        self.count_totals = np.full(pairs, self.n_tokens * self.top_k * self.top_k, dtype=np.int64)

    def pair_edges(self) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
        """For each layer pair p, all its edges: ``(p, codes src*E+dst (sorted), counts, weights)``.

        Counting runs in a compiled loop into one dense E × E accumulator that is reused, so memory is
        O(E² + T·k) whatever the number of pairs.
        """
        ne = self.n_experts
        if self.pair_cnt is not None:  # counted by blocks already
            for p in range(self.pair_cnt.shape[0]):
                nz = np.flatnonzero(self.pair_cnt[p])
                cnt = self.pair_cnt[p, nz]
                use_w = self.weighted and self.pair_w is not None
                yield p, nz, cnt, (self.pair_w[p, nz] if use_w else cnt.astype(np.float64))  # type: ignore[index]
            return
        _, n_layers, k = self.expert_ids.shape
        cnt_buf = np.zeros(ne * ne, dtype=np.int64)
        w_buf = np.zeros(ne * ne, dtype=np.float64)
        ids_lt = np.ascontiguousarray(self.expert_ids.transpose(1, 0, 2), dtype=np.int32)  # (L, T, k)
        weighted = self.weighted and self.gate_weights is not None
        w_lt = (
            np.ascontiguousarray(self.gate_weights.transpose(1, 0, 2))  # (L, T, k)
            if self.gate_weights is not None
            else np.zeros((n_layers, 0, k))
        )
        for p in range(n_layers - 1):
            _pair_counts(ids_lt[p], ids_lt[p + 1], w_lt[p], w_lt[p + 1], ne, weighted, cnt_buf, w_buf)
            nz = np.flatnonzero(cnt_buf)
            cnt = cnt_buf[nz]
            wsum = w_buf[nz] if weighted else cnt.astype(np.float64)
            cnt_buf[nz] = 0
            w_buf[nz] = 0.0
            yield p, nz, cnt, wsum

    def decoded_tokens(self, limit: int = 512) -> list[str]:
        """The selected tokens as text (first ``limit``), decoded with the store's vocabulary."""
        ids = self.token_ids[:limit].tolist()
        return [self.vocab[t] if 0 <= t < len(self.vocab) else f"<{t}>" for t in ids]

    def top_tokens(self, nodes: np.ndarray, n: int = 5) -> dict[int, list[tuple[str, int]]]:
        """The ``n`` most frequent tokens routed to each node code ``layer_pos * E + expert`` in ``nodes``.

        Returns ``{node_code: [(decoded token, count), ...]}`` ordered by count (ties: smaller id).
        """
        out: dict[int, list[tuple[str, int]]] = {c: [] for c in nodes.tolist()}
        if n <= 0 or nodes.size == 0 or self.n_tokens == 0:
            return out
        n_layers = self.layers.size
        wanted = np.zeros(n_layers * self.n_experts, dtype=bool)
        wanted[nodes] = True
        if self.lazy_ids is not None:  # large selection: a second pass over its blocks
            from workbench.graph.chunked import TOKEN_SHIFT, chunked_node_tokens

            pair_codes, counts = chunked_node_tokens(self.lazy_ids, self.lazy_tokens, wanted, self.n_experts)
            shift = TOKEN_SHIFT
        else:
            offs = np.arange(n_layers, dtype=np.int64)[None, :, None] * self.n_experts
            node_code = self.expert_ids.astype(np.int64) + offs  # (T, L, k)
            hit = wanted[node_code]  # (T, L, k)
            tok = np.broadcast_to(self.token_ids.astype(np.int64)[:, None, None], node_code.shape)[hit]
            shift = int(max(int(self.token_ids.max(initial=0)) + 1, len(self.vocab), 1))
            pair_codes, counts = sorted_unique(node_code[hit] * shift + tok, counts=True)
        node_of, tok_of = np.divmod(pair_codes, shift)
        order = np.lexsort((tok_of, -counts, node_of))  # by node, then count desc, then token id
        node_of, tok_of, counts = node_of[order], tok_of[order], counts[order]
        first = np.flatnonzero(np.concatenate([[True], node_of[1:] != node_of[:-1]]))  # start of each node's run
        rank = np.arange(node_of.size) - np.repeat(first, np.diff(np.append(first, node_of.size)))
        for c, t, m in zip(
            node_of[rank < n].tolist(), tok_of[rank < n].tolist(), counts[rank < n].tolist(), strict=True
        ):
            text = self.vocab[t] if 0 <= t < len(self.vocab) else f"<{t}>"
            out[c].append((text, m))
        return out


def node_counts(
    ids: np.ndarray, weights: np.ndarray | None, dom: np.ndarray, n_experts: int, n_domains: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per (layer, expert): tokens routed, sum of their gate weights (zeros if ``weights`` is None), and
    tokens per domain. ``ids`` (T, L, k), ``weights`` (T, L, k), ``dom`` (T,) domain codes ->
    ``(L, E)``, ``(L, E)``, ``(D, L, E)``. NaN weights propagate into the gate sums."""
    n_layers = ids.shape[1]
    ne = n_experts
    node_code = ids.astype(np.int64) + np.arange(n_layers, dtype=np.int64)[None, :, None] * ne  # (T, L, k)
    flat = node_code.ravel()
    node_tokens = np.bincount(flat, minlength=n_layers * ne).reshape(n_layers, ne)
    node_gate = (
        np.bincount(flat, weights=np.asarray(weights, dtype=np.float64).ravel(), minlength=n_layers * ne).reshape(
            n_layers, ne
        )
        if weights is not None
        else np.zeros((n_layers, ne))
    )
    d_code = (np.broadcast_to(dom[:, None, None], node_code.shape) * (n_layers * ne) + node_code).ravel()
    node_domain = np.bincount(d_code, minlength=n_domains * n_layers * ne).reshape(n_domains, n_layers, ne)
    return node_tokens, node_gate, node_domain


def sorted_unique(values: np.ndarray, *, counts: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct ``values`` and how often each occurs, by one sort (numpy's hash-based unique is slower here)."""
    x = np.sort(values)
    first = np.flatnonzero(np.concatenate([[True], x[1:] != x[:-1]])) if x.size else np.zeros(0, dtype=np.int64)
    return x[first], (np.diff(np.append(first, x.size)) if counts else np.zeros(0, dtype=np.int64))


def _token_domains(sub: xr.Dataset) -> tuple[tuple[str, ...], np.ndarray]:
    """Domain names present and the domain index of each selected token. Shape (T,)."""
    seq_domain = np.array([str(d) for d in sub[S.SEQUENCE_DOMAIN].values], dtype=object)
    names = tuple(sorted(set(seq_domain.tolist())))
    code_of_seq = np.array([names.index(d) for d in seq_domain], dtype=np.int64)
    seq_idx = np.asarray(sub[S.SEQUENCE_INDEX].values, dtype=np.int64)
    return names, code_of_seq[seq_idx] if seq_idx.size else np.zeros(0, dtype=np.int64)


def count_routing(
    ds: xr.Dataset,
    selection: Selection | None = None,
    *,
    min_count: int | None = None,
    top_edges: int | None = None,
    flow: float | None = None,
    edges: bool = True,
    chunked: bool | None = None,
) -> RoutingCounts:
    """Count nodes and edges of the reasoning graph of ``selection`` (all tokens and layers if None).

    With pruning options (see ``workbench.graph.prune``), each layer pair is pruned as soon as it is
    counted and only its kept edges are stored; node counts and ``flow_totals`` stay complete.

    ``chunked``: count by token blocks on the active dask scheduler (``workbench.graph.chunked``)
    instead of reading the selection into memory; ``None`` chooses it for selections of at least
    ``CHUNKED_MIN_TOKENS`` tokens. Counts are equal either way; weight sums agree to rounding.

    Raises ``SelectionError`` (one line) when the selection is unknown, empty, or its layer range
    lies outside the model.
    """
    sub = select(ds, selection or Selection())
    from workbench.graph.chunked import CHUNKED_MIN_TOKENS

    if chunked is None:
        chunked = sub.sizes[S.TOKEN] >= CHUNKED_MIN_TOKENS
    if chunked:
        return _count_chunked(ds, sub, min_count=min_count, top_edges=top_edges, flow=flow, edges=edges)
    ids = np.asarray(sub[S.EXPERT_IDS].values)  # (T, L, k) int16
    weights = np.asarray(sub[S.GATE_WEIGHTS].values, dtype=np.float64)  # (T, L, k)
    token_ids = np.asarray(sub[S.TOKEN_ID].values)
    layers = np.asarray(sub[S.LAYER].values).astype(np.int64)
    model = ds.attrs.get("model") or {}
    n_experts = int(model.get("n_routed_experts") or int(ids.max(initial=-1)) + 1)
    vocab = list((ds.attrs.get("tokenizer") or {}).get("vocab", []))
    counts = count_arrays(
        ids,
        weights,
        layers=layers,
        n_experts=n_experts,
        token_domains=_token_domains(sub),
        token_ids=token_ids,
        vocab=vocab,
        weighted=bool(ds.attrs.get("has_gate_weights", True)),
        min_count=min_count,
        top_edges=top_edges,
        flow=flow,
        edges=edges,
    )
    counts.positions = np.asarray(sub[S.POSITION].values)
    return counts


@numba.njit(cache=True, nogil=True)
def _pair_counts(
    a: np.ndarray,
    b: np.ndarray,
    wa: np.ndarray,
    wb: np.ndarray,
    ne: int,
    weighted: bool,
    cnt: np.ndarray,
    wsum: np.ndarray,
) -> None:  # pragma: no cover (compiled)
    """Add every token's k × k edges between two layers into dense ``cnt``/``wsum`` at ``src * E + dst``.

    ``a``, ``b``: (T, k) expert ids at the two layers; ``wa``, ``wb``: (T, k) gate weights (unused if not weighted).
    """
    t_n, k = a.shape
    for t in range(t_n):
        for i in range(k):
            base = a[t, i] * ne
            for j in range(k):
                c = base + b[t, j]
                cnt[c] += 1
                if weighted:
                    wsum[c] += wa[t, i] * wb[t, j]


def _count_chunked(
    ds: xr.Dataset, sub: xr.Dataset, *, min_count: int | None, top_edges: int | None, flow: float | None, edges: bool
) -> RoutingCounts:
    """``count_routing`` of a large selection by token blocks (see ``workbench.graph.chunked``)."""
    import dask.array as da

    from workbench.graph.chunked import chunked_counts
    from workbench.graph.prune import check_pruning

    check_pruning(min_count, top_edges, flow)  # refuse bad options before the long pass
    ids = da.asarray(sub[S.EXPERT_IDS].data)
    model = ds.attrs.get("model") or {}
    n_experts = int(model.get("n_routed_experts") or int(ids.max().compute()) + 1)
    has_w = bool(ds.attrs.get("has_gate_weights", True))
    weights = da.asarray(sub[S.GATE_WEIGHTS].data) if has_w else None
    names, dom = _token_domains(sub)
    node_tokens, node_gate, node_domain, pair_cnt, pair_w = chunked_counts(ids, weights, dom, n_experts, len(names))
    t, n_layers, k = (int(x) for x in ids.shape)
    if t and int(node_tokens.sum()) != t * n_layers * k:
        raise ValueError(f"expert ids outside 0..{n_experts - 1}")
    weighted = has_w and not bool(np.isnan(node_gate).any())  # an ids-only capture has NaN weights
    if not weighted:
        node_gate = np.zeros_like(node_gate)
    counts = RoutingCounts(
        layers=np.asarray(sub[S.LAYER].values).astype(np.int64),
        n_experts=n_experts,
        top_k=k,
        n_tokens=t,
        weighted=weighted,
        node_tokens=node_tokens,
        node_gate=node_gate,
        domains=tuple(names),
        node_domain=node_domain,
        expert_ids=np.zeros((0, n_layers, k), dtype=np.int16),
        token_ids=np.asarray(sub[S.TOKEN_ID].data[:512]),
        vocab=list((ds.attrs.get("tokenizer") or {}).get("vocab", [])),
        pair_cnt=pair_cnt,
        pair_w=pair_w if weighted else None,
        lazy_ids=ids,
        lazy_tokens=da.asarray(sub[S.TOKEN_ID].data),
    )
    if edges:
        _collect_edges(counts, min_count=min_count, top_edges=top_edges, flow=flow)
    return counts


def _collect_edges(counts: RoutingCounts, *, min_count: int | None, top_edges: int | None, flow: float | None) -> None:
    """Fill ``counts.edges`` and ``flow_totals`` from ``pair_edges()``, pruning each pair as it comes."""
    from workbench.graph.prune import check_pruning, prune_pair

    check_pruning(min_count, top_edges, flow)
    pruning = bool(min_count) or top_edges is not None or flow is not None
    parts: list[tuple[np.ndarray, ...]] = []
    for p, codes, cnt, wsum in counts.pair_edges():
        counts.flow_totals[p] = float(wsum.sum())
        if pruning:
            kept = prune_pair(cnt, wsum, counts.flow_totals[p], min_count=min_count, top_edges=top_edges, flow=flow)
            codes, cnt, wsum = codes[kept], cnt[kept], wsum[kept]
        src, dst = np.divmod(codes, counts.n_experts)
        parts.append((np.full(codes.size, p, dtype=np.int64), src, dst, cnt, wsum))
    if parts:
        counts.edges = EdgeTable(*(np.concatenate(col) for col in zip(*parts, strict=True)))


def _empty_edges() -> EdgeTable:
    z = np.zeros(0, dtype=np.int64)
    return EdgeTable(z, z, z, z, np.zeros(0))


def count_arrays(
    ids: np.ndarray,
    weights: np.ndarray | None,
    *,
    layers: np.ndarray,
    n_experts: int,
    token_domains: tuple[tuple[str, ...], np.ndarray] | None = None,
    token_ids: np.ndarray | None = None,
    vocab: list[str] | None = None,
    weighted: bool = True,
    min_count: int | None = None,
    top_edges: int | None = None,
    flow: float | None = None,
    edges: bool = True,
) -> RoutingCounts:
    """``count_routing`` on plain arrays: ``ids`` (T, L, k) expert ids, ``weights`` (T, L, k) or None.

    Weights that are None or hold any NaN (an engine capture with ids only) make the counts
    unweighted: every edge weight is then its token count, and mean gate weights are undefined.
    ``edges=False`` counts nodes only (``pair_edges()`` still yields the edges, pair by pair).
    """
    from workbench.graph.prune import check_pruning  # prune imports EdgeTable from here

    check_pruning(min_count, top_edges, flow)
    t, _, k = ids.shape
    if t and (int(ids.min()) < 0 or int(ids.max()) >= n_experts):
        raise ValueError(f"expert ids outside 0..{n_experts - 1}")
    weighted = weighted and weights is not None and not bool(np.isnan(weights).any())
    w = np.asarray(weights, dtype=np.float64) if weighted and weights is not None else None
    ne = n_experts
    names, dom = token_domains if token_domains is not None else (("all",), np.zeros(t, dtype=np.int64))
    node_tokens, node_gate, node_domain = node_counts(ids, w, dom, ne, len(names))

    counts = RoutingCounts(
        layers=np.asarray(layers, dtype=np.int64),
        n_experts=ne,
        top_k=k,
        n_tokens=t,
        weighted=w is not None,
        node_tokens=node_tokens,
        node_gate=node_gate,
        domains=tuple(names),
        node_domain=node_domain,
        expert_ids=ids,
        token_ids=token_ids if token_ids is not None else np.zeros(t, dtype=np.int64),
        vocab=vocab or [],
        gate_weights=w,
    )
    if edges:
        _collect_edges(counts, min_count=min_count, top_edges=top_edges, flow=flow)
    return counts
