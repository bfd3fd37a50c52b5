"""Plotly figures of reasoning graphs, and static PNG/SVG/PDF files rendered by kaleido in the system Chromium."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import plotly.graph_objects as go
import pytest
from graph_helpers import open_hand_store, write_store
from workbench.viz import export_graph, graph_figure
from workbench.viz.export import static_export_session, system_browser

from workbench.graph import difference_of_selections, reasoning_graph
from workbench.graph.export import ExportError
from workbench.store.select import parse_where


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    return open_hand_store(write_store(tmp_path_factory.mktemp("fig") / "hand.zarr"))


def _node_trace(fig):
    return next(t for t in fig.data if t.mode.startswith("markers"))


def test_figure_nodes_hover_and_layout(ds):
    g = reasoning_graph(ds)
    fig = graph_figure(g)
    nodes = _node_trace(fig)
    assert list(nodes.customdata) == list(g.nodes)
    hover = dict(zip(nodes.customdata, nodes.hovertext, strict=True))
    assert list(nodes.text) == [f"E{g.nodes[n]['expert']}" for n in g.nodes]  # expert labels
    assert "expert 3 · layer 2" in hover["L2:E3"] and "top tokens: f (1)" in hover["L2:E3"]
    assert "tokens 3 · load 0.600" in hover["L1:E0"] and "mean gate 0.500" in hover["L1:E0"]
    assert "math 67%" in hover["L1:E0"]
    assert list(nodes.x) == [g.nodes[n]["layer"] for n in g.nodes]  # x = layer
    # every edge is drawn once: segments (x0, x1, None) across the line traces
    n_segments = sum(len(t.x) // 3 for t in fig.data if t.mode == "lines")
    assert n_segments == g.number_of_edges()
    assert "all tokens (5 tokens)" in fig.layout.title.text


def test_difference_figure_colours_by_sign(ds):
    d = difference_of_selections(ds, parse_where("domain=math"), parse_where("domain=code"))
    fig = graph_figure(d)
    nodes = _node_trace(fig)
    colour = dict(zip(nodes.customdata, nodes.marker.color, strict=True))
    assert colour["L2:E3"] != colour["L3:E1"]  # L2:E3 only in code (−), L3:E1 more in math (+)
    assert d.nodes["L2:E3"]["sign"] == -1 and d.nodes["L3:E1"]["sign"] == 1
    assert fig.layout.title.text == "domain=math − domain=code"


def test_html_export_is_self_contained(ds, tmp_path):
    path = export_graph(reasoning_graph(ds, top_edges=2), tmp_path / "g.html", title="two edges")
    text = path.read_text()
    assert "<html" in text and "L1:E0" in text and "two edges" in text and 'src="http' not in text


@pytest.mark.slow
@pytest.mark.skipif(system_browser() is None, reason="no Chromium for kaleido (run `make chromium`)")
def test_static_figures_are_real_files(ds, tmp_path):
    g = reasoning_graph(ds, parse_where("domain=math"))
    with static_export_session():  # one browser for the three files
        png = export_graph(g, tmp_path / "g.png").read_bytes()
        svg = export_graph(g, tmp_path / "g.svg")
        pdf = export_graph(g, tmp_path / "g.pdf").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    root = ET.parse(svg).getroot()
    assert root.tag.endswith("svg") and root.get("width") == "1100"
    assert pdf.startswith(b"%PDF-") and b"%%EOF" in pdf[-1024:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.pdf", "g.png", "g.svg"]  # no temp files left


def test_static_export_without_browser_fails_cleanly(ds, tmp_path, monkeypatch):
    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "no-such-chromium"))
    with pytest.raises(ExportError, match=r"static export to g\.png failed"):
        export_graph(reasoning_graph(ds), tmp_path / "g.png")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.skipif(system_browser() is None, reason="no Chromium for kaleido (run `make chromium`)")
def test_static_export_retries_kaleidos_page_not_ready_race(ds, tmp_path, monkeypatch):
    """kaleido's "kaleido_scopes is not defined" (its tab's JS context taken before the page loaded, seen
    under load) is retried with a fresh browser inside an open session; other errors are not retried."""
    real, calls = go.Figure.write_image, []

    def flaky(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("JavascriptError: ReferenceError: kaleido_scopes is not defined")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(go.Figure, "write_image", flaky)
    g = reasoning_graph(ds, parse_where("domain=math"))
    with static_export_session():
        png = export_graph(g, tmp_path / "g.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(calls) == 2
        svg = export_graph(g, tmp_path / "g.svg")  # the restarted session still serves later exports
    assert ET.parse(svg).getroot().tag.endswith("svg")

    def broken(self, *args, **kwargs):
        calls.append(1)
        raise RuntimeError("something else")

    monkeypatch.setattr(go.Figure, "write_image", broken)
    calls.clear()
    with pytest.raises(ExportError, match="something else"):
        export_graph(g, tmp_path / "h.png")
    assert len(calls) == 1 and not (tmp_path / "h.png").exists()
