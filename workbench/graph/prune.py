"""Pruning a reasoning graph to the edges that carry its flow.

Three rules, applied in this order when combined (each one per layer pair, so every layer stays
represented):

1. ``min_count``: drop edges taken by fewer than ``min_count`` tokens.
2. ``flow``: keep the smallest set of heaviest edges whose weights sum to at least ``flow`` × the
   layer pair's total weight (the total before any pruning, so ``flow=0.5`` means "half of all
   routing flow between these two layers").
3. ``top_edges``: keep the ``top_edges`` heaviest edges of each layer pair.

Ties: edges of equal weight rank by source expert id, then target expert id, ascending (the
smaller ids are kept first). Edges are ranked in that order whatever order the tokens were counted
in or the edges were added to a graph, so pruning is deterministic. (Weights that are sums of gate
products can differ in the last bit when the same tokens are summed in another order; counts are exact.)
Nodes left without an edge are dropped (except in a one-layer graph, which has no edges).

Difference graphs (``workbench.graph.difference``) are pruned **per sign**: the rules run separately on
the edges where ``a > b`` (delta > 0) and where ``b > a`` (delta < 0), each against its own side's
total |delta| of the layer pair, so ``top_edges=N`` keeps up to N edges of each sign and a figure of
``math − code`` shows where code is heavier as well as where math is (pruning on |delta| alone keeps
only the side whose differences are the more concentrated). Edges with delta = 0 carry no
difference and are dropped by ``flow`` and ``top_edges``. ``prune_graph`` restates what each side
keeps (``G.graph["sides"]``, ``side_summary``).

The array functions here work on an ``EdgeTable``; ``prune_graph`` applies the same rules to a
networkx graph built by ``reasoning_graph`` or ``difference_graph``.
"""

from __future__ import annotations

import json
from typing import Any

import networkx as nx
import numpy as np

from workbench.errors import GraphError
from workbench.graph.tables import EdgeTable


def check_pruning(min_count: int | None, top_edges: int | None, flow: float | None) -> None:
    """Raise a one-line ``GraphError`` naming the pruning option out of range (the CLI checks before any work)."""
    if min_count is not None and min_count < 0:
        raise GraphError(f"min_count must be >= 0, got {min_count}", param="min_count")
    if top_edges is not None and top_edges < 1:
        raise GraphError(f"top_edges must be >= 1, got {top_edges}", param="top_edges")
    if flow is not None and not 0.0 < flow <= 1.0:
        raise GraphError(f"flow must be a share in (0, 1], got {flow}", param="flow")


def _pair_groups(edges: EdgeTable) -> tuple[np.ndarray, np.ndarray]:
    """Rows ordered by (pair, src, dst) and the start of each pair's run in that order (plus the end)."""
    ne = int(max(edges.src.max(initial=0), edges.dst.max(initial=0))) + 1
    code = (edges.pair * ne + edges.src) * ne + edges.dst
    order = np.arange(code.size) if bool(np.all(code[1:] > code[:-1])) else np.argsort(code, kind="stable")
    pair = edges.pair[order]
    bounds = np.flatnonzero(np.concatenate([[True], pair[1:] != pair[:-1], [True]]))
    return order, bounds


def _heaviest_first(weight: np.ndarray, top: int | None) -> np.ndarray:
    """Indices of ``weight`` by weight desc, ties in index order; only the first ``top`` if given.

    Callers pass one layer pair's edges in (src, dst) order, so ties go to the smaller expert ids.
    With ``top``, only the ``top`` heaviest (and any ties at the threshold) are sorted: O(M + top log top).
    """
    if top is not None and top < weight.size:
        threshold = -np.partition(-weight, top - 1)[top - 1]
        cand = np.flatnonzero(weight >= threshold)  # the top entries plus any ties at the threshold, in order
        return cand[np.argsort(-weight[cand], kind="stable")][:top]
    return np.argsort(-weight, kind="stable")


FLOW_FIRST_GUESS = 1024  # edges ranked first when looking for a flow prefix; doubled until it is enough


