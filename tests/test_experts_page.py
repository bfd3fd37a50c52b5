"""Expert pages on a store with planted routing (tests/experts_helpers.py): every part against its formula."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from experts_helpers import CAT, PLANT, planted_records, planted_store
from workbench.viz.expert_page import page_html

from workbench.errors import SelectionError
from workbench.experts import ExpertPageError, expert_page
from workbench.experts.lift import token_lift
from workbench.experts.vocab import text_vocab, visible
from workbench.store.select import Selection


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):
    return planted_store(tmp_path_factory.mktemp("planted") / "p.zarr")


@pytest.fixture(scope="module")
def page(store):
    return expert_page(store, 2, PLANT, top=10, min_count=2, n_boot=300)


def _planted() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    recs = planted_records()
    tok = np.concatenate([r.token_ids for r in recs])
    routed = np.concatenate([(r.expert_ids[:, 1] == PLANT).any(-1) for r in recs])
    dom = np.concatenate([[r.domain] * len(r.token_ids) for r in recs])
    return tok, routed, dom


def test_vocab_decodes_byte_level_markers() -> None:
    texts = text_vocab(["Ġcat", "Ċ", "ĉx", "<|im_end|>", "at"])
    assert texts == [" cat", "\n", "\tx", "<|im_end|>", "at"]
    assert visible(" cat\n") == "␣cat↵"


def test_counts_and_load(page) -> None:
    tok, routed, _ = _planted()
    assert page.n_selected == tok.size
    assert page.n_routed == int(routed.sum())
    assert page.has_gate_weights and not page.notes


def test_lift_matches_the_formula_and_ranks_the_planted_token_first(page) -> None:
    tok, routed, _ = _planted()
    assert page.lift[0].token_id == CAT and page.lift[0].text == "␣cat"
    uniq = np.unique(tok)
    c_e, c_s = int((tok[routed] == CAT).sum()), int((tok == CAT).sum())
    n_e, n_s, v = routed.sum(), tok.size, uniq.size
    want = ((c_e + 1) / (n_e + v)) / ((c_s + 1) / (n_s + v))
    assert page.lift[0].count == c_e and page.lift[0].base_count == c_s
    assert page.lift[0].specialization == pytest.approx(1.0)  # every cat goes to the planted expert
    assert page.lift[0].lift == pytest.approx(want)
    assert [t.count for t in page.frequent] == sorted((t.count for t in page.frequent), reverse=True)


def test_lift_min_count_and_smoothing() -> None:
    routed = np.array([1, 1, 1, 2])
    selected = np.array([1, 1, 1, 1, 1, 1, 2, 3])
    tid, c_e, c_s, lift = token_lift(routed, selected, smoothing=0.0, min_count=2)
    assert tid.tolist() == [1] and c_e.tolist() == [3] and c_s.tolist() == [6]  # token 2 is seen once only
    assert lift[0] == pytest.approx((3 / 4) / (6 / 8))
    tid, _, _, lift = token_lift(routed, selected, smoothing=0.0, min_count=1)
    assert tid.tolist() == [2, 1] and lift.tolist() == pytest.approx([2.0, 1.0])
    _, _, _, smooth = token_lift(routed, selected, smoothing=1.0, min_count=1)
    assert 1.0 < smooth.max() < 2.0  # smoothing pulls lifts toward 1


def test_shares_against_base_rates(page) -> None:
    _, routed, dom = _planted()
    by = {r.group: r for r in page.domain_shares}
    assert sum(r.share for r in page.domain_shares) == pytest.approx(1.0)
    for d in ("math", "code", "language"):
        assert by[d].routed == int(routed[dom == d].sum())
        assert by[d].base == pytest.approx((dom == d).mean())
    assert by["math"].ratio > 1.3 and by["math"].ratio_low > 1.0  # planted: math gets extra tokens
    assert by["code"].ratio < 1.0
    for r in page.domain_shares:
        assert r.share_low <= r.share <= r.share_high
    assert {r.group for r in page.segment_shares} == {"user", "answer"}


def test_histograms(page) -> None:
    assert page.rank_hist.tolist() == [page.n_routed, 0]  # always the first choice
    assert page.weight_hist.sum() == page.n_routed
    centres = (page.weight_edges[:-1] + page.weight_edges[1:]) / 2
    assert set(np.round(centres[page.weight_hist > 0], 1)) <= {0.5, 0.9}


def test_neighbours(page) -> None:
    assert (page.co_activated[0].layer, page.co_activated[0].expert) == (2, 2)
    assert page.co_activated[0].share == pytest.approx(1.0)
    assert all(n.expert != PLANT for n in page.co_activated)
    assert (page.predecessors[0].layer, page.predecessors[0].expert, page.predecessors[0].share) == (1, 3, 1.0)
    assert (page.successors[0].layer, page.successors[0].expert, page.successors[0].share) == (3, 6, 1.0)
    assert page.successors[0].lift > 1.0


def test_top_contexts_by_weight_with_duplicates_collapsed(page) -> None:
    cats = [c for c in page.contexts if c.token_id == CAT]
    assert page.contexts[0].token == " cat" and page.contexts[0].gate_weight == pytest.approx(0.9, abs=1e-3)
    weights = [c.gate_weight for c in page.contexts]
    assert weights == sorted(weights, reverse=True)
    keys = {(c.before[-12:], c.token, c.after[:12]) for c in cats}
    assert len(keys) == len(cats)  # no near-duplicate shown twice
    template = [c for c in cats if c.sequence == "math-0" and c.after.startswith(" sat the cat")]
    assert template and max(c.copies for c in template) >= 6  # " the cat sat" x8 collapsed
    c = page.contexts[0]
    assert c.domain in ("math", "code", "language") and c.segment in ("user", "answer") and c.rank == 1


def test_ids_only_store_falls_back_and_says_so(tmp_path: Path) -> None:
    ds = planted_store(tmp_path / "ids.zarr", weights=False)
    page = expert_page(ds, 2, PLANT, top=5, min_count=2)
    assert not page.has_gate_weights and "no gate weights" in page.notes[0]
    assert "router rank" in page.context_order
    assert page.weight_hist.size == 0 and page.rank_hist[0] == page.n_routed
    assert page.contexts[0].token_id == CAT  # rank ties, then the most frequent token of the expert
    assert np.isnan(page.contexts[0].gate_weight)


def test_unordered_engine_store_orders_by_frequency_and_says_slot(tmp_path: Path) -> None:
    ds = planted_store(tmp_path / "engine.zarr", weights=False, capture="vllm")
    page = expert_page(ds, 2, PLANT, top=5, min_count=2)
    assert not page.rank_ordered and page.context_order.startswith("token frequency")
    assert any("not in router rank order" in n for n in page.notes)
    html = page_html(page)
    assert "top-k slot" in html and "router rank (1 = first choice)" not in html


def test_selection_and_bad_input(store) -> None:
    page = expert_page(store, 2, PLANT, Selection(domains=("code",)), min_count=2)
    assert [r.group for r in page.domain_shares] == ["code"]
    with pytest.raises(ExpertPageError, match="not an MoE layer"):
        expert_page(store, 9, 0)
    with pytest.raises(ExpertPageError, match=r"outside this model's experts 0\.\.7"):
        expert_page(store, 2, 8)
    with pytest.raises(SelectionError, match="no tokens"):
        expert_page(store, 2, 0, Selection(tokens=(0, 1), segments=("answer",)))
