"""The comparison report and the HTML pages: plotly.js once, compact data, sorted heatmaps, honest tables.

Real zarr stores (the three-domain synthetic store of widgets_helpers, whose domains prefer different
bands of experts) and the real ``compare``; the browser is exercised by tests/test_graph_html.py and
tests/test_plotly_text.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest
from widgets_helpers import domain_store, open_test_store
from workbench.viz import html_page, load_heatmap
from workbench.viz.report import LABELS, MAX_SPECIFIC, figures, render_html

from workbench.analysis.compare import compare

BANNER = re.compile(r"\* plotly\.js(?: \(cartesian - minified\))? v\d+\.\d+\.\d+")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):
    return open_test_store(domain_store(tmp_path_factory.mktemp("report") / "d.zarr", per_domain=8, n_tokens=60))


@pytest.fixture(scope="module")
def cmp(store):
    return compare(store, by="domain", n_boot=20, n_perm=20)


def test_cartesian_bundle_for_cartesian_figures_full_bundle_otherwise():
    from plotly.offline import get_plotlyjs

    heat = go.Figure(go.Heatmap(z=[[1, 2], [3, 4]]))
    line = go.Figure(go.Scatter(x=[0, 1], y=[1, 0]))
    name, js = html_page.plotly_js([heat, line])
    assert name == "cartesian" and len(js) < 2_000_000 and "plotly.js (cartesian" in js[:200]
    sankey = go.Figure(go.Sankey(node={"label": ["a", "b"]}, link={"source": [0], "target": [1], "value": [1]}))
    name, js = html_page.plotly_js([heat, sankey])
    assert name == "full" and js == get_plotlyjs()


def test_a_bundle_of_another_version_is_not_used(monkeypatch):
    html_page._cartesian_js.cache_clear()
    monkeypatch.setattr(html_page, "get_plotlyjs_version", lambda: "0.0.1")
    try:
        assert html_page.plotly_js([go.Figure(go.Scatter(x=[1]))])[0] == "full"
    finally:
        monkeypatch.undo()
        html_page._cartesian_js.cache_clear()


def test_compact_keeps_values_to_float32_and_six_digits():
    tree = html_page.compact({"z": np.array([[0.123456789, 2.0]]), "x": [0.123456789, None, 3], "t": ["a"]})
    assert tree["z"].dtype == np.float32 and tree["z"][0, 0] == pytest.approx(0.123456789, rel=1e-7)
    assert tree["x"] == [0.123457, None, 3] and tree["t"] == ["a"]


def test_page_inlines_plotly_once_and_sends_the_template_once():
    figs = [(f"f{i}", go.Figure(go.Heatmap(z=np.random.default_rng(i).random((4, 5))))) for i in range(4)]
    text = html_page.page("t", "<p>{{figure:f2}}</p>", figs)
    assert len(BANNER.findall(text)) == 1
    assert text.count('"histogram2dcontour":[{') == 1  # the default template, shared by the four figures
    assert text.index('id="f2"') < text.index('id="f0"')  # placed at its marker; the others appended
    assert not re.search(r"<script[^>]*\bsrc=", text)


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
    text = html_page.page("t", "", figs)
    shared = re.search(r"const B = \[\"([^\"]+)\"\]", text)
    assert shared and text.count(shared.group(1)) == 1 and text.count('"bdata":B[0]') == 3
