"""Pathway counting of the widgets (through workbench.graph): exact totals on hand-made routing,
deterministic drawn edges, and an ids-only export that agrees with ``workbench graph``."""

from __future__ import annotations

from pathlib import Path

import networkx as nx
import numpy as np
import pytest
from widgets_helpers import open_test_store, transcript_store
from workbench.viz.widgets import TranscriptGraphWidget
from workbench.viz.widgets.pathways import pathway_counts, pathway_graph
from workbench.viz.widgets.sequence_data import SequenceData

from workbench.experts.vocab import text_vocab
from workbench.graph import reasoning_graph
from workbench.store.select import Selection

# 2 tokens, 3 MoE layers (real indices 1, 2, 3), top-2 of 4 experts.
IDS = np.array(
    [
        [[0, 1], [2, 3], [0, 3]],
        [[1, 0], [2, 1], [3, 2]],
    ],
    dtype=np.int16,
)  # (T=2, L=3, k=2)
W = np.array(
    [
        [[0.6, 0.4], [0.7, 0.3], [0.5, 0.5]],
        [[0.9, 0.1], [0.8, 0.2], [0.6, 0.4]],
    ],
    dtype=np.float32,
)
LAYERS = np.array([1, 2, 3])


def sequence(ids: np.ndarray = IDS, w: np.ndarray = W) -> SequenceData:
    t = ids.shape[0]
    return SequenceData(
        sequence_id="s",
        domain="agent",
        token_ids=np.arange(t, dtype=np.int32),
        token_text=[f"tok{i}" for i in range(t)],
        segment=np.zeros(t, np.int8),
        step=np.zeros(t, np.int32),
        span_kind=np.zeros(1, np.int8),
        span_start=np.zeros(1, np.int64),
        span_stop=np.full(1, t, np.int64),
        span_step=np.zeros(1, np.int32),
        span_label=[""],
        expert_ids=ids,
        gate_weights=w,
        layers=LAYERS,
        n_experts=4,
        segment_kinds=["think"],
    )


ALL = np.arange(2)


def test_node_counts_and_mean_gate() -> None:
    p = pathway_counts(sequence(), ALL)
    assert p.n_tokens == 2
    assert p.node_tokens.tolist() == [[2, 2, 0, 0], [0, 1, 2, 1], [1, 0, 1, 2]]
    # layer 1, expert 0: gates 0.6 (token 0) and 0.1 (token 1)
    assert p.mean_gate[0, 0] == pytest.approx(0.35)
    assert p.mean_gate[1, 2] == pytest.approx(0.75)
    assert np.isnan(p.mean_gate[0, 3])


def test_edges_are_all_k_by_k_pairs_with_gate_products() -> None:
    g = pathway_graph(pathway_counts(sequence(), ALL), top_tokens=0)
    # layer 1 -> 2: token 0 gives (0,2) (0,3) (1,2) (1,3); token 1 gives (1,2) (1,1) (0,2) (0,1)
    e = g.edges["L1:E0", "L2:E2"]
    assert e["count"] == 2
    assert e["weight"] == pytest.approx(0.6 * 0.7 + 0.1 * 0.8)
    assert g.edges["L1:E1", "L2:E1"]["count"] == 1
    assert g.edges["L1:E1", "L2:E1"]["weight"] == pytest.approx(0.9 * 0.2)
    assert g.number_of_edges() == 6 + 7  # distinct pairs per layer pair
    assert sum(d["count"] for _, _, d in g.edges(data=True)) == 2 * 2 * 4  # tokens x layer pairs x k*k
    assert not g.has_edge("L1:E0", "L3:E0")  # only consecutive layers
    node = g.nodes["L3:E3"]
    assert (node["layer"], node["expert"], node["tokens"], node["share_agent"]) == (3, 3, 2, 1.0)
    assert node["mean_gate"] == pytest.approx(0.55)
    assert node["load"] == 1.0


