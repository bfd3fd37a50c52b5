"""GraphML and GEXF read back by the libraries people load them with: networkx and igraph.

networkx reads both (every node, edge and attribute is compared in tests/test_graph_export.py; here a
K2-like graph of a synthetic transcript store is read back whole). igraph reads GraphML (it has no GEXF
reader); its vertices keep our node ids in ``id`` and every attribute with its type.
"""

from __future__ import annotations

import json

import networkx as nx
import pytest
from widgets_helpers import open_test_store, transcript_store

from workbench.graph import layered_layout, reasoning_graph, set_communities
from workbench.graph.export import write_graph_data


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    root = tmp_path_factory.mktemp("files")
    ds = open_test_store(transcript_store(root / "t.zarr", n_steps=4, n_layers=6, n_experts=64))
    g = reasoning_graph(ds, top_edges=5)
    set_communities(g)
    layered_layout(g)
    return g, root


@pytest.mark.parametrize("suffix", [".graphml", ".gexf"])
def test_networkx_reads_graphml_and_gexf(graph, suffix):
    g, root = graph
    path = write_graph_data(g, root / f"g{suffix}")
    h = nx.read_graphml(path) if suffix == ".graphml" else nx.read_gexf(path)
    assert h.is_directed() and set(h.nodes) == set(g.nodes) and set(h.edges) == set(g.edges)
    for u, v, d in g.edges(data=True):
        assert float(h.edges[u, v]["weight"]) == d["weight"] and int(h.edges[u, v]["count"]) == d["count"]
    for n, d in g.nodes(data=True):
        assert int(h.nodes[n]["layer"]) == d["layer"] and float(h.nodes[n]["load"]) == d["load"]
        assert int(h.nodes[n]["community"]) == d["community"]


def test_igraph_reads_graphml(graph):
    igraph = pytest.importorskip("igraph")
    g, root = graph
    path = write_graph_data(g, root / "g.graphml")
    h = igraph.Graph.Read_GraphML(str(path))
    assert h.is_directed() and h.vcount() == g.number_of_nodes() and h.ecount() == g.number_of_edges()
    names = h.vs["id"]
    assert set(names) == set(g.nodes)
    edges = {(names[e.source], names[e.target]): e for e in h.es}
    assert set(edges) == set(g.edges)
    for (u, v), e in edges.items():
        assert e["weight"] == g.edges[u, v]["weight"] and int(e["count"]) == g.edges[u, v]["count"]
    for vtx in h.vs:
        d = g.nodes[vtx["id"]]
        assert int(vtx["layer"]) == d["layer"] and int(vtx["expert"]) == d["expert"] and vtx["load"] == d["load"]
        assert vtx["top_tokens"] == d["top_tokens"]
    assert json.loads(h["flow_totals"]) == g.graph["flow_totals"] and h["weight_kind"] == "gate_product"
