"""Communities of a reasoning graph: candidate "expert circuits".

Louvain modularity maximisation (Blondel et al. 2008, "Fast unfolding of communities in large
networks") as implemented by ``networkx.community.louvain_communities``, on the undirected view of
the graph with edge ``weight`` and a fixed seed, so the same graph always gives the same circuits.
Modularity Q = 1/(2m) Σ_ij [A_ij − γ k_i k_j / (2m)] δ(c_i, c_j) with resolution γ.
"""

from __future__ import annotations

import networkx as nx

SEED = 0


def expert_circuits(
    g: nx.DiGraph,
    *,
    weight: str = "weight",
    resolution: float = 1.0,
    seed: int = SEED,
) -> list[set[str]]:
    """Louvain communities of ``g``, ordered by total ``tokens`` (then by smallest node id).

    Edges with a non-positive weight (e.g. negative deltas of a difference graph) enter with their
    absolute value. Isolated nodes form their own communities.

    Examples
    --------
    >>> g = nx.DiGraph([("L1:E0", "L2:E0", {"weight": 5.0}), ("L1:E1", "L2:E1", {"weight": 5.0})])
    >>> [sorted(c) for c in expert_circuits(g)]
    [['L1:E0', 'L2:E0'], ['L1:E1', 'L2:E1']]

    See Also
    --------
    networkx.algorithms.community.louvain_communities
    """
    if g.number_of_nodes() == 0:
        return []
    u = nx.Graph()
    u.add_nodes_from(g.nodes)
    for a, b, d in g.edges(data=True):
        w = abs(float(d.get(weight, 1.0)))
        if u.has_edge(a, b):
            u[a][b]["w"] += w
        else:
            u.add_edge(a, b, w=w)
    found = nx.community.louvain_communities(u, weight="w", resolution=resolution, seed=seed)

    def load(c: set[str]) -> tuple[float, str]:
        return (-float(sum(g.nodes[n].get("tokens", 0) for n in c)), min(c))

    return sorted((set(c) for c in found), key=load)


def set_communities(g: nx.DiGraph, communities: list[set[str]] | None = None, **kwargs: object) -> list[set[str]]:
    """Store the community index of every node in its ``community`` attribute; returns the communities."""
    comms = communities if communities is not None else expert_circuits(g, **kwargs)  # type: ignore[arg-type]
    for i, c in enumerate(comms):
        for node in c:
            g.nodes[node]["community"] = i
    g.graph["n_communities"] = len(comms)
    return comms
