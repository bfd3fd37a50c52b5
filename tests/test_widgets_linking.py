"""Graph ⇄ token linking in the widgets: node and edge clicks, expert cards, edge hovers, the search box."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from widgets_helpers import open_test_store, transcript_store
from workbench.viz.widgets import TokenPathWidget, TranscriptGraphWidget
from workbench.viz.widgets.expert_card import card_page
from workbench.viz.widgets.linking import edge_top_tokens

from workbench.experts import expert_page
from workbench.experts.vocab import text_vocab, visible
from workbench.store.select import Selection


@pytest.fixture(scope="module")
def ds(tmp_path_factory: pytest.TempPathFactory):
    return open_test_store(transcript_store(tmp_path_factory.mktemp("l") / "tools.zarr", n_steps=4, n_transcripts=2))


def _busiest_node(w: TranscriptGraphWidget) -> tuple[int, int]:
    p = w.graph.pathways
    assert p is not None
    li, e = np.unravel_index(int(np.argmax(p.node_tokens)), p.node_tokens.shape)
    return int(p.layers[li]), int(e)


def test_node_click_shows_the_card_and_highlights_its_tokens(ds) -> None:
    w = TranscriptGraphWidget(ds)
    w.select("step", 1)
    layer, expert = _busiest_node(w)
    w.graph.click_node(layer, expert)
    li = int(np.nonzero(w.data.layers == layer)[0][0])
    rows = w.selected_rows()
    expected = rows[(w.data.expert_ids[rows, li] == expert).any(axis=1)]
    assert w.view.highlighted.tolist() == expected.tolist() and expected.size > 0
    assert f"through L{layer}:E{expert}" in w.view.highlight_label
    page = w.card.page
    assert page is not None and (page.layer, page.expert) == (layer, expert)
    assert page.n_routed == expected.size and page.n_selected == rows.size
    assert f"Expert L{layer}:E{expert}" in w.card.value and "Special tokens" in w.card.value
    # a new selection drops the stale highlight
    w.select("step", 2)
    assert w.view.highlighted.size == 0


def test_a_click_in_the_browser_arrives_as_a_point_of_the_node_trace(ds) -> None:
    w = TranscriptGraphWidget(ds)
    nodes = w.graph.figure.data[-1]
    x, y = int(np.asarray(nodes.x)[3]), int(np.asarray(nodes.y)[3])
    w.graph.plot._on_message(w.graph.plot, {"type": "click", "trace": len(w.graph.figure.data) - 1, "point": 3}, [])
    assert w.card.page is not None and (w.card.page.layer, w.card.page.expert) == (x, y)


def test_edge_click_lists_and_highlights_the_tokens_that_took_it(ds) -> None:
    w = TranscriptGraphWidget(ds, top_edges=5)
    w.select("segment", 6)
    e = w.graph.pathways.edges  # type: ignore[union-attr]
    i = int(np.argmax(e.count))
    pair, src, dst = int(e.pair[i]), int(e.src[i]), int(e.dst[i])
    d = w.data
    w.graph.click_edge(int(d.layers[pair]), src, dst)
    rows = w.selected_rows()
    took = rows[(d.expert_ids[rows, pair] == src).any(1) & (d.expert_ids[rows, pair + 1] == dst).any(1)]
    assert took.size == int(e.count[i])  # the edge's count is the number of tokens that took it
    assert w.view.highlighted.tolist() == took.tolist()
    assert w.card.value.count("<li data-pos=") == took.size
    for p in took.tolist():
        assert f"data-pos='{p}'" in w.card.value


def test_edge_hover_text_has_count_weight_share_and_top_tokens(ds) -> None:
    w = TranscriptGraphWidget(ds, top_edges=4)
    w.select("step", 0)
    p = w.graph.pathways
    assert p is not None
    hover = w.graph.figure.data[4]
    assert hover.name == "edges" and len(hover.text) == len(p.edges)
    custom = np.asarray(hover.customdata)
    assert np.array_equal(custom[:, 0], p.edges.count)
    assert np.allclose(custom[:, 2], p.edges.weight / p.flow_totals[p.edges.pair])
    # top tokens of each edge, counted by brute force
    d, rows = w.data, w.selected_rows()
    texts = text_vocab(list(ds.attrs["tokenizer"]["vocab"]))
    for i in range(len(p.edges)):
        a, s, b = int(p.edges.pair[i]), int(p.edges.src[i]), int(p.edges.dst[i])
        took = rows[(d.expert_ids[rows, a] == s).any(1) & (d.expert_ids[rows, a + 1] == b).any(1)]
        ids, counts = np.unique(d.token_ids[took], return_counts=True)
        best = ids[np.lexsort((ids, -counts))][:3]
        want = " · ".join(f"{visible(texts[t])} ({int(counts[ids == t][0])})" for t in best)
        assert hover.hovertext[i] == "top tokens: " + want


def test_edge_top_tokens_are_skipped_over_the_budget(ds, monkeypatch) -> None:
    import workbench.viz.widgets.linking as linking

    w = TranscriptGraphWidget(ds)
    p = w.graph.pathways
    assert p is not None
    monkeypatch.setattr(linking, "HOVER_TOKEN_BUDGET", 10)
    assert edge_top_tokens(w.data, w.selected_rows(), p.edges.pair, p.edges.src, p.edges.dst, []) is None


def test_the_card_is_the_library_expert_page_of_the_same_tokens(ds) -> None:
    w = TranscriptGraphWidget(ds, sequence="t1")
    d = w.data
    li, expert = 2, int(d.expert_ids[10, 2, 0])
    texts = text_vocab(list(ds.attrs["tokenizer"]["vocab"]))
    card = card_page(
        d, np.arange(d.n_tokens), li, expert, texts, top=20, width=8, min_count=3, bins=20, n_neighbours=10
    )
    ref = expert_page(ds, int(d.layers[li]), expert, Selection(sequences=("t1",)))
    assert (card.n_routed, card.n_selected) == (ref.n_routed, ref.n_selected)
    assert card.lift == ref.lift and card.frequent == ref.frequent
    assert np.array_equal(card.rank_hist, ref.rank_hist) and np.array_equal(card.weight_hist, ref.weight_hist)
    assert card.co_activated == ref.co_activated
    assert card.predecessors == ref.predecessors and card.successors == ref.successors
    strip = [(c.token, c.before, c.after, c.position, c.copies, c.rank) for c in ref.contexts]
    assert [(c.token, c.before, c.after, c.position, c.copies, c.rank) for c in card.contexts] == strip
    assert [(s.group, s.routed, s.share) for s in card.segment_shares] == [
        (s.group, s.routed, s.share) for s in ref.segment_shares
    ]


def test_search_finds_text_across_token_boundaries_and_graphs_the_hits(ds) -> None:
    w = TranscriptGraphWidget(ds)
    d = w.data
    text = d.token_text[40] + d.token_text[41]  # spans a token boundary
    w.view.search(text)  # what typing it and pressing Enter sends
    starts, stops = w.view.hits
    joined = "".join(d.token_text)
    assert starts.size == joined.count(text) > 0
    assert any(a <= 40 and b >= 42 for a, b in zip(starts, stops, strict=True))
    for a, b in zip(starts.tolist(), stops.tolist(), strict=True):
        assert text in "".join(d.token_text[a:b])
    assert f"{starts.size} hits" in w.view.search_status
    w.view.select("search")  # the *Graph hits* button
    covered = np.unique(np.concatenate([np.arange(a, b) for a, b in zip(starts, stops, strict=True)]))
    assert w.selected_rows().tolist() == covered.tolist()
    assert w.graph.pathways is not None and w.graph.pathways.n_tokens == covered.size
    assert "search hits" in w.graph.title


def test_search_regex_and_bad_patterns(ds) -> None:
    w = TranscriptGraphWidget(ds)
    w.view.search(r"(sum|cat)\s", regex=True)
    assert w.view.hits[0].size > 0
    w.view.search("(unclosed", regex=True)
    assert "does not compile" in w.view.search_status and w.view.hits[0].size == 0
    w.view.select("search")  # nothing to graph: one line in the widget, not a traceback
    assert "no search hits" in w.graph.status.value


def test_token_path_cells_open_cards(ds) -> None:
    w = TranscriptGraphWidget(ds)
    w.select("token", 30)
    w.token_path.click(1, 0)  # layer index 1, first choice
    page = w.card.page
    assert page is not None and page.expert == int(w.data.expert_ids[30, 1, 0])
    assert 30 in w.view.highlighted.tolist() and page.n_selected == 1
    tp = TokenPathWidget(ds, sequence="t1", position=3)
    tp.path_figure.click(0, 2)
    assert tp.card.page is not None and tp.card.page.expert == int(tp.data.expert_ids[3, 0, 2])
    assert tp.card.page.n_selected == tp.data.n_tokens


def test_ids_only_cards_say_what_they_fell_back_to(tmp_path: Path) -> None:
    ds = open_test_store(transcript_store(tmp_path / "ids.zarr", n_steps=2, n_transcripts=1, ids_only=True))
    w = TranscriptGraphWidget(ds)
    w.graph.click_node(*_busiest_node(w))
    assert w.card.page is not None and not w.card.page.has_gate_weights
    assert "no gate weights" in w.card.value


def test_the_export_button_of_a_live_pane_writes_the_image_the_browser_draws(ds, tmp_path: Path) -> None:
    w = TranscriptGraphWidget(ds)
    sent: list[dict] = []
    w.graph.plot.send = lambda content, buffers=None: sent.append(content)  # type: ignore[method-assign]
    w.graph.plot._on_message(w.graph.plot, {"type": "rendered"}, [])  # a browser drew the pane
    w.graph.format.value = "png"
    w.graph.path.value = str(tmp_path / "g")
    w.graph.export_button.click()
    assert sent[-1]["type"] == "image" and sent[-1]["format"] == "png" and "exporting" in w.graph.status.value
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16  # the browser's answer (plotly.js toImage bytes)
    w.graph.plot._on_message(w.graph.plot, {"type": "image", "id": sent[-1]["id"]}, [png])
    assert (tmp_path / "g.png").read_bytes() == png and "wrote" in w.graph.status.value
    w.graph.export_button.click()
    w.graph.plot._on_message(w.graph.plot, {"type": "image", "id": sent[-1]["id"], "error": "boom"}, [])
    assert "export failed: boom" in w.graph.status.value
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.png"]  # nothing half-written


def test_switching_back_to_a_transcript_reuses_its_loaded_arrays(ds) -> None:
    w = TranscriptGraphWidget(ds)
    first = w.data
    w.picker.value = "t1"
    w.view.set_highlight(np.array([1, 2]), "x")
    w.picker.value = "t0"
    assert w.data is first and w.view.sequence_id == "t0" and w.view.highlighted.size == 0
    assert w.selection == {"kind": "step", "index": 0} and w.graph.pathways is not None
