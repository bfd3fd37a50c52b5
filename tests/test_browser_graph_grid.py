"""A K2-shaped graph in a real browser: the nodes as one heatmap, edges over it, clicks on both.

JupyterLab (``browser_helpers``) runs a notebook with a ``TranscriptGraphWidget`` on a store of K2's
grid (60 MoE layers × 384 experts, top-8, a short synthetic transcript), so the graph pane draws its
nodes as a heatmap (``viz/widgets/node_layer.py``). In headless Chromium the first test hovers and
clicks a drawn cell (its hover names the node, and the expert card of that node opens), then an edge's
midpoint marker over the cells (its hover has the edge's numbers and top tokens, and the click lists
the tokens that took it). The second clicks quickly, as a user going from node to edge does: a cell
then an edge marker, an edge marker then a cell, the same cell twice then an edge, each pair well
within plotly's double-click delay; every click must reach the kernel with the point under the mouse
and the axes must not move. It also double-clicks a cell, and zooms in with a drag then double-clicks
(back to the graph's own axes). Screenshots go to $WORKBENCH_ARTIFACTS or the test's temp folder.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_helpers import (
    artifacts_dir,
    jupyter_lab,
    lab_page,
    require_browser,
    run_notebook,
    widget_notebook,
)
from widgets_helpers import transcript_store

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# Page coordinates of a drawn cell of the node heatmap whose neighbours above and below are drawn too (a
# cell is ~1 px tall at 384 experts) and that is away from the edge markers, or of an edge's midpoint
# marker away from the others; from plotly's own axes.
POINT = """([name, frac]) => {
  const gd = document.querySelector('.wb-plot-pane[data-pane=graph] .js-plotly-plot');
  const tr = gd._fullData.find(t => t.name === name);
  let x, y;
  const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
  if (tr.type === 'heatmap') {
    // away from every edge marker (they win the hover on themselves), so the cell gets it
    const em = gd._fullData.find(t => t.name === 'edges');
    const far = (x, y) => em.x.every((ex, i) => Math.hypot(xa.l2p(ex) - xa.l2p(x), ya.l2p(em.y[i]) - ya.l2p(y)) > 12);
    const z = tr.z, ok = (r, c) => r >= 0 && r < z.length && Number.isFinite(z[r][c]);
    const cells = [];
    z.forEach((row, r) => row.forEach((v, c) => {
      if (ok(r, c) && ok(r - 1, c) && ok(r + 1, c) && far(tr.x[c], r)) cells.push([r, c]);
    }));
    const [r, c] = cells[Math.floor(frac * cells.length)];
    x = tr.x[c];
    y = r;
  } else {
    // a marker with no other within 10 px (hover picks the nearest: neighbours 1 px apart are a toss-up)
    const px = Array.from(tr.x, (ex, i) => [xa.l2p(ex), ya.l2p(tr.y[i])]);
    const apart = (i, j) => j === i || Math.hypot(px[j][0] - px[i][0], px[j][1] - px[i][1]) > 10;
    let alone = px.map((p, i) => i).filter(i => px.every((q, j) => apart(i, j)));
    if (!alone.length) alone = px.map((p, i) => i);
    const i = alone[Math.floor(frac * alone.length)];
    x = tr.x[i];
    y = tr.y[i];
  }
  gd.scrollIntoView({block: 'center'});
  const b = gd.getBoundingClientRect();
  return {type: tr.type, xy: [b.left + xa._offset + xa.l2p(x), b.top + ya._offset + ya.l2p(y)]};
}"""

# Every click message the page sends to the kernel (plot_pane.js: {"type": "click", "trace", "point"}),
# read off the websocket as it leaves; installed before JupyterLab opens any socket.
RECORD_CLICKS = """(() => {
  window.__wbClicks = [];
  const send = window.WebSocket.prototype.send;
  const text = new TextDecoder();
  window.WebSocket.prototype.send = function (data) {
    try {
      const s = typeof data === 'string' ? data
        : text.decode(data instanceof ArrayBuffer ? data
          : new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
      const m = s.match(/"type":"click","trace":(\\d+),"point":(\\[[-\\d,]*\\]|-?\\d+)/);
      if (m) window.__wbClicks.push([Number(m[1]), JSON.parse(m[2])]);
    } catch (e) { /* not a text frame */ }
    return send.call(this, data);
  };
})();"""

# The clicks sent so far as [trace name, point] (trace names from the figure drawn)
SENT = """() => {
  const gd = document.querySelector('.wb-plot-pane[data-pane=graph] .js-plotly-plot');
  return window.__wbClicks.map(([t, p]) => [gd.data[t].name, p]);
}"""
# The point plotly's hover picked at the mouse (null when none): trace name, point, node or edge label
HOVERED = """() => {
  const gd = document.querySelector('.wb-plot-pane[data-pane=graph] .js-plotly-plot');
  const p = gd._hoverdata && gd._hoverdata[0];
  if (!p) return null;
  const card = p.data.name === 'experts' ? `Expert L${p.x}:E${p.y}` : `Edge ${p.data.text[p.pointNumber]}`;
  return {name: p.data.name, point: p.pointNumber, card};
}"""
RANGES = """() => {
  const l = document.querySelector('.wb-plot-pane[data-pane=graph] .js-plotly-plot')._fullLayout;
  return [l.xaxis.range, l.yaxis.range];
}"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    require_browser()
    root = tmp_path_factory.mktemp("lab")
    store = transcript_store(root / "k2.zarr", n_steps=3, n_transcripts=1, n_layers=60, n_experts=384)
    widget_notebook(root / "grid.ipynb", store)
    mini = transcript_store(root / "mini.zarr", n_steps=3, n_transcripts=1)  # the mini K2's 6 × 64: markers
    widget_notebook(root / "mini.ipynb", mini)
    with jupyter_lab(root) as lab:
        yield lab


def _open_graph(page: Any, lab: dict[str, str], notebook: str = "grid.ipynb") -> Any:
    """Run ``notebook`` and wait for its graph (on K2's grid its nodes are one heatmap image); the graph
    pane's locator."""
    run_notebook(page, lab, notebook)
    page.wait_for_function(
        "() => Array.from(document.querySelectorAll('.gtitle')).some(t => t.textContent.includes('step 0 ('))"
    )
    graph = page.locator(".wb-plot-pane[data-pane=graph]")
    if notebook == "grid.ipynb":
        graph.locator(".heatmaplayer image").wait_for(state="attached")
    else:
        graph.locator(".scatterlayer .point").first.wait_for(state="attached")
    return graph


def test_heatmap_cells_and_edges_over_them_hover_and_click(lab: dict[str, str], tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    artifacts = artifacts_dir(tmp_path)
    with sync_playwright() as pw, lab_page(pw, artifacts / "browser_grid_failure.png") as (page, errors):
        graph = _open_graph(page, lab)
        page.screenshot(path=str(artifacts / "browser_grid.png"), full_page=True)

        # a cell: the hover names its node, a click opens that node's expert card
        cell = page.evaluate(POINT, ["experts", 0.5])
        assert cell["type"] == "heatmap"
        page.mouse.move(*cell["xy"])
        hover = graph.locator(".hoverlayer .hovertext", has_text="mean gate")
        hover.wait_for()
        # the hover's first line names the node (text_content() runs the lines together: "L46:E881 tokens")
        node = re.fullmatch(r"L(\d+):E(\d+)", hover.locator("tspan.line").first.text_content() or "")
        assert node and "tokens" in (hover.text_content() or "")
        page.mouse.click(*cell["xy"])
        page.locator(".wb-card-title", has_text=f"Expert L{node[1]}:E{node[2]}").wait_for()
        page.wait_for_function("() => Number(document.querySelector('.wb-transcript').dataset.highlighted) > 0")

        # an edge's midpoint marker over the cells: its hover, then the tokens that took it
        edge = page.evaluate(POINT, ["edges", 0.3])
        page.mouse.move(*edge["xy"])
        hover = graph.locator(".hoverlayer .hovertext", has_text="top tokens")
        hover.wait_for()
        assert "weight" in (hover.text_content() or "") and "share" in (hover.text_content() or "")
        page.mouse.click(*edge["xy"])
        page.locator(".wb-edge-tokens").wait_for()
        took = int((page.locator(".wb-edge .sub").first.text_content() or "").split()[0])
        assert page.locator(".wb-edge-tokens li").count() == took > 0
        page.screenshot(path=str(artifacts / "browser_grid_edge.png"), full_page=True)
        assert not [e for e in errors if "wb" in e or "plotly" in e.lower()], errors


def _rest_on(page: Any, xy: list[float]) -> dict[str, Any]:
    """What plotly's hover picks with the mouse resting at ``xy`` (coming from outside the plot): the
    point a click there must send."""
    page.mouse.move(5, 5)
    page.mouse.move(*xy)
    return dict(page.wait_for_function(HOVERED).json_value())


def _card_shows(page: Any, hovered: dict[str, Any]) -> None:
    """Wait until the card answers a click on ``hovered``: its node's expert card, or its edge's token list."""
    page.locator(".wb-card-title", has_text=hovered["card"]).wait_for()
    if hovered["card"].startswith("Edge"):
        page.locator(".wb-edge-tokens li").first.wait_for()


def _sent(page: Any, n: int) -> None:
    """Wait until ``n`` click messages have left the page (each goes as the mouse button comes up)."""
    try:
        page.wait_for_function("(n) => window.__wbClicks.length >= n", arg=n)
    except Exception as err:
        raise AssertionError(f"{n} clicks not sent; sent: {page.evaluate(SENT)}") from err


@pytest.mark.parametrize("notebook", ["grid.ipynb", "mini.ipynb"])
def test_quick_clicks_each_reach_the_kernel_and_the_axes_stay(
    lab: dict[str, str], tmp_path: Path, notebook: str
) -> None:
    """Clicks in quick succession (plotly counts any two within its doubleClickDelay, 500 ms, as a double
    click; its hover, which picks the clicked point, runs at most every 50 ms) each reach the kernel
    with the point under the mouse, and leave the axes where the graph put them. On K2's grid (nodes:
    a heatmap, edge markers: WebGL) and on the mini K2's (nodes and edge markers: SVG markers)."""
    from playwright.sync_api import sync_playwright

    artifacts = artifacts_dir(tmp_path)
    failed = artifacts / f"browser_quick_{notebook[:-6]}_failure.png"
    with sync_playwright() as pw, lab_page(pw, failed) as (page, errors):
        page.add_init_script(RECORD_CLICKS)
        _open_graph(page, lab, notebook)
        axes = page.evaluate(RANGES)
        assert axes[1] == ([-0.5, 383.5] if notebook == "grid.ipynb" else [-1, 64]), axes
        where = {
            t: page.evaluate(POINT, point) for t, point in
            {"cell": ["experts", 0.5], "other": ["experts", 0.2], "edge": ["edges", 0.3]}.items()
        }  # fmt: skip
        picked = {t: _rest_on(page, w["xy"]) for t, w in where.items()}
        assert [picked[t]["name"] for t in where] == ["experts", "experts", "edges"], picked
        page.mouse.move(5, 5)
        for seq in (["cell", "edge"], ["edge", "other"], ["cell", "cell", "edge"], ["edge", "cell", "other"]):
            n = len(page.evaluate(SENT))
            for t in seq:  # nothing in between: each click follows the last at once
                page.mouse.click(*where[t]["xy"])
            _sent(page, n + len(seq))
            sent = page.evaluate(SENT)[n:]
            assert sent == [[picked[t]["name"], picked[t]["point"]] for t in seq], (seq, sent, picked)
            _card_shows(page, picked[seq[-1]])  # the kernel's answer to the last click
            assert page.evaluate(RANGES) == axes, seq
            # the targets did not move on the page (no scroll between the clicks): the clicks hit them
            assert page.evaluate(POINT, ["edges", 0.3])["xy"] == where["edge"]["xy"], seq
        page.screenshot(path=str(artifacts / f"browser_quick_{notebook[:-6]}.png"), full_page=True)

        # a user's double-click on a cell: two clicks of that node, the axes stay
        n = len(page.evaluate(SENT))
        page.mouse.dblclick(*where["cell"]["xy"])
        _sent(page, n + 2)
        assert page.evaluate(SENT)[n:] == [[picked["cell"]["name"], picked["cell"]["point"]]] * 2
        _card_shows(page, picked["cell"])
        assert page.evaluate(RANGES) == axes

        # zoom in with a drag, then a double-click goes back to the graph's own axes (not autoranged)
        box = page.locator(".wb-plot-pane[data-pane=graph] .nsewdrag").bounding_box()  # the plot area
        assert box is not None
        x0, y0 = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        page.mouse.move(x0 - 60, y0 - 60)
        page.mouse.down()
        page.mouse.move(x0, y0, steps=5)
        page.mouse.move(x0 + 60, y0 + 60, steps=5)
        page.mouse.up()
        page.wait_for_function(f"(a) => JSON.stringify(({RANGES})()) !== JSON.stringify(a)", arg=axes)
        page.mouse.dblclick(x0, y0)
        page.wait_for_function(f"(a) => JSON.stringify(({RANGES})()) === JSON.stringify(a)", arg=axes)
        # and the graph still answers a click
        edge_again = page.evaluate(POINT, ["edges", 0.6])["xy"]
        again = _rest_on(page, edge_again)
        page.mouse.click(*edge_again)
        _card_shows(page, again)
        assert not [e for e in errors if "wb" in e or "plotly" in e.lower()], errors


# The pane's redraw (plot_pane.js: Plotly.react) of the figure with fresh arrays, the edge markers switched
# between WebGL and SVG (a full replot, as when a selection crosses GL_EDGE_MARKERS), as it can happen
# while a mouse button is down when the kernel answers an earlier action. The config is the pane's
# (plot_pane.js CONFIG): another one makes react start the plot afresh, which drops plotly's drag state.
REDRAW = """async () => {
  const gd = document.querySelector('.wb-plot-pane[data-pane=graph] .js-plotly-plot');
  const data = gd.data.map(t => {
    const c = {...t};
    for (const k of ['x', 'y', 'z']) if (c[k] && c[k].slice) c[k] = c[k].slice();
    if (c.name === 'edges') c.type = c.type === 'scattergl' ? 'scatter' : 'scattergl';
    return c;
  });
  const layout = {...gd.layout, title: {...gd.layout.title, text: 'redrawn'}};
  await Plotly.react(gd, data, layout, {displaylogo: false, responsive: true, doubleClick: false});
  return gd._dragging;
}"""


def test_a_redraw_between_press_and_release_keeps_the_click(lab: dict[str, str], tmp_path: Path) -> None:
    """A redraw of the graph (a full replot) between mouse-down and mouse-up: the click still goes out
    with the point under the mouse (plotly's drag state lives on the plot div and survives it)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw, lab_page(pw, artifacts_dir(tmp_path) / "browser_redraw_failure.png") as (page, _):
        page.add_init_script(RECORD_CLICKS)
        _open_graph(page, lab)
        for name, frac in (("experts", 0.5), ("edges", 0.3)):
            xy = page.evaluate(POINT, [name, frac])["xy"]
            picked = _rest_on(page, xy)
            n = len(page.evaluate(SENT))
            page.mouse.down()
            assert page.evaluate(REDRAW) is True  # redrawn while the button is down
            page.mouse.up()
            _sent(page, n + 1)
            assert page.evaluate(SENT)[n:] == [[picked["name"], picked["point"]]]
            _card_shows(page, picked)
