"""Block-wise (dask map-reduce) graph counting equals the in-memory count: exact on hand-made stores,
on a synthetic store split into many blocks, for ids-only captures, and through difference graphs."""

from __future__ import annotations

import numpy as np
import pytest
from graph_helpers import hand_records, open_hand_store, write_store
from test_graph_build import assert_matches, brute_force

import workbench.graph.chunked as chunked
from workbench.graph import count_routing, difference_of_selections, reasoning_graph
from workbench.store.io import open_store
from workbench.store.select import parse_where
from workbench.store.synthetic import synthetic_store


@pytest.fixture
def tiny_blocks(monkeypatch):
    monkeypatch.setattr(chunked, "BLOCK_TOKENS", 2)  # the hand store's 5 tokens -> blocks of 2, 2, 1


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    path = tmp_path_factory.mktemp("chunked") / "syn.zarr"
    synthetic_store(path, 5000, 5, 16, 4, seed=3, mean_length=150, progress=False)
    return open_store(str(path))


def _same(a, b):
    assert set(a.nodes) == set(b.nodes) and set(a.edges) == set(b.edges)
    for n, d in a.nodes(data=True):
        e = b.nodes[n]
        assert {k: v for k, v in d.items() if k != "mean_gate"} == {k: v for k, v in e.items() if k != "mean_gate"}
        if "mean_gate" in d:  # absent for ids-only captures
            assert d["mean_gate"] == pytest.approx(e["mean_gate"], rel=1e-12)
    for u, v, d in a.edges(data=True):
        assert d["count"] == b.edges[u, v]["count"]
        assert d["weight"] == pytest.approx(b.edges[u, v]["weight"], rel=1e-12)
        assert d["share"] == pytest.approx(b.edges[u, v]["share"], rel=1e-12)


@pytest.mark.usefixtures("tiny_blocks")
def test_chunked_counts_match_brute_force(tmp_path):
    ds = open_hand_store(write_store(tmp_path / "hand.zarr"))
    nodes, edges = brute_force(hand_records())
    counts = count_routing(ds, chunked=True)
    assert isinstance(counts, chunked.ChunkedRoutingCounts) and counts.reader is not None  # really the block path
    assert_matches(reasoning_graph(ds, chunked=True), nodes, edges)
    math = parse_where("domain=math")
    assert_matches(reasoning_graph(ds, math, chunked=True), *brute_force(hand_records(), rows={0, 1, 2}))


@pytest.mark.usefixtures("tiny_blocks")
def test_chunked_ids_only_store_is_unweighted(tmp_path):
    ds = open_hand_store(write_store(tmp_path / "ids.zarr", ids_only=True))
    a, b = reasoning_graph(ds, chunked=False), reasoning_graph(ds, chunked=True)
    assert not b.graph["weighted"] and a.graph["weighted"] == b.graph["weighted"]
    _same(a, b)


@pytest.mark.parametrize("where", [None, "domain=code"])
@pytest.mark.parametrize("pruning", [{}, {"top_edges": 6}, {"min_count": 20}, {"flow": 0.5}])
def test_chunked_equals_in_memory_on_many_blocks(syn, monkeypatch, where, pruning):
    monkeypatch.setattr(chunked, "BLOCK_TOKENS", 700)  # 5000 tokens -> 8 blocks, an uneven tree
    sel = parse_where(where) if where else None
    a = reasoning_graph(syn, sel, chunked=False, **pruning)
    b = reasoning_graph(syn, sel, chunked=True, **pruning)
    _same(a, b)
    assert a.graph["flow_totals"] == pytest.approx(b.graph["flow_totals"], rel=1e-12)


def test_auto_mode_uses_blocks_for_large_selections(syn, monkeypatch):
    monkeypatch.setattr(chunked, "CHUNKED_MIN_TOKENS", 1000)
    assert isinstance(count_routing(syn), chunked.ChunkedRoutingCounts)  # 5000 tokens: blocks
    small = count_routing(syn, parse_where("tokens=0:999"))
    assert not isinstance(small, chunked.ChunkedRoutingCounts) and small.expert_ids.shape[0] == 999  # in memory


def test_difference_graph_same_with_blocks(syn, monkeypatch):
    a_sel, b_sel = parse_where("domain=math"), parse_where("domain=code")
    ref = difference_of_selections(syn, a_sel, b_sel, top_edges=10)
    monkeypatch.setattr(chunked, "CHUNKED_MIN_TOKENS", 1)
    monkeypatch.setattr(chunked, "BLOCK_TOKENS", 600)
    got = difference_of_selections(syn, a_sel, b_sel, top_edges=10)
    assert set(ref.edges) == set(got.edges)
    for u, v, d in ref.edges(data=True):
        assert np.isclose(d["delta"], got.edges[u, v]["delta"], rtol=1e-12)


def test_tree_reduce_is_one_fixed_tree_for_any_split():
    import dask

    from workbench.tree_reduce import tree_reduce

    calls: list[tuple[int, ...]] = []

    def join(*xs: tuple[int, ...]) -> tuple[int, ...]:
        calls.append(tuple(len(x) for x in xs))
        return sum(xs, ())

    parts = [dask.delayed((i,)) for i in range(11)]
    for split in (2, 3, 8):
        calls.clear()
        (out,) = dask.compute(tree_reduce(parts, join, split_every=split), scheduler="sync")
        assert out == tuple(range(11))  # consecutive parts, in order: the sum order never depends on timing
        assert all(2 <= len(c) <= split for c in calls)
    with pytest.raises(ValueError, match="at least one part"):
        tree_reduce([], join)
