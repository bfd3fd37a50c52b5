"""Reasoning graphs of hand-made stores: node and edge weights checked exactly, for every kind of selection."""

from __future__ import annotations

import itertools
from collections import defaultdict

import numpy as np
import pytest
from graph_helpers import CFG, hand_records, open_hand_store, write_store

from workbench.errors import SelectionError
from workbench.graph import count_arrays, reasoning_graph, token_path
from workbench.store.dataset import SequenceRecord
from workbench.store.select import Selection, parse_where


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    return open_hand_store(write_store(tmp_path_factory.mktemp("graph") / "hand.zarr"))


def brute_force(records, rows=None, layers=(1, 2, 3)):
    """Reference: node tokens/gate sums and edge counts/weights by explicit loops over tokens and k × k pairs."""
    nodes = defaultdict(lambda: [0, 0.0])
    edges = defaultdict(lambda: [0, 0.0])
    all_layers = list(CFG.moe_layers)
    li = [all_layers.index(x) for x in layers]
    row = 0
    for r in records:
        for t in range(r.n_tokens):
            if rows is None or row in rows:
                for a in li:
                    for e, w in zip(r.expert_ids[t, a], r.gate_weights[t, a], strict=True):
                        nodes[(all_layers[a], int(e))][0] += 1
                        nodes[(all_layers[a], int(e))][1] += float(w)
                for a, b in itertools.pairwise(li):
                    for (ea, wa), (eb, wb) in itertools.product(
                        zip(r.expert_ids[t, a], r.gate_weights[t, a], strict=True),
                        zip(r.expert_ids[t, b], r.gate_weights[t, b], strict=True),
                    ):
                        key = (f"L{all_layers[a]}:E{ea}", f"L{all_layers[b]}:E{eb}")
                        edges[key][0] += 1
                        edges[key][1] += float(wa) * float(wb)
            row += 1
    return nodes, edges


def assert_matches(g, nodes, edges):
    assert set(g.nodes) == {f"L{layer}:E{e}" for layer, e in nodes}
    for (layer, e), (n, gate) in nodes.items():
        d = g.nodes[f"L{layer}:E{e}"]
        assert (d["layer"], d["expert"], d["tokens"]) == (layer, e, n)
        assert d["mean_gate"] == pytest.approx(gate / n, abs=1e-12)
    assert set(g.edges) == set(edges)
    for key, (n, w) in edges.items():
        assert g.edges[key]["count"] == n
        assert g.edges[key]["weight"] == pytest.approx(w, abs=1e-12)


def test_whole_store_exact_weights(ds):
    g = reasoning_graph(ds)
    # by hand (see hand_records): tokens 0, 1 and 3 take 0/1 -> 0/2 with gates 0.5/0.25 in both layers
    assert g.nodes["L1:E0"]["tokens"] == 3 and g.nodes["L1:E0"]["mean_gate"] == 0.5
    assert g.nodes["L1:E0"]["load"] == pytest.approx(3 / 5)
    assert g.nodes["L1:E0"]["share_math"] == pytest.approx(2 / 3) and g.nodes["L1:E0"]["share_code"] == pytest.approx(
        1 / 3
    )
    assert g.edges["L1:E0", "L2:E0"]["count"] == 3 and g.edges["L1:E0", "L2:E0"]["weight"] == 0.75
    # token 2 (E2 rank 0 -> E1 rank 1: 0.5*0.25) and token 4 (E2 rank 1 -> E1 rank 1: 0.125*0.125)
    assert g.edges["L1:E2", "L2:E1"]["count"] == 2 and g.edges["L1:E2", "L2:E1"]["weight"] == 0.140625
    # the flow of a layer pair is sum over tokens of (sum of gates)(sum of gates): 4 * 0.75**2 + 0.875**2
    assert g.graph["flow_totals"] == {"1": 3.015625, "2": 3.015625}
    assert g.graph["n_tokens"] == 5 and g.graph["weighted"] is True
    # every layer pair holds n_tokens * k * k token-edge incidences
    for layer in (1, 2):
        assert sum(d["count"] for u, _, d in g.edges(data=True) if g.nodes[u]["layer"] == layer) == 5 * 2 * 2
    assert_matches(g, *brute_force(hand_records()))