def test_single_token_path_is_its_k_experts_per_layer() -> None:
    g = pathway_graph(pathway_counts(sequence(), np.array([1])))
    assert sorted(g.nodes) == sorted(f"L{lay}:E{e}" for lay, row in zip(LAYERS, IDS[1], strict=True) for e in row)
    assert g.number_of_edges() == 2 * 4
    assert nx.is_directed_acyclic_graph(g)


def test_drawn_edges_are_the_strongest_per_layer_pair() -> None:
    e = pathway_counts(sequence(), ALL, top_edges=1).edges
    assert len(e) == 2
    # layer pair 1 -> 2: (E1, E2) has 0.4 * 0.7 + 0.9 * 0.8 = 1.0, the largest weight
    assert (int(e.pair[0]), int(e.src[0]), int(e.dst[0])) == (0, 1, 2)
    assert e.weight[0] == pytest.approx(1.0)


def test_drawn_edges_break_ties_by_expert_ids_whatever_the_token_order() -> None:
    # ids only, so weights are counts: 20 tokens on experts {2, 3} and 20 on {0, 1} at every layer,
    # so all 8 edges of each layer pair are taken by 20 tokens; the rule keeps the smallest (src, dst)
    ids = np.array([[[2, 3]] * 3] * 20 + [[[0, 1]] * 3] * 20, dtype=np.int16)  # (40, 3, 2)
    nan = np.full(ids.shape, np.nan, np.float16)
    rng = np.random.default_rng(3)
    picks = set()
    for _ in range(6):
        order = rng.permutation(40)
        shuffled = np.take_along_axis(ids[order], rng.random(ids.shape).argsort(axis=-1), axis=-1)  # ranks too
        every = pathway_counts(sequence(shuffled, nan), np.arange(40)).edges
        assert set(every.count.tolist()) == {20} and len(every) == 16  # every edge ties
        e = pathway_counts(sequence(shuffled, nan), np.arange(40), top_edges=3).edges
        picks.add(tuple(zip(e.pair.tolist(), e.src.tolist(), e.dst.tolist(), strict=True)))
    assert picks == {((0, 0, 0), (0, 0, 1), (0, 1, 0), (1, 0, 0), (1, 0, 1), (1, 1, 0))}


def test_ids_only_counts_without_weights() -> None:
    p = pathway_counts(sequence(w=np.full(W.shape, np.nan, np.float16)), ALL)
    assert not p.weighted
    assert np.isnan(p.mean_gate).all()
    assert p.edges.weight.tolist() == p.edges.count.astype(float).tolist()


def test_ids_only_widget_export_has_count_weights_like_workbench_graph(tmp_path: Path) -> None:
    ds = open_test_store(transcript_store(tmp_path / "ids.zarr", n_steps=2, n_transcripts=1, ids_only=True))
    w = TranscriptGraphWidget(ds, sequence="t0")
    w.select("step", 1)
    out = nx.read_graphml(w.export(tmp_path / "step1.graphml"))
    ref = reasoning_graph(ds, Selection(sequences=("t0",), steps=(1,)))
    assert out.graph["weighted"] is False and out.graph["weight_kind"] == "count"
    assert set(out.edges) == set(ref.edges)
    for u, v, d in ref.edges(data=True):
        assert out.edges[u, v]["weight"] == d["weight"] == d["count"]  # counts, not NaN
    assert not any("mean_gate" in d for _, d in out.nodes(data=True))
    tops = {n: d["top_tokens"] for n, d in ref.nodes(data=True)}
    assert {n: d["top_tokens"] for n, d in out.nodes(data=True)} == tops


def test_display_tokens_undo_byte_level_and_sentencepiece_markers() -> None:
    assert text_vocab(["Ġthe", "Ċ", "cat", "<|im_end|>", "Ã©"]) == [" the", "\n", "cat", "<|im_end|>", "é"]
    assert text_vocab(["▁the", "cat"]) == [" the", "cat"]
