"""User text reaches plotly escaped: a domain named ``<a href=...>`` shows as text, never as a live link.

A real store whose domain names, sequence ids and token text are HTML and plotly template syntax; its
reasoning graph and every comparison figure (few groups: panels and lines; many groups: heatmap rows)
must carry that text only escaped. The browser test opens the exported graph and the report in headless
Chromium, hovers, and checks the page: no link to the hostile address, hover text shown literally.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from analysis_helpers import SequenceRecord, SpanRecord, config, random_topk
from workbench.viz.graph_figure import graph_figure
from workbench.viz.report import figures
from workbench.viz.text import plain

from workbench.analysis.compare import compare
from workbench.graph import reasoning_graph, set_communities
from workbench.store.io import open_store

LINK = '<a href="https://evil.example/">math</a>'
DOMAINS = (LINK, "<b>lang</b>", "code%{x}", "a&amp;b")
TOKEN = "<img src=x onerror=alert(1)>"


def _texts(obj: Any) -> Iterator[str]:
    """Every string in a plotly figure's JSON (data and layout, without the theme template)."""
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            if k != "template":
                yield from _texts(v)
    elif isinstance(obj, list | tuple):
        for v in obj:
            yield from _texts(v)


def assert_escaped(fig: Any) -> None:
    texts = list(_texts(fig.to_plotly_json()))
    joined = "\n".join(texts)
    for raw in ("<a href", "<b>lang", "%{x}</", "code%{x}", "<img", "a&amp;b"):
        assert raw not in joined, raw
    assert "&lt;a href" in joined or "&lt;b&gt;lang" in joined or "code&#37;{x}" in joined


@pytest.fixture(scope="module")
def hostile_store(tmp_path_factory) -> Path:
    from workbench.store.writer import StoreWriter

    rng = np.random.default_rng(5)
    path = tmp_path_factory.mktemp("hostile") / "s.zarr"
    vocab = [f"t{i}" for i in range(63)] + [TOKEN]
    tok = {"name": "hostile", "vocab": vocab, "special_tokens": {}}
    with StoreWriter(str(path), config(n_experts=8, top_k=2, n_layers=3), tok) as w:
        for i in range(12):
            t = 40
            ids = random_topk(rng, t, 3, 8, 2)
            token_ids = np.full(t, 63, np.int32)  # every token is the hostile one: it tops every expert's list
            w.add(
                SequenceRecord(
                    f"<i>seq</i>-{i}%{{y}}", DOMAINS[i % 4], "t", token_ids, ids, rng.random((t, 3, 2), np.float32),
                    spans=[SpanRecord("think", 0, t // 2), SpanRecord("answer", t // 2, t)],
                )
            )  # fmt: skip
    return path


def test_plain():
    assert plain(LINK) == '&lt;a href="https://evil.example/"&gt;math&lt;/a&gt;'
    assert plain("a&amp;b") == "a&amp;amp;b" and plain("50%{x}") == "50&#37;{x}" and plain(3) == "3"


def test_graph_hover_and_title_are_escaped(hostile_store):
    g = reasoning_graph(open_store(str(hostile_store)))
    set_communities(g)
    fig = graph_figure(g, title=f"{LINK} graph")
    hover = [h for t in fig.data if t.meta == "nodes" for h in t.hovertext]
    assert hover and all("&lt;a href" in h and "<a href" not in h for h in hover)
    assert all("&lt;img src=x" in h for h in hover)  # token text
    edges = [h for t in fig.data if t.meta == "edge-hover" for h in t.hovertext]
    assert edges and all("&lt;img src=x" in h and "<img" not in h for h in edges)  # edge top tokens
    assert fig.layout.title.text.startswith("&lt;a href")
    assert_escaped(fig)


@pytest.mark.parametrize("by", ["domain", "sequence"])
def test_comparison_figures_are_escaped(hostile_store, by):
    cmp = compare(open_store(str(hostile_store)), None, by=by, n_boot=10, n_perm=10)
    assert len(cmp.groups) == (4 if by == "domain" else 12)  # panels and lines; heatmap rows
    for key, fig in figures(cmp).items():
        texts = "\n".join(_texts(fig.to_plotly_json()))
        for raw in ("<a href", "<b>lang", "code%{x}", "<i>seq", "-0%{y}"):
            assert raw not in texts, (key, raw)
        expect = "&lt;a href" if by == "domain" else "&lt;i&gt;seq&lt;/i&gt;"
        assert expect in texts, key


@pytest.mark.browser
@pytest.mark.slow
def test_no_live_link_in_the_browser(hostile_store, tmp_path):
    """Headless Chromium: the exported graph and the report show the hostile names as text, with no link."""
    pytest.importorskip("playwright.sync_api")
    from playwright.sync_api import sync_playwright
    from workbench.viz.export import export_graph
    from workbench.viz.report import write_report

    chromium = os.environ.get("BROWSER_PATH", "/usr/bin/chromium")
    if not os.access(chromium, os.X_OK):
        pytest.skip("no Chromium (run `make chromium`)")
    ds = open_store(str(hostile_store))
    g = reasoning_graph(ds)
    set_communities(g)
    graph_html = export_graph(g, tmp_path / "g.html", title=f"{LINK} graph")
    report = write_report(compare(ds, None, n_boot=10, n_perm=10), tmp_path / "report", title=LINK)["report.html"]
    hover_first_point = """gd => {
        const t = gd._fullData.findIndex(d => d.hoverinfo !== 'skip' && d.visible === true && d.meta !== 'edge-hover');
        const d = gd._fullData[t];
        if (d.type === 'heatmap') Plotly.Fx.hover(gd, {xval: d.x ? d.x[0] : 0, yval: d.y ? d.y[0] : 0}, 'xy');
        else Plotly.Fx.hover(gd, [{curveNumber: t, pointNumber: 0}]);
        const label = gd.querySelector('.hoverlayer');
        return label ? label.textContent : '';
    }"""
    links = """() => Array.from(document.querySelectorAll('a')).filter(
        a => (a.getAttribute('href') || a.getAttribute('xlink:href') || '').includes('evil')).length"""
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            for path, n_figs in ((graph_html, 1), (report, 5)):
                page.goto(path.as_uri())
                page.wait_for_function(
                    f"() => document.querySelectorAll('.js-plotly-plot').length === {n_figs} && "
                    "Array.from(document.querySelectorAll('.js-plotly-plot')).every(g => g._fullData)",
                    timeout=120_000,
                )
                hovers = [h.evaluate(hover_first_point) for h in page.query_selector_all(".js-plotly-plot")]
                assert page.evaluate(links) == 0, path
                assert any(LINK in h for h in hovers), hovers  # shown literally, as the user wrote it
                assert page.evaluate("() => document.querySelectorAll('.js-plotly-plot img').length") == 0
        finally:
            browser.close()
