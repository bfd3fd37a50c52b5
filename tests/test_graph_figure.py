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


def _traces(fig, meta):
    return [t for t in fig.data if t.meta == meta]


def _nodes(fig):
    """{node id: (hover text, label, marker colour, x)} over every node trace."""
    out = {}
    for t in _traces(fig, "nodes"):
        colours = t.marker.color if isinstance(t.marker.color, tuple | list) else [t.marker.color] * len(t.x)
        for n, h, label, c, x in zip(t.customdata, t.hovertext, t.text, colours, t.x, strict=True):
            out[n] = (h, label, c, x)
    return out


def test_figure_nodes_hover_and_layout(ds):
    g = reasoning_graph(ds)
    fig = graph_figure(g)
    nodes = _nodes(fig)
    assert set(nodes) == set(g.nodes)
    assert all(nodes[n][1] == f"E{g.nodes[n]['expert']}" for n in g.nodes)  # room for every label here
    hover = {n: v[0] for n, v in nodes.items()}
    assert "expert 3 · layer 2" in hover["L2:E3"] and "top tokens: f (1)" in hover["L2:E3"]
    assert "tokens 3 · load 0.600" in hover["L1:E0"] and "mean gate 0.500" in hover["L1:E0"]
    assert "math 67%" in hover["L1:E0"]
    assert all(nodes[n][3] == g.nodes[n]["layer"] for n in g.nodes)  # x = layer
    # every edge is drawn once: segments (x0, x1, None) across the line traces
    n_segments = sum(len(t.x) // 3 for t in _traces(fig, "edges"))
    assert n_segments == g.number_of_edges()
    assert fig.layout.title.text == "all tokens" and "5 tokens" in fig.layout.title.subtitle.text


def test_figure_carries_its_key(ds):
    g = reasoning_graph(ds, top_edges=3)
    fig = graph_figure(g)
    names = [t.name for t in _traces(fig, "key")] + [t.name for t in _traces(fig, "edges")]
    titles = {t.legendgrouptitle.text for t in fig.data if t.legendgrouptitle and t.legendgrouptitle.text}
    assert titles == {"node colour: circuit", "edge width: weight (Σ gate products)"}
    circuits = [n for n in names if n and n.startswith("circuit ")]
    assert len(circuits) == g.graph["n_communities"]  # one legend entry per circuit, with its colour
    caption = fig.layout.annotations[0].text
    assert "Node area ∝ load" in caption and "Louvain" in caption and "width ∝ weight" in caption
    assert "Pruned to the 3 heaviest edges per layer pair" in caption
    assert fig.layout.annotations[1].text == "node area ∝ load"  # the size key's three circles
    (size_key,) = [t for t in _traces(fig, "key") if t.mode == "markers+text"]
    d = list(size_key.marker.size)
    assert d[0] / d[1] == pytest.approx(2.0) and d[1] / d[2] == pytest.approx(2.0)  # 1, 1/4, 1/16 of the area
    assert fig.layout.yaxis.visible is False  # the vertical order carries no value; the caption says so
    # edges beneath opaque nodes; no text under 10 px
    order = [t.meta for t in fig.data]
    assert max(i for i, m in enumerate(order) if m == "edges") < min(i for i, m in enumerate(order) if m == "nodes")
    assert all(t.marker.opacity == 1.0 for t in _traces(fig, "nodes"))
    sizes = [t.textfont.size for t in fig.data if t.textfont and t.textfont.size]
    sizes += [a.font.size for a in fig.layout.annotations] + [fig.layout.legend.font.size, fig.layout.font.size]
    assert min(sizes) >= 10


def test_edges_have_hover_with_tokens(ds):
    g = reasoning_graph(ds, top_edges=2)
    fig = graph_figure(g)
    (hover,) = _traces(fig, "edge-hover")
    assert len(hover.x) == g.number_of_edges()
    text = dict(zip(hover.customdata, hover.hovertext, strict=True))
    e = text["L2:E0->L3:E1"]
    assert "tokens 4" in e and "weight 0.875" in e and "29.02% of the layer pair" in e
    assert "top tokens: one (1) · plus (1) · two (1) · def (1)" in e
    x0, x1 = g.nodes["L2:E0"]["x"], g.nodes["L3:E1"]["x"]
    assert hover.x[list(hover.customdata).index("L2:E0->L3:E1")] == pytest.approx((x0 + x1) / 2)


def test_difference_figure_shows_both_sides_on_a_zero_centred_scale(ds):
    d = difference_of_selections(ds, parse_where("domain=math"), parse_where("domain=code"), top_edges=2)
    fig = graph_figure(d)
    (nodes,) = _traces(fig, "nodes")
    m = nodes.marker
    assert m.cmid == 0 and m.cmin == -m.cmax and "Δ load" in m.colorbar.title.text
    delta = dict(zip(nodes.customdata, m.color, strict=True))
    assert delta["L2:E3"] < 0 < delta["L3:E1"]  # L2:E3 only in code (−), L3:E1 more in math (+)
    for layer in (1, 2, 3):  # two bands: every expert with more load in math above every one with more in code
        ys = {
            s: [d.nodes[n]["y"] for n in d if d.nodes[n]["layer"] == layer and d.nodes[n]["sign"] == s] for s in (1, -1)
        }
        assert min(ys[1], default=99) > max(ys[-1], default=-99)
    colours = {t.line.color for t in _traces(fig, "edges")}
    assert colours == {"#c0392b", "#2471a3"}  # red and blue edges: both sides drawn
    keys = [t.name for t in _traces(fig, "key") if t.name]
    assert "more in domain=math (4 edges)" in keys and "more in domain=code (4 edges)" in keys
    assert fig.layout.title.text == "domain=math − domain=code"
    sub = fig.layout.title.subtitle.text
    assert "more in domain=math (3 tokens): 4 edges" in sub and "more in domain=code (2 tokens): 4 edges" in sub
    assert "of each sign per layer pair" in fig.layout.annotations[0].text
    (hover,) = _traces(fig, "edge-hover")
    e = dict(zip(hover.customdata, hover.hovertext, strict=True))["L1:E3->L2:E3"]
    assert "more in domain=code" in e and "top tokens in domain=code: f (1)" in e


def test_many_layers_get_room_and_labels_on_the_heaviest_only(tmp_path):
    from workbench.viz.graph_figure import LAYER_PX

    from workbench import synthetic_store
    from workbench.store.io import open_store

    path = synthetic_store(tmp_path / "k2.zarr", n_tokens=600, n_layers=60, n_experts=384, k=8, progress=False)
    g = reasoning_graph(open_store(path), top_edges=12)
    fig = graph_figure(g)
    assert fig.layout.width >= 60 * LAYER_PX
    labels = {n: v[1] for n, v in _nodes(fig).items()}
    labelled = [n for n, text in labels.items() if text]
    assert len(labelled) == 60  # the heaviest expert of each layer
    for n in labelled:
        layer = g.nodes[n]["layer"]
        assert g.nodes[n]["load"] == max(d["load"] for _, d in g.nodes(data=True) if d["layer"] == layer)
    # nodes fit their column and rank spacing, so they do not overlap
    xs = sorted({g.nodes[n]["layer"] for n in g})
    plot_w = fig.layout.width * fig.layout.xaxis.domain[1]
    dx = plot_w / (len(xs) + 0.4)
    biggest = max(max(t.marker.size) for t in _traces(fig, "nodes"))
    assert biggest <= 0.5 * dx


def test_html_export_is_self_contained(ds, tmp_path):
    path = export_graph(reasoning_graph(ds, top_edges=2), tmp_path / "g.html", title="two edges")
    text = path.read_text()
    assert "<html" in text and "L1:E0" in text and "two edges" in text and 'src="http' not in text


@pytest.mark.slow
@pytest.mark.skipif(system_browser() is None, reason="no Chromium for kaleido (run `make chromium`)")
def test_pdf_and_svg_carry_the_figure_title(ds, tmp_path):
    pypdf = pytest.importorskip("pypdf")
    d = difference_of_selections(ds, parse_where("domain=math"), parse_where("domain=code"), top_edges=2)
    with static_export_session():
        pdf = export_graph(d, tmp_path / "d.pdf")
        svg = export_graph(d, tmp_path / "d.svg")
        export_graph(d, tmp_path / "t.pdf", title="<b>math</b> & 100% code")
    reader = pypdf.PdfReader(pdf, strict=True)
    assert reader.metadata.title == "domain=math − domain=code"  # not kaleido's page title "Kaleido-fier"
    assert "Δ load = load in domain=math − load in domain=code" in reader.metadata.subject
    assert "domain=math" in reader.pages[0].extract_text()  # the drawing is intact after the update
    assert pypdf.PdfReader(tmp_path / "t.pdf", strict=True).metadata.title == "<b>math</b> & 100% code"
    root = ET.parse(svg).getroot()
    ns = "{http://www.w3.org/2000/svg}"
    assert root[0].tag == f"{ns}title" and root[0].text == "domain=math − domain=code"
    assert root[1].tag == f"{ns}desc" and "Pruned to the 2 edges" in root[1].text


@pytest.mark.slow
@pytest.mark.skipif(system_browser() is None, reason="no Chromium (run `make chromium`)")
def test_edge_hover_shows_in_the_browser(ds, tmp_path):
    """The exported HTML in the system Chromium: moving the mouse onto an edge's middle shows its hover label."""
    sync_api = pytest.importorskip("playwright.sync_api")
    g = reasoning_graph(ds, top_edges=1)
    page_path = export_graph(g, tmp_path / "g.html")
    u, v = "L2:E0", "L3:E1"
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=system_browser(), headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        page.goto(page_path.as_uri())
        page.wait_for_function("() => document.querySelector('.js-plotly-plot')?._fullLayout !== undefined")
        x, y = page.evaluate(
            """([u, v]) => {
                const gd = document.querySelector('.js-plotly-plot');
                const i = gd.data.findIndex(t => t.meta === 'edge-hover');
                const k = gd.data[i].customdata.indexOf(u + '->' + v);
                const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, box = gd.getBoundingClientRect();
                const t = gd.data[i];
                return [box.left + xa._offset + xa.l2p(t.x[k]), box.top + ya._offset + ya.l2p(t.y[k])];
            }""",
            [u, v],
        )
        page.mouse.move(x, y)
        label = page.wait_for_selector(".hoverlayer .hovertext", timeout=60_000)
        text = label.text_content()
        browser.close()
    assert f"{u} → {v}" in text and "tokens 4" in text


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
    assert root.tag.endswith("svg") and root.get("width") == "1100" and root[0].text == "domain=math"
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
