"""The fast paths of graph building, each checked against the plain computation it replaces, on a real store.

Reading a selection by spans (``workbench.graph.read``) against ``select``; node counts and node top
tokens (compiled) against ``np.bincount`` and counting tokens one by one; the flow rule's partial
ranking against ranking every edge; the difference of two selections against differencing their
sparse edge tables with ``np.union1d``; the overview's top tokens against counting. Exact equality
throughout: the fast paths must not change a single number.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from workbench.graph import count_arrays, count_routing, difference_of_selections, reasoning_graph
from workbench.graph import read as graph_read
from workbench.graph.counts import _token_domains
from workbench.graph.prune import prune_pair
from workbench.graph.read import read_selections
from workbench.graph.supernodes import supernodes
from workbench.graph.tables import node_counts
from workbench.store import schema as S
from workbench.store.io import open_store
from workbench.store.select import Selection, parse_where, select
from workbench.store.synthetic import synthetic_store


@pytest.fixture(scope="module")
def syn(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("fast") / "syn.zarr"
    synthetic_store(path, n_tokens=3000, n_layers=6, n_experts=32, k=4, progress=False, mean_length=200)
    return open_store(path)


def _random_routing(seed: int, t: int, n_layers: int, k: int, e: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([np.stack([rng.choice(e, k, replace=False) for _ in range(n_layers)]) for _ in range(t)])


SELECTIONS = [
    ["tokens=0:3000"],
    ["tokens=17:1211"],
    ["domain=code"],
    ["domain=math,agent", "layers=2:5"],
    ["segment=answer", "positions=3:90"],
    ["step=0", "layers=4:4"],
]


@pytest.mark.parametrize("gap", [1, 40, 10**9])
@pytest.mark.parametrize("where", SELECTIONS)
def test_reading_by_spans_equals_select(syn, monkeypatch, where, gap) -> None:
    monkeypatch.setattr(graph_read, "_chunk_rows", lambda ds: gap)  # many short spans, some, or one
    sel = parse_where(where)
    (got,) = read_selections(syn, [sel])
    sub = select(syn, sel)
    np.testing.assert_array_equal(got.expert_ids, sub[S.EXPERT_IDS].values)
    np.testing.assert_array_equal(got.gate_weights, sub[S.GATE_WEIGHTS].values)
    np.testing.assert_array_equal(got.token_ids, sub[S.TOKEN_ID].values)
    np.testing.assert_array_equal(got.positions, sub[S.POSITION].values)
    np.testing.assert_array_equal(got.layers, sub[S.LAYER].values)
    names, dom = _token_domains(sub)
    assert got.domains == names and got.token_domain.tolist() == dom.tolist()
    assert got.expert_ids.dtype == sub[S.EXPERT_IDS].dtype and got.gate_weights.dtype == sub[S.GATE_WEIGHTS].dtype


def test_several_selections_read_together_equal_each_read_alone(syn, monkeypatch) -> None:
    monkeypatch.setattr(graph_read, "_chunk_rows", lambda ds: 25)
    sels = [parse_where(w) for w in (["domain=math"], ["tokens=100:900"], ["domain=math"], ["domain=language"])]
    together = read_selections(syn, sels)
    for sel, got in zip(sels, together, strict=True):
        (alone,) = read_selections(syn, [sel])
        np.testing.assert_array_equal(got.expert_ids, alone.expert_ids)
        np.testing.assert_array_equal(got.gate_weights, alone.gate_weights)
        np.testing.assert_array_equal(got.token_ids, alone.token_ids)


def test_node_counts_equal_bincount_to_the_last_bit() -> None:
    ids = _random_routing(1, 500, 5, 3, 11)
    w = np.random.default_rng(2).random((500, 5, 3))
    dom = np.random.default_rng(3).integers(0, 3, 500)
    tokens, gate, per_domain = node_counts(ids, w, dom, 11, 3)
    code = (ids + np.arange(5)[None, :, None] * 11).ravel()
    assert tokens.ravel().tolist() == np.bincount(code, minlength=55).tolist()
    assert gate.ravel().tolist() == np.bincount(code, weights=w.ravel(), minlength=55).tolist()  # same additions
    d_code = np.broadcast_to(dom[:, None, None], ids.shape).ravel() * 55 + code
    assert per_domain.ravel().tolist() == np.bincount(d_code, minlength=165).tolist()


def test_node_top_tokens_match_counting_token_by_token() -> None:
    t, n_layers, k, e, vocab = 400, 4, 3, 7, 15
    ids = _random_routing(11, t, n_layers, k, e)
    tok = np.random.default_rng(12).integers(0, vocab, t)
    counts = count_arrays(ids, None, layers=np.arange(1, n_layers + 1), n_experts=e, token_ids=tok,
                          vocab=[f"w{i}" for i in range(vocab)], edges=False)  # fmt: skip
    nodes = np.flatnonzero(np.random.default_rng(13).random(n_layers * e) < 0.6)
    got = counts.top_tokens(nodes, 4)
    for c in nodes.tolist():
        layer, ex = divmod(c, e)
        hits = Counter(int(tok[j]) for j in range(t) if ex in ids[j, layer])
        want = sorted(hits.items(), key=lambda x: (-x[1], x[0]))[:4]  # ties: the smaller id
        assert got[c] == [(f"w{w}", m) for w, m in want]


def _prune_by_ranking_every_edge(count, weight, total, *, min_count=None, top_edges=None, flow=None):
    """The flow and top-edges rules as first written: rank all edges, then cut."""
    idx = np.arange(count.size) if not min_count else np.flatnonzero(count >= min_count)
    if flow is None and top_edges is None:
        return idx
    w = weight[idx]
    ranked = np.argsort(-w, kind="stable")
    if flow is not None:
        before = np.cumsum(w[ranked]) - w[ranked]
        ranked = ranked[before < flow * total * (1 - 1e-12)]
    if top_edges is not None:
        ranked = ranked[:top_edges]
    return np.sort(idx[ranked])


@pytest.mark.parametrize("size", [0, 7, 3000, 40_000])
@pytest.mark.parametrize("kind", ["ties", "continuous", "signed"])
def test_flow_pruning_by_partial_ranking_equals_ranking_every_edge(size, kind) -> None:
    rng = np.random.default_rng(size)
    count = rng.integers(1, 6, size)
    weight = {
        "ties": rng.integers(1, 4, size) / 4,  # few distinct values: ties at every cut
        "continuous": rng.pareto(1.5, size),  # heavy-tailed, like a layer pair's edge weights
        "signed": rng.normal(size=size),  # prune_graph on a signed attribute
    }[kind]
    total = float(np.abs(weight).sum())
    for flow in (0.01, 0.3, 0.5, 0.9, 1.0):
        for top in (None, 1, 50, 5000):
            for min_count in (None, 3):
                kw = {"flow": flow, "top_edges": top, "min_count": min_count}
                got = prune_pair(count, weight, total, **kw)
                assert got.tolist() == _prune_by_ranking_every_edge(count, weight, total, **kw).tolist(), kw


@pytest.mark.parametrize(("a", "b"), [(["domain=math"], ["domain=code"]), (["tokens=0:1400"], ["tokens=1400:3000"])])
def test_difference_equals_differencing_sparse_edge_tables(syn, a, b) -> None:
    sel_a, sel_b = parse_where(a), parse_where(b)
    d = difference_of_selections(syn, sel_a, sel_b, top_tokens=0)
    ca, cb = count_routing(syn, sel_a, edges=False), count_routing(syn, sel_b, edges=False)
    layers = ca.layers.tolist()
    for (p, codes_a, n_a, w_a), (_, codes_b, n_b, w_b) in zip(ca.pair_edges(), cb.pair_edges(), strict=True):
        codes = np.union1d(codes_a, codes_b)
        share_a, share_b, cnt_a, cnt_b = (np.zeros(codes.size) for _ in range(4))
        share_a[np.searchsorted(codes, codes_a)] = w_a / w_a.sum()
        share_b[np.searchsorted(codes, codes_b)] = w_b / w_b.sum()
        cnt_a[np.searchsorted(codes, codes_a)] = n_a
        cnt_b[np.searchsorted(codes, codes_b)] = n_b
        delta = share_a - share_b
        for c, sa, sb, dl, na, nb in zip(codes.tolist(), share_a, share_b, delta, cnt_a, cnt_b, strict=True):
            s, t = divmod(c, ca.n_experts)
            e = d.edges[f"L{layers[p]}:E{s}", f"L{layers[p + 1]}:E{t}"]
            assert (e["share_a"], e["share_b"], e["delta"], e["count_a"], e["count_b"]) == (sa, sb, dl, na, nb)
        by_sign = d.graph["flow_totals_by_sign"][str(layers[p])]
        assert by_sign == [float(delta[delta > 0].sum()), float(-delta[delta < 0].sum())]
    pairs = zip(ca.pair_edges(), cb.pair_edges(), strict=True)
    assert d.number_of_edges() == sum(np.union1d(x[1], y[1]).size for x, y in pairs)


def test_graph_top_tokens_and_attributes_of_a_real_store(syn) -> None:
    """Node and edge hover texts equal the decoded counts of the plain per-element methods."""
    sel = parse_where(["domain=agent"])
    g = reasoning_graph(syn, sel, top_edges=6, top_tokens=3)
    counts = count_routing(syn, sel, top_edges=6)
    layers, ne = counts.layers.tolist(), counts.n_experts
    nodes = np.array(sorted(layers.index(g.nodes[n]["layer"]) * ne + g.nodes[n]["expert"] for n in g))
    tops = counts.top_tokens(nodes, 3)
    for c in nodes.tolist():
        li, ex = divmod(c, ne)
        assert g.nodes[f"L{layers[li]}:E{ex}"]["top_tokens"] == " · ".join(f"{t} ({m})" for t, m in tops[c])
    e = counts.edges
    for row, items in enumerate(counts.edge_top_tokens(e, 3)):
        key = (f"L{layers[e.pair[row]]}:E{e.src[row]}", f"L{layers[e.pair[row] + 1]}:E{e.dst[row]}")
        assert g.edges[key]["top_tokens"] == " · ".join(f"{t} ({m})" for t, m in items)
        assert g.edges[key]["count"] == e.count[row] and g.edges[key]["weight"] == e.weight[row]


def test_overview_top_tokens_match_counting(syn) -> None:
    sn = supernodes(syn, n_supernodes=4, top_experts=3, top_tokens=4)
    ids = np.asarray(syn[S.EXPERT_IDS].values)
    tok = np.asarray(syn[S.TOKEN_ID].values)
    vocab = syn.attrs["tokenizer"]["vocab"]
    assert sn.sample_tokens == ids.shape[0]  # a small store: every token is in the sample
    for (li, ex), got in sn.top_tokens.items():
        hits = Counter(tok[(ids[:, li] == ex).any(axis=1)].tolist())
        want = sorted(hits.items(), key=lambda x: (-x[1], x[0]))[:4]
        assert got == [(vocab[t], m) for t, m in want]
    assert len(sn.top_tokens) == sum(min(3, sn.members(i, g).size) for i in range(6) for g in range(sn.n_groups[i]))


def test_a_selection_read_by_spans_builds_the_graph_select_would(syn, tmp_path: Path) -> None:
    """``reasoning_graph`` reads by spans; counting ``select``'s arrays gives the same graph."""
    sel = Selection(tokens=(250, 2750), layers=(2, 6))
    g = reasoning_graph(syn, sel, min_count=3, top_tokens=2)
    sub = select(syn, sel)
    names, dom = _token_domains(sub)
    ref = count_arrays(
        np.asarray(sub[S.EXPERT_IDS].values), np.asarray(sub[S.GATE_WEIGHTS].values, dtype=np.float64),
        layers=np.asarray(sub[S.LAYER].values), n_experts=32, token_domains=(names, dom),
        token_ids=np.asarray(sub[S.TOKEN_ID].values), vocab=syn.attrs["tokenizer"]["vocab"], min_count=3,
    )  # fmt: skip
    e = ref.edges
    got = sorted((g.nodes[u]["layer"], g.nodes[u]["expert"], g.nodes[v]["expert"], d["count"], d["weight"])
                 for u, v, d in g.edges(data=True))  # fmt: skip
    want = sorted(zip((ref.layers[e.pair]).tolist(), e.src.tolist(), e.dst.tolist(), e.count.tolist(),
                      e.weight.tolist(), strict=True))  # fmt: skip
    assert got == want
