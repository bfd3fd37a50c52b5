"""Reasoning graphs: the expert pathways of a selection of tokens, as networkx graphs.

Build (``reasoning_graph``), prune (``prune_graph``), find heaviest paths and expert circuits,
difference two selections, lay out by layer, summarise per layer for a terminal
(``graph_summary``), and export to GraphML, GEXF, node-link JSON, Cytoscape.js JSON and
circuit-tracer data folders. Figures live in ``workbench.viz``.
"""

from __future__ import annotations

from workbench.graph.build import counts_to_graph, describe_selection, reasoning_graph, token_path
from workbench.graph.communities import expert_circuits, set_communities
from workbench.graph.counts import count_arrays, count_routing
from workbench.graph.difference import difference_graph, difference_of_selections
from workbench.graph.ids import node_id, parse_node_id
from workbench.graph.layout import layered_layout
from workbench.graph.paths import heaviest_paths, path_subgraph
from workbench.graph.prune import prune_edges, prune_graph
from workbench.graph.summary import graph_summary
from workbench.graph.tables import EdgeTable, RoutingCounts

__all__ = [
    "EdgeTable",
    "RoutingCounts",
    "count_arrays",
    "count_routing",
    "counts_to_graph",
    "describe_selection",
    "difference_graph",
    "difference_of_selections",
    "expert_circuits",
    "graph_summary",
    "heaviest_paths",
    "layered_layout",
    "node_id",
    "parse_node_id",
    "path_subgraph",
    "prune_edges",
    "prune_graph",
    "reasoning_graph",
    "set_communities",
    "token_path",
]
