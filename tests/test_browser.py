"""A real browser: JupyterLab on 127.0.0.1 with a token, the tool-loop notebook run in headless Chromium.

Starts ``jupyter lab`` (random port, random token, config/runtime/workspace dirs in a temp folder),
opens notebooks/04_tool_loops.ipynb with its parameters set (papermill-style injected cell) to a
synthetic 12-step transcript store, runs all cells,
checks that the transcript + graph widget renders, clicks a segment header and waits until the
graph shows that segment. Saves a screenshot before and after the click (and the click-to-redraw
latency as JSON) in $WORKBENCH_ARTIFACTS or the test's temp folder.

A second notebook holds only a transcript + graph widget: the linking test clicks a graph node (the
expert card appears, the transcript highlights that expert's tokens, another node changes them), an
edge (its hover text, then the list of tokens that took it), and types in the search box (the hits are
highlighted and can become the graph's selection), then exports the graph as PNG from the widget.

Chromium is the system one (/usr/bin/chromium or $BROWSER_PATH); nothing is downloaded.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from browser_helpers import (
    artifacts_dir,
    jupyter_lab,
    lab_page,
    require_browser,
    run_notebook,
)
from notebook_harness import inject_parameters
from widgets_helpers import transcript_store

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "04_tool_loops.ipynb"

# true once some plotly title in the page contains the text passed as arg
TITLE_MATCHES = (
    "(s) => Array.from(document.querySelectorAll('.js-plotly-plot .gtitle')).some(t => t.textContent.includes(s))"
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# Waits are on real events (a server answering, a DOM node appearing, a kernel status); their limits
# (browser_helpers: STARTUP_S, LONG_MS) are generous so a loaded machine only makes the test slower.


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    require_browser()
    root = tmp_path_factory.mktemp("lab")
    store = transcript_store(root / "tools.zarr", n_steps=12, n_transcripts=2)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # the notebook uses this store instead of replaying; the live agent needs the mini K2, this test is about the widget
    params = {"TOOLS_STORE": str(store), "EXPORTS": str(root / "exports"), "STORES": str(root / "stores")}
    inject_parameters(nb, {**params, "RUN_AGENT": False})
    nbformat.write(nb, root / "tools.ipynb")
    linking = nbformat.v4.new_notebook()
    linking.cells = [
        nbformat.v4.new_code_cell(
            "from workbench import open_store\n"
            "from workbench.viz.widgets import TranscriptGraphWidget\n"
            f"w = TranscriptGraphWidget(open_store({str(store)!r}), top_edges=6)\n"
            "w"
        )
    ]
    linking.metadata["kernelspec"] = nb.metadata.get("kernelspec", {"name": "python3", "display_name": "Python 3"})
    nbformat.write(linking, root / "linking.ipynb")
    with jupyter_lab(root) as lab:
        yield {**lab, "store": str(store)}


def test_transcript_graph_widget_in_jupyterlab(lab: dict[str, str], tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    artifacts = artifacts_dir(tmp_path)
    failed = artifacts / "browser_widget_failure.png"
    with sync_playwright() as pw, lab_page(pw, failed, console_errors=True) as (page, errors):
        try:
            run_notebook(page, lab, "tools.ipynb")
            heads = page.locator(".wb-transcript .wb-seg-head[data-span]")
            heads.first.wait_for()
            page.wait_for_selector(".jp-Notebook .jp-Cell:last-child .jp-InputArea-prompt:not(:has-text('*'))")
            heads.first.scroll_into_view_if_needed()
            graph = page.locator(".js-plotly-plot").first  # the widget's graph pane comes first in the page
            title = graph.locator(".gtitle")
            nodes = graph.locator(".scatterlayer .trace:last-child .point")
            page.wait_for_function(TITLE_MATCHES, arg="step 1 (")  # set by a later cell
            before = title.text_content() or ""
            n_points_before = nodes.count()
            page.screenshot(path=str(artifacts / "browser_widget_before.png"), full_page=True)

            # click the header of the third tool_result segment: the graph must switch to it
            target = page.locator(".wb-kind-tool_result .wb-seg-head[data-span]").nth(2)
            target.scroll_into_view_if_needed()
            t0 = time.perf_counter()
            target.click()
            page.wait_for_function(TITLE_MATCHES, arg="tool_result segment")
            latency_ms = (time.perf_counter() - t0) * 1000
            after = title.text_content() or ""
            n_points_after = nodes.count()
            assert page.locator(".wb-seg.wb-sel").count() == 1
            page.screenshot(path=str(artifacts / "browser_widget_after.png"), full_page=True)
            assert before != after and "step 2" in after, (before, after)
            assert n_points_before > 0 and n_points_after > 0
            (artifacts / "browser_widget.json").write_text(
                json.dumps(
                    {
                        "click_to_graph_ms": latency_ms,
                        "title_before": before,
                        "title_after": after,
                        "nodes_before": n_points_before,
                        "nodes_after": n_points_after,
                    },
                    indent=2,
                )
            )
            assert not [e for e in errors if "wb-" in e or "anywidget" in e or "plotly" in e.lower()], errors
        except Exception:  # what the page shows, beside lab_page's screenshot and its errors
            titles = page.evaluate("Array.from(document.querySelectorAll('.gtitle')).map(t => t.textContent)")
            outputs = page.evaluate(
                "Array.from(document.querySelectorAll('.jp-OutputArea-output')).map(o => o.innerText.slice(0, 300))"
            )
            print("plot titles:", titles, "\noutputs:", outputs)
            raise


def _click_point(page: Any, point: Any) -> None:
    """Click the centre of a plotly point (plotly picks the nearest point to the mouse)."""
    point.scroll_into_view_if_needed()
    box = point.bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)


def test_graph_clicks_cards_and_search_in_jupyterlab(lab: dict[str, str], tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    from workbench import open_store
    from workbench.experts import find
    from workbench.store.select import Selection

    artifacts = artifacts_dir(tmp_path)
    with sync_playwright() as pw, lab_page(pw, artifacts / "browser_linking_failure.png") as (page, errors):
        run_notebook(page, lab, "linking.ipynb")
        view = page.locator(".wb-transcript")
        view.wait_for()
        page.wait_for_function(TITLE_MATCHES, arg="step 0 (")
        graph = page.locator(".wb-plot-pane").first
        nodes = graph.locator(".scatterlayer .trace:last-child .point")
        nodes.first.wait_for()
        assert view.get_attribute("data-highlighted") in (None, "0")

        # a node: its card appears and the transcript highlights the tokens routed to it
        _click_point(page, nodes.nth(0))
        card = page.locator(".wb-card-title", has_text="Expert L")
        card.wait_for()
        page.wait_for_function("() => Number(document.querySelector('.wb-transcript').dataset.highlighted || 0) > 0")
        first_card = card.text_content()
        first_hl = page.evaluate("Array.from(document.querySelectorAll('.wb-tok-hl')).map(t => Number(t.dataset.pos))")
        assert first_hl, "no highlighted token in the transcript"
        n_routed = int((page.locator(".wb-card .sub").first.text_content() or "").split(" of ")[0])
        assert int(view.get_attribute("data-highlighted") or 0) == n_routed
        page.screenshot(path=str(artifacts / "browser_linking_node.png"), full_page=True)
        # another node: another card, other highlighted tokens
        _click_point(page, nodes.nth(nodes.count() - 1))
        page.wait_for_function(
            "(t) => { const c = document.querySelector('.wb-card-title'); return c && c.textContent !== t; }",
            arg=first_card,
        )
        page.wait_for_function(
            "(a) => { const b = Array.from(document.querySelectorAll('.wb-tok-hl'))"
            ".map(t => Number(t.dataset.pos)); return b.length > 0 && JSON.stringify(b) !== JSON.stringify(a); }",
            arg=first_hl,
        )

        # an edge: hover text with its numbers and top tokens, a click lists the tokens that took it
        edges = graph.locator(".scatterlayer .trace:nth-last-child(2) .point")
        edges.first.wait_for(state="attached")
        edge = edges.nth(0)
        edge.scroll_into_view_if_needed()
        box = edge.bounding_box()
        assert box is not None
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        hover = graph.locator(".hoverlayer .hovertext", has_text="top tokens")
        hover.wait_for()
        hover_text = hover.text_content() or ""
        assert "weight" in hover_text and "share" in hover_text, hover_text
        page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.locator(".wb-edge-tokens").wait_for()
        n_listed = page.locator(".wb-edge-tokens li").count()
        took = int((page.locator(".wb-edge .sub").first.text_content() or "").split()[0])
        assert n_listed == took > 0
        page.wait_for_function(
            "(n) => Number(document.querySelector('.wb-transcript').dataset.highlighted) === n", arg=took
        )
        assert f"{took} tokens · weight" in hover_text, hover_text  # the hover's count is the listed tokens
        page.screenshot(path=str(artifacts / "browser_linking_edge.png"), full_page=True)

        # the search box: hits highlighted, then graphed
        ds = open_store(lab["store"])
        want = find(ds, "sum", max_hits=1000, selection=Selection(sequences=("t0",)))
        box_in = page.locator(".wb-search")
        box_in.fill("sum")
        box_in.press("Enter")
        page.wait_for_function(
            "(n) => Number(document.querySelector('.wb-transcript').dataset.hits) === n", arg=len(want)
        )
        assert len(want) > 0 and page.locator(".wb-tok-hit").count() > 0
        assert f"{len(want)} hits" in (page.locator(".wb-search-info").text_content() or "")
        page.locator(".wb-search-select").click()
        page.wait_for_function(TITLE_MATCHES, arg="search hits")
        page.screenshot(path=str(artifacts / "browser_linking_search.png"), full_page=True)

        # PNG export from the live widget: the browser composes it from what it has drawn, at the size
        # shown and 2 pixels per CSS pixel (plot_image.js), the kernel writes it
        path_box = page.locator(".widget-text input").first
        path_box.fill(str(Path(lab["root"]) / "linked"))
        path_box.press("Tab")
        page.locator("button", has_text="Export graph").first.click()
        page.locator(".widget-html", has_text="linked.png").wait_for()
        png = (Path(lab["root"]) / "linked.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        shown = graph.evaluate("(e) => ['width', 'height'].map(k => e.querySelector('.main-svg').getAttribute(k))")
        shown = [float(v) for v in shown]
        size = (int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big"))
        assert size == (int(2 * shown[0]), int(2 * shown[1])), (size, shown)
        assert graph.get_attribute("data-image") == "live"  # not plotly's toImage re-plot
        assert not [e for e in errors if "wb" in e or "plotly" in e.lower()], errors
