"""Every metric on a small hand-computed store (2 sequences, 2 MoE layers, top-2 of 4 experts).

    seq A (math), tokens 5 6 5      layer 1: [0,1] [0,2] [3,1]    layer 2: [1,2] [2,3] [1,0]
    seq B (code), tokens 6 7        layer 1: [0,1] [2,3]          layer 2: [0,1] [1,3]

The last token of A and the first of B share expert 1 in layer 1: a pair that must never be counted.
"""

from __future__ import annotations

import numpy as np
import pytest
from analysis_helpers import SequenceRecord, SpanRecord, config, write_store
from scipy.spatial.distance import jensenshannon

from workbench.analysis import (
    coactivation,
    consecutive_agreement,
    domain_divergence,
    domain_specialization,
    expert_load,
    routing_entropy,
    specific_experts,
    transitions,
    vocab_specialization,
)
from workbench.store.select import parse_where

A_IDS = np.array([[[0, 1], [1, 2]], [[0, 2], [2, 3]], [[3, 1], [1, 0]]], dtype=np.int16)  # (T, L, k)
B_IDS = np.array([[[0, 1], [0, 1]], [[2, 3], [1, 3]]], dtype=np.int16)


def _records() -> list[SequenceRecord]:
    wa = np.tile(np.array([0.75, 0.25], np.float32), (3, 2, 1))
    wb = np.tile(np.array([0.5, 0.5], np.float32), (2, 2, 1))
    return [
        SequenceRecord("A", "math", "t", np.array([5, 6, 5], np.int32), A_IDS, wa, spans=[SpanRecord("think", 0, 2)]),
        SequenceRecord("B", "code", "t", np.array([6, 7], np.int32), B_IDS, wb),
    ]


@pytest.fixture(params=[None, 2], ids=["one-chunk", "chunks-of-2"])
def store(request, tmp_path):
    return write_store(
        tmp_path / "hand.zarr", _records(), config(n_experts=4, top_k=2, n_layers=2), chunk=request.param
    )


def test_store_is_lazy(store):
    assert store["expert_ids"].chunks is not None


def test_expert_load_counts_shares_relative(store):
    load = expert_load(store)
    np.testing.assert_array_equal(load["count"].sel(layer=1).values[0], [3, 3, 2, 2])
    np.testing.assert_array_equal(load["count"].sel(layer=2).values[0], [2, 4, 2, 2])
    np.testing.assert_allclose(load["share"].sel(layer=1).values[0], [0.3, 0.3, 0.2, 0.2])
    # balanced load = N k / E = 5 * 2 / 4 = 2.5
    np.testing.assert_allclose(load["relative_load"].sel(layer=2).values[0], [0.8, 1.6, 0.8, 0.8])
    assert int(load["n_tokens"].values[0]) == 5


def test_expert_load_by_domain_and_weighted(store):
    load = expert_load(store, by="domain", weighted=True)
    assert list(load["domain"].values) == ["code", "math"]
    np.testing.assert_array_equal(load["count"].sel(domain="math", layer=1).values, [2, 2, 1, 1])
    # math layer 1 gate mass: e0 0.75+0.75, e1 0.25+0.25, e2 0.25, e3 0.75
    np.testing.assert_allclose(load["gate_mass"].sel(domain="math", layer=1).values, [1.5, 0.5, 0.25, 0.75])


def test_routing_entropy_load_and_gate(store):
    h = routing_entropy(store)
    p = np.array([0.3, 0.3, 0.2, 0.2])
    assert h["entropy"].sel(layer=1).item() == pytest.approx(-(p * np.log2(p)).sum())
    assert h["normalized"].sel(layer=1).item() == pytest.approx(-(p * np.log2(p)).sum() / 2)
    g = routing_entropy(store, by="domain", kind="gate")
    h_math = -(0.75 * np.log2(0.75) + 0.25 * np.log2(0.25))
    assert g["entropy"].sel(domain="math", layer=1).item() == pytest.approx(h_math, rel=1e-6)
    assert g["entropy"].sel(domain="code", layer=2).item() == pytest.approx(1.0, rel=1e-6)


def test_domain_specialization(store):
    spec = domain_specialization(store)
    np.testing.assert_allclose(spec["specialization"].sel(domain="math", layer=1).values, [2 / 3, 2 / 3, 1 / 3, 1 / 3])
    np.testing.assert_allclose(spec["specialization"].sel(domain="code", layer=2).values, [0.5, 1.0, 0.0, 0.5])
    assert spec.attrs["uniform"] == 0.5


def test_coactivation_all_pairs(store):
    co = coactivation(store).sel(layer=1)
    c = co["coactivation"].values
    assert c[0, 1] == pytest.approx(2 / 3) and c[1, 0] == pytest.approx(2 / 3)
    assert c[2, 3] == pytest.approx(1 / 2) and c[1, 3] == pytest.approx(1 / 3) and c[3, 1] == pytest.approx(1 / 2)
    assert c[0, 3] == 0 and np.all(np.diag(c) == 0)
    np.testing.assert_array_equal(co["pair_count"].values, co["pair_count"].values.T)