def _flow_prefix(weight: np.ndarray, target: float, top: int | None) -> np.ndarray:
    """The ranked edges (``_heaviest_first`` order) kept by the flow rule: each edge whose heavier edges
    sum to less than ``target``; at most ``top`` of them if given.

    The kept set is a prefix of the ranking, so the ranking is built only as far as needed: the
    ``m`` heaviest edges are ranked and summed (m = ``top``, else 1024 doubled until the prefix reaches
    ``target``), instead of sorting all of a layer pair's ~10⁵ edges. The running sum over that prefix
    is the same sequence of float additions as over the full ranking, so the kept set is identical.
    (Negative weights, possible in ``prune_graph(G, weight=...)`` of a signed attribute, rank everything.)
    """
    monotone = not (weight.size and float(weight.min()) < 0)  # a prefix only when no weight is negative
    m = (top if top is not None else FLOW_FIRST_GUESS) if monotone else None
    while True:
        ranked = _heaviest_first(weight, m)
        before = np.cumsum(weight[ranked]) - weight[ranked]  # weight of the heavier edges of this pair
        kept = ranked[before < target]  # keep while those have not reached the target
        if not monotone:
            return kept[:top]
        if top is not None or ranked.size == weight.size or not before[-1] < target:
            return kept
        assert m is not None
        m *= 2


def prune_pair(
    count: np.ndarray,
    weight: np.ndarray,
    total: float,
    *,
    min_count: int | None = None,
    top_edges: int | None = None,
    flow: float | None = None,
) -> np.ndarray:
    """Indices of the kept edges of ONE layer pair, whose edges are given in (src, dst) order. Shape (M',).

    ``total`` is the pair's total weight before pruning (the reference of ``flow``).
    """
    idx = np.arange(count.size) if not min_count else np.flatnonzero(count >= min_count)
    if flow is None and top_edges is None:
        return idx
    w = weight[idx]
    if flow is not None:
        ranked = _flow_prefix(w, flow * total * (1 - 1e-12), top_edges)
    else:
        ranked = _heaviest_first(w, top_edges)
    return np.sort(idx[ranked])


def prune_pair_by_sign(
    count: np.ndarray,
    delta: np.ndarray,
    totals: tuple[float, float],
    *,
    min_count: int | None = None,
    top_edges: int | None = None,
    flow: float | None = None,
) -> np.ndarray:
    """``prune_pair`` for ONE layer pair of a difference graph, run on each sign separately. Shape (M',).

    ``delta`` (M,) is signed (a − b), edges in (src, dst) order; ``totals`` = (Σ delta over delta > 0,
    Σ |delta| over delta < 0) of the pair before pruning, the reference of ``flow`` for each side.
    Without ``flow`` and ``top_edges`` this is ``prune_pair`` on |delta| (``min_count`` only).
    """
    weight = np.abs(delta)
    if flow is None and top_edges is None:
        return prune_pair(count, weight, 0.0, min_count=min_count)
    kept = []
    for side, total in zip((delta > 0, delta < 0), totals, strict=True):
        idx = np.flatnonzero(side)  # stays in (src, dst) order, so ties break as in prune_pair
        kept.append(
            idx[prune_pair(count[idx], weight[idx], total, min_count=min_count, top_edges=top_edges, flow=flow)]
        )
    return np.sort(np.concatenate(kept))


def sign_totals(pair: np.ndarray, delta: np.ndarray, n_pairs: int) -> np.ndarray:
    """(2, n_pairs): Σ delta where delta > 0 and Σ |delta| where delta < 0, per layer pair ``pair`` (M,)."""
    pos = np.bincount(pair, weights=np.where(delta > 0, delta, 0.0), minlength=n_pairs)
    neg = np.bincount(pair, weights=np.where(delta < 0, -delta, 0.0), minlength=n_pairs)
    return np.stack([pos, neg])


