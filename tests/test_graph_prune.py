"""Pruning, heaviest paths, expert circuits, layout and difference graphs on hand-made stores."""

from __future__ import annotations

import itertools

import networkx as nx
import numpy as np
import pytest
from graph_helpers import open_hand_store, write_store

from workbench.errors import WorkbenchError
from workbench.graph import (
    EdgeTable,
    difference_graph,
    difference_of_selections,
    expert_circuits,
    heaviest_paths,
    layered_layout,
    prune_edges,
    prune_graph,
    reasoning_graph,
    set_communities,
)
from workbench.store.select import parse_where


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    return open_hand_store(write_store(tmp_path_factory.mktemp("prune") / "hand.zarr"))


def _table(pair, w, count=None):
    n = len(w)
    return EdgeTable(
        np.array(pair),
        np.arange(n),
        np.zeros(n, dtype=np.int64),
        np.array(count if count is not None else [1] * n),
        np.array(w, dtype=float),
    )


def test_prune_rules_per_layer_pair():
    e = _table([0, 0, 0, 1, 1], [5.0, 3.0, 2.0, 1.0, 9.0], count=[4, 1, 3, 2, 1])
    assert prune_edges(e, min_count=2).tolist() == [True, False, True, True, False]
    assert prune_edges(e, top_edges=1).tolist() == [True, False, False, False, True]
    # pair 0 total 10: 5 < 8 then 5+3 = 8 reaches 0.8 -> two edges; pair 1 total 10: 9 >= 8 -> one
    assert prune_edges(e, flow=0.8).tolist() == [True, True, False, False, True]
    # flow against the totals before pruning: after min_count pair 1 keeps only the weight-1 edge
    assert prune_edges(e, min_count=2, flow=0.5, flow_totals=np.array([10.0, 10.0])).tolist() == [
        True,
        False,
        False,
        True,
        False,
    ]
    with pytest.raises(WorkbenchError, match="share in"):
        prune_edges(e, flow=1.5)


def test_prune_graph_matches_pruned_build(ds):
    full = reasoning_graph(ds)
    for kwargs in ({"top_edges": 2}, {"flow": 0.5}, {"min_count": 2}, {"min_count": 2, "top_edges": 1}):
        a, b = prune_graph(full, **kwargs), reasoning_graph(ds, **kwargs)
        assert sorted(a.edges(data="weight")) == sorted(b.edges(data="weight"))
        assert set(a.nodes) == set(b.nodes)


def test_flow_pruning_keeps_the_smallest_covering_set(ds):
    g = reasoning_graph(ds, flow=0.5)
    for layer, total in ((1, 3.015625), (2, 3.015625)):
        kept = sorted((d["weight"] for u, _, d in g.edges(data=True) if g.nodes[u]["layer"] == layer), reverse=True)
        assert sum(kept) >= 0.5 * total and sum(kept[:-1]) < 0.5 * total


def _all_paths(g):
    layers = sorted({d for _, d in g.nodes(data="layer")})
    by = {layer: [n for n, d in g.nodes(data="layer") if d == layer] for layer in layers}
    for combo in itertools.product(*(by[layer] for layer in layers)):
        if all(g.has_edge(u, v) for u, v in itertools.pairwise(combo)):
            yield list(combo), sum(g.edges[u, v]["weight"] for u, v in itertools.pairwise(combo))


def test_heaviest_paths_match_exhaustive_search(ds):
    g = reasoning_graph(ds)
    expected = sorted(_all_paths(g), key=lambda p: (-p[1], p[0]))[:4]
    got = heaviest_paths(g, 4)
    assert [p for p, _ in got] == [p for p, _ in expected]
    assert [w for _, w in got] == pytest.approx([w for _, w in expected])
    assert got[0] == (["L1:E0", "L2:E0", "L3:E1"], 0.75 + 0.875)


def test_heaviest_paths_empty_when_no_path_spans_all_layers():
    g = nx.DiGraph()
    g.add_nodes_from(
        [("L1:E0", {"layer": 1}), ("L2:E0", {"layer": 2}), ("L2:E1", {"layer": 2}), ("L3:E0", {"layer": 3})]
    )
    g.add_edge("L1:E0", "L2:E0", weight=1.0)
    g.add_edge("L2:E1", "L3:E0", weight=1.0)
    assert heaviest_paths(g, 3) == []


def test_circuits_are_seeded_and_cover_all_nodes(ds):
    g = reasoning_graph(ds)
    a, b = expert_circuits(g), expert_circuits(g.copy())
    assert a == b and set().union(*a) == set(g.nodes)
    # token 4's private path (L1:E3 -> L2:E3 -> L3:E2) is its own circuit, apart from the shared 0/1 experts
    c = set_communities(g)
    assert g.nodes["L2:E3"]["community"] == g.nodes["L3:E2"]["community"] != g.nodes["L2:E0"]["community"]
    assert g.graph["n_communities"] == len(c)


