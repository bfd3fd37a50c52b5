"""transcript_view lays out a recorded transcript: segments in order, rows, token strings."""

from __future__ import annotations

import numpy as np
import pytest
from transcripts_helpers import k2_test_tokenizer, tool_loop_transcript

from workbench.errors import SelectionError
from workbench.routing_config import RoutingConfig
from workbench.store.dataset import SequenceRecord, routing_dataset
from workbench.store.schema import SEGMENT_KINDS
from workbench.transcripts import render_transcript, step_rows, transcript_from_dict, transcript_view

CONFIG = RoutingConfig("test", "deepseek_v3", "deepseek_v3", 3, (1, 2), n_routed_experts=8, top_k=2)


def _record(tok, sid, transcript):
    r = render_transcript(tok, transcript, preserve_thinking=True)
    t = len(r.token_ids)
    rng = np.random.default_rng(0)
    return r, SequenceRecord(
        id=sid, domain="agent", source="test", token_ids=r.token_ids,
        expert_ids=rng.integers(0, 8, size=(t, 2, 2)), gate_weights=rng.random((t, 2, 2)), spans=r.spans(),
    )  # fmt: skip


def test_view_matches_render():
    tok = k2_test_tokenizer()
    r_a, rec_a = _record(tok, "a", transcript_from_dict(tool_loop_transcript(1)))
    r_b, rec_b = _record(tok, "b", transcript_from_dict(tool_loop_transcript(2)))
    ds = routing_dataset([rec_a, rec_b], CONFIG)
    vocab = [tok.convert_ids_to_tokens(i) for i in range(len(tok))]
    ds.attrs.update(tokenizer={"name": "t", "vocab": vocab, "special_tokens": {}}, segment_kinds=list(SEGMENT_KINDS))
    view = transcript_view(ds, "b")
    want = [s for s in r_b.segments if s.token_stop > s.token_start]
    assert [(v.kind, v.step, v.label) for v in view] == [(s.kind, s.step, s.label) for s in want]
    offset = len(r_a.token_ids)
    assert view[0].rows == (offset, offset + want[0].token_stop)
    assert view[-1].rows[1] == offset + len(r_b.token_ids)
    think = next(v for v in view if v.kind == "think")
    assert think.text == r_b.segment_text(next(s for s in want if s.kind == "think"))
    rows = step_rows(view, 1)
    assert set(np.asarray(ds["step"].values)[rows]) == {1}
    assert len(rows) == int(
        (np.asarray(ds["step"].values) == 1).sum() - (np.asarray(ds["step"].values)[:offset] == 1).sum()
    )
    with pytest.raises(SelectionError, match="no sequence 'zz'"):
        transcript_view(ds, "zz")
