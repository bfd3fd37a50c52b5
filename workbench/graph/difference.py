"""Difference graphs: where two selections (e.g. math minus code) route differently.

Normalisation (so selections of different sizes compare): each side is first turned into shares,

- node  ``load``  = tokens routed to (layer, expert) / tokens in the selection   (∈ [0, 1]; Σ per layer = k)
- edge  ``share`` = edge weight / total weight of its layer pair                 (∈ [0, 1]; Σ per pair = 1)

and the difference graph holds ``delta = a − b`` of those shares (∈ [−1, 1]), ``weight = |delta|``
and ``sign`` = +1 (more in a), −1 (more in b) or 0. Nodes and edges are the union of both sides; an
element missing on one side counts as share 0 there. The edge share uses each side's totals from
*before* pruning (``G.graph["flow_totals"]``), so pruned inputs keep exact shares for the edges they
hold; edges pruned away on one side count as 0, so difference unpruned graphs (or use
``difference_of_selections``, which differences in arrays and prunes the result).
If either side is ids-only (count weights), both sides use count shares.

Pruning is per sign (``workbench.graph.prune.prune_pair_by_sign``): ``top_edges=N`` keeps the N
edges of largest delta > 0 *and* the N of largest delta < 0 per layer pair, so both sides show.
``G.graph["flow_totals_by_sign"]`` holds, per source layer, (Σ delta > 0, Σ |delta| < 0) before
pruning, and ``G.graph["sides"]`` what the kept graph holds of each side (``side_summary``). An
edge's ``top_tokens`` are those of the side where it is heavier (a's where delta > 0, else b's).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import networkx as nx
import numpy as np
import xarray as xr
from numba import njit

from workbench.errors import GraphError
from workbench.graph.build import describe_selection
from workbench.graph.counts import count_selections
from workbench.graph.ids import node_id
from workbench.graph.prune import (
    check_pruning,
    describe_pruning,
    graph_flow_totals,
    graph_layers,
    prune_pair_by_sign,
    side_summary,
)
from workbench.graph.tables import EdgeTable, RoutingCounts, sorted_unique
from workbench.store.select import Selection


@njit(nogil=True, cache=True)
def _merge(
    codes_a: np.ndarray, val_a: np.ndarray, codes_b: np.ndarray, val_b: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover (compiled)
    """Merge of two sorted, distinct code arrays with a value each: (codes, a, b), 0.0 where absent."""
    n_a, n_b = codes_a.shape[0], codes_b.shape[0]
    codes = np.empty(n_a + n_b, np.int64)
    a = np.zeros(n_a + n_b)
    b = np.zeros(n_a + n_b)
    i = j = m = 0
    while i < n_a or j < n_b:
        if j >= n_b or (i < n_a and codes_a[i] < codes_b[j]):
            codes[m] = codes_a[i]
            a[m] = val_a[i]
            i += 1
        elif i >= n_a or codes_b[j] < codes_a[i]:
            codes[m] = codes_b[j]
            b[m] = val_b[j]
            j += 1
        else:
            codes[m] = codes_a[i]
            a[m] = val_a[i]
            b[m] = val_b[j]
            i += 1
            j += 1
        m += 1
    return codes[:m], a[:m], b[:m]


def _union(codes_a: np.ndarray, val_a: np.ndarray, codes_b: np.ndarray, val_b: np.ndarray) -> tuple[np.ndarray, ...]:
    """Union of two sparse vectors given by sorted, distinct int codes: (codes, a, b), zeros where absent.

    One compiled merge, O(M_a + M_b) (a layer pair of 10k K2 tokens has ~10⁵ edges on each side)."""
    f8 = np.float64
    return _merge(
        np.asarray(codes_a, np.int64), np.asarray(val_a, f8), np.asarray(codes_b, np.int64), np.asarray(val_b, f8)
    )


@njit(nogil=True, cache=True)
def _dense_union(
    cnt_a: np.ndarray, w_a: np.ndarray, cnt_b: np.ndarray, w_b: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover
    """The edges of one layer pair on either side, from both sides' dense (E²,) counts and weight sums
    (an empty weight array: the counts are the weights): ``(codes, weight a, weight b, count a, count b)``
    sorted by code, 0 where a side has no such edge, then each side's weights of its own edges only
    (in code order: what that side's sparse edge table holds). Two scans of the E² cells."""
    m = m_a = m_b = 0
    for c in range(cnt_a.shape[0]):
        if cnt_a[c] or cnt_b[c]:
            m += 1
            m_a += cnt_a[c] != 0
            m_b += cnt_b[c] != 0
    codes = np.empty(m, np.int64)
    wa, wb, na, nb = np.zeros(m), np.zeros(m), np.zeros(m), np.zeros(m)
    own_a, own_b = np.empty(m_a), np.empty(m_b)
    i = i_a = i_b = 0
    for c in range(cnt_a.shape[0]):
        if cnt_a[c] or cnt_b[c]:
            codes[i] = c
            if cnt_a[c]:
                na[i] = cnt_a[c]
                wa[i] = w_a[c] if w_a.shape[0] else cnt_a[c]
                own_a[i_a] = wa[i]
                i_a += 1
            if cnt_b[c]:
                nb[i] = cnt_b[c]
                wb[i] = w_b[c] if w_b.shape[0] else cnt_b[c]
                own_b[i_b] = wb[i]
                i_b += 1
            i += 1
    return codes, wa, wb, na, nb, own_a, own_b


@njit(nogil=True, cache=True)
def _shares(
    wa: np.ndarray, wb: np.ndarray, total_a: float, total_b: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover (compiled)
    """``share = weight / total`` on each side, ``delta = share_a − share_b``, and the deltas > 0 and < 0
    in order (for their sums), in one pass: ``(share_a, share_b, delta, positive, negative)``."""
    m = wa.shape[0]
    share_a, share_b, delta = np.empty(m), np.empty(m), np.empty(m)
    pos, neg = np.empty(m), np.empty(m)
    n_pos = n_neg = 0
    for i in range(m):
        share_a[i] = wa[i] / total_a
        share_b[i] = wb[i] / total_b
        d = share_a[i] - share_b[i]
        delta[i] = d
        if d > 0:
            pos[n_pos] = d
            n_pos += 1
        elif d < 0:
            neg[n_neg] = d
            n_neg += 1
    return share_a, share_b, delta, pos[:n_pos], neg[:n_neg]


def _or_empty(w: np.ndarray | None) -> np.ndarray:
    return w if w is not None else np.zeros(0)


def _build(
    layers: list[int],
    n_experts: int,
    node: tuple[np.ndarray, ...],
    edge: tuple[np.ndarray, ...],
    tops: dict[int, str],
    attrs: dict[str, Any],
    edge_tops: tuple[dict[int, str], dict[int, str]] = ({}, {}),
) -> nx.DiGraph:
    """The signed graph from union node codes (l·E+e) and edge codes ((p·E+src)·E+dst).

    ``node`` = (codes, load a, load b); ``edge`` = (codes, share a, share b, count a, count b);
    ``edge_tops`` = top tokens of each side's edges by edge code (an edge takes the heavier side's).
    """
    ne = n_experts
    ecodes, ea, eb, ca, cb = edge
    pair, rest = np.divmod(ecodes, ne * ne)
    src, dst = np.divmod(rest, ne)
    ncodes, na, nb = node
    if len(layers) > 1:
        wanted = sorted_unique(np.concatenate([pair * ne + src, (pair + 1) * ne + dst]))[0]
        sel = np.isin(ncodes, wanted)
        ncodes, na, nb = ncodes[sel], na[sel], nb[sel]
    ends = np.unique(np.concatenate([ncodes, pair * ne + src, (pair + 1) * ne + dst]))
    ids = {c: node_id(layers[c // ne], c % ne) for c in ends.tolist()}
    g = nx.DiGraph()
    nd = na - nb
    node_cols = {
        "layer": np.asarray(layers, dtype=np.int64)[ncodes // ne].tolist(),
        "expert": (ncodes % ne).tolist(),
        "load_a": na.tolist(),
        "load_b": nb.tolist(),
        "delta": nd.tolist(),
        "weight": np.abs(nd).tolist(),
        "sign": np.sign(nd).astype(np.int64).tolist(),
        "top_tokens": [tops.get(c, "") for c in ncodes.tolist()],
    }
    g.add_nodes_from(zip([ids[c] for c in ncodes.tolist()], _dicts(node_cols), strict=True))
    ed = ea - eb
    codes, pairs, deltas = ecodes.tolist(), pair.tolist(), ed.tolist()
    edge_cols = {
        "share_a": ea.tolist(),
        "share_b": eb.tolist(),
        "delta": deltas,
        "weight": np.abs(ed).tolist(),
        "sign": np.sign(ed).astype(np.int64).tolist(),
        "count_a": ca.astype(np.int64).tolist(),
        "count_b": cb.astype(np.int64).tolist(),
        "count": (ca + cb).astype(np.int64).tolist(),
        "top_tokens": [edge_tops[0 if d > 0 else 1].get(c, "") for c, d in zip(codes, deltas, strict=True)],
    }
    us = [ids[c] for c in (pair * ne + src).tolist()]
    vs = [ids[c] for c in ((pair + 1) * ne + dst).tolist()]
    g.add_edges_from(zip(us, vs, _dicts(edge_cols), strict=True))
    g.graph.update(kind="difference", layers=list(layers), n_experts=ne, weight_kind="abs_delta", **attrs)
    if "flow_totals" not in g.graph or "flow_totals_by_sign" not in g.graph:
        flow: dict[str, float] = {str(layer): 0.0 for layer in layers[:-1]}
        by_sign: dict[str, list[float]] = {str(layer): [0.0, 0.0] for layer in layers[:-1]}
        for p, d in zip(pairs, deltas, strict=True):  # summed in edge order
            flow[str(layers[p])] += abs(d)
            by_sign[str(layers[p])][0 if d > 0 else 1] += abs(d)
        g.graph.setdefault("flow_totals", flow)
        g.graph.setdefault("flow_totals_by_sign", by_sign)
    g.graph["sides"] = side_summary(g)
    return g


def _dicts(columns: dict[str, list[Any]]) -> Iterator[dict[str, Any]]:
    """Row dicts ``{name: value}`` of equal-length ``columns``, in row order."""
    names = list(columns)
    return (dict(zip(names, row, strict=True)) for row in zip(*columns.values(), strict=True))


def _side_arrays(g: nx.DiGraph, layers: list[int], ne: int, use_count: bool) -> tuple[np.ndarray, ...]:
    """One side's (node codes, loads, edge codes, edge shares, edge counts), each sorted by code."""
    pos = {layer: i for i, layer in enumerate(layers)}
    n_tok = max(int(g.graph.get("n_tokens", 1)), 1)
    k = int(g.graph.get("top_k", 1))
    ncodes = np.array([pos[int(d["layer"])] * ne + int(d["expert"]) for _, d in g.nodes(data=True)], dtype=np.int64)
    nload = np.array([float(d.get("tokens", 0)) / n_tok for _, d in g.nodes(data=True)])
    ft = graph_flow_totals(g)
    ecodes, eshare, ecount = [], [], []
    for u, v, d in g.edges(data=True):
        ecount.append(int(d.get("count", 0)))
        lu = int(g.nodes[u]["layer"])
        ecodes.append((pos[lu] * ne + int(g.nodes[u]["expert"])) * ne + int(g.nodes[v]["expert"]))
        if use_count:
            eshare.append(float(d.get("count", 0)) / (n_tok * k * k))
        else:
            total = ft.get(str(lu), 0.0)
            eshare.append(float(d.get("weight", 0.0)) / total if total else 0.0)
    ec = np.array(ecodes, dtype=np.int64)
    order_n, order_e = np.argsort(ncodes), np.argsort(ec)
    return ncodes[order_n], nload[order_n], ec[order_e], np.array(eshare)[order_e], np.array(ecount)[order_e]


def difference_graph(g_a: nx.DiGraph, g_b: nx.DiGraph, *, label_a: str = "a", label_b: str = "b") -> nx.DiGraph:
    """The signed difference ``g_a − g_b`` of two reasoning graphs (normalisation in the module docstring).

    Examples
    --------
    >>> g_math, g_code = reasoning_graph(ds, math), reasoning_graph(ds, code)  # doctest: +SKIP
    >>> d = difference_graph(g_math, g_code, label_a="math", label_b="code")  # doctest: +SKIP
    >>> d.edges["L1:E3", "L2:E7"]["delta"]  # L1→L2 flow share in math minus in code  # doctest: +SKIP
    """
    layers = sorted(set(graph_layers(g_a)) | set(graph_layers(g_b)))
    ne = max(int(g_a.graph.get("n_experts", 0)), int(g_b.graph.get("n_experts", 0)))
    if not ne:
        ne = 1 + max(int(d["expert"]) for g in (g_a, g_b) for _, d in g.nodes(data=True))
    use_count = not (g_a.graph.get("weighted", True) and g_b.graph.get("weighted", True))
    na_c, na_v, ea_c, ea_v, ea_n = _side_arrays(g_a, layers, ne, use_count)
    nb_c, nb_v, eb_c, eb_v, eb_n = _side_arrays(g_b, layers, ne, use_count)
    pos = {layer: i for i, layer in enumerate(layers)}
    tops: dict[int, str] = {}
    for g in (g_b, g_a):  # a's top tokens win where both have the node
        for _, d in g.nodes(data=True):
            tops[pos[int(d["layer"])] * ne + int(d["expert"])] = str(d.get("top_tokens", ""))
    attrs = _side_attrs(label_a, label_b, g_a.graph.get("n_tokens", 0), g_b.graph.get("n_tokens", 0), use_count)
    edge = (*_union(ea_c, ea_v, eb_c, eb_v), *_union(ea_c, ea_n, eb_c, eb_n)[1:])
    edge_tops = (_graph_edge_tops(g_a, pos, ne), _graph_edge_tops(g_b, pos, ne))
    return _build(layers, ne, _union(na_c, na_v, nb_c, nb_v), edge, tops, attrs, edge_tops)


def _graph_edge_tops(g: nx.DiGraph, pos: dict[int, int], ne: int) -> dict[int, str]:
    """``{edge code: top_tokens}`` of a reasoning graph's edges that list any."""
    out = {}
    for u, v, top in g.edges(data="top_tokens", default=""):
        if top:
            du, dv = g.nodes[u], g.nodes[v]
            out[(pos[int(du["layer"])] * ne + int(du["expert"])) * ne + int(dv["expert"])] = str(top)
    return out


def _side_attrs(label_a: str, label_b: str, n_a: int, n_b: int, use_count: bool) -> dict[str, Any]:
    return {
        "label_a": label_a,
        "label_b": label_b,
        "n_tokens_a": int(n_a),
        "n_tokens_b": int(n_b),
        "weighted": not use_count,
        "note": (
            f"delta = share in {label_a} − share in {label_b}; node share = tokens/selection tokens, "
            f"edge share = {'count' if use_count else 'gate-product weight'} / layer-pair total"
        ),
    }


def difference_of_selections(
    ds: xr.Dataset,
    selection_a: Selection,
    selection_b: Selection,
    *,
    min_count: int | None = None,
    top_edges: int | None = None,
    flow: float | None = None,
    top_tokens: int = 5,
) -> nx.DiGraph:
    """``difference_graph`` of two selections, differenced in arrays and then pruned per sign on ``|delta|``.

    Each layer pair is counted for both selections, differenced and pruned before the next, so the
    full edge tables are never held. ``min_count`` applies to the larger of the two counts of an
    edge; ``flow`` and ``top_edges`` rank edges by ``|delta|`` per layer pair and sign, so
    ``top_edges=N`` keeps up to N edges where a is heavier and N where b is (see
    ``workbench.graph.prune.prune_pair_by_sign``).
    """
    check_pruning(min_count, top_edges, flow)
    ca, cb = count_selections(ds, [selection_a, selection_b], edges=False)  # one read of the store
    if not np.array_equal(ca.layers, cb.layers):
        raise GraphError(
            f"selection_a and selection_b must cover the same layers, got {ca.layers.tolist()} and "
            f"{cb.layers.tolist()}; give both the same layers=A:B",
            param="selection_b",
        )
    use_count = not (ca.weighted and cb.weighted)
    if use_count:  # compare like with like: count shares on both sides
        ca.weighted = cb.weighted = False
    ne = ca.n_experts
    node = _union(*_node_loads(ca), *_node_loads(cb))
    parts: list[tuple[np.ndarray, ...]] = []
    totals = np.zeros((2, max(ca.layers.size - 1, 0)))  # per sign (a > b, b > a), per layer pair
    for (p, cnt_a, w_a), (_, cnt_b, w_b) in zip(ca.pair_dense(), cb.pair_dense(), strict=True):
        codes, sum_a, sum_b, n_a, n_b, own_a, own_b = _dense_union(cnt_a, _or_empty(w_a), cnt_b, _or_empty(w_b))
        # each side's share of its pair total (the total summed by numpy over that side's own edges, in
        # code order), the signed difference, and each sign's total |delta|
        share_a, share_b, delta, pos, neg = _shares(sum_a, sum_b, own_a.sum() or 1.0, own_b.sum() or 1.0)
        totals[:, p] = float(pos.sum()), float(-neg.sum())
        kept = prune_pair_by_sign(
            np.maximum(n_a, n_b),
            delta,
            (totals[0, p], totals[1, p]),
            min_count=min_count,
            top_edges=top_edges,
            flow=flow,
        )
        parts.append((p * ne * ne + codes[kept], share_a[kept], share_b[kept], n_a[kept], n_b[kept]))
    edge = tuple(np.concatenate(col) for col in zip(*parts, strict=True)) if parts else (np.zeros(0, np.int64),) * 5
    la, lb = describe_selection(selection_a), describe_selection(selection_b)
    attrs = _side_attrs(la, lb, ca.n_tokens, cb.n_tokens, use_count)
    attrs["pruning"] = describe_pruning(min_count, top_edges, flow)
    attrs["flow_totals"] = {str(ca.layers[p]): float(t) for p, t in enumerate(totals.sum(axis=0).tolist())}
    attrs["flow_totals_by_sign"] = {
        str(ca.layers[p]): [float(x), float(y)] for p, (x, y) in enumerate(totals.T.tolist())
    }
    pair, rest = np.divmod(edge[0], ne * ne)
    src, dst = np.divmod(rest, ne)
    shown = (
        sorted_unique(np.concatenate([pair * ne + src, (pair + 1) * ne + dst]))[0] if ca.layers.size > 1 else node[0]
    )
    # top tokens: a node's from a where a routes tokens to it, else b's; an edge's from the side where it is
    # heavier (a where delta > 0), so each side's pass counts only its own elements
    from_a = ca.node_tokens.ravel()[shown] > 0
    in_a = edge[1] - edge[2] > 0
    tops: dict[int, str] = {}
    edge_tops: tuple[dict[int, str], dict[int, str]] = ({}, {})
    for side, nodes, rows, out in ((ca, from_a, in_a, edge_tops[0]), (cb, ~from_a, ~in_a, edge_tops[1])):
        node_texts, edge_texts = _side_texts(
            side, shown[nodes], EdgeTable(pair[rows], src[rows], dst[rows], pair[rows], pair[rows]), top_tokens
        )
        tops.update((c, t) for c, t in zip(shown[nodes].tolist(), node_texts, strict=True) if t)
        out.update((c, t) for c, t in zip(edge[0][rows].tolist(), edge_texts, strict=True) if t)
    return _build(ca.layers.tolist(), ne, node, edge, tops, attrs, edge_tops)


def _side_texts(side: RoutingCounts, nodes: np.ndarray, edges: EdgeTable, n: int) -> tuple[list[str], list[str]]:
    """One side's top-token texts (``"tok (count) · …"``, tokens as decoded) of ``nodes`` and of ``edges``."""
    if n <= 0:
        return [""] * nodes.size, [""] * len(edges)
    return side.top_texts(*side.node_top_ids(nodes, n)), side.top_texts(*side.edge_top_ids(edges, n))


def _node_loads(c: RoutingCounts) -> tuple[np.ndarray, np.ndarray]:
    """Node codes with tokens (layer_pos * E + expert) and their loads tokens / |T|."""
    nodes = c.node_tokens.ravel()
    codes = np.flatnonzero(nodes)
    return codes, nodes[codes] / max(c.n_tokens, 1)