def test_layered_layout_is_deterministic_and_by_layer(ds):
    g1, g2 = reasoning_graph(ds), reasoning_graph(ds)
    p1, p2 = layered_layout(g1), layered_layout(g2)
    assert p1 == p2
    assert all(x == g1.nodes[n]["layer"] for n, (x, _) in p1.items())
    for layer in (1, 2, 3):
        col = [n for n in g1 if g1.nodes[n]["layer"] == layer]
        ys = sorted(p1[n][1] for n in col)
        assert ys == [y - (len(col) - 1) / 2 for y in range(len(col))]  # centred ranks
        top = max(col, key=lambda n: p1[n][1])
        assert g1.nodes[top]["community"] == min(g1.nodes[n]["community"] for n in col)


def test_difference_graph_signed_normalised_shares(ds):
    math, code = parse_where("domain=math"), parse_where("domain=code")
    d = difference_graph(reasoning_graph(ds, math), reasoning_graph(ds, code), label_a="math", label_b="code")
    # node L2:E3: math 0 of 3 tokens, code 1 of 2 tokens
    assert d.nodes["L2:E3"]["delta"] == pytest.approx(0 - 1 / 2) and d.nodes["L2:E3"]["sign"] == -1
    # edge L1:E0->L2:E0: math 2 tokens * 0.25 / (3 * 0.5625); code 1 * 0.25 / (0.5625 + 0.765625)
    e = d.edges["L1:E0", "L2:E0"]
    assert e["share_a"] == pytest.approx(0.5 / 1.6875) and e["share_b"] == pytest.approx(0.25 / 1.328125)
    assert e["delta"] == pytest.approx(e["share_a"] - e["share_b"]) and e["weight"] == pytest.approx(abs(e["delta"]))
    assert (e["count_a"], e["count_b"]) == (2, 1)
    # shares sum to 1 per layer pair on each side
    for side in ("share_a", "share_b"):
        assert sum(x for u, _, x in d.edges(data=side) if d.nodes[u]["layer"] == 1) == pytest.approx(1.0)
    # the array path (used by the CLI) gives the same graph
    d2 = difference_of_selections(ds, math, code)
    assert set(d2.edges) == set(d.edges)
    for key in d.edges:
        assert d2.edges[key]["delta"] == pytest.approx(d.edges[key]["delta"])
        assert d2.edges[key]["count_a"] == d.edges[key]["count_a"]
    for n in d.nodes:
        assert d2.nodes[n]["delta"] == pytest.approx(d.nodes[n]["delta"])
    # pruning keeps the largest differences of EACH sign: one edge where math > code, one where code > math
    top = difference_of_selections(ds, math, code, top_edges=1)
    assert top.number_of_edges() == 4
    for layer in (1, 2):
        kept = {d["sign"]: (u, v) for u, v, d in top.edges(data=True) if top.nodes[u]["layer"] == layer}
        assert set(kept) == {1, -1}
        for sign, e in kept.items():
            same_side = [
                x["weight"] for u, _, x in d.edges(data=True) if d.nodes[u]["layer"] == layer and x["sign"] == sign
            ]
            assert top.edges[e]["weight"] == pytest.approx(max(same_side))
    assert top.edges["L1:E3", "L2:E3"]["sign"] == -1  # token 4's path exists only in code
    # pruning the built difference graph gives the same edges as pruning in arrays
    for kwargs in ({"top_edges": 1}, {"top_edges": 2}, {"flow": 0.5}):
        assert set(prune_graph(d, **kwargs).edges) == set(difference_of_selections(ds, math, code, **kwargs).edges)
    # each side's totals: Σ delta > 0 equals Σ |delta| < 0 per pair (both sides' shares sum to 1)
    sides = top.graph["sides"]
    assert sides["a"]["edges"] == sides["b"]["edges"] == 2 and (sides["a"]["tokens"], sides["b"]["tokens"]) == (3, 2)
    assert sides["a"]["delta_total"] == pytest.approx(sides["b"]["delta_total"])
    assert 0 < sides["a"]["kept"] <= 1 and 0 < sides["b"]["kept"] <= 1
    # pruning a difference graph restates what each side keeps
    again = prune_graph(d, top_edges=1).graph["sides"]
    for side in "ab":
        assert again[side]["edges"] == sides[side]["edges"]
        assert again[side]["kept"] == pytest.approx(sides[side]["kept"])
    # an edge's top tokens come from the side where it is heavier: L1:E3 -> L2:E3 is token 4 ("f") in code
    assert top.edges["L1:E3", "L2:E3"]["top_tokens"] == "f (1)"


