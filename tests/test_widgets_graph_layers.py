"""The graph pane's layers: node markers or one heatmap of the layer × expert grid, edges as path shapes.

A K2-sized grid (over ``node_layer.HEATMAP_CELLS`` cells) draws its nodes as a heatmap; here the
threshold is lowered so the 6 × 64 test store takes that path. Whatever the drawing, the figure must
hold exactly the counted nodes (tokens, mean gate) and the drawn edges, and clicks must open the same
expert card.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from widgets_helpers import open_test_store, transcript_store
from workbench.viz.widgets import TranscriptGraphWidget, node_layer
from workbench.viz.widgets.edge_layer import EDGE_BINS, edge_width, strength_bins


@pytest.fixture(scope="module")
def ds(tmp_path_factory: pytest.TempPathFactory):
    return open_test_store(transcript_store(tmp_path_factory.mktemp("g") / "tools.zarr", n_steps=4, n_transcripts=1))


@pytest.fixture
def grid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node_layer, "HEATMAP_CELLS", 100)  # the 6 × 64 store is "K2-sized" now


def _segments(layout) -> dict[tuple[int, int, int, int], int]:
    """(layer, src, next layer, dst) -> bin index (0 = weakest) of every segment in the edge shapes."""
    out = {}
    for shape in layout.shapes:
        b = [edge_width(i) for i in range(EDGE_BINS)].index(shape.line.width)
        for a, s, c, d in re.findall(r"M(-?[\d.]+),(-?[\d.]+)L(-?[\d.]+),(-?[\d.]+)", shape.path):
            out[(int(float(a)), int(float(s)), int(float(c)), int(float(d)))] = b
    return out


def test_small_grid_draws_markers_and_edges_under_them(ds) -> None:
    w = TranscriptGraphWidget(ds)
    nodes = w.graph.figure.data[-1]
    assert nodes.type == "scatter" and nodes.name == "experts"
    assert {s.layer for s in w.graph.figure.layout.shapes} == {"between"}  # nodes drawn over the edges
    assert "node size" in w.graph.figure.layout.title.subtitle.text


def test_edge_shapes_hold_exactly_the_drawn_edges_in_their_strength_bins(ds) -> None:
    w = TranscriptGraphWidget(ds, top_edges=7)
    w.select("step", 1)
    p = w.graph.pathways
    assert p is not None
    e, bins = p.edges, strength_bins(p)
    want = {
        (int(p.layers[a]), int(s), int(p.layers[a + 1]), int(d)): int(b)
        for a, s, d, b in zip(e.pair, e.src, e.dst, bins, strict=True)
    }
    assert _segments(w.graph.figure.layout) == want
    assert len(want) == len(e)  # no edge drawn twice
    # bins at the 50th, 80th, 95th percentile of the drawn strengths
    qs = np.quantile(e.weight, [0.5, 0.8, 0.95])
    assert np.array_equal(bins, (e.weight[:, None] >= qs[None, :]).sum(1))
    keys = [t for t in w.graph.figure.data if t.showlegend]
    assert [t.line.width for t in keys] == [edge_width(b) for b in range(EDGE_BINS)]
    assert "7 strongest edges per layer pair" in w.graph.figure.layout.legend.title.text


def test_large_grid_draws_one_heatmap_of_exactly_the_counted_nodes(ds, grid) -> None:
    w = TranscriptGraphWidget(ds)
    w.select("segment", 6)
    p = w.graph.pathways
    assert p is not None
    hm = w.graph.figure.data[0]
    assert hm.type == "heatmap" and hm.name == "experts"
    z, gate = np.asarray(hm.z, dtype=float), np.asarray(hm.customdata, dtype=float)
    assert z.shape == (p.n_experts, p.layers.size) and list(hm.x) == p.layers.tolist()
    drawn = np.isfinite(z)
    assert np.array_equal(drawn, p.node_tokens.T > 0)  # a cell per node, blank elsewhere
    assert np.array_equal(z[drawn], p.node_tokens.T[drawn])
    assert np.allclose(gate[drawn], p.mean_gate.T[drawn], rtol=1e-6)
    assert {s.layer for s in w.graph.figure.layout.shapes} == {"above"}  # edges over the cells
    assert "tokens" in hm.colorbar.title.text and hm.hoverongaps is False


def test_a_click_on_a_heatmap_cell_opens_that_experts_card(ds, grid) -> None:
    w = TranscriptGraphWidget(ds)
    p = w.graph.pathways
    assert p is not None
    li, ei = (int(v[0]) for v in np.nonzero(p.node_tokens))
    names = [t.name for t in w.graph.figure.data]
    # the heatmap comes first: plotly's hover goes to the last trace with a point near the mouse, a heatmap has
    # one everywhere, so the edges' markers after it win within 5 px of their centre only
    assert names[0] == "experts" and names[-1] == "edges" and w.graph.figure.layout.hoverdistance == 5
    trace = names.index("experts")
    w.graph.plot._on_message(w.graph.plot, {"type": "click", "trace": trace, "point": [ei, li]}, [])
    assert w.card.page is not None and (w.card.page.layer, w.card.page.expert) == (int(p.layers[li]), ei)
    assert w.view.highlighted.size == int(p.node_tokens[li, ei])
    # a blank cell (no token routed there) is no node: nothing changes
    empty = np.argwhere(p.node_tokens.T == 0)
    if empty.size:
        before = w.card.page
        w.graph.plot._on_message(w.graph.plot, {"type": "click", "trace": trace, "point": empty[0].tolist()}, [])
        assert w.card.page is before


def test_ids_only_heatmap_has_no_gate(tmp_path: Path, grid) -> None:
    ds = open_test_store(transcript_store(tmp_path / "ids.zarr", n_steps=2, n_transcripts=1, ids_only=True))
    w = TranscriptGraphWidget(ds)
    hm = w.graph.figure.data[0]
    assert hm.type == "heatmap" and hm.customdata is None and "mean gate" not in hm.hovertemplate
