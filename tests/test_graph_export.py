"""Data exports keep every node, edge and weight: read back with networkx, JSON checked against schemas.

The circuit-tracer folder is tested in tests/test_viewers_circuit_tracer_export.py (and in its own
frontend, tests/test_viewers_circuit_tracer.py)."""

from __future__ import annotations

import json

import jsonschema
import networkx as nx
import pytest
from graph_helpers import open_hand_store, write_store

from workbench.errors import WorkbenchError
from workbench.graph import difference_of_selections, layered_layout, reasoning_graph, set_communities
from workbench.graph.export import ExportError, export_format, write_graph_data
from workbench.store.select import parse_where

NODE_LINK_SCHEMA = {
    "type": "object",
    "required": ["directed", "multigraph", "graph", "nodes", "edges"],
    "properties": {
        "directed": {"const": True},
        "nodes": {
            "type": "array",
            "items": {"type": "object", "required": ["id", "layer", "expert", "tokens", "load"]},
        },
        "edges": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["source", "target", "count", "weight"],
                "properties": {"count": {"type": "integer"}, "weight": {"type": "number"}},
            },
        },
    },
}
CYTOSCAPE_SCHEMA = {
    "type": "object",
    "required": ["data", "directed", "elements"],
    "properties": {
        "elements": {
            "type": "object",
            "required": ["nodes", "edges"],
            "properties": {
                "nodes": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["data", "position"],
                        "properties": {
                            "data": {"type": "object", "required": ["id", "layer", "expert"]},
                            "position": {"type": "object", "required": ["x", "y"]},
                        },
                    },
                },
                "edges": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["data"],
                        "properties": {"data": {"type": "object", "required": ["source", "target", "weight", "count"]}},
                    },
                },
            },
        }
    },
}


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    return open_hand_store(write_store(tmp_path_factory.mktemp("export") / "hand.zarr"))


@pytest.fixture(scope="module")
def graph(ds):
    g = reasoning_graph(ds)
    set_communities(g)
    layered_layout(g)
    return g


def _same_graph(g, h, node_keys=("layer", "expert", "tokens", "load", "mean_gate", "share_math", "top_tokens")):
    assert set(h.nodes) == set(g.nodes)
    assert set(h.edges) == set(g.edges)
    for n in g.nodes:
        for k in node_keys:
            assert h.nodes[n][k] == g.nodes[n][k], (n, k)
    for e in g.edges:
        assert int(h.edges[e]["count"]) == g.edges[e]["count"]
        assert float(h.edges[e]["weight"]) == g.edges[e]["weight"]  # exact: floats written in full


@pytest.mark.parametrize("suffix", [".graphml", ".gexf"])
def test_graphml_and_gexf_read_back(graph, tmp_path, suffix):
    path = write_graph_data(graph, tmp_path / f"g{suffix}")
    h = nx.read_graphml(path) if suffix == ".graphml" else nx.read_gexf(path)
    assert h.is_directed()
    _same_graph(graph, h)
    if suffix == ".graphml":
        assert json.loads(h.graph["flow_totals"]) == graph.graph["flow_totals"]
        assert h.graph["weight_kind"] == "gate_product"


def test_node_link_json(graph, tmp_path):
    data = json.loads(write_graph_data(graph, tmp_path / "g.json").read_text())
    jsonschema.validate(data, NODE_LINK_SCHEMA)
    _same_graph(graph, nx.node_link_graph(data, edges="edges"))
    assert data["graph"]["layers"] == [1, 2, 3]


def test_cytoscape_json(graph, tmp_path):
    for name in ("g.cyjs", "g.cy.json"):
        data = json.loads(write_graph_data(graph, tmp_path / name).read_text())
        jsonschema.validate(data, CYTOSCAPE_SCHEMA)
        _same_graph(graph, nx.cytoscape_graph(data))
        pos = {el["data"]["id"]: el["position"] for el in data["elements"]["nodes"]}
        assert pos["L1:E0"]["x"] == 100.0 and pos["L3:E0"]["x"] == 300.0


def test_difference_graph_exports_keep_signed_deltas(ds, tmp_path):
    d = difference_of_selections(ds, parse_where("domain=math"), parse_where("domain=code"))
    h = nx.read_graphml(write_graph_data(d, tmp_path / "d.graphml"))
    for e in d.edges:
        assert float(h.edges[e]["delta"]) == d.edges[e]["delta"] and int(h.edges[e]["sign"]) == d.edges[e]["sign"]


def test_format_choice_and_bad_names(tmp_path, graph):
    assert export_format("a.json") == "node-link" and export_format("a.CT") == "circuit-tracer"
    assert export_format("a.json", "cytoscape") == "cytoscape"
    with pytest.raises(ExportError, match="unsupported file type"):
        export_format("graph.docx")
    with pytest.raises(WorkbenchError, match="does not exist"):
        write_graph_data(graph, tmp_path / "missing" / "g.graphml")
    assert list(tmp_path.iterdir()) == []


def test_failed_export_leaves_no_partial_file(graph, tmp_path):
    bad = graph.copy()
    bad.add_edge("L1:E0", "L2:E0", weight=object())  # not serialisable: the writer fails midway
    bad.nodes["L1:E0"]["junk"] = {1, 2}
    target = tmp_path / "g.json"
    with pytest.raises(TypeError):
        write_graph_data(bad, target)
    assert list(tmp_path.iterdir()) == []


def test_graph_for_demo_writes_each_domain_and_the_difference(ds, tmp_path):
    from workbench.viz.graph_demo import graph_for_demo

    written = graph_for_demo(ds, tmp_path / "graphs", formats=("graphml", "ct"))
    assert sorted(p.name for p in written) == sorted(
        f"graph-{stem}.{ext}" for stem in ("code", "math", "math-minus-code") for ext in ("graphml", "ct")
    )
    diff = nx.read_graphml(tmp_path / "graphs" / "graph-math-minus-code.graphml")
    assert diff.graph["kind"] == "difference" and diff.graph["label_a"] == "domain=math"
    assert (tmp_path / "graphs" / "graph-math.ct" / "hand-experts").is_dir()  # feature files for circuit-tracer
    math = nx.read_graphml(tmp_path / "graphs" / "graph-math.graphml")
    assert int(math.graph["n_tokens"]) == 3
