"""Our Cytoscape.js JSON (``.cyjs``) loaded into Cytoscape.js itself (npm ``cytoscape``), in headless Chromium.

The page fetches the exported file and hands its ``elements`` to ``cytoscape()`` with the ``preset``
layout, as a user of Cytoscape.js would; the test reads back what Cytoscape.js holds: node and edge
counts, edge weights, and every node's position, which must be the workbench's layered layout (x by
layer, y by rank in the layer), not a layout Cytoscape.js computed.
"""

from __future__ import annotations

import json

import pytest
from viewers_helpers import chromium_page, js_file, node_modules
from widgets_helpers import open_test_store, transcript_store

from workbench.graph import layered_layout, reasoning_graph, set_communities
from workbench.graph.export import write_graph_data

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ORIGIN = "http://viewer.test/"
PAGE = """<!doctype html><meta charset="utf-8">
<div id="cy" style="width: 1200px; height: 800px"></div>
<script src="cytoscape.min.js"></script>
<script>
fetch('graph.cyjs').then(r => r.json()).then(data => {
  window.cy = cytoscape({
    container: document.getElementById('cy'),
    elements: data.elements,
    layout: {name: 'preset'},
    style: [{selector: 'node', style: {label: 'data(id)', 'font-size': 10}},
            {selector: 'edge', style: {width: 'mapData(weight, 0, 2, 0.5, 6)'}}],
  });
  window.cyReady = true;
});
</script>"""


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    root = tmp_path_factory.mktemp("cy")
    ds = open_test_store(transcript_store(root / "t.zarr", n_steps=4, n_layers=6, n_experts=64))
    g = reasoning_graph(ds, top_edges=5)
    set_communities(g)
    layered_layout(g)
    return g, write_graph_data(g, root / "graph.cyjs")


def test_cytoscape_js_loads_our_json_with_our_layout(graph):
    g, path = graph
    nm = node_modules()
    routes = {
        ORIGIN + "index.html": lambda: ("text/html", PAGE.encode()),
        ORIGIN + "cytoscape.min.js": js_file(nm / "cytoscape" / "dist" / "cytoscape.min.js"),
        ORIGIN + "graph.cyjs": lambda: ("application/json", path.read_bytes()),
    }
    with chromium_page(routes) as (page, refused):
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(ORIGIN + "index.html")
        page.wait_for_function("() => window.cyReady === true")
        held = page.evaluate(
            """() => ({
              version: cytoscape.version,
              nodes: cy.nodes().map(n => ({id: n.id(), layer: n.data('layer'), pos: n.position()})),
              edges: cy.edges().map(e => ({s: e.source().id(), t: e.target().id(), w: e.data('weight')})),
            })"""
        )
    assert refused == [] and errors == [], (refused, errors)
    assert held["version"] == json.loads((nm / "cytoscape" / "package.json").read_text())["version"]
    assert len(held["nodes"]) == g.number_of_nodes() > 20 and len(held["edges"]) == g.number_of_edges()
    assert {(e["s"], e["t"]): e["w"] for e in held["edges"]} == {(u, v): w for u, v, w in g.edges(data="weight")}
    for n in held["nodes"]:  # our layered positions, as written: x = 100 · layer position, y = -40 · rank
        d = g.nodes[n["id"]]
        assert n["pos"] == pytest.approx({"x": 100.0 * d["x"], "y": -40.0 * d["y"]}), n
    by_layer: dict[int, set[float]] = {}
    for n in held["nodes"]:
        by_layer.setdefault(n["layer"], set()).add(n["pos"]["x"])
    assert all(len(xs) == 1 for xs in by_layer.values()) and len(by_layer) == 6  # one column per layer