def test_top_tokens_decoded_with_store_vocab(ds):
    g = reasoning_graph(ds, top_tokens=2)
    assert g.nodes["L2:E3"]["top_tokens"] == "f (1)"  # only token 4 ("f", id 5) reaches expert 3 at layer 2
    assert g.nodes["L2:E0"]["top_tokens"] == "one (1) · plus (1)"  # ties broken by the smaller token id
    # edges list the tokens that take them: L1:E2 -> L2:E1 is taken by t2 ("two") and t4 ("f")
    assert g.edges["L1:E2", "L2:E1"]["top_tokens"] == "two (1) · f (1)"
    assert g.edges["L1:E0", "L2:E0"]["top_tokens"] == "one (1) · plus (1)"  # t0, t1, t3: two shown, by id
    pruned = reasoning_graph(ds, top_edges=1, top_tokens=3)  # only the kept edges are looked up
    assert pruned.edges["L2:E0", "L3:E1"]["top_tokens"] == "one (1) · plus (1) · two (1)"
    assert all(top for *_, top in pruned.edges(data="top_tokens"))


@pytest.mark.parametrize(
    ("where", "rows"),
    [
        ("domain=math", {0, 1, 2}),
        ("domain=code", {3, 4}),
        ("sequence=c0", {3, 4}),
        ("segment=think", {1, 2}),
        ("step=0", {1, 2}),
        ("tokens=2:4", {2, 3}),
    ],
)
def test_selections(ds, where, rows):
    g = reasoning_graph(ds, parse_where(where))
    assert g.graph["n_tokens"] == len(rows)
    assert_matches(g, *brute_force(hand_records(), rows))


def test_layer_range_restricts_edges_to_consecutive_selected_layers(ds):
    g = reasoning_graph(ds, Selection(layers=(2, 3)))
    assert {d["layer"] for _, d in g.nodes(data=True)} == {2, 3}
    assert_matches(g, *brute_force(hand_records(), layers=(2, 3)))
    one = reasoning_graph(ds, Selection(layers=(3, 3)))
    assert one.number_of_edges() == 0 and sum(d["tokens"] for _, d in one.nodes(data=True)) == 5 * 2


def test_token_path_is_k_experts_per_layer(ds):
    g = token_path(ds, 4)
    assert sorted(g.nodes) == ["L1:E2", "L1:E3", "L2:E1", "L2:E3", "L3:E0", "L3:E2"]
    assert g.number_of_edges() == 2 * 2 * 2  # k*k per layer pair
    assert g.edges["L1:E3", "L2:E3"]["weight"] == 0.75 * 0.75
    assert g.graph["position"] == 1 and g.graph["prompt_tokens"] == ["f"]


def test_pruned_build_keeps_exact_weights(ds):
    g = reasoning_graph(ds, top_edges=1)
    assert sorted(g.edges) == [("L1:E0", "L2:E0"), ("L2:E0", "L3:E1")]
    assert g.edges["L2:E0", "L3:E1"]["weight"] == 0.875
    assert g.edges["L2:E0", "L3:E1"]["share"] == pytest.approx(0.875 / 3.015625)
    assert g.graph["pruning"] == "top_edges=1"


def test_ids_only_store_uses_counts_and_says_so(tmp_path):
    ds = open_hand_store(write_store(tmp_path / "ids.zarr", ids_only=True))
    g = reasoning_graph(ds)
    assert g.graph["weighted"] is False and "ids-only" in g.graph["note"]
    assert g.edges["L1:E0", "L2:E0"]["weight"] == 3.0 == g.edges["L1:E0", "L2:E0"]["count"]
    assert "mean_gate" not in g.nodes["L1:E0"]


