"""The overview's HTML page in a real headless Chromium: it draws every supernode, and clicking one lists its experts.

The page is written by `workbench overview --export` from a real synthetic store, opened from disk (no
server: it must work offline), and driven with Playwright and the system Chromium (nothing downloaded).
A screenshot after the click is kept in $WORKBENCH_ARTIFACTS or the test's temp folder.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from workbench.cli.app import main
from workbench.graph.supernodes import supernodes
from workbench.store.io import open_store
from workbench.store.synthetic import synthetic_store

CHROMIUM = os.environ.get("BROWSER_PATH", "/usr/bin/chromium")
pytestmark = [pytest.mark.browser, pytest.mark.slow]
LONG_MS = 600_000  # waits are on events; the limit only stops a hung browser


def test_clicking_a_supernode_shows_its_experts(tmp_path: Path, monkeypatch) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (install Debian's chromium package: make chromium)")
    from playwright.sync_api import sync_playwright

    store = synthetic_store(tmp_path / "s.zarr", n_tokens=4000, n_layers=8, n_experts=48, k=4, progress=False)
    page_path = tmp_path / "overview.html"
    monkeypatch.setattr(sys, "argv", ["workbench", "overview", store, "--supernodes", "5", "--export", str(page_path)])
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code in (0, None)
    sn = supernodes(open_store(store), n_supernodes=5)
    artifacts = Path(os.environ.get("WORKBENCH_ARTIFACTS", tmp_path))
    artifacts.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 1200})
            page.set_default_timeout(LONG_MS)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(page_path.as_uri())
            nodes = page.locator(".sankey-node")
            nodes.first.wait_for()
            assert nodes.count() == int(sn.n_groups.sum())  # every supernode drawn
            assert "Click a block" in (page.locator("#panel").text_content() or "")
            # the 3rd block of the 2nd column: find which supernode it is from plotly's own data
            target = 5 + 2
            layer_pos, group = page.evaluate(
                f"(() => {{ const d = document.getElementById('wb-overview').data[0].node.customdata[{target}];"
                " return [d[0], d[1]]; })()"
            )
            nodes.nth(target).locator(".node-rect").click(force=True)
            page.wait_for_function("document.getElementById('panel').dataset.key !== undefined")
            head = page.locator("#panel h3").text_content() or ""
            members = sn.members(layer_pos, group)
            want = f"L{sn.layers[layer_pos]} · S{group} (the block labelled E{members[0]}): {members.size} experts"
            assert head.startswith(want), head
            cells = page.locator("#panel tbody tr td:first-child").all_text_contents()
            assert cells == [f"E{e}" for e in members[:12]]
            page.screenshot(path=str(artifacts / "overview_clicked.png"), full_page=True)
            assert not errors, errors
        finally:
            browser.close()