def test_coactivation_adjacent_equals_all_for_top2(store):
    a, b = coactivation(store, pairs="adjacent"), coactivation(store)
    np.testing.assert_array_equal(a["pair_count"].values, b["pair_count"].values)


def test_consecutive_agreement_never_crosses_sequences(store):
    agr = consecutive_agreement(store)
    assert agr["n_pairs"].sel(layer=1).item() == 3  # A: 2 pairs, B: 1 pair, A->B not counted
    assert agr["first_choice"].sel(layer=1).item() == pytest.approx(1 / 3)
    assert agr["any_topk"].sel(layer=1).item() == pytest.approx(1 / 3)  # would be 2/4 across A->B
    assert agr["first_choice"].sel(layer=2).item() == 0
    assert agr["any_topk"].sel(layer=2).item() == pytest.approx(2 / 3)
    assert agr.attrs["baseline_first_choice"] == 0.25
    assert agr.attrs["baseline_any_topk"] == pytest.approx(1 - 1 / 6)  # 1 - C(2,2)/C(4,2)


def test_consecutive_agreement_by_segment_keeps_pairs_within_a_segment(store):
    agr = consecutive_agreement(store, by="segment")
    # think = A t0, t1 (one pair); text = A t2 + B t0, t1 (only B's pair: A t2 -> B t0 crosses sequences)
    assert agr["n_pairs"].sel(segment="think", layer=1).item() == 1
    assert agr["n_pairs"].sel(segment="text", layer=1).item() == 1


def test_transitions(store):
    tr = transitions(store)
    assert list(tr["layer"].values) == [1] and list(tr["next_layer"].values) == [2]
    c = tr["count"].sel(layer=1).values
    np.testing.assert_array_equal(c[0], [1, 2, 2, 1])
    np.testing.assert_array_equal(c[1], [2, 3, 1, 0])
    np.testing.assert_allclose(tr["probability"].sel(layer=1).values.sum(axis=1), 1.0)
    assert tr["probability"].sel(layer=1).values[1, 1] == pytest.approx(0.5)
    # top 20% of 4 experts = the single most likely next expert
    assert tr["top_mass"].sel(layer=1).values[0] == pytest.approx(2 / 6)
    rows = c.sum(axis=1)
    expected = (np.max(c / rows[:, None], axis=1) * rows).sum() / rows.sum()
    assert tr["layer_top_mass"].item() == pytest.approx(expected)


def test_vocab_specialization_input_and_next_tokens(store):
    vs = vocab_specialization(store)
    five = vs.swap_dims(token="token_id").sel(token_id=5, layer=1)
    np.testing.assert_allclose(five["specialization"].values, [0.5, 1.0, 0.0, 0.5])
    assert str(five["token_text"].item()) == "t5"
    nxt = vocab_specialization(store, next_token=True).swap_dims(token="token_id")
    assert int(nxt["n"].sel(token_id=6)) == 1  # only A t0 -> t1; A t2 -> B t0 crosses sequences
    np.testing.assert_allclose(nxt["specialization"].sel(token_id=5, layer=1).values, [1.0, 0.0, 1.0, 0.0])


def test_domain_divergence_matches_scipy(store):
    div = domain_divergence(store, n_boot=50, n_perm=50)
    assert list(div["pair"].values) == ["code|math"]
    p, q = np.array([1, 1, 1, 1]) / 4, np.array([2, 2, 1, 1]) / 6
    assert div["jsd"].sel(layer=1).item() == pytest.approx(jensenshannon(p, q, base=2) ** 2)
    assert np.isnan(div["ci_low"]).all()  # one sequence per domain: no resampling distribution


def test_specific_experts(store):
    table = specific_experts(store, top=2)
    top_math = table[(table.domain == "math") & (table.layer == 2)].sort_values("rank")
    # layer 2 math uses e2 twice, code never: e2 is the most math-specific expert
    assert top_math.iloc[0]["expert"] == 2
    assert top_math.iloc[0]["share_of_expert"] == pytest.approx(1.0)


def test_selection_by_domain_segment_and_layers(store):
    load = expert_load(store, parse_where(["domain=math", "layers=2:2"]))
    assert list(load["layer"].values) == [2]
    np.testing.assert_array_equal(load["count"].values[0, 0], [1, 2, 2, 1])
    think = expert_load(store, parse_where("segment=think"))
    np.testing.assert_array_equal(think["count"].sel(layer=1).values[0], [2, 1, 1, 0])
    rng = expert_load(store, parse_where("tokens=3:5"))  # token rows of B
    np.testing.assert_array_equal(rng["count"].sel(layer=1).values[0], [1, 1, 1, 1])
    seq = consecutive_agreement(store, parse_where("sequence=B"))
    assert seq["n_pairs"].sel(layer=1).item() == 1


def test_accessor_methods(store):
    import workbench.accessor  # noqa: F401  (registers ds.routing)

    np.testing.assert_array_equal(
        store.routing.expert_load(by="domain")["count"].values, expert_load(store, by="domain")["count"].values
    )
    assert store.routing.consecutive_agreement(where="domain=math")["n_pairs"].sel(layer=1).item() == 2
