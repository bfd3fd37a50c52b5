"""A K2-shaped graph in a real browser: the nodes as one heatmap, edges over it, clicks on both.

JupyterLab (``browser_helpers``) runs a notebook with a ``TranscriptGraphWidget`` on a store of K2's
grid (60 MoE layers × 384 experts, top-8, a short synthetic transcript), so the graph pane draws its
nodes as a heatmap (``viz/widgets/node_layer.py``). In headless Chromium the test hovers and clicks a
drawn cell (its hover names the node, and the expert card of that node opens), then an edge's midpoint
marker over the cells (its hover has the edge's numbers and top tokens, and the click lists the tokens
that took it). Screenshots go to $WORKBENCH_ARTIFACTS or the test's temp folder.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from browser_helpers import CHROMIUM, LONG_MS, chromium, jupyter_lab, run_notebook
from widgets_helpers import transcript_store

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# Page coordinates of a drawn cell of the node heatmap whose neighbours above and below are drawn too (a
# cell is ~1 px tall at 384 experts) and that is away from the edge markers, or of an edge's midpoint
# marker; from plotly's own axes.
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
    const i = Math.floor(frac * tr.x.length);
    x = tr.x[i];
    y = tr.y[i];
  }
  gd.scrollIntoView({block: 'center'});
  const b = gd.getBoundingClientRect();
  return {type: tr.type, xy: [b.left + xa._offset + xa.l2p(x), b.top + ya._offset + ya.l2p(y)]};
}"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (install Debian's chromium package: make chromium)")
    pytest.importorskip("playwright.sync_api")
    root = tmp_path_factory.mktemp("lab")
    store = transcript_store(root / "k2.zarr", n_steps=3, n_transcripts=1, n_layers=60, n_experts=384)
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "from workbench import open_store\n"
            "from workbench.viz.widgets import TranscriptGraphWidget\n"
            f"w = TranscriptGraphWidget(open_store({str(store)!r}))\nw"
        )
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, root / "grid.ipynb")
    with jupyter_lab(root) as lab:
        yield lab


def test_heatmap_cells_and_edges_over_them_hover_and_click(lab: dict[str, str], tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    artifacts = Path(os.environ.get("WORKBENCH_ARTIFACTS", tmp_path))
    artifacts.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = chromium(pw)
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        page.set_default_timeout(LONG_MS)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        try:
            run_notebook(page, lab, "grid.ipynb")
            page.wait_for_function(
                "() => Array.from(document.querySelectorAll('.gtitle')).some(t => t.textContent.includes('step 0 ('))"
            )
            graph = page.locator(".wb-plot-pane[data-pane=graph]")
            graph.locator(".heatmaplayer image").wait_for(state="attached")  # the nodes: one image
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
        except Exception:
            page.screenshot(path=str(artifacts / "browser_grid_failure.png"), full_page=True)
            print("page errors:", errors)
            raise
        finally:
            browser.close()
