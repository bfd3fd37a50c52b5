"""Transcript + graph widget and token path widget on a real synthetic transcript store (zarr on disk)."""

from __future__ import annotations

from pathlib import Path

import networkx as nx
import numpy as np
import pytest
from ipywidgets.widgets.widget import _remove_buffers
from widgets_helpers import open_test_store, transcript_store
from workbench.viz.widgets import TokenPathWidget, TranscriptGraphWidget, TranscriptView

from workbench.errors import WorkbenchError
from workbench.store import schema as S


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return transcript_store(tmp_path_factory.mktemp("w") / "tools.zarr", n_steps=4, n_transcripts=2)


@pytest.fixture(scope="module")
def ds(store: Path):
    return open_test_store(store)


def node_xy(w: TranscriptGraphWidget) -> set[tuple[int, int]]:
    nodes = w.graph.figure.data[-1]
    return set(zip(np.asarray(nodes.x).tolist(), np.asarray(nodes.y).tolist(), strict=True))


def test_starts_on_the_first_step_and_draws_its_graph(ds) -> None:
    w = TranscriptGraphWidget(ds)
    assert w.selection == {"kind": "step", "index": 0}
    rows = w.selected_rows()
    assert np.all(w.data.step[rows] == 0)
    assert "step 0" in w.graph.figure.layout.title.text
    p = w.pathways()
    assert len(node_xy(w)) == int(np.count_nonzero(p.node_tokens))


def test_clicking_a_segment_changes_the_graph_to_that_segment(ds) -> None:
    w = TranscriptGraphWidget(ds)
    before = node_xy(w)
    d = w.data
    span = int(np.nonzero(np.array([k == S.SEGMENT_CODE["tool_result"] for k in d.span_kind]))[0][2])
    w.view.selection = {"kind": "segment", "index": span}  # what a click in the browser writes
    rows = w.selected_rows()
    assert rows.tolist() == list(range(int(d.span_start[span]), int(d.span_stop[span])))
    assert "tool_result segment" in w.graph.figure.layout.title.text
    assert node_xy(w) != before
    # the drawn nodes are exactly the experts those tokens were routed to
    expected = {(int(d.layers[li]), int(e)) for li in range(d.layers.size) for e in np.unique(d.expert_ids[rows, li])}
    assert node_xy(w) == expected


def test_token_selection_shows_that_tokens_path(ds) -> None:
    w = TranscriptGraphWidget(ds)
    w.select("token", 50)
    hm = w.token_path.figure.data[0]
    assert np.asarray(hm.text).tolist() == w.data.expert_ids[50].astype(str).tolist()
    assert np.allclose(np.asarray(hm.z), w.data.gate_weights[50].astype(float))
    assert w.graph.pathways is not None and w.graph.pathways.n_tokens == 1


def test_step_slider_walks_every_step_and_graphs_differ(ds) -> None:
    w = TranscriptGraphWidget(ds, sequence="t1")
    seen = []
    for s in w.data.steps.tolist():
        w.select("step", s)
        seen.append(frozenset(node_xy(w)))
        assert w.graph.pathways is not None
        assert w.graph.pathways.n_tokens == int(np.count_nonzero(w.data.step == s))
    assert len(seen) == 5 and w.last_update_s < 1.0


def test_arrays_travel_as_binary_buffers(ds) -> None:
    w = TranscriptGraphWidget(ds)
    state, buffer_paths, _buffers = _remove_buffers(w.view.get_state())
    paths = {p[0] for p in buffer_paths}
    assert {"token_text", "token_offsets", "token_ids", "token_segment", "token_step", "span_start"} <= paths
    offsets = np.frombuffer(w.view.token_offsets, dtype="<i4")
    assert offsets.size == w.data.n_tokens + 1
    text = w.view.token_text
    assert text[offsets[3] : offsets[4]].decode() == w.data.token_text[3]
    assert not any(isinstance(v, list) and len(v) > 100 for v in state.values())  # no big JSON lists


def test_picker_switches_transcripts(ds) -> None:
    w = TranscriptGraphWidget(ds)
    w.picker.value = "t1"
    assert w.view.sequence_id == "t1"
    assert w.data.n_tokens == int(ds[S.SEQUENCE_LENGTH].values[1])
    assert w.selection == {"kind": "step", "index": 0}
    assert w.graph.pathways is not None


def test_export_graphml_reads_back_with_every_edge(ds, tmp_path: Path) -> None:
    w = TranscriptGraphWidget(ds, top_edges=3)
    w.select("step", 2)
    out = w.export(tmp_path / "step2.graphml")
    g = nx.read_graphml(out)
    p = w.pathways()
    assert g.number_of_nodes() == int(np.count_nonzero(p.node_tokens))
    assert g.number_of_edges() == len(p.edges)  # all edges, not only the 3 drawn per layer pair
    assert sum(int(d["count"]) for _, _, d in g.edges(data=True)) == p.n_tokens * (p.layers.size - 1) * 64
    assert list(tmp_path.iterdir()) == [out]  # no temp file left


def test_export_button_reports_errors_in_the_widget(ds, tmp_path: Path) -> None:
    w = TranscriptGraphWidget(ds)
    with pytest.raises(WorkbenchError, match="cannot export 'pdf'"):
        w.export(tmp_path / "g.pdf")
    w.graph.format.value = "graphml"
    w.graph.path.value = str(tmp_path / "button")
    w.graph.export_button.click()
    assert (tmp_path / "button.graphml").exists()
    assert "wrote" in w.graph.status.value


@pytest.mark.slow
def test_export_svg_is_the_figure_as_shown(ds, tmp_path: Path) -> None:
    w = TranscriptGraphWidget(ds)
    out = w.export(tmp_path / "g.svg")
    assert out.read_text().lstrip().startswith("<svg")
    assert "step 0" in out.read_text()


