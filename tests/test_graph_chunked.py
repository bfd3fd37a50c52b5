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
from workbench.store.rows import TokenRows
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


# --- the block path against its definition, on a real store of many zarr chunks ------------------------


@pytest.fixture(scope="module")
def multi(tmp_path_factory):
    """5000 synthetic tokens (6 MoE layers × 16 experts, top-4) in 20 zarr chunks of 256 tokens."""
    from workbench.store import codecs

    path = tmp_path_factory.mktemp("multi") / "multi.zarr"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(codecs, "MAX_TOKEN_CHUNK", 256)
        synthetic_store(path, 5000, 6, 16, 4, seed=5, mean_length=120, progress=False)
    return path


def _dense(counts):
    """Node gate sums, (pairs, E²) edge counts and weight sums of an in-memory ``RoutingCounts``."""
    rows = [(c.copy(), w.copy()) for _, c, w in counts.pair_dense()]
    return counts.node_gate.copy(), np.stack([c for c, _ in rows]), np.stack([w for _, w in rows])


@pytest.mark.parametrize("source", ["store", "float64"])
def test_block_sums_are_the_tree_of_each_blocks_own_sums(multi, monkeypatch, source):
    """The definition: every block's sums counted in memory (row order), added by the fixed tree. The
    store's float16 gate products mostly add exactly in any order, so ``float64`` also runs the dask path
    on random float64 weights spread over 40 binary orders of magnitude, whose sums depend on the order."""
    import dask

    from workbench.store.select import Selection
    from workbench.tree_reduce import tree_reduce

    monkeypatch.setattr(chunked, "BLOCK_TOKENS", 300)  # 17 blocks, cut inside zarr chunks
    monkeypatch.setattr(chunked, "n_chains", lambda: 1)  # tasks of 8 blocks: folds 3 levels deep, and a tail
    ds = open_store(multi)
    if source == "float64":
        ds = ds.compute()
        rng = np.random.default_rng(0)
        ds["gate_weights"] = ds["gate_weights"].copy(data=2.0 ** rng.uniform(-40, 2, ds["gate_weights"].shape))
        ds = ds.chunk({"token": 1000})
    got = count_routing(ds, chunked=True, edges=False)
    assert got.reader is not None and isinstance(got.reader.ids, TokenRows) == (source == "store")
    parts = [
        dask.delayed(_dense(count_routing(ds, Selection(tokens=(a, b)), chunked=False, edges=False)))
        for a, b in chunked.block_bounds(5000)
    ]
    (gate, cnt, w), *_ = dask.compute(
        tree_reduce(parts, lambda *xs: tuple(xs[0][i] + xs[1][i] for i in range(3))), scheduler="sync"
    )
    whole = count_routing(ds, chunked=False, edges=False)
    assert np.array_equal(got.pair_cnt, _dense(whole)[1]) and np.array_equal(got.pair_cnt, cnt)  # exact
    assert np.array_equal(got.node_tokens, whole.node_tokens) and np.array_equal(got.node_domain, whole.node_domain)
    assert got.pair_w is not None
    assert np.array_equal(got.pair_w, w) and np.array_equal(got.node_gate, gate)  # bit for bit
    np.testing.assert_allclose(got.pair_w, _dense(whole)[2], rtol=1e-12)  # and the one-sum total to rounding
    if source == "float64":
        assert not np.array_equal(got.pair_w, _dense(whole)[2])  # the order shows: this test can tell


def test_fold_inside_tasks_is_the_tree_over_blocks():
    """A task's stack fold of an aligned run, then the tree over tasks: the very tree over single blocks."""
    import dask

    from workbench.tree_reduce import tree_reduce

    def join(*xs):
        return "(" + "+".join(xs) + ")"

    for n in range(1, 41):
        leaves = [str(i) for i in range(n)]
        ref = dask.compute(tree_reduce([dask.delayed(x) for x in leaves], join), scheduler="sync")[0]
        for chains in (1, 2, 3):
            runs = chunked.task_blocks(n, chains)
            assert [i for r in runs for i in r] == list(range(n)) and len(runs) >= min(n, 2 * chains)
            tasks = [dask.delayed(chunked.fold(iter([leaves[i] for i in r]), join)) for r in runs]
            assert dask.compute(tree_reduce(tasks, join), scheduler="sync")[0] == ref