def prune_edges(
    edges: EdgeTable,
    *,
    min_count: int | None = None,
    top_edges: int | None = None,
    flow: float | None = None,
    flow_totals: np.ndarray | None = None,
    delta: np.ndarray | None = None,
) -> np.ndarray:
    """Boolean keep-mask over ``edges`` (shape (M,)) for the rules in the module docstring.

    ``flow_totals[p]`` is the total weight of layer pair ``p`` before pruning; if None, the sum of
    the weights in ``edges`` is used. ``count_routing`` applies the same rule (``prune_pair``) to each
    layer pair as it is counted, so a large selection never holds its full edge table.

    ``delta`` (M,), the signed differences of a difference graph, prunes each sign separately
    (``prune_pair_by_sign``); ``flow_totals`` is then (2, P), the per-sign totals (``sign_totals``).

    Examples
    --------
    >>> import numpy as np
    >>> e = EdgeTable(np.array([0, 0, 0]), np.array([0, 0, 1]), np.array([0, 1, 0]),
    ...               np.array([5, 3, 1]), np.array([5.0, 3.0, 1.0]))
    >>> prune_edges(e, flow=0.6).tolist()
    [True, True, False]
    """
    check_pruning(min_count, top_edges, flow)
    if not min_count and flow is None and top_edges is None:
        return np.ones(len(edges), dtype=bool)
    order, bounds = _pair_groups(edges)
    n_pairs = int(edges.pair.max(initial=-1)) + 1
    if flow is not None and flow_totals is None:
        flow_totals = (
            np.bincount(edges.pair, weights=edges.weight, minlength=n_pairs)
            if delta is None
            else sign_totals(edges.pair, delta, n_pairs)
        )
    out = np.zeros(len(edges), dtype=bool)
    for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        rows = order[a:b]
        if rows.size == 0:
            continue
        p = int(edges.pair[rows[0]])
        if delta is not None:
            totals = (float(flow_totals[0, p]), float(flow_totals[1, p])) if flow_totals is not None else (0.0, 0.0)
            kept = prune_pair_by_sign(
                edges.count[rows], delta[rows], totals, min_count=min_count, top_edges=top_edges, flow=flow
            )
        else:
            total = float(flow_totals[p]) if flow_totals is not None else 0.0
            kept = prune_pair(
                edges.count[rows], edges.weight[rows], total, min_count=min_count, top_edges=top_edges, flow=flow
            )
        out[rows[kept]] = True
    return out


def graph_layers(g: nx.DiGraph) -> list[int]:
    """The MoE layers of ``g``: ``g.graph["layers"]`` (also as a JSON string) plus those of its nodes."""
    listed = g.graph.get("layers", [])
    if isinstance(listed, str):
        listed = json.loads(listed)
    return sorted({int(x) for x in listed} | {int(d) for _, d in g.nodes(data="layer")})


def graph_flow_totals(g: nx.DiGraph, key: str = "flow_totals") -> dict[str, Any]:
    """``g.graph[key]`` as ``{source layer as str: total}`` (also read back from a JSON string).

    ``flow_totals`` holds one float per layer; ``flow_totals_by_sign`` (difference graphs) a
    ``(positive, negative)`` pair of floats per layer.
    """
    ft = g.graph.get(key) or {}
    if isinstance(ft, str):
        ft = json.loads(ft)
    return {str(k): (float(v) if isinstance(v, int | float) else tuple(float(x) for x in v)) for k, v in ft.items()}


def graph_edge_table(g: nx.DiGraph, weight: str = "weight") -> tuple[EdgeTable, list[tuple[str, str]]]:
    """The edges of a reasoning graph as an ``EdgeTable`` (pairs = source layers) plus their (u, v) ids."""
    uv = list(g.edges())
    layers = graph_layers(g)
    pos = {layer: i for i, layer in enumerate(layers)}
    pair = np.array([pos[int(g.nodes[u]["layer"])] for u, _ in uv], dtype=np.int64)
    src = np.array([int(g.nodes[u]["expert"]) for u, _ in uv], dtype=np.int64)
    dst = np.array([int(g.nodes[v]["expert"]) for _, v in uv], dtype=np.int64)
    count = np.array([int(g.edges[e].get("count", 0)) for e in uv], dtype=np.int64)
    wt = np.array([float(g.edges[e].get(weight, 0.0)) for e in uv], dtype=np.float64)
    return EdgeTable(pair, src, dst, count, wt), uv


