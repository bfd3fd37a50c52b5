"""Teacher-forced replay: chunked passes equal one pass; windows beyond the context are counted; spans stored."""

from __future__ import annotations

import numpy as np
import pytest
from hooks_helpers import tiny_deepseek
from transcripts_helpers import k2_test_tokenizer, tool_loop_transcript
from workbench.hooks import route_tokens

from workbench.store.io import StoreWriter, open_store
from workbench.transcripts import transcript_from_dict, transcript_view
from workbench.transcripts.replay import replay_transcript, route_sequence


@pytest.fixture(scope="module")
def tok():
    return k2_test_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    return tiny_deepseek(vocab_size=len(tok), max_position_embeddings=2048)


def test_chunked_pass_equals_one_pass(model):
    ids = np.random.default_rng(0).integers(0, 300, size=150)
    one = route_tokens(model, ids)
    chunked = route_sequence(model, ids, chunk_tokens=40)
    assert chunked.forwards == 4 and chunked.truncated_context_tokens == 0
    assert np.array_equal(chunked.expert_ids, one.expert_ids)
    np.testing.assert_allclose(chunked.gate_weights, one.gate_weights, rtol=1e-4, atol=1e-5)


def test_window_overlap(model):
    ids = np.random.default_rng(1).integers(0, 300, size=130)
    full = route_tokens(model, ids)
    win = route_sequence(model, ids, window=60, chunk_tokens=25)
    assert win.expert_ids.shape == full.expert_ids.shape
    assert win.truncated_context_tokens == 130 - 60
    assert np.array_equal(win.expert_ids[:60], full.expert_ids[:60])  # the first window has its whole context
    # a window re-reads half a window as context: same routing as a fresh pass over that stretch
    fresh = route_tokens(model, ids[30:90])
    assert np.array_equal(win.expert_ids[60:90], fresh.expert_ids[30:60])


def test_replay_writes_segments_and_steps(tmp_path, model, tok):
    from workbench.hooks import RoutingRecorder

    from workbench.models import tokenizer_attrs

    t = transcript_from_dict(tool_loop_transcript(3))
    res = replay_transcript(model, tok, t, chunk_tokens=128)
    assert res.forwards == -(-len(res.rendered.token_ids) // 128)
    assert {s.kind for s in res.record.spans} >= {"think", "tool_call", "tool_result", "answer", "tool_declare"}
    config = RoutingRecorder(model).config
    with StoreWriter(tmp_path / "r.zarr", config, tokenizer_attrs(tok)) as w:
        w.add(res.record)
    ds = open_store(tmp_path / "r.zarr")
    assert ds.sizes["token"] == len(res.rendered.token_ids)
    view = transcript_view(ds, "t1")
    assert [v.kind for v in view] == [s.kind for s in res.rendered.segments if s.token_stop > s.token_start]
    assert sorted(set(np.asarray(ds["step"].values).tolist())) == [-1, 0, 1, 2, 3]
    think = [v for v in view if v.kind == "think"]
    assert [v.step for v in think] == [0, 1, 2, 3]  # the final answer's reasoning is there too