def test_signed_pruning_per_pair_and_side():
    from workbench.graph.prune import prune_pair_by_sign, sign_totals

    count = np.array([1, 1, 1, 1, 1, 1])
    delta = np.array([0.30, 0.10, -0.05, -0.02, 0.0, -0.20])
    assert prune_pair_by_sign(count, delta, (0.4, 0.27), top_edges=1).tolist() == [0, 5]
    assert prune_pair_by_sign(count, delta, (0.4, 0.27), top_edges=2).tolist() == [0, 1, 2, 5]
    # flow per side: 0.3 reaches half of 0.4; 0.20 reaches half of 0.27
    assert prune_pair_by_sign(count, delta, (0.4, 0.27), flow=0.5).tolist() == [0, 5]
    assert prune_pair_by_sign(count, delta, (0.4, 0.27)).tolist() == list(range(6))  # no rule: all, zero too
    np.testing.assert_allclose(sign_totals(np.array([0, 0, 0, 1, 1, 1]), delta, 2), [[0.4, 0.0], [0.05, 0.22]])


@pytest.mark.parametrize("kwargs", [{"top_edges": 3}, {"flow": 0.3}, {"min_count": 2, "flow": 0.6, "top_edges": 4}])
def test_streamed_pruning_equals_pruning_the_full_table(kwargs):
    from workbench.graph import count_arrays

    rng = np.random.default_rng(3)
    t, n_layers, k, e = 60, 4, 2, 6
    ids = np.stack([np.stack([rng.choice(e, k, replace=False) for _ in range(n_layers)]) for _ in range(t)])
    w = rng.integers(1, 3, (t, n_layers, k)) / 2  # few distinct values: many ties in edge weights
    layers = np.arange(1, n_layers + 1)
    full = count_arrays(ids, w, layers=layers, n_experts=e)
    keep = prune_edges(full.edges, flow_totals=full.flow_totals, **kwargs)
    streamed = count_arrays(ids, w, layers=layers, n_experts=e, **kwargs)
    for col in ("pair", "src", "dst", "count", "weight"):
        assert getattr(streamed.edges, col).tolist() == getattr(full.edges.take(keep), col).tolist()
    assert streamed.flow_totals.tolist() == full.flow_totals.tolist()


@pytest.mark.parametrize("kwargs", [{"top_edges": 3}, {"flow": 0.5}, {"min_count": 2, "top_edges": 5}])
def test_pruning_with_tied_weights_is_the_same_for_any_token_or_edge_order(kwargs):
    from workbench.graph import count_arrays, counts_to_graph

    rng = np.random.default_rng(5)
    t, n_layers, k, e = 48, 4, 2, 5
    ids = np.stack([np.stack([rng.choice(e, k, replace=False) for _ in range(n_layers)]) for _ in range(t)])
    w = np.full((t, n_layers, k), 0.5)  # every product 0.25, exactly: weights tie wherever counts do
    layers = np.arange(1, n_layers + 1)
    results = set()
    for _ in range(5):
        order = rng.permutation(t)
        counts = count_arrays(ids[order], w[order], layers=layers, n_experts=e, **kwargs)
        e_ = counts.edges
        in_arrays = tuple(zip(e_.pair.tolist(), e_.src.tolist(), e_.dst.tolist(), strict=True))
        full = counts_to_graph(count_arrays(ids[order], w[order], layers=layers, n_experts=e), top_tokens=0)
        shuffled = nx.DiGraph()  # the same graph with its edges added in another order
        shuffled.graph.update(full.graph)
        shuffled.add_nodes_from(rng.permutation(list(full.nodes)).tolist())
        nx.set_node_attributes(shuffled, dict(full.nodes(data=True)))
        edges = list(full.edges(data=True))
        shuffled.add_edges_from(edges[i] for i in rng.permutation(len(edges)))
        kept = prune_graph(shuffled, **kwargs)
        in_graph = tuple(sorted((int(kept.nodes[u]["layer"]) - 1, kept.nodes[u]["expert"], kept.nodes[v]["expert"])
                                for u, v in kept.edges))  # fmt: skip
        results.add((in_arrays, in_graph))
    assert len(results) == 1
    ((in_arrays, in_graph),) = results
    assert in_arrays == in_graph
    full = count_arrays(ids, w, layers=layers, n_experts=e)
    assert len(set(full.edges.weight.tolist())) < len(full.edges)  # there were ties to break


def test_pruning_options_out_of_range_name_the_parameter():
    from workbench.errors import GraphError

    for kwargs, message in (
        ({"top_edges": 0}, "top_edges must be >= 1, got 0"),
        ({"min_count": -1}, "min_count must be >= 0, got -1"),
        ({"flow": 1.5}, r"flow must be a share in \(0, 1\], got 1.5"),
    ):
        with pytest.raises(GraphError, match=message) as err:
            prune_edges(_table([0], [1.0]), **kwargs)
        assert err.value.param == next(iter(kwargs))
        assert "--" not in str(err.value)


def test_node_ids_round_trip_and_bad_ids_fail_with_one_line():
    from workbench.errors import GraphError
    from workbench.graph import node_id, parse_node_id

    assert node_id(np.int64(3), 17) == "L3:E17"
    assert parse_node_id(node_id(60, 383)) == (60, 383)
    with pytest.raises(GraphError, match=r"node must be an id like 'L3:E17'.*got '3:17'"):
        parse_node_id("3:17")
