"""Spans on the mini K2's own chat template and, once it ships, its own tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_transcripts_render import _check_exact
from transcripts_helpers import k2_test_tokenizer, tool_loop_transcript

from workbench.transcripts import (
    message_steps,
    read_transcripts,
    render_as_generated,
    render_transcript,
    transcript_from_dict,
)

MINI = Path(__file__).resolve().parents[1] / "data" / "models" / "k2-mini"


def _expect_full_segments(r, transcript):
    content = [(s.kind, s.step, s.label) for s in r.segments if s.kind != "template"]
    want = [("tool_declare", -1, "tools")] if transcript.tools else []
    for m, step in zip(transcript.messages, message_steps(transcript.messages), strict=True):
        if m["role"] in ("system", "user"):
            want.append((m["role"], -1, m["role"]))
        elif m["role"] == "tool":
            want.append(("tool_result", step, m["tool_call_id"]))
        else:
            if m.get("reasoning_content"):
                want.append(("think", step, ""))
            if m.get("content"):
                want.append(("answer", step, ""))
            want += [("tool_call", step, c["id"]) for c in m.get("tool_calls", [])]
    assert content == want


def test_mini_template_structure():
    from workbench.minik2 import chat_template as mod

    tok = k2_test_tokenizer(mod.CHAT_TEMPLATE)
    t = transcript_from_dict(tool_loop_transcript(3))
    plain = render_transcript(tok, t)
    _check_exact(tok, plain)
    assert not any(s.kind == "think" for s in plain.segments)  # K2 Thinking drops it in a finished loop
    r = render_as_generated(tok, t)
    _check_exact(tok, r)
    _expect_full_segments(r, t)
    assert r.text == mod.render_training_text(tok, t.messages, t.tools)  # what the mini K2 was trained on


def test_bundled_transcripts_on_the_mini_k2_tokenizer():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(MINI)
    files = sorted((MINI.parents[1] / "transcripts").glob("*.jsonl"))
    assert files, "data/transcripts/*.jsonl missing"
    n = 0
    for f in files:
        for t in read_transcripts(f):
            r = render_as_generated(tok, t)
            _check_exact(tok, r)
            _expect_full_segments(r, t)
            n += 1
    assert n >= 10


@pytest.mark.slow
def test_replay_and_agent_on_the_mini_k2():
    """The embedded default end to end: a bundled transcript replayed, and a live tool loop."""
    import numpy as np

    from workbench.agent.loop import run_agent
    from workbench.agent.tools import make_toolbox
    from workbench.models import load_model
    from workbench.transcripts.replay import replay_transcript

    model, tok = load_model("k2-mini")
    t = min(read_transcripts(MINI.parents[1] / "transcripts" / "tool_loops.jsonl"), key=lambda x: len(x.messages))
    res = replay_transcript(model, tok, t)
    assert res.record.n_tokens == len(res.rendered.token_ids) and res.rendered.not_rendered == []
    assert {s.kind for s in res.record.spans} >= {"think", "tool_call", "tool_result", "answer"}

    ep = run_agent(model, tok, "What is 238 * 17 + 5?", make_toolbox(["calculator", "python", "search"]),
                   max_steps=3, max_new_tokens=96, temperature=0.7, seed=0)  # fmt: skip
    assert ep.steps and ep.stop_reason
    want = render_as_generated(tok, ep.messages, ep.tools).token_ids
    assert ep.record.token_ids.tolist() == want.tolist()
    assert ep.record.expert_ids.shape == (len(want), *res.record.expert_ids.shape[1:])
    assert np.asarray(ep.record.generated).any()


def test_tool_turns_with_and_without_name_render_as_k2s_template_does():
    """K2's template: role_name = message.get('name') or message['role'], tool turns under <|im_system|>.

    Moonshot's tool-call guidance appends tool messages with ``name``; the bundled transcripts (and the
    mini K2's training text) have none. Both must render, read back and segment exactly; without
    ``name`` the rendering is what the mini K2 was trained on, byte for byte.
    """
    from transformers import AutoTokenizer

    from workbench.minik2 import chat_template as mod

    tok = AutoTokenizer.from_pretrained(MINI)
    raw = tool_loop_transcript(2)
    calls = {c["id"]: c["function"]["name"] for m in raw["messages"] for c in m.get("tool_calls", [])}
    bare = [{k: v for k, v in m.items() if k != "name"} for m in raw["messages"]]
    unnamed = transcript_from_dict(dict(raw, messages=bare))
    named = transcript_from_dict(dict(raw, messages=[
        dict(m, name=calls[m["tool_call_id"]]) if m["role"] == "tool" else m for m in bare
    ]))  # fmt: skip
    assert [m.get("name") for m in named.messages if m["role"] == "tool"] == [
        calls[m["tool_call_id"]] for m in named.messages if m["role"] == "tool"
    ]
    a, b = render_as_generated(tok, unnamed), render_as_generated(tok, named)
    assert a.text == mod.render_training_text(tok, unnamed.messages, unnamed.tools)  # unchanged training format
    for name in set(calls.values()):
        assert f"<|im_system|>{name}<|im_middle|>## Return of functions.{name}:" in b.text
        assert f"<|im_system|>{name}<|im_middle|>" not in a.text
    assert "<|im_system|>tool<|im_middle|>## Return of" in a.text
    for r, t in ((a, unnamed), (b, named)):
        _check_exact(tok, r)
        _expect_full_segments(r, t)
