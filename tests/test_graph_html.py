"""Graph HTML pages in headless Chromium: a click on a node opens its expert card; user text stays text.

A real zarr store (three synthetic domains), the real reasoning graph and export, the system Chromium
driven by Playwright; waits are on page events and DOM state, never fixed sleeps.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from widgets_helpers import domain_store, open_test_store
from workbench.viz import export_graph
from workbench.viz.graph_html import expert_cards

from workbench.graph.build import reasoning_graph
from workbench.graph.difference import difference_of_selections
from workbench.store.select import Selection

HOSTILE = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):
    return open_test_store(domain_store(tmp_path_factory.mktemp("gh") / "d.zarr", per_domain=6, n_tokens=50))


def test_cards_hold_the_graph_and_the_expert_page(store):
    sel = Selection(domains=("math",))
    g = reasoning_graph(store, sel, top_edges=6)
    cards = expert_cards(g, store, sel)
    assert set(cards) == set(g.nodes)
    node = max(g.nodes, key=lambda n: g.nodes[n]["load"])
    card = cards[node]
    facts = dict(card["facts"])
    assert facts["tokens routed"] == f"{g.nodes[node]['tokens']:,}"
    assert facts["MoE layer"] == str(g.nodes[node]["layer"])
    headings = [h for h, _ in card["sections"]]
    assert "tokens by domain" in headings
    if g.out_degree(node):
        assert any(h.startswith("strongest outgoing edges (weight") for h in headings)
    assert any(h.startswith("tokens special to it (lift") for h in headings)
    assert any(h.startswith("top contexts") for h in headings)
    assert all(len(h) < 80 for h in headings)
    bare = expert_cards(g)  # without the store: the graph's own facts only
    assert not any(h.startswith("top contexts") for h, _ in bare[node]["sections"])


def test_difference_cards_show_both_loads(store):
    a, b = Selection(domains=("math",)), Selection(domains=("code",))
    g = difference_of_selections(store, a, b, top_edges=4)
    cards = expert_cards(g)
    node = next(iter(g.nodes))
    labels = [label for label, _ in cards[node]["facts"]]
    assert "Δ load" in labels and any(label.startswith("load in") for label in labels)


@pytest.mark.browser
@pytest.mark.slow
def test_clicking_a_node_opens_its_card(store, tmp_path: Path):
    pytest.importorskip("playwright.sync_api")
    from playwright.sync_api import sync_playwright

    chromium = os.environ.get("BROWSER_PATH", "/usr/bin/chromium")
    if not os.access(chromium, os.X_OK):
        pytest.skip("no Chromium (run `make chromium`)")
    sel = Selection(domains=("math",))
    g = reasoning_graph(store, sel, top_edges=6)
    node = max(g.nodes, key=lambda n: g.nodes[n]["load"])
    g.nodes[node]["top_tokens"] = HOSTILE  # user text (token text) in a card must stay text
    path = export_graph(g, tmp_path / "g.html", store=store, selection=sel)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(path.as_uri())
            page.wait_for_function("() => document.getElementById('wb-graph')?._fullLayout", timeout=120_000)
            xy = page.evaluate(
                """node => {
                const gd = document.getElementById('wb-graph');
                const d = gd._fullData.find(t => Array.isArray(t.customdata) && t.customdata.includes(node));
                const i = d.customdata.indexOf(node), xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
                const r = gd.getBoundingClientRect();
                return [r.left + xa._offset + xa.l2p(d.x[i]), r.top + ya._offset + ya.l2p(d.y[i])];
            }""",
                node,
            )
            page.mouse.move(*xy)
            page.mouse.click(*xy)
            page.wait_for_function(
                "node => document.getElementById('wb-card').dataset.node === node", arg=node, timeout=60_000
            )
            text = page.inner_text("#wb-card")
            assert node in text and "tokens routed" in text and "top contexts" in text
            assert HOSTILE in text  # shown literally
            assert page.evaluate("() => document.querySelectorAll('#wb-card img').length") == 0
        finally:
            browser.close()
