"""The circuit-tracer data folder on the hand-made store, where every number is known.

What circuit-tracer's frontend requires of it (prompt_tokens of two or more, ctx_idx in range,
influence in [0, 1]) is checked here against the schema and by hand; that the frontend then draws it
is tests/test_viewers_circuit_tracer.py.
"""

from __future__ import annotations

import json
import sys

import jsonschema
import pytest
from graph_helpers import open_hand_store, write_store

from workbench.cli.app import main
from workbench.errors import WorkbenchError
from workbench.graph import difference_of_selections, layered_layout, reasoning_graph, set_communities, token_path
from workbench.graph.circuit_tracer import CIRCUIT_TRACER_SCHEMA, START, cantor, cumulative_influence
from workbench.graph.circuit_tracer_export import write_circuit_tracer
from workbench.graph.export import ExportError, export_format, write_graph_data
from workbench.store.select import Selection, parse_where


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_store(tmp_path_factory.mktemp("ct") / "hand.zarr")


@pytest.fixture(scope="module")
def ds(store):
    return open_hand_store(store)


@pytest.fixture(scope="module")
def graph(ds):
    g = reasoning_graph(ds)
    set_communities(g)
    layered_layout(g)
    return g


def _read(folder, slug):
    data = json.loads((folder / f"{slug}.json").read_text())
    jsonschema.validate(data, CIRCUIT_TRACER_SCHEMA)
    return data


def test_cumulative_influence_by_hand():
    # emb -> a (3), emb -> c (1), a -> b (3), c -> b (1), b -> out (1): I = emb 1, a 3/4, c 1/4, b 1, out 0
    links = [("emb", "a", 3.0), ("emb", "c", 1.0), ("a", "b", 3.0), ("c", "b", -1.0), ("b", "out", 1.0)]
    got = cumulative_influence(["emb", "a", "c", "b", "out"], links, "out")
    assert got == pytest.approx({"emb": 1 / 3, "b": 2 / 3, "a": 2.75 / 3, "c": 1.0, "out": 1.0})


def test_aggregate_folder(graph, tmp_path):
    folder = write_graph_data(graph, tmp_path / "hand.ct")
    assert sorted(p.name for p in folder.iterdir()) == ["graph-metadata.json", "hand.json"]  # no store: no features
    data = _read(folder, "hand")
    meta = json.loads((folder / "graph-metadata.json").read_text())
    assert meta == {"graphs": [data["metadata"]]} and data["metadata"]["slug"] == "hand"
    assert data["metadata"]["prompt_tokens"] == ["5 tokens", "experts"]
    kinds = [n["feature_type"] for n in data["nodes"]]
    assert kinds.count("embedding") == 1 and kinds.count("logit") == 1
    assert kinds.count("cross layer transcoder") == graph.number_of_nodes()
    by_id = {n["node_id"]: n for n in data["nodes"]}
    node = by_id["1_0_1"]  # layer 1, expert 0, column 1 (the experts' column)
    assert node["feature"] == cantor(1, 0) and node["activation"] == 0.5 and node["layer"] == "1"
    assert by_id["E_sel_0"]["ctx_idx"] == 0 and by_id["4_out_1"]["layer"] == "4"  # output: one above layer 3
    link = {(x["source"], x["target"]): x for x in data["links"]}
    assert link["1_0_1", "2_0_1"]["weight"] == 0.75 and link["1_0_1", "2_0_1"]["count"] == 3
    assert link["E_sel_0", "1_0_1"]["weight"] == pytest.approx(3 * 0.5)  # Σ gate weights of L1:E0's tokens
    first = {n for n, d in graph.nodes(data=True) if d["layer"] == 1}
    last = {n for n, d in graph.nodes(data=True) if d["layer"] == 3}
    assert len(data["links"]) == graph.number_of_edges() + len(first) + len(last)
    influence = [n["influence"] for n in data["nodes"]]
    assert all(0.0 <= x <= 1.0 for x in influence) and max(influence) == pytest.approx(1)
    path = data["qParams"]["pinnedIds"]
    assert path[0] == "E_sel_0" and data["qParams"]["clickedId"] == path[1] == "1_0_1"  # heaviest path's start


def test_token_path_context_from_the_store(ds, tmp_path):
    g = token_path(ds, 4)  # "f", second token of sequence c0 ("def", "f")
    plain = _read(write_circuit_tracer(g, tmp_path / "plain.ct"), "plain")
    assert plain["metadata"]["prompt_tokens"] == ["…", "f"]
    folder = write_circuit_tracer(g, tmp_path / "t.ct", ds=ds, selection=Selection(tokens=(4, 5)))
    data = _read(folder, "t")
    assert data["metadata"]["prompt_tokens"] == ["def", "f"] and data["metadata"]["prompt"] == "deff"
    assert {n["ctx_idx"] for n in data["nodes"]} == {1}
    out = next(n for n in data["nodes"] if n["feature_type"] == "logit")
    assert out["clerp"] == '"end of sequence" (p=n/a)'  # "f" ends its sequence
    first = write_circuit_tracer(token_path(ds, 0), tmp_path / "t0.ct", ds=ds, selection=Selection(tokens=(0, 1)))
    data = _read(first, "t0")
    assert data["metadata"]["prompt_tokens"] == [START, "one"]  # two prompt tokens, or the frontend drops all
    assert next(n for n in data["nodes"] if n["feature_type"] == "logit")["clerp"] == 'Next token "plus" (p=n/a)'