@pytest.mark.parametrize(
    ("sel", "message"),
    [
        (Selection(domains=("bio",)), "unknown domain"),
        (Selection(layers=(0, 9)), "outside this model's MoE layers"),
        (parse_where(["segment=think", "domain=code"]), "holds no tokens"),
    ],
)
def test_bad_selections_fail_with_one_line(ds, sel, message):
    with pytest.raises(SelectionError, match=message) as err:
        reasoning_graph(ds, sel)
    assert "\n" not in str(err.value)


def test_vectorised_counts_match_brute_force_on_random_routing():
    rng = np.random.default_rng(7)
    t, n_layers, k, e = 40, 3, 3, 9
    ids = np.stack([np.stack([rng.choice(e, k, replace=False) for _ in range(n_layers)]) for _ in range(t)])
    w = rng.random((t, n_layers, k)).astype(np.float16).astype(np.float64)
    rec = SequenceRecord("r", "math", "x", np.arange(t), ids, w)
    counts = count_arrays(ids, w, layers=np.array([1, 2, 3]), n_experts=e)
    nodes, edges = brute_force([rec])
    for (layer, ex), (n, gate) in nodes.items():
        assert counts.node_tokens[layer - 1, ex] == n
        assert counts.node_gate[layer - 1, ex] == pytest.approx(gate)
    got = {
        (f"L{p + 1}:E{s}", f"L{p + 2}:E{d}"): (c, wt)
        for p, s, d, c, wt in zip(
            *(
                a.tolist()
                for a in (
                    counts.edges.pair,
                    counts.edges.src,
                    counts.edges.dst,
                    counts.edges.count,
                    counts.edges.weight,
                )
            ),
            strict=True,
        )
    }
    assert set(got) == set(edges)
    for key, (n, wt) in edges.items():
        assert got[key][0] == n and got[key][1] == pytest.approx(wt)


def test_routing_that_does_not_match_the_model_is_a_graph_error(ds):
    from workbench.errors import GraphError
    from workbench.graph import difference_of_selections
    from workbench.store.select import Selection

    ids = np.zeros((2, 2, 2), dtype=np.int16)
    ids[1, 1, 1] = 9
    with pytest.raises(GraphError, match=r"expert ids outside 0\.\.3: the routing does not match n_experts=4"):
        count_arrays(ids, None, layers=np.array([1, 2]), n_experts=4)
    n_layers = ds.sizes["layer"]
    with pytest.raises(GraphError, match="selection_a and selection_b must cover the same layers"):
        difference_of_selections(ds, Selection(layers=(1, n_layers)), Selection(layers=(2, n_layers)))


def test_edge_top_tokens_match_brute_force_on_random_routing():
    """The compiled per-pair pass equals counting (edge, token id) pairs token by token, ties by smaller id."""
    from collections import Counter

    rng = np.random.default_rng(11)
    t, n_layers, k, e, vocab = 300, 4, 3, 7, 12
    ids = np.stack([np.stack([rng.choice(e, k, replace=False) for _ in range(n_layers)]) for _ in range(t)])
    tok = rng.integers(0, vocab, t)
    counts = count_arrays(
        ids, None, layers=np.arange(1, n_layers + 1), n_experts=e, token_ids=tok, vocab=[f"w{i}" for i in range(vocab)]
    )
    edges = counts.edges.take(np.flatnonzero(rng.random(len(counts.edges)) < 0.5))  # any subset of edges
    got = counts.edge_top_tokens(edges, 4)
    for i, (p, s, d) in enumerate(zip(edges.pair.tolist(), edges.src.tolist(), edges.dst.tolist(), strict=True)):
        takes = Counter(int(tok[j]) for j in range(t) if s in ids[j, p] and d in ids[j, p + 1])
        want = sorted(takes.items(), key=lambda x: (-x[1], x[0]))[:4]
        assert got[i] == [(f"w{w}", c) for w, c in want]
        assert sum(takes.values()) == edges.count[i]