@pytest.mark.parametrize("where", [None, "domain=code layers=2:4", "tokens=130:4100"])
def test_store_reads_equal_dask_reads_bit_for_bit(multi, monkeypatch, where):
    """Rows read from the store's chunks (selected rows and layers by index) or through a Dataset's dask
    blocks (rows and layers selected by xarray): the same graph, every attribute equal."""
    monkeypatch.setattr(chunked, "BLOCK_TOKENS", 600)
    sel = parse_where(where.split()) if where else None
    ds = open_store(multi)
    mem = ds.compute().chunk({"token": 512})  # not the store's own arrays: the dask path
    a = count_routing(ds, sel, chunked=True)
    b = count_routing(mem, sel, chunked=True)
    assert isinstance(a.reader.ids, TokenRows) and not isinstance(b.reader.ids, TokenRows)
    assert (a.reader.rows is None) == (where in (None, "tokens=130:4100"))  # contiguous rows: no list shipped
    ga, gb = reasoning_graph(ds, sel, chunked=True, top_edges=8), reasoning_graph(mem, sel, chunked=True, top_edges=8)
    assert ga.graph == gb.graph
    assert dict(ga.nodes(data=True)) == dict(gb.nodes(data=True))
    assert {(u, v): d for u, v, d in ga.edges(data=True)} == {(u, v): d for u, v, d in gb.edges(data=True)}
    assert np.array_equal(a.pair_cnt, _dense(count_routing(ds, sel, chunked=False, edges=False))[1])


def test_node_top_tokens_equal_in_memory_in_any_number_of_groups(multi, monkeypatch):
    monkeypatch.setattr(chunked, "BLOCK_TOKENS", 900)
    ds = open_store(multi)
    sel = parse_where("domain=math")
    got, mem = count_routing(ds, sel, chunked=True, edges=False), count_routing(ds, sel, chunked=False, edges=False)
    nodes = np.flatnonzero(mem.node_tokens.ravel())  # every node with tokens
    ref = mem.node_top_ids(nodes, 5)
    for table_bytes in (chunked.TOP_TABLE_BYTES, 5000 * 7):  # one group per thread; one-byte cells: ~7 nodes a group
        monkeypatch.setattr(chunked, "TOP_TABLE_BYTES", table_bytes)
        out = got.node_top_ids(nodes, 5)
        assert np.array_equal(out[0], ref[0]) and np.array_equal(out[1], ref[1])
    assert len(chunked.node_groups(nodes, 5000, 2)) > 10 and chunked.count_dtype(255) == np.uint8
    assert chunked.count_dtype(256) == np.uint16 and chunked.count_dtype(70_000) == np.uint32


@pytest.mark.parametrize("array", ["expert_ids", "gate_weights"])
def test_a_damaged_chunk_is_refused(multi, tmp_path, array):
    import shutil

    from workbench.errors import StoreDamagedError

    copy = tmp_path / "damaged.zarr"
    shutil.copytree(multi, copy)
    chunk = copy / array / "c/7/0/0"
    blob = chunk.read_bytes()
    chunk.write_bytes(blob[:40] + bytes([blob[40] ^ 0xFF]) + blob[41:])
    with pytest.raises(StoreDamagedError, match=rf"chunk {array}/c/7/0/0"):
        reasoning_graph(open_store(copy), chunked=True, top_edges=5)


def test_ids_outside_the_model_are_refused(multi):
    from workbench.errors import GraphError

    mem = open_store(multi).compute()
    mem["expert_ids"].values[3000, 2, 1] = 16  # the model has 16 experts: 0..15
    with pytest.raises(GraphError, match=r"expert ids outside 0\.\.15"):
        reasoning_graph(mem.chunk({"token": 1000}), chunked=True)
