"""``workbench graph`` end to end through the installed entry point: exports, diffs, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest
from graph_helpers import open_hand_store, write_store

from workbench.cli.app import main
from workbench.graph import reasoning_graph
from workbench.store.select import parse_where

WORKBENCH = str(Path(sys.executable).with_name("workbench"))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_store(tmp_path_factory.mktemp("cli") / "hand.zarr")


def run(*args, cwd):
    """The installed ``workbench`` entry point in a subprocess (used once: process start-up is slow here)."""
    return subprocess.run([WORKBENCH, "graph", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=600)


def run_main(*args, cwd, monkeypatch, capsys):
    """``workbench.cli.app.main`` in-process, exactly as the entry point calls it: (exit code, stdout, stderr)."""
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", ["workbench", "graph", *map(str, args)])
    with pytest.raises(SystemExit) as exit_:
        main()
    out = capsys.readouterr()
    return exit_.value.code, out.out, out.err


def test_several_exports_at_once(store, tmp_path):
    r = run(
        store,
        "--where",
        "domain=math",
        "--top-edges",
        "2",
        *("--export", "m.graphml", "-o", "m.cyjs", "-o", "m.ct", "-o", "m.html"),
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert "domain=math:" in r.stdout and "path 1 = 1.125" in r.stdout  # heaviest path L1:E0 → L2:E0 → L3:E1
    assert "pruned by default" not in r.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.ct", "m.cyjs", "m.graphml", "m.html"]
    expected = reasoning_graph(open_hand_store(store), parse_where("domain=math"), top_edges=2)
    h = nx.read_graphml(tmp_path / "m.graphml")
    assert sorted((u, v, float(w)) for u, v, w in h.edges(data="weight")) == sorted(expected.edges(data="weight"))
    assert "community" in h.nodes["L1:E0"] and "x" in h.nodes["L1:E0"]  # circuits and layout travel with exports
    assert json.loads((tmp_path / "m.ct" / "m.json").read_text())["metadata"]["slug"] == "m"  # a circuit-tracer folder


def test_segment_and_diff_options(store, tmp_path, monkeypatch, capsys):
    code, _, err = run_main(
        store,
        "--segment",
        "think",
        "--layers",
        "1:2",
        "-o",
        "think.json",
        cwd=tmp_path,
        monkeypatch=monkeypatch,
        capsys=capsys,
    )
    assert code == 0, err
    data = json.loads((tmp_path / "think.json").read_text())
    assert data["graph"]["n_tokens"] == 2 and {n["layer"] for n in data["nodes"]} == {1, 2}

    code, _, err = run_main(
        store,
        *("--where", "domain=math", "--diff", "domain=code", "-o", "d.json", "--format", "cytoscape"),
        cwd=tmp_path,
        monkeypatch=monkeypatch,
        capsys=capsys,
    )
    assert code == 0, err
    data = json.loads((tmp_path / "d.json").read_text())
    assert data["data"]["kind"] == "difference" and data["data"]["label_b"] == "domain=code"
    deltas = {(e["data"]["source"], e["data"]["target"]): e["data"]["delta"] for e in data["elements"]["edges"]}
    assert deltas[("L1:E3", "L2:E3")] < 0 < deltas[("L2:E0", "L3:E1")]


def test_without_export_prints_a_per_layer_summary_and_writes_nothing(store, tmp_path, monkeypatch, capsys):
    code, out, err = run_main(store, "--where", "domain=math", cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0, err
    lines = out.splitlines()
    # no pruning flag: the readable default, said in one line
    assert lines[1] == (
        "pruned by default to the 12 heaviest edges per layer pair "
        "(choose with --top-edges N, --flow F or --min-count N; --all-edges keeps all)"
    )
    assert lines[2].startswith("heaviest paths (Σ edge weight): path 1 = 1.125")
    header, *rows = lines[3:]
    assert header.split()[:5] == ["layer", "experts", "top", "experts", "(load)"] and header.endswith("path 3")
    assert [r.split()[0] for r in rows] == ["1", "2", "3"]  # one row per layer
    # layer 1 of math: E0 and E1 carry 2 of 3 tokens each; path 1 takes E0 at L1, E0 at L2, E1 at L3
    assert "E0 .67 · E1 .67" in rows[0] and rows[0].split()[-3] == "E0" and rows[2].split()[-3] == "E1"
    assert list(tmp_path.iterdir()) == []

    code, out, err = run_main(
        store, "--all-edges", "--paths", "0", cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys
    )
    assert code == 0 and "pruning: none" in out and "pruned by default" not in out and "layer" not in out


def test_difference_summary_states_both_sides(store, tmp_path, monkeypatch, capsys):
    args = ("--where", "domain=math", "--diff", "domain=code", "--top-edges", "1")
    code, out, err = run_main(store, *args, cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0, err
    assert "more in domain=math (red in figures): 2 edges" in out
    assert "more in domain=code (blue in figures): 2 edges" in out
    assert "path a = " in out and "path b = " in out
    table = out[out.index("layer  experts") :].splitlines()
    assert "more in domain=math (Δ load)" in table[0] and "more in domain=code (Δ load)" in table[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-o", "g.docx"], "unsupported file type"),
        (["--where", "segment=think", "--where", "domain=code", "-o", "g.graphml"], "holds no tokens"),
        (["--layers", "2:9", "-o", "g.graphml"], "outside this model's MoE layers 1:3"),
        (["--where", "domain=bio", "-o", "g.graphml"], "unknown domain 'bio'"),
        (["--top-edges", "0", "-o", "g.graphml"], "--top-edges must be >= 1"),
        (["--top-edges", "3", "--all-edges", "-o", "g.graphml"], "--all-edges keeps every edge"),
        (["--paths", "-1"], "--paths must be >= 0"),
        (["-o", "g.graphml", "-o", "nowhere/g.svg"], "folder nowhere does not exist"),
    ],
)
def test_bad_input_one_line_no_files(store, tmp_path, args, message, monkeypatch, capsys):
    code, _, err = run_main(store, *args, cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert list(tmp_path.iterdir()) == []


def test_missing_store(tmp_path):
    r = run(tmp_path / "none.zarr", "-o", "g.graphml", cwd=tmp_path)  # through the real entry point
    assert r.returncode == 2 and r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []
