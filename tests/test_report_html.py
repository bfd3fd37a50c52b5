"""The comparison report and the HTML pages: plotly.js once (the smallest bundle, packed), compact data,
sorted heatmaps, honest tables.

Real zarr stores (the three-domain synthetic store of widgets_helpers, whose domains prefer different
bands of experts) and the real ``compare``; the browser is exercised by tests/test_graph_html.py and
tests/test_plotly_text.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest
from widgets_helpers import domain_store, open_test_store
from workbench.viz import html_page, load_heatmap
from workbench.viz.report import LABELS, MAX_SPECIFIC, figures, render_html

from workbench.analysis.compare import compare

BANNER = re.compile(r"\* plotly\.js v\d+\.\d+\.\d+")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):
    return open_test_store(domain_store(tmp_path_factory.mktemp("report") / "d.zarr", per_domain=8, n_tokens=60))


@pytest.fixture(scope="module")
def cmp(store):
    return compare(store, by="domain", n_boot=20, n_perm=20)


def test_the_smallest_bundle_that_draws_the_page():
    from plotly.offline import get_plotlyjs

    heat = go.Figure(go.Heatmap(z=[[1, 2], [3, 4]]))
    line = go.Figure(go.Scatter(x=[0, 1], y=[1, 0]))
    bar = go.Figure(go.Bar(x=[0, 1], y=[1, 0]))
    sankey = go.Figure(go.Sankey(node={"label": ["a", "b"]}, link={"source": [0], "target": [1], "value": [1]}))
    name, js = html_page.plotly_js([heat, line, bar])
    assert name == "bar-heatmap" and len(js) < 1_300_000 and "plotly.js (bar-heatmap - minified)" in js[:200]
    name, js = html_page.plotly_js([sankey, line])
    assert name == "sankey" and len(js) < 1_400_000 and "plotly.js (sankey - minified)" in js[:200]
    for figs in ([heat, sankey], [go.Figure(go.Box(y=[1, 2]))]):  # no vendored bundle has both / has box
        name, js = html_page.plotly_js(figs)
        assert name == "full" and js == get_plotlyjs()


def test_a_bundle_of_another_version_is_not_used(monkeypatch):
    html_page.vendored_bundles.cache_clear()
    monkeypatch.setattr(html_page, "get_plotlyjs_version", lambda: "0.0.1")
    try:
        assert html_page.plotly_js([go.Figure(go.Scatter(x=[1]))])[0] == "full"
    finally:
        monkeypatch.undo()
        html_page.vendored_bundles.cache_clear()


def test_vendored_bundles_match_their_manifest():
    import json

    manifest = json.loads(html_page.MANIFEST.read_text())
    bundles = {b.name: b for b in html_page.vendored_bundles()}
    assert set(bundles) == set(manifest["bundles"]) == {"bar-heatmap", "sankey"}
    for name, info in manifest["bundles"].items():
        js = bundles[name].js
        assert len(js.encode()) == info["bytes"] and f"v{manifest['plotly_js']}" in js[:200]
        assert "window.Plotly = Plotly" in js[-200:]  # the global the pages' scripts use


def test_compact_keeps_values_to_float32_and_six_digits():
    tree = html_page.compact({"z": np.array([[0.123456789, 2.0]]), "x": [0.123456789, None, 3], "t": ["a"]})
    assert tree["z"].dtype == np.float32 and tree["z"][0, 0] == pytest.approx(0.123456789, rel=1e-7)
    assert tree["x"] == [0.123457, None, 3] and tree["t"] == ["a"]


def test_page_inlines_plotly_once_packed_and_sends_the_template_once():
    figs = [(f"f{i}", go.Figure(go.Heatmap(z=np.random.default_rng(i).random((4, 5))))) for i in range(4)]
    text = html_page.page("t", "<p>{{figure:f2}}</p>", figs, script="console.log(window.workbenchFigures)")
    assert len(BANNER.findall(text)) == 1  # the licence notice of the one packed copy
    bundle = html_page.plotly_bundle(f for _, f in figs)
    assert len(text) < 0.6 * len(bundle.js)  # plotly.js travels gzipped
    full = html_page.unpack(text)
    assert bundle.js.replace("</", "<\\/") in full  # unpacked, byte for byte
    assert full.count('"histogram2dcontour":[{') == 1  # the default template, shared by the four figures
    assert text.index('id="f2"') < text.index('id="f0"')  # placed at its marker; the others appended
    assert not re.search(r"<script[^>]*\bsrc=", text)
    # the page's own script stays plain and runs once the packed scripts have run
    assert "window.workbenchReady.then(() => {\nconsole.log(window.workbenchFigures)\n});" in text


def test_a_large_page_script_is_packed_and_runs_after_the_figures():
    figs = [("f", go.Figure(go.Scatter(x=[0, 1], y=[1, 0])))]
    big = "const CARDS = " + json.dumps({f"L1:E{i}": "x" * 100 for i in range(400)}) + ";"
    assert len(big) > html_page.PLAIN_SCRIPT_MAX
    text = html_page.page("t", "", figs, script=big)
    assert "const CARDS" not in text and text.count(f'<script type="{html_page.PACKED_TYPE}">') == 3
    full = html_page.unpack(text)
    assert full.index("window.workbenchFigures = ") < full.index("const CARDS") and "workbenchReady.then" not in full


def test_preferred_group_order_clusters_and_sorts():
    rel = np.array(
        [  # 2 groups, 1 layer, 5 experts
            [[0.1, 3.0, 0.2, 1.5, 0.0]],
            [[2.0, 0.5, 0.3, 1.0, 0.0]],
        ]
    )
    order, preferred = load_heatmap.by_preferred_group(rel)
    # group 0 prefers experts 1 (3.0) and 3 (1.5); group 1 prefers 0 (2.0) and 2 (0.3); expert 4 unused -> last
    assert order[0].tolist() == [1, 3, 0, 2, 4] and preferred[0].tolist() == [0, 0, 1, 1, 1]
    assert load_heatmap.cluster_edges(preferred, 2).tolist() == [[2, 5]]
    assert load_heatmap.by_load(np.array([[1, 5, 5, 0]])).tolist() == [[1, 2, 0, 3]]


def test_colour_scale_starts_at_zero_and_names_balance():
    bar = load_heatmap.relative_load_colorbar(3.4)
    assert bar["tickvals"][:2] == [0.0, 1.0] and bar["ticktext"][:2] == ["0 unused", "1 balanced"]
    assert 1.0 in load_heatmap.relative_load_colorbar(40.0)["tickvals"]
    assert load_heatmap.relative_load_bounds(np.array([0.0, 0.5, np.nan])) == 2.0


def test_usage_heatmap_columns_are_clustered_by_domain(cmp):
    fig = figures(cmp)["usage"]
    heat = [t for t in fig.data if t.type == "heatmap"]
    assert len(heat) == len(cmp.groups)
    rel = cmp.load["relative_load"].transpose(cmp.by, "layer", "expert").values
    ids = np.asarray(heat[0].customdata).astype(int)  # (L, E): the expert in each cell, same in every panel
    for g, trace in enumerate(heat):
        assert trace.zmin == 0 and np.asarray(trace.customdata).tolist() == ids.tolist()
        np.testing.assert_allclose(np.asarray(trace.z), np.take_along_axis(rel[g], ids, axis=1), rtol=1e-6)
    for layer in range(ids.shape[0]):
        best = rel[:, layer, ids[layer]].argmax(axis=0)  # preferred group per column
        assert np.all(np.diff(best) >= 0), best  # clusters in group order
        for g in range(len(heat)):
            own = rel[g, layer, ids[layer]][best == g]
            assert np.all(np.diff(own) <= 1e-12)  # busiest first within a cluster
    # the synthetic domains prefer different experts: each panel's own cluster is its brightest block
    for g, trace in enumerate(heat):
        z = np.asarray(trace.z)
        best = rel[:, 0, ids[0]].argmax(axis=0)
        assert z[0][best == g].mean() > z[0][best != g].mean()
    assert "clustered by the domain" in fig.layout.xaxis3.title.text


def test_report_tables_have_human_labels_and_the_rows_they_claim(cmp):
    text = render_html(cmp)
    for raw in ("mean_load_entropy_normalized", "mean_agreement_any_topk", "p_value_overall", "share_of_expert"):
        assert f"<th>{raw}</th>" not in text and LABELS[raw] in text
    m = re.search(r"<h2>The (\d+) most specific experts of each domain, by lift \((\d+) rows\)</h2>", text)
    assert m, "specific-experts heading"
    per, rows = int(m.group(1)), int(m.group(2))
    assert per == MAX_SPECIFIC // len(cmp.groups) and rows == per * len(cmp.groups)
    table = text[m.end() :].split("</table>")[0]
    assert table.count("<tr") - 1 == rows  # header row + the rows the heading claims
    assert "Random routing would give" in text and "code vs language" in text
    assert len(BANNER.findall(text)) == 1 and len(text) < 2_000_000


def test_report_says_why_a_group_has_fewer_rows(cmp, monkeypatch):
    spec = cmp.specific
    few = spec[(spec[cmp.by] != "math") | (spec["layer"] == int(spec["layer"].min()))]
    monkeypatch.setattr(cmp, "specific", few)
    text = render_html(cmp)
    assert "fewer for math, which have fewer candidates" in text


def test_graph_html_is_small_and_self_contained(store, tmp_path: Path):
    from workbench.viz import export_graph

    from workbench.graph.build import reasoning_graph

    g = reasoning_graph(store, None, top_edges=8)
    path = export_graph(g, tmp_path / "g.html")
    text = path.read_text()
    assert len(BANNER.findall(text)) == 1 and path.stat().st_size < 2_000_000
    assert "const CARDS" in text and all(f'"{n}"' in text for n in g.nodes)


def test_a_typed_array_shared_by_traces_is_sent_once():
    ids = np.arange(4000, dtype=np.int16).reshape(40, 100)
    figs = [(f"f{i}", go.Figure(go.Heatmap(z=np.full((40, 100), float(i)), customdata=ids))) for i in range(3)]
    text = html_page.unpack(html_page.page("t", "", figs))
    shared = re.search(r"const B = \[\"([^\"]+)\"\]", text)
    assert shared and text.count(shared.group(1)) == 1 and text.count('"bdata":B[0]') == 3


@pytest.mark.slow
def test_k2_shaped_pages_are_at_most_2_mb(tmp_path: Path):
    """The size goal on the shape that matters: 60 MoE layers × 384 experts, top-8, four domains (the pages'
    size depends on the shape, hardly on the token count). Each page inlines its bundle once, packed."""
    from workbench.viz import export_graph
    from workbench.viz.overview_page import write_overview_html
    from workbench.viz.report import write_report

    from workbench.graph.build import reasoning_graph
    from workbench.graph.supernodes import supernodes
    from workbench.store.io import open_store
    from workbench.store.select import Selection
    from workbench.store.synthetic import synthetic_store

    ds = open_store(synthetic_store(tmp_path / "k2.zarr", n_tokens=6000, progress=False))
    report = write_report(compare(ds, by="domain", n_boot=10, n_perm=10), tmp_path / "compare")["report.html"]
    sel = Selection(domains=("math",))
    graph = export_graph(reasoning_graph(ds, sel, top_edges=12), tmp_path / "graph.html")  # the CLI default
    overview = write_overview_html(supernodes(ds), tmp_path / "overview.html")
    for path, bundle in ((report, "bar-heatmap"), (graph, "bar-heatmap"), (overview, "sankey")):
        text = path.read_text()
        assert path.stat().st_size <= 2_000_000, (path.name, path.stat().st_size)
        assert len(BANNER.findall(text)) == 1 and f"partial bundle {bundle!r}" in text, path.name
    figures = html_page.unpack(report.read_text()).split("window.workbenchFigures = ")[1]  # after the template
    assert figures.count('"type":"heatmap"') == 4  # one usage panel per domain, all there