def prune_graph(
    g: nx.DiGraph,
    *,
    min_count: int | None = None,
    top_edges: int | None = None,
    flow: float | None = None,
    weight: str = "weight",
) -> nx.DiGraph:
    """A pruned copy of ``g`` (rules in the module docstring); nodes left without edges are dropped.

    The flow share uses ``g.graph["flow_totals"]`` (per source layer, totals before pruning) when
    present, so pruning an already pruned graph still measures against all of the flow. A difference
    graph (``g.graph["kind"] == "difference"``, pruned on its ``weight`` = |delta|) is pruned per
    sign, against ``g.graph["flow_totals_by_sign"]`` when present.

    See Also
    --------
    workbench.graph.build.reasoning_graph : builds and prunes in one go, in arrays (fast path).
    """
    edges, uv = graph_edge_table(g, weight)
    totals = None
    delta = None
    if g.graph.get("kind") == "difference" and weight == "weight":
        delta = np.array([float(g.edges[e].get("delta", 0.0)) for e in uv], dtype=np.float64)
        by_sign = graph_flow_totals(g, "flow_totals_by_sign")
        if flow is not None and by_sign:
            totals = np.array([by_sign.get(str(layer), (0.0, 0.0)) for layer in graph_layers(g)], dtype=np.float64).T
    else:
        ft = graph_flow_totals(g)
        if flow is not None and ft:
            totals = np.array([ft.get(str(layer), 0.0) for layer in graph_layers(g)], dtype=np.float64)
    keep = prune_edges(edges, min_count=min_count, top_edges=top_edges, flow=flow, flow_totals=totals, delta=delta)
    out = nx.DiGraph()
    out.graph.update(g.graph)
    kept = [uv[i] for i in np.flatnonzero(keep).tolist()]
    nodes = {n for e in kept for n in e}
    if g.number_of_edges() == 0:  # one-layer graph: nothing to prune but nodes
        nodes = set(g.nodes)
    out.add_nodes_from((n, dict(g.nodes[n])) for n in g.nodes if n in nodes)
    out.add_edges_from((u, v, dict(g.edges[u, v])) for u, v in kept)
    out.graph["pruning"] = describe_pruning(min_count, top_edges, flow, previous=g.graph.get("pruning"))
    if g.graph.get("kind") == "difference":
        out.graph["sides"] = side_summary(out)
    return out


def describe_pruning(min_count: int | None, top_edges: int | None, flow: float | None, previous: object = None) -> str:
    """A short human-readable record of the pruning applied (kept in ``G.graph["pruning"]``)."""
    parts = []
    if min_count:
        parts.append(f"min_count={min_count}")
    if flow is not None:
        parts.append(f"flow={flow:g}")
    if top_edges is not None:
        parts.append(f"top_edges={top_edges}")
    text = ", ".join(parts) or "none"
    if previous and previous != "none":
        return f"{previous}; {text}"
    return text


def side_summary(g: nx.DiGraph) -> dict[str, dict[str, float]]:
    """What a difference graph holds of each side: ``{"a": {...}, "b": {...}}``.

    Per side (a: delta > 0, b: delta < 0): ``edges`` and ``nodes`` of that sign, ``tokens`` of its
    selection, ``delta_kept`` = Σ |delta| of its kept edges, ``delta_total`` = the same over every edge
    of the selection before pruning (``flow_totals_by_sign``; for shares this is, per layer pair, the
    total variation distance between the two sides' edge-share distributions, summed over pairs), and
    ``kept`` = delta_kept / delta_total, the part of that side's difference the graph shows.
    """
    totals = graph_flow_totals(g, "flow_totals_by_sign")
    edge_deltas = [float(d) for *_, d in g.edges(data="delta", default=0.0)]
    node_signs = [_sign(float(d)) for _, d in g.nodes(data="delta", default=0.0)]
    out: dict[str, dict[str, float]] = {}
    for i, (side, sign) in enumerate((("a", 1), ("b", -1))):
        mine = [abs(d) for d in edge_deltas if _sign(d) == sign]
        kept = sum(mine)  # in edge order
        total = sum(float(v[i]) for v in totals.values())
        out[side] = {
            "edges": len(mine),
            "nodes": node_signs.count(sign),
            "tokens": int(g.graph.get(f"n_tokens_{side}", 0)),
            "delta_kept": kept,
            "delta_total": total,
            "kept": kept / total if total else 0.0,
        }
    return out


def _sign(x: float) -> int:
    """+1, −1 or 0 (NaN: 0), as ``np.sign`` for the values a graph holds, without a numpy call per value."""
    return (x > 0) - (x < 0)
