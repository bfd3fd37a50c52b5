"""The transcript pane's clicks in a real browser (JupyterLab + headless Chromium): what a click sends and shows.

A transcript + graph widget on a 60-step synthetic tool-loop transcript (segments far below the pane's
fold, which ``content-visibility`` lets the browser skip). Checks, for a token click, the step slider,
the *All* button and a segment header: the selection reaches the kernel (the graph's title names it),
the page sends it before it redraws the pane (the widget's websocket message leaves before its
``wb-rendered`` event, so the DOM work is not on the click's critical path), and the pane marks what
was selected. Then the search: jumping to the last hit, far below, scrolls it into the pane (scrolling
reads client rects, as a segment is its tokens' offsetParent under layout containment).
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

TITLE_MATCHES = (
    "(s) => Array.from(document.querySelectorAll('.js-plotly-plot .gtitle')).some(t => t.textContent.includes(s))"
)

# Before JupyterLab opens a socket: record, once armed, the order of the first websocket send and of the
# pane's ``wb-rendered`` event for the selection.
ORDER_HOOK = """(() => {
  window.__order = null;
  const send = window.WebSocket.prototype.send;
  window.WebSocket.prototype.send = function (data) {
    if (window.__order && !window.__order.includes('send')) window.__order.push('send');
    return send.call(this, data);
  };
  document.addEventListener('wb-rendered', (ev) => {
    if (window.__order && ev.detail && ev.detail.what === 'selection') window.__order.push('rendered');
  }, true);
})();"""

# Is the element inside the transcript body's visible box?
IN_VIEW = """(e) => { const b = e.closest('.wb-body').getBoundingClientRect(), r = e.getBoundingClientRect();
  return r.height > 0 && r.top >= b.top - 1 && r.bottom <= b.bottom + 1; }"""


# Where it is, for a failure's message.
RECTS = """(e) => { const b = e.closest('.wb-body'); const r = e.getBoundingClientRect(), q = b.getBoundingClientRect();
  return {el: [r.top, r.bottom], body: [q.top, q.bottom], scrollTop: b.scrollTop, scrollHeight: b.scrollHeight}; }"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    require_browser()
    root = tmp_path_factory.mktemp("lab")
    store = transcript_store(root / "long.zarr", n_steps=60, n_transcripts=1)
    widget_notebook(root / "clicks.ipynb", store)
    with jupyter_lab(root) as lab:
        yield lab


def _wait_in_view(loc: Any) -> None:
    """Wait until ``loc`` lies inside the transcript body's visible box (the pane scrolls it there and
    keeps it there for a few frames while what is above it grows); fail with its boxes after 60 s."""
    try:
        loc.page.wait_for_function(IN_VIEW, arg=loc.element_handle(), timeout=60_000)
    except Exception as err:
        raise AssertionError(f"not scrolled into the pane: {loc.evaluate(RECTS)}") from err


def _select(page: Any, action: Any, title: str) -> None:
    """Do ``action``, wait until the graph's title contains ``title``; the page sent before it redrew."""
    page.evaluate("() => { window.__order = []; }")
    action()
    page.wait_for_function(TITLE_MATCHES, arg=title)
    page.wait_for_function("() => window.__order.includes('rendered')")
    order = page.evaluate("() => { const o = window.__order; window.__order = null; return o; }")
    assert order[:2] == ["send", "rendered"], order


def test_clicks_send_first_and_mark_the_selection(lab: dict[str, str], tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    artifacts = artifacts_dir(tmp_path)
    with sync_playwright() as pw, lab_page(pw, artifacts / "transcript_clicks_failure.png") as (page, errors):
        page.add_init_script(ORDER_HOOK)
        run_notebook(page, lab, "clicks.ipynb")
        page.wait_for_function(TITLE_MATCHES, arg="step 0 (")
        page.wait_for_selector(".jp-Notebook .jp-Cell:last-child .jp-InputArea-prompt:not(:has-text('*'))")
        view = page.locator(".wb-transcript")
        status = view.locator(".wb-status")

        # a token of the first step: sent, then marked (and only it)
        tok = view.locator(".wb-sel .wb-tok").filter(has_text=re.compile(r"\w")).nth(3)
        tok.scroll_into_view_if_needed()
        pos = tok.get_attribute("data-pos")
        _select(page, tok.click, f"token {pos} ")
        assert view.locator(".wb-tok-sel").count() == 1
        assert view.locator(".wb-tok-sel").get_attribute("data-pos") == pos
        assert f"token {pos}:" in (status.text_content() or "")

        # the slider to the last step: its segments are marked and scrolled into the pane
        n_steps = int(view.locator(".wb-step-slider").get_attribute("max") or 0) + 1
        last = n_steps - 1
        set_slider = (
            "(v) => { const e = document.querySelector('.wb-transcript .wb-step-slider'); e.value = String(v);"
            " e.dispatchEvent(new Event('change', {bubbles: true})); }"
        )
        _select(page, lambda: page.evaluate(set_slider, last), f"step {last} (")
        sel = view.locator(".wb-seg.wb-sel")
        assert sel.count() >= 2 and view.locator(".wb-tok-sel").count() == 0
        assert all(f"step {last}" in (h or "") for h in sel.locator(".wb-seg-head").all_text_contents())
        _wait_in_view(sel.first)
        assert f"step {last}:" in (status.text_content() or "")

        # a token far down, in that step: sent, then marked
        tok = sel.locator(".wb-tok").filter(has_text=re.compile(r"\w")).nth(2)
        tok.scroll_into_view_if_needed()
        pos = tok.get_attribute("data-pos")
        _select(page, tok.click, f"token {pos} ")
        assert view.locator(".wb-tok-sel").get_attribute("data-pos") == pos

        # All: the button shows it, nothing is marked
        _select(page, view.locator(".wb-all").click, "whole transcript")
        assert "wb-active" in (view.locator(".wb-all").get_attribute("class") or "")
        assert view.locator(".wb-tok-sel").count() == 0 and view.locator(".wb-seg.wb-sel").count() == 0

        # a segment header: that one segment marked
        head = view.locator(".wb-kind-tool_result .wb-seg-head[data-span]").nth(1)
        head.scroll_into_view_if_needed()
        _select(page, head.click, "tool_result segment")
        assert view.locator(".wb-seg.wb-sel").count() == 1
        assert view.locator(".wb-seg.wb-sel .wb-seg-head").get_attribute("data-span") == head.get_attribute("data-span")

        # the search's last hit (▲ from the first wraps to it) is far below: it is scrolled into the pane
        view.locator(".wb-body").evaluate("(b) => { b.scrollTop = 0; }")
        box = view.locator(".wb-search")
        box.fill("sum")
        box.press("Enter")
        page.wait_for_function("() => Number(document.querySelector('.wb-transcript').dataset.hits) > 1")
        view.locator("button[title='previous hit']").click()
        n_hits = int(view.get_attribute("data-hits") or 0)
        page.wait_for_function(
            "(n) => document.querySelector('.wb-search-info').textContent.includes(`hit ${n}/${n}`)", arg=n_hits
        )
        cur = view.locator(".wb-tok-cur").first
        _wait_in_view(cur)
        hit_pos = int(cur.get_attribute("data-pos") or 0)
        first_hit = int(view.locator(".wb-tok-hit").first.get_attribute("data-pos") or 0)
        assert hit_pos > first_hit
        page.screenshot(path=str(artifacts / "transcript_clicks.png"), full_page=True)
        assert not [e for e in errors if "wb" in e or "anywidget" in e], errors
