"""A deterministic layered layout for reasoning graphs.

x = the node's MoE layer (its real index); y = its rank within the layer, experts ordered by
community (``community`` attribute; largest circuits first), then by load (``tokens``, or
``weight`` = |delta| for difference graphs) descending, then by expert id. Difference graphs put
the experts with more load in the first selection (``sign`` +1) above those with more in the
second, so the two sides read as two bands. Ranks are centred on 0
and the heaviest node of the first community sits at the top. The same graph always gets the same
positions, so figures of different selections line up layer by layer.
"""

from __future__ import annotations

from collections import defaultdict

import networkx as nx

from workbench.graph.communities import set_communities


def _load(d: dict[str, object]) -> float:
    v = d.get("tokens", d.get("weight", 0.0))
    return float(v) if isinstance(v, int | float) else 0.0


def _band(g: nx.DiGraph, n: str) -> tuple[int, int]:
    """(side, community): difference graphs first by sign (+1 on top), every graph then by community."""
    side = -int(g.nodes[n].get("sign", 0)) if g.graph.get("kind") == "difference" else 0
    return side, int(g.nodes[n].get("community", 0))


def layered_layout(g: nx.DiGraph, *, communities: bool = True) -> dict[str, tuple[float, float]]:
    """Positions ``{node: (x, y)}``; also stored as node attributes ``x`` and ``y``.

    With ``communities=True`` nodes without a ``community`` attribute get one first
    (``set_communities``, seeded Louvain).

    Examples
    --------
    >>> g = nx.DiGraph([("L1:E0", "L2:E3")])
    >>> for n, e in (("L1:E0", 0), ("L2:E3", 3)): g.nodes[n].update(layer=int(n[1]), expert=e, tokens=1)
    >>> layered_layout(g, communities=False)
    {'L1:E0': (1.0, 0.0), 'L2:E3': (2.0, 0.0)}
    """
    if communities and any("community" not in d for _, d in g.nodes(data=True)):
        set_communities(g)
    by_layer: dict[int, list[str]] = defaultdict(list)
    for node, d in g.nodes(data=True):
        by_layer[int(d["layer"])].append(node)
    pos: dict[str, tuple[float, float]] = {}
    for layer, nodes in by_layer.items():
        nodes.sort(key=lambda n: (*_band(g, n), -_load(g.nodes[n]), int(g.nodes[n]["expert"])))
        mid = (len(nodes) - 1) / 2
        for rank, n in enumerate(nodes):
            pos[n] = (float(layer), float(mid - rank))
    for n, (x, y) in pos.items():
        g.nodes[n]["x"], g.nodes[n]["y"] = x, y
    return {n: pos[n] for n in g.nodes}