def test_bad_input_is_one_clear_error(ds) -> None:
    with pytest.raises(WorkbenchError, match=r"no sequence 'nope'.*t0, t1"):
        TranscriptGraphWidget(ds, sequence="nope")
    with pytest.raises(TypeError, match="unexpected keyword"):
        TranscriptGraphWidget(ds, colour="red")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unknown keyword argument"):
        TranscriptView(colour="red")
    w = TranscriptGraphWidget(ds)
    with pytest.raises(WorkbenchError, match="no tool-loop step 99"):
        w.selected_rows({"kind": "step", "index": 99})
    w.select("step", 99)  # a bad selection from the front end shows in the widget, not as a traceback
    assert "no tool-loop step 99" in w.graph.status.value


def test_ids_only_store_counts_tokens(tmp_path: Path) -> None:
    ds = open_test_store(transcript_store(tmp_path / "ids.zarr", n_steps=2, n_transcripts=1, ids_only=True))
    w = TranscriptGraphWidget(ds)
    assert w.graph.pathways is not None and not w.graph.pathways.weighted
    assert w.graph.figure.data[-1].marker.colorbar.title.text == "tokens"


def test_token_path_widget(ds) -> None:
    w = TokenPathWidget(ds, sequence="t1", position=7)
    hm = w.figure.data[0]
    assert np.asarray(hm.text).tolist() == w.data.expert_ids[7].astype(str).tolist()
    assert list(hm.y) == [str(x) for x in ds[S.LAYER].values]
    w.position.value = 8
    assert np.asarray(w.figure.data[0].text).tolist() == w.data.expert_ids[8].astype(str).tolist()
    with pytest.raises(WorkbenchError, match="outside sequence 't1'"):
        w.show(10_000)


def test_widget_graph_is_the_reasoning_graph_of_the_selection(ds) -> None:
    from workbench.graph import reasoning_graph
    from workbench.store.select import Selection

    w = TranscriptGraphWidget(ds, sequence="t1")
    w.select("step", 2)
    mine = w.graph.current_graph()
    ref = reasoning_graph(ds, Selection(sequences=("t1",), steps=(2,)), top_tokens=0)
    assert set(mine.nodes) == set(ref.nodes)
    for n, d in ref.nodes(data=True):
        assert mine.nodes[n]["tokens"] == d["tokens"]
        assert mine.nodes[n]["mean_gate"] == pytest.approx(d["mean_gate"], rel=1e-3)
    assert set(mine.edges) == set(ref.edges)
    for u, v, d in ref.edges(data=True):
        assert mine.edges[u, v]["count"] == d["count"]
        assert mine.edges[u, v]["weight"] == pytest.approx(d["weight"], rel=1e-3)


def test_the_graph_reaches_the_browser_as_binary_buffers(ds) -> None:
    import json

    w = TranscriptGraphWidget(ds)
    w.select("segment", 5)
    state, paths, buffers = _remove_buffers(w.graph.plot.get_state())  # exactly what the comm sends
    fig = state["figure"]
    assert fig["layout"]["title"]["text"] == w.graph.title
    nodes = fig["data"][-1]
    assert nodes["name"] == "experts" and set(nodes["y"]) == {"dtype", "shape"}  # its buffer went out of the JSON
    assert len(json.dumps(state)) < 200_000
    assert ["figure", "data", len(fig["data"]) - 1, "y", "buffer"] in [list(p) for p in paths]
    # the binary buffers decode to the numbers drawn
    at = [list(p) for p in paths].index(["figure", "data", len(fig["data"]) - 1, "y", "buffer"])
    y = np.frombuffer(buffers[at], dtype=np.int32)
    assert np.array_equal(y, np.asarray(w.graph.figure.data[-1].y))


def test_all_is_counted_in_the_background_and_equals_counting_it_on_click(ds) -> None:
    from workbench.viz.widgets.pathways import pathway_counts

    w = TranscriptGraphWidget(ds)
    key = (w.data.sequence_id, "all", -1, w.graph.top_edges)
    w._prefetched[key].result()  # the background count of the whole transcript, started at load
    w.select("all")
    assert key not in w._prefetched and key in w._counted  # served from it, not counted again
    shown = w.graph.pathways
    want = pathway_counts(w.data, np.arange(w.data.n_tokens), top_edges=w.graph.top_edges)
    assert shown is not None and np.array_equal(shown.node_tokens, want.node_tokens)
    for col in ("pair", "src", "dst", "count", "weight"):
        assert np.array_equal(getattr(shown.edges, col), getattr(want.edges, col)), col
    w.picker.value = "t1"  # a newly loaded transcript is prefetched too
    assert ("t1", "all", -1, w.graph.top_edges) in w._prefetched
    assert not TranscriptGraphWidget(ds, prefetch_all=False)._prefetched


def test_the_next_transcript_is_read_in_the_background_and_a_switch_takes_it(ds) -> None:
    from workbench.viz.widgets.sequence_data import load_sequence

    w = TranscriptGraphWidget(ds, sequence="t0")
    assert list(w._reading) == ["t1"]  # the picker's next transcript
    ahead = w._reading["t1"].result()
    w.picker.value = "t1"
    assert w.data is ahead and not w._reading.get("t1")  # taken from the background read, not read again
    direct = load_sequence(ds, "t1")
    assert np.array_equal(w.data.expert_ids, direct.expert_ids) and w.data.token_text == direct.token_text
    assert "t1: step 0" in w.graph.figure.layout.title.text
    assert not TranscriptGraphWidget(ds, prefetch_all=False)._reading
