"""Pathway counting of the widgets: exact node and edge totals on hand-made routing."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
from workbench.viz.widgets.pathways import compute_pathways
from workbench.viz.widgets.sequence_data import display_tokens

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


def test_node_counts_and_mean_gate() -> None:
    p = compute_pathways(IDS, W, LAYERS, 4)
    assert p.n_tokens == 2
    assert p.node_tokens.tolist() == [[2, 2, 0, 0], [0, 1, 2, 1], [1, 0, 1, 2]]
    # layer 1, expert 0: gates 0.6 (token 0) and 0.1 (token 1)
    assert p.mean_gate[0, 0] == pytest.approx(0.35)
    assert p.mean_gate[1, 2] == pytest.approx(0.75)
    assert np.isnan(p.mean_gate[0, 3])


def test_edges_are_all_k_by_k_pairs_with_gate_products() -> None:
    g = compute_pathways(IDS, W, LAYERS, 4).to_networkx(domain="agent")
    # layer 1 -> 2: token 0 gives (0,2) (0,3) (1,2) (1,3); token 1 gives (1,2) (1,1) (0,2) (0,1)
    e = g.edges["L1:E0", "L2:E2"]
    assert e["count"] == 2
    assert e["weight"] == pytest.approx(0.6 * 0.7 + 0.1 * 0.8)
    assert g.edges["L1:E1", "L2:E1"]["count"] == 1
    assert g.edges["L1:E1", "L2:E1"]["weight"] == pytest.approx(0.9 * 0.2)
    assert g.number_of_edges() == 6 + 7  # distinct pairs per layer pair
    assert sum(d["count"] for _, _, d in g.edges(data=True)) == 2 * 2 * 4  # tokens x layer pairs x k*k
    assert not g.has_edge("L1:E0", "L3:E0")  # only consecutive layers
    assert g.nodes["L3:E3"] == {
        "layer": 3,
        "expert": 3,
        "tokens": 2,
        "mean_gate": pytest.approx(0.55),
        "share_agent": 1.0,
    }


def test_single_token_path_is_its_k_experts_per_layer() -> None:
    g = compute_pathways(IDS[1:], W[1:], LAYERS, 4).to_networkx()
    assert sorted(g.nodes) == sorted(f"L{lay}:E{e}" for lay, row in zip(LAYERS, IDS[1], strict=True) for e in row)
    assert g.number_of_edges() == 2 * 4
    assert nx.is_directed_acyclic_graph(g)


def test_top_edges_keeps_the_strongest_per_layer_pair() -> None:
    p = compute_pathways(IDS, W, LAYERS, 4)
    keep = p.top_edges(1)
    assert keep.size == 2
    strongest = p.to_networkx(top_edges=1)
    # layer pair 1 -> 2: (E1, E2) has 0.4 * 0.7 + 0.9 * 0.8 = 1.0, the largest weight
    assert strongest.has_edge("L1:E1", "L2:E2")
    assert strongest.edges["L1:E1", "L2:E2"]["weight"] == pytest.approx(1.0)
    assert strongest.number_of_edges() == 2


def test_ids_only_counts_without_weights() -> None:
    p = compute_pathways(IDS, np.full(W.shape, np.nan, np.float16), LAYERS, 4)
    assert not p.has_weights
    assert np.isnan(p.mean_gate).all()
    assert np.isnan(p.edge_weight).all()
    assert p.strength().tolist() == p.edge_count.astype(float).tolist()


def test_display_tokens_undo_byte_level_and_sentencepiece_markers() -> None:
    assert display_tokens(["Ġthe", "Ċ", "cat", "<|im_end|>", "Ã©"]) == [" the", "\n", "cat", "<|im_end|>", "é"]
    assert display_tokens(["▁the", "cat"]) == [" the", "cat"]
