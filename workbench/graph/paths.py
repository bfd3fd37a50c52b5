"""The heaviest expert paths through all layers of a reasoning graph.

A path picks one expert per MoE layer, from the first layer of the graph to its last, along edges
of the graph. Its weight is the sum of its edge weights (``weight`` = summed products of gate
weights, or counts for ids-only stores). The ``n`` heaviest are found exactly by dynamic
programming over the layered DAG, keeping the ``n`` best partial paths per node: O(E · n log n).
"""

from __future__ import annotations

import heapq
import itertools
from collections import defaultdict

import networkx as nx


def heaviest_paths(g: nx.DiGraph, n: int = 5, *, weight: str = "weight") -> list[tuple[list[str], float]]:
    """The ``n`` heaviest paths from the first to the last layer of ``g``, heaviest first.

    Returns ``[(node ids, total weight), ...]``; empty when no path spans all layers (prune less).
    Ties are broken by the node ids, so the result is deterministic.

    Examples
    --------
    >>> g = nx.DiGraph()
    >>> g.add_nodes_from([("L1:E0", {"layer": 1}), ("L1:E1", {"layer": 1}), ("L2:E0", {"layer": 2})])
    >>> g.add_edge("L1:E0", "L2:E0", weight=2.0); g.add_edge("L1:E1", "L2:E0", weight=1.0)
    >>> heaviest_paths(g, 1)
    [(['L1:E0', 'L2:E0'], 2.0)]

    See Also
    --------
    workbench.graph.prune.prune_graph : prune first; the DP visits every edge.
    """
    if n < 1 or g.number_of_nodes() == 0:
        return []
    by_layer: dict[int, list[str]] = defaultdict(list)
    for node, layer in g.nodes(data="layer"):
        by_layer[int(layer)].append(node)
    layers = sorted(by_layer)
    # best[node]: up to n (weight, path) partial paths ending at node, heaviest first
    best: dict[str, list[tuple[float, tuple[str, ...]]]] = {v: [(0.0, (v,))] for v in sorted(by_layer[layers[0]])}
    for layer in layers[1:]:
        nxt: dict[str, list[tuple[float, tuple[str, ...]]]] = {}
        for v in sorted(by_layer[layer]):
            cands = [
                (s + float(d.get(weight, 0.0)), (*path, v))
                for u, _, d in g.in_edges(v, data=True)
                if u in best
                for s, path in best[u]
            ]
            if cands:
                nxt[v] = heapq.nsmallest(n, cands, key=lambda c: (-c[0], c[1]))
        best = nxt
        if not best:
            return []
    final = heapq.nsmallest(n, (c for paths in best.values() for c in paths), key=lambda c: (-c[0], c[1]))
    return [(list(path), w) for w, path in final]


def path_subgraph(g: nx.DiGraph, path: list[str]) -> nx.DiGraph:
    """The subgraph of ``g`` along ``path`` (its nodes and consecutive edges), attributes kept."""
    edges = list(itertools.pairwise(path))
    return g.edge_subgraph(edges).copy() if edges else g.subgraph(path).copy()
