"""The widgets' image exporter (viz/widgets/plot_image.js) in headless Chromium: the picture it composes
from a plot's live layers is plotly.js's own ``toImage`` picture, pixel for pixel, for any figure.

Each figure is drawn in a plain page (plotly.py's plotly.js, as the widgets load it) and exported both
ways; the two PNGs (and the two SVGs, rasterised) are compared pixel by pixel in the page. Figures: a
graph pane's (SVG edge lines under ~6k WebGL nodes, colour bar), a heatmap with a colour bar,
annotations and a shape, and a legend over bars and lines; at scale 1 and 2, and under a page with
``<base href>`` (plotly then writes its clip paths as absolute URLs). Another size than the shown one
falls back to ``toImage``; the live plot is left as it was. Diff images go to $WORKBENCH_ARTIFACTS
(or the test's temp folder) when a comparison fails.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
import pytest
from browser_helpers import CHROMIUM
from plot_image_helpers import compare, image, plot, plot_page, png_size
from widgets_helpers import open_test_store, synthetic_config, transcript_record, write_store

pytestmark = [pytest.mark.browser, pytest.mark.slow]

MAX_DIFFER = 0.001  # share of pixels allowed to differ by more than 32 of 255 (anti-aliasing of resampling)


@pytest.fixture(scope="module")
def pw() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (install Debian's chromium package: make chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def graph_figure(tmp_path_factory: pytest.TempPathFactory) -> go.Figure:
    """A TranscriptGraphWidget's graph pane on a 24-layer × 256-expert store: its nodes are one heatmap,
    its edges path shapes above it, and the edges' hover markers WebGL (as at K2's size)."""
    from workbench.viz.widgets import TranscriptGraphWidget

    config = synthetic_config(24, 256, 8)
    rec = transcript_record("t0", 3, rng=np.random.default_rng(0), config=config, think=64, call=20, result=40)
    path = write_store(tmp_path_factory.mktemp("store") / "s.zarr", [rec], config)
    fig = TranscriptGraphWidget(open_test_store(path)).graph.figure
    assert fig.data[0].type == "heatmap" and any(t.type == "scattergl" for t in fig.data)
    assert fig.layout.shapes and all(shape.type == "path" for shape in fig.layout.shapes)
    return fig


def heatmap_figure() -> go.Figure:
    z = np.random.default_rng(1).normal(size=(40, 30))
    fig = go.Figure(go.Heatmap(z=z, colorscale="RdBu", zmid=0, colorbar={"title": {"text": "lift"}}))
    fig.add_annotation(x=5, y=30, text="<b>note</b> here", showarrow=True)
    fig.add_shape(type="rect", x0=10, x1=15, y0=5, y1=12, line={"color": "black", "width": 2})
    fig.update_layout(title="heatmap", height=420, template="none")
    return fig


def legend_figure() -> go.Figure:
    x = np.arange(12)
    fig = go.Figure([
        go.Bar(x=x, y=np.sin(x) + 2, name="bars"),
        go.Scatter(x=x, y=np.cos(x) + 2, mode="lines+markers", name="line", line={"width": 3, "dash": "dot"}),
        go.Scattergl(x=x, y=np.cos(x) + 1, mode="markers", name="gl points", marker={"size": 12}),
    ])  # fmt: skip
    fig.update_layout(title="legend, bars, lines, WebGL", height=380, legend={"title": {"text": "key"}})
    return fig


def _same(page: Any, a: bytes, b: bytes, fmt: str, w: int, h: int, name: str, tmp_path: Path) -> None:
    r = compare(page, a, b, fmt, w, h)
    if r["differ_px"] > MAX_DIFFER * r["px"]:
        out = Path(os.environ.get("WORKBENCH_ARTIFACTS", tmp_path))
        out.mkdir(parents=True, exist_ok=True)
        (out / f"plot_image_{name}_diff.png").write_bytes(r["diff_png"])
        (out / f"plot_image_{name}_toimage.{fmt}").write_bytes(a)
        (out / f"plot_image_{name}_live.{fmt}").write_bytes(b)
    assert r["differ_px"] <= MAX_DIFFER * r["px"], {k: v for k, v in r.items() if k != "diff_png"}


@pytest.mark.parametrize("which", ["graph", "heatmap", "legend", "graph at a fractional width"])
def test_live_image_is_the_toimage_picture(pw: Any, graph_figure: go.Figure, which: str, tmp_path: Path) -> None:
    fig = {"heatmap": heatmap_figure(), "legend": legend_figure()}.get(which, graph_figure)
    # a pane's width in JupyterLab is a share of the page's: 619.438 px for the graph pane at 1500 px
    browser, page = plot_page(pw, width=619.438 if "fractional" in which else 820)
    try:
        w, h = plot(page, fig)
        for scale in (1, 2):
            px = (int(w * scale), int(h * scale))  # whole pixels, cut as a canvas cuts them
            for fmt in ("png", "svg"):
                live = image(page, "live", fmt, scale=scale)
                assert live["method"] == "live", live["failed"]
                ref = image(page, "toimage", fmt, scale=scale)
                if fmt == "png":
                    assert png_size(live["data"]) == png_size(ref["data"]) == px
                _same(page, ref["data"], live["data"], fmt, *px, f"{which.replace(' ', '_')}_{scale}x", tmp_path)
    finally:
        browser.close()


def test_svg_is_a_vector_picture_with_the_webgl_layer_as_an_image(pw: Any, graph_figure: go.Figure) -> None:
    browser, page = plot_page(pw)
    try:
        w, h = plot(page, graph_figure)
        svg = image(page, "live", "svg")["data"].decode("utf-8")
        ref = image(page, "toimage", "svg")["data"].decode("utf-8")
    finally:
        browser.close()
    assert svg.startswith("<svg") and f'viewBox="0 0 {w} {h}"' in svg
    segments = sum(d.count("L") for d in re.findall(r'<path[^>]* d="(M[^"]*)"', svg))
    assert segments > 100  # every edge a segment of a vector path (the shapes; grid lines draw with "h"/"v")
    assert "select a step" not in svg and "step 0" in svg  # the title, as text
    assert "mean gate" in svg  # the colour bar's title
    # the WebGL layer (plotly's context and focus canvases): rasters, as in plotly's own SVG
    glimages = [re.search(r'<g class="glimages">(.*?)</g>', s) for s in (svg, ref)]
    assert glimages[0] and glimages[1]
    assert glimages[0].group(1).count("<image") == glimages[1].group(1).count("<image") >= 1
    assert "draglayer" not in svg and "non-scaling-stroke" not in svg


def test_base_href_pages_get_standalone_clip_paths(pw: Any, tmp_path: Path) -> None:
    browser, page = plot_page(pw, base_href="http://127.0.0.1:9/lab/")
    try:
        w, h = plot(page, heatmap_figure())
        # plotly's live plot refers to the page (here about:blank, which set_content leaves as its address)
        clip = page.evaluate("() => document.querySelector('#plot [clip-path]').getAttribute('clip-path')")
        assert re.fullmatch(r"url\('[^#)]+#clip\w+'\)", clip), clip
        live = image(page, "live", "svg")["data"].decode("utf-8")
        assert "url(#clip" in live and not re.search(r"url\((?:'|\"|&quot;)[^#)]+#", live)
        ref = image(page, "toimage", "png")["data"]
        _same(page, ref, image(page, "live", "png")["data"], "png", w, h, "base_href", tmp_path)
    finally:
        browser.close()


def test_another_size_falls_back_to_toimage_and_the_live_plot_is_unchanged(pw: Any) -> None:
    browser, page = plot_page(pw)
    try:
        plot(page, legend_figure())
        before = page.evaluate("() => document.getElementById('plot').innerHTML")
        for fmt in ("png", "svg"):
            assert image(page, "live", fmt, scale=2)["method"] == "live"
        assert page.evaluate("() => document.getElementById('plot').innerHTML") == before
        other = image(page, "live", "png", width=500, height=300, scale=2)
        assert other["method"] == "toImage" and png_size(other["data"]) == (1000, 600)
    finally:
        browser.close()
