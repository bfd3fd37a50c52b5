"""Switching transcripts in TranscriptGraphWidget: what the background read prepares, what is re-sent, in
which order the messages leave, and the store read behind ``load_sequence`` (real zarr stores on disk)."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from widgets_helpers import open_test_store, transcript_store
from workbench.viz.widgets import TranscriptGraphWidget, TranscriptView
from workbench.viz.widgets.pathways import pathway_counts
from workbench.viz.widgets.sequence_data import load_sequence

from workbench.store import schema as S
from workbench.store.rows import token_rows


@pytest.fixture(scope="module")
def ds(tmp_path_factory: pytest.TempPathFactory):
    return open_test_store(transcript_store(tmp_path_factory.mktemp("sw") / "tools.zarr", n_steps=4, n_transcripts=3))


def record_messages(w: TranscriptGraphWidget) -> list[tuple[str, dict[str, Any], list[Any]]]:
    """Every state message the widget's parts send from now on: (part, state without buffers, buffers)."""
    log: list[tuple[str, dict[str, Any], list[Any]]] = []
    parts = {"card": w.card, "graph": w.graph.plot, "view": w.view, "token_path": w.token_path.plot}
    for name, part in parts.items():

        def send(msg: dict[str, Any], buffers: list[Any] | None = None, name: str = name) -> None:
            log.append((name, msg.get("state", {}), list(buffers or [])))

        part._send = send  # type: ignore[method-assign]
    return log


def same_counts(a: Any, b: Any) -> bool:
    cols = ("pair", "src", "dst", "count", "weight")
    return np.array_equal(a.node_tokens, b.node_tokens) and all(
        np.array_equal(getattr(a.edges, c), getattr(b.edges, c)) for c in cols
    )


def test_load_sequence_reads_only_its_chunks_and_equals_the_dask_read(ds, tmp_path: Path) -> None:
    ids_only = open_test_store(transcript_store(tmp_path / "ids.zarr", n_steps=3, n_transcripts=2, ids_only=True))
    for store in (ds, ids_only):
        assert token_rows(store, S.EXPERT_IDS) is not None  # the store's own chunks are read, not dask's blocks
        through_dask = store.chunk({S.TOKEN: 7})  # rechunked: no longer the store's own arrays
        assert token_rows(through_dask, S.EXPERT_IDS) is None
        for seq in [str(s) for s in store[S.SEQUENCE].values]:
            fast, slow = load_sequence(store, seq), load_sequence(through_dask, seq)
            for f in dataclasses.fields(fast):
                a, b = getattr(fast, f.name), getattr(slow, f.name)
                if isinstance(a, np.ndarray):
                    assert a.dtype == b.dtype and a.shape == b.shape, f.name
                    assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), f.name
                else:
                    assert a == b, f.name


def test_the_background_read_prepares_the_first_step_exactly_as_counted_on_demand(ds) -> None:
    w = TranscriptGraphWidget(ds, sequence="t0")
    w._reading["t1"].result()  # the picker's next transcript, read in the background
    wire, key, (counts, tops) = w._ready["t1"]
    assert key == ("t1", "step", 0, w.graph.top_edges)
    w.picker.value = "t1"
    assert w.graph.pathways is counts  # drawn from what the background prepared, not counted again
    assert w.view.token_text is wire["token_text"]  # and its packed buffers are the ones sent
    on_demand = TranscriptGraphWidget(ds, sequence="t1", prefetch_all=False)  # counted and packed on the spot
    assert same_counts(counts, pathway_counts(w.data, w.selected_rows(), w._vocab, top_edges=w.graph.top_edges))
    assert w.graph.figure.to_json() == on_demand.graph.figure.to_json()
    assert w.token_path.figure.to_json() == on_demand.token_path.figure.to_json()
    traits = [*TranscriptView.sequence_traits(on_demand.data), "selection", "highlight", "hit_start", "search_status"]
    assert w.view.get_state(traits) == on_demand.view.get_state(traits)
    assert w.graph._edges["hovertext"] == on_demand.graph._edges["hovertext"] and tops is not None


def test_switching_back_re_sends_the_same_prebuilt_transcript(ds) -> None:
    w = TranscriptGraphWidget(ds, sequence="t0")
    first = dict(w._wire["t0"])
    log = record_messages(w)
    w.picker.value = "t1"
    w.picker.value = "t0"
    sent = [(state, buffers) for part, state, buffers in log if part == "view" and state.get("sequence_id") == "t0"]
    assert len(sent) == 1
    buffers = sent[0][1]
    packed = TranscriptView.sequence_traits(load_sequence(ds, "t0"))  # what a fresh read packs
    assert {k: v for k, v in first.items() if not isinstance(v, bytes)} == {
        k: v for k, v in packed.items() if not isinstance(v, bytes)
    }
    for name in ("token_text", "token_offsets", "token_ids", "token_step"):
        assert first[name] == packed[name]
        assert any(b is first[name] for b in buffers), name  # the very bytes packed when t0 was first shown
    assert w.view.sequence_id == "t0" and w.selection == {"kind": "step", "index": 0} and w.graph.pathways is not None


def test_a_switch_sends_the_transcript_then_the_graph_then_the_token_path(ds) -> None:
    w = TranscriptGraphWidget(ds, sequence="t0")
    layer, expert = int(w.graph._node_at[0][0]), int(w.graph._node_at[1][0])
    w.show_expert(layer, expert)  # a card and a highlight, both cleared by the switch
    log = record_messages(w)
    w.picker.value = "t2"  # not the prefetched one: read from the store on the switch
    order = [part for part, _state, _buffers in log]
    assert order == ["view", "card", "graph", "token_path"]  # one message each
    view_state = log[0][1]
    assert view_state["sequence_id"] == "t2" and view_state["highlight_label"] == ""
    assert "t2: step 0" in w.graph.figure.layout.title.text and "t2" not in w.graph.figure.layout.title.text[4:]
    assert w.data.sequence_id == "t2" and w.view.highlighted.size == 0


def test_a_read_still_queued_behind_another_job_is_done_on_the_switch(ds) -> None:
    from workbench.viz.widgets import transcript_graph

    gate = threading.Event()
    blocker = transcript_graph._BACKGROUND.submit(gate.wait, 120)  # e.g. a long count of All
    try:
        w = TranscriptGraphWidget(ds, sequence="t0")
        queued = w._reading["t1"]
        assert not queued.done()
        w.picker.value = "t1"  # does not wait for the blocker: the queued read is dropped, t1 read here
        assert queued.cancelled() and not blocker.done()
        direct = load_sequence(ds, "t1")
        assert np.array_equal(w.data.expert_ids, direct.expert_ids) and w.data.token_text == direct.token_text
        assert w.view.sequence_id == "t1" and "t1: step 0" in w.graph.figure.layout.title.text
    finally:
        gate.set()
        blocker.result()
