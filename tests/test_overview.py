"""Supernode overview (workbench.graph.supernodes, `workbench overview`) on real zarr stores.

Structure: supernodes partition the routed experts of every layer, flows are the selection's transitions
summed over supernodes (Σ = |T|·k² per layer pair, equal to the reasoning graph's edge counts), loads sum
to k; a store with two planted expert communities is split along them; heaviest supernode paths match
brute force; the CLI prints a per-layer table and refuses bad input with one line and exit code 2.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import pytest

from workbench.cli.app import main
from workbench.errors import GraphError, SelectionError
from workbench.graph import count_routing
from workbench.graph.path_table import expert_path_rows, format_table
from workbench.graph.supernodes import heaviest_supernode_paths, supernodes
from workbench.routing_config import RoutingConfig
from workbench.store.dataset import SequenceRecord, SpanRecord
from workbench.store.io import open_store
from workbench.store.select import parse_where
from workbench.store.synthetic import synthetic_store
from workbench.store.writer import StoreWriter


@pytest.fixture(scope="module")
def syn_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("ov") / "syn.zarr"
    return synthetic_store(path, n_tokens=3000, n_layers=6, n_experts=32, k=4, progress=False, mean_length=200)


@pytest.fixture(scope="module")
def syn(syn_path: str):
    return open_store(syn_path)


def planted_store(path: Path) -> Path:
    """6 MoE layers × 8 experts, top-2: 'alpha' tokens use experts 0-3 at every layer, 'beta' tokens 4-7."""
    cfg = RoutingConfig("planted", "deepseek_v3", "deepseek_v3", 7, tuple(range(1, 7)), 8, 2)
    rng = np.random.default_rng(0)
    tok = {"name": "t", "vocab": ["<s>", "alpha", "beta"], "special_tokens": {"<s>": 0}}
    with StoreWriter(path, cfg, tok, capture="synthetic") as w:
        for i in range(40):
            kind = i % 2
            n = 30
            ids = np.stack([rng.permutation(4)[:2] + 4 * kind for _ in range(n * 6)]).reshape(n, 6, 2)
            weights = np.full((n, 6, 2), 1.0, dtype=np.float32)
            w.add(SequenceRecord(f"s{i}", ("alpha", "beta")[kind], "hand", np.full(n, 1 + kind), ids.astype(np.int16),
                                 weights, spans=[SpanRecord("answer", 0, n)]))  # fmt: skip
    return path


def test_supernodes_partition_the_routed_experts_of_every_layer(syn) -> None:
    sn = supernodes(syn, n_supernodes=5)
    assert sn.assignment.shape == (6, 32) and sn.layers.tolist() == [1, 2, 3, 4, 5, 6]
    for i in range(6):
        routed = sn.expert_tokens[i] > 0
        assert np.all((sn.assignment[i] >= 0) == routed)  # every routed expert in exactly one supernode
        groups = [sn.members(i, g) for g in range(int(sn.n_groups[i]))]
        assert 1 <= len(groups) <= 5 and all(m.size for m in groups)
        together = np.sort(np.concatenate(groups))
        assert together.tolist() == np.flatnonzero(routed).tolist()
        assert np.all(np.diff(sn.tokens[i, : int(sn.n_groups[i])]) <= 0)  # numbered by tokens, largest first
    assert np.allclose(sn.load.sum(1), sn.top_k)  # Σ load over a layer = k


def test_flows_are_the_selections_transitions_summed_over_supernodes(syn) -> None:
    sel = parse_where("domain=math,code")
    sn = supernodes(syn, sel, n_supernodes=4)
    counts = count_routing(syn, sel)  # every edge, unpruned
    e = counts.edges
    for p in range(sn.layers.size - 1):
        assert sn.flows[p].sum() == sn.n_tokens * sn.top_k**2
        want = np.zeros_like(sn.flows[p])
        m = e.pair == p
        np.add.at(want, (sn.assignment[p][e.src[m]], sn.assignment[p + 1][e.dst[m]]), e.count[m])
        assert np.array_equal(sn.flows[p], want)
        assert np.array_equal(sn.flows[p].sum(1)[: sn.n_groups[p]], sn.top_k * sn.tokens[p, : sn.n_groups[p]])


def test_same_result_whatever_the_blocks(syn) -> None:
    a = supernodes(syn, n_supernodes=6)
    b = supernodes(syn, n_supernodes=6, block=700)
    assert np.array_equal(a.assignment, b.assignment) and np.array_equal(a.flows, b.flows)
    assert a.top_tokens == b.top_tokens


def test_planted_communities_are_found(tmp_path: Path) -> None:
    ds = open_store(planted_store(tmp_path / "planted.zarr"))
    sn = supernodes(ds, n_supernodes=2)
    for i in range(6):
        assert sorted(map(sorted, (sn.members(i, 0).tolist(), sn.members(i, 1).tolist()))) == [
            [0, 1, 2, 3],
            [4, 5, 6, 7],
        ]
    lift = sn.domain_lift()  # each community serves one domain only: lift 2 for it, 0 for the other
    assert np.allclose(np.sort(lift[:, 0, :2], axis=0), [[0, 0], [2, 2]])
    flows = sn.flows[0]
    assert flows[0, 1] == flows[1, 0] == 0  # no token crosses between the communities


def test_heaviest_supernode_paths_match_brute_force(syn) -> None:
    sel = parse_where("layers=2:5")
    sn = supernodes(syn, sel, n_supernodes=3)
    got = heaviest_supernode_paths(sn, 4)
    every = [
        (sum(int(sn.flows[i, p[i], p[i + 1]]) for i in range(len(p) - 1)), list(p))
        for p in itertools.product(*(range(int(n)) for n in sn.n_groups))
    ]
    every.sort(key=lambda c: (-c[0], c[1]))
    assert [(p, w) for w, p in every[:4]] == got


def test_top_tokens_and_labels(syn) -> None:
    sn = supernodes(syn, n_supernodes=3, top_experts=2, top_tokens=3)
    heavy = sn.members(0, 0)[:2]
    for e in heavy:
        tops = sn.top_tokens[(0, int(e))]
        assert 1 <= len(tops) <= 3 and all(t.startswith("tok") or t in ("<s>", "</s>") for t, _ in tops)
        assert [c for _, c in tops] == sorted((c for _, c in tops), reverse=True)
    assert sn.label(0, 0, 2).startswith(f"E{heavy[0]} E{heavy[1]}")


def test_bad_options_name_the_parameter(syn) -> None:
    with pytest.raises(GraphError, match=r"^n_supernodes must be between 1 and 64") as err:
        supernodes(syn, n_supernodes=0)
    assert err.value.param == "n_supernodes"
    with pytest.raises(GraphError, match="needs at least two"):
        supernodes(syn, parse_where("layers=3:3"))
    with pytest.raises(SelectionError):
        supernodes(syn, parse_where("domain=poetry"))


def test_path_table_folds_long_tables() -> None:
    paths = [([f"L{i}:E{i % 7}" for i in range(1, 61)], 12.5), ([f"L{i}:E{i % 5}" for i in range(1, 61)], 9.0)]
    header, rows = expert_path_rows(paths)
    assert header == ["layer", "path 1 (12.5)", "path 2 (9)"] and rows[0] == ["L1", "E1", "E1"] and len(rows) == 60
    wide = format_table(header, rows, width=200).splitlines()
    assert len(wide) == 21 and wide[0].count("layer") == 3  # 60 layers in 3 blocks of 20 rows
    narrow = format_table(header, rows, width=40).splitlines()
    assert len(narrow) == 61


def run_main(args: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["workbench", "overview", *args])
    with pytest.raises(SystemExit) as exit_:
        main()
    out = capsys.readouterr()
    return int(exit_.value.code or 0), out.out, out.err


def test_cli_prints_a_per_layer_table(syn_path, monkeypatch, capsys) -> None:
    code, out, err = run_main(
        [syn_path, "--where", "domain=math", "--supernodes", "4", "--paths", "2"], monkeypatch, capsys
    )
    assert code == 0, err
    lines = out.splitlines()
    assert "6 MoE layers × 32 experts" in lines[0] and "domain=math" in lines[0]
    assert lines[1].split()[:2] == ["layer", "largest"] and "path 2" in lines[1]
    assert [ln.split()[0] for ln in lines[2:8]] == ["L1", "L2", "L3", "L4", "L5", "L6"]
    assert "paths:" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--supernodes", "0"], "error: --supernodes must be between 1 and 64, got 0"),
        (["--export", "x.graphml"], "the overview is a figure"),
        (["--where", "domain=poetry"], "error: "),
        (["--layers", "2:2"], "error: --layers"),
        (["--export", "/proc/x.html"], "error: "),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(syn_path, monkeypatch, capsys, tmp_path, args, message) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main([syn_path, *args], monkeypatch, capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not list(tmp_path.iterdir())  # nothing written


def test_widget_zooms_from_a_supernode_to_its_experts(syn) -> None:
    from workbench.viz.widgets.overview import OverviewWidget

    from workbench.errors import WorkbenchError

    w = OverviewWidget(syn, where="domain=code", n_supernodes=4)
    sn = w.supernodes
    assert sn.selection == "domain=code"
    assert len(w.figure.data[0].node.customdata) == int(sn.n_groups.sum())
    assert [v for _, v in w.group.options] == list(range(int(sn.n_groups[0])))
    w.show(4, 1)
    members = sn.members(3, 1)
    assert f"<h3>L4 · S1 (the block labelled E{members[0]}): {members.size} experts" in w.panel.value
    assert f"<td>E{members[0]}</td>" in w.panel.value and "from L3:" in w.panel.value and "to L5:" in w.panel.value
    w.layer.value = 0  # picking another layer lists its supernodes and shows the first
    assert "<h3>L1 · S0 (" in w.panel.value and "from L" not in w.panel.value
    with pytest.raises(WorkbenchError, match="layer 9 is not in the overview"):
        w.show(9, 0)
    with pytest.raises(WorkbenchError, match="supernode 7 does not exist in layer 2"):
        w.show(2, 7)