def test_feature_files_hold_each_experts_top_contexts(graph, ds, tmp_path):
    folder = write_circuit_tracer(graph, tmp_path / "f.ct", ds=ds)
    scan = _read(folder, "f")["metadata"]["scan"]
    assert scan == "./data/hand-experts"  # the frontend fetches {scan}/{feature}.json: folder/hand-experts/
    files = {p.name for p in (folder / "hand-experts").iterdir()}
    assert files == {f"{cantor(*map(int, n[1:].split(':E')))}.json" for n in graph.nodes}
    feat = json.loads((folder / "hand-experts" / f"{cantor(1, 0)}.json").read_text())
    assert feat["activation_frequency"] == pytest.approx(3 / 5)  # L1:E0 is routed in tokens 0, 1, 3
    ex = feat["examples_quantiles"][0]["examples"]
    assert len(ex) == 3 and all(len(e["tokens"]) == len(e["tokens_acts_list"]) for e in ex)
    assert [e["tokens_acts_list"][e["train_token_ind"]] for e in ex] == [0.5, 0.5, 0.5]
    assert ex[0]["tokens"] == ["one", "plus", "two"] and ex[0]["tokens_acts_list"] == [0.5, 0.5, 0.0]
    assert feat["act_max"] == 0.5 and sum(feat["histogram"]) == 3 and len(feat["quantile_values"]) == 100


def test_difference_graph_keeps_signed_deltas(ds, tmp_path):
    d = difference_of_selections(ds, parse_where("domain=math"), parse_where("domain=code"))
    data = _read(write_circuit_tracer(d, tmp_path / "d.ct", ds=ds), "d")
    assert data["metadata"]["scan"] == "./data/hand-experts"  # the store names the model
    inner = [x["weight"] for x in data["links"] if "count" in x]
    assert sorted(inner) == sorted(x for _, _, x in d.edges(data="delta"))
    assert data["metadata"]["prompt_tokens"][0] == "domain=math − domain=code"


def test_folder_adds_graphs_and_refuses_other_folders(graph, ds, tmp_path):
    folder = tmp_path / "many.ct"
    write_circuit_tracer(graph, folder, slug="a")
    write_circuit_tracer(token_path(ds, 1), folder, slug="b")
    write_circuit_tracer(graph, folder, slug="a")  # replaced, not listed twice
    meta = json.loads((folder / "graph-metadata.json").read_text())
    assert [m["slug"] for m in meta["graphs"]] == ["b", "a"]
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(WorkbenchError, match=r"notes: a folder that is not empty and holds no graph-metadata\.json"):
        write_circuit_tracer(graph, other)
    assert [p.name for p in other.iterdir()] == ["keep.txt"]
    with pytest.raises(ExportError, match=r"a circuit-tracer export is a folder; name it NAME\.ct"):
        export_format("old.ct.json")
    with pytest.raises(ExportError, match=r"name it NAME\.ct"):
        export_format("x.json", "circuit-tracer")


def test_failed_export_leaves_nothing(graph, tmp_path):
    bad = graph.copy()
    bad.nodes["L1:E0"]["mean_gate"] = "not a number"
    with pytest.raises(ValueError):
        write_circuit_tracer(bad, tmp_path / "bad.ct")
    assert list(tmp_path.iterdir()) == []


def test_cli_refuses_a_foreign_folder_before_counting(store, tmp_path, monkeypatch, capsys):
    other = tmp_path / "mine.ct"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    monkeypatch.setattr(sys, "argv", ["workbench", "graph", str(store), "--export", str(other)])
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and "not empty and holds no graph-metadata.json" in err
    assert [p.name for p in other.iterdir()] == ["keep.txt"]


def test_ids_only_store_counts_instead_of_weights(tmp_path):
    ds = open_hand_store(write_store(tmp_path / "ids.zarr", ids_only=True))
    g = reasoning_graph(ds)
    folder = write_circuit_tracer(g, tmp_path / "ids.ct", ds=ds)
    data = _read(folder, "ids")
    link = {(x["source"], x["target"]): x["weight"] for x in data["links"]}
    assert link["E_sel_0", "1_0_1"] == 3  # the expert's token count, not a gate-weight sum
    assert all(n["activation"] is None for n in data["nodes"])
    feat = json.loads((folder / "hand-experts" / f"{cantor(1, 0)}.json").read_text())
    ex = feat["examples_quantiles"][0]["examples"][0]
    assert (
        ex["tokens_acts_list"] == [1.0, 1.0, 0.0]
        and feat["histogram"] == []
        and "router rank" in (feat["examples_quantiles"][0]["quantile_name"])
    )
