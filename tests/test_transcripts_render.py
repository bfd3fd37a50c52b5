"""Segment spans of rendered transcripts, token by token, on K2 Thinking's template structure."""

from __future__ import annotations

import itertools
import json

import pytest
from transcripts_helpers import K2_THINKING_TEMPLATE, TOOLS, k2_test_tokenizer, tool_loop_transcript

from workbench.store.schema import SEGMENT_KINDS
from workbench.transcripts.as_generated import render_as_generated
from workbench.transcripts.messages import transcript_from_dict
from workbench.transcripts.render import render_transcript


@pytest.fixture(scope="module")
def tok():
    return k2_test_tokenizer()


def _check_exact(tok, r):
    """Every segment's tokens decode to exactly its text; segments tile the tokens and the text."""
    assert r.straddling_tokens == 0
    pos_tok, pos_char = 0, 0
    for s in r.segments:
        assert s.kind in SEGMENT_KINDS
        assert (s.token_start, s.char_start) == (pos_tok, pos_char)
        piece = tok.decode(r.token_ids[s.token_start : s.token_stop].tolist(), skip_special_tokens=False)
        assert piece == r.segment_text(s), s
        pos_tok, pos_char = s.token_stop, s.char_stop
    assert (pos_tok, pos_char) == (len(r.token_ids), len(r.text))


def test_spans_exact_with_preserved_thinking(tok):
    t = transcript_from_dict(tool_loop_transcript(2))
    r = render_transcript(tok, t, preserve_thinking=True)
    _check_exact(tok, r)
    # same token ids the model would get from apply_chat_template
    want = tok.apply_chat_template(t.messages, tools=t.tools, tokenize=True, preserve_thinking=True)["input_ids"]
    assert r.token_ids.tolist() == want
    content = [(s.kind, s.step, s.label, r.segment_text(s)) for s in r.segments if s.kind != "template"]
    assert content == [
        ("tool_declare", -1, "tools", json.dumps(TOOLS, separators=(",", ":"))),
        ("system", -1, "system", "You are a careful assistant."),
        ("user", -1, "user", "What is 3*(4+5) plus 15?"),
        ("think", 0, "", "Step 0: compute with the calculator."),
        ("answer", 0, "", "Let me compute."),
        ("tool_call", 0, "functions.calculator:0",
         'functions.calculator:0<|tool_call_argument_begin|>{"expression": "3*(4+5)"}'),
        ("tool_call", 0, "functions.calculator:1",
         'functions.calculator:1<|tool_call_argument_begin|>{"expression": "3*(4+6)"}'),
        ("tool_result", 0, "functions.calculator:0", "27"),
        ("tool_result", 0, "functions.calculator:1", "30"),
        ("think", 1, "", "Step 1: compute with the calculator."),
        ("tool_call", 1, "functions.calculator:0",
         'functions.calculator:0<|tool_call_argument_begin|>{"expression": "3*(4+6)"}'),
        ("tool_result", 1, "functions.calculator:0", "30"),
        ("think", 2, "", "27 + 15 = 42."),
        ("answer", 2, "", "The answer is 42."),
    ]  # fmt: skip
    assert r.not_rendered == []
    assert r.n_steps == 3


def test_scaffolding_tokens_are_the_special_tokens(tok):
    t = transcript_from_dict(tool_loop_transcript(1))
    r = render_transcript(tok, t, preserve_thinking=True)
    think = next(s for s in r.segments if s.kind == "think")
    before = r.segments[r.segments.index(think) - 1]
    assert before.kind == "template" and before.step == 0
    tokens = tok.convert_ids_to_tokens(r.token_ids[before.token_start : before.token_stop].tolist())
    assert tokens[0] == "<|im_assistant|>" and tokens[-2:] == ["<|im_middle|>", "<think>"]
    # the end-of-turn token of a tool result belongs to that step, the next opener to the next message
    result = next(s for s in r.segments if s.kind == "tool_result")
    after = r.segments[r.segments.index(result) + 1]
    assert r.segment_text(after) == "<|im_end|>" and after.step == result.step


def test_k2_thinking_drops_old_reasoning_and_says_so(tok):
    t = transcript_from_dict(tool_loop_transcript(2))
    r = render_transcript(tok, t)  # K2 Thinking's template: reasoning before the last final answer is dropped
    _check_exact(tok, r)
    assert [s.kind for s in r.segments].count("think") == 0
    assert r.not_rendered == ["think of message 2", "think of message 5", "think of message 7"]
    # within a running tool loop (no final answer yet) the reasoning is kept
    r2 = render_transcript(tok, transcript_from_dict(tool_loop_transcript(2, final=False)), add_generation_prompt=True)
    _check_exact(tok, r2)
    assert [s.step for s in r2.segments if s.kind == "think"] == [0, 1]
    last = r2.segments[-1]
    assert (last.label, last.step, r2.segment_text(last)) == (
        "generation prompt",
        2,
        "<|im_assistant|>assistant<|im_middle|>",
    )


def test_default_system_prompt_and_no_tools(tok):
    t = transcript_from_dict({"id": "x", "messages": [{"role": "user", "content": "Hi there"}]})
    r = render_transcript(tok, t)
    _check_exact(tok, r)
    assert [s.kind for s in r.segments] == ["template", "user", "template"]
    assert "You are Kimi" in r.segment_text(r.segments[0])


def test_template_that_transforms_text():
    """A template that strips content (as Qwen3's does for reasoning): the span is what it rendered."""
    stripping = K2_THINKING_TEMPLATE.replace("{{ message['content'] }}", "{{ message['content'] | trim }}")
    tok = k2_test_tokenizer(stripping)
    t = transcript_from_dict({"id": "x", "messages": [{"role": "user", "content": "  padded text \n"}]})
    r = render_transcript(tok, t)
    user = next(s for s in r.segments if s.kind == "user")
    assert r.segment_text(user) == "padded text"
    assert "".join(r.segment_text(s) for s in r.segments) == r.text


def test_spans_for_store(tok):
    t = transcript_from_dict(tool_loop_transcript(3))
    r = render_transcript(tok, t, preserve_thinking=True)
    spans = r.spans()
    assert spans[0].start == 0 and spans[-1].stop == len(r.token_ids)
    assert all(a.stop == b.start for a, b in itertools.pairwise(spans))
    assert sorted({s.step for s in spans}) == [-1, 0, 1, 2, 3]


def test_as_generated_keeps_all_reasoning(tok):
    """A finished loop under K2 Thinking's template: the pass the model made for its final answer."""
    t = transcript_from_dict(tool_loop_transcript(2))
    r = render_as_generated(tok, t)
    _check_exact(tok, r)
    kept = render_transcript(tok, t, preserve_thinking=True)  # the same text, reached another way
    assert r.text == kept.text and r.token_ids.tolist() == kept.token_ids.tolist()
    assert [(s.kind, s.step, s.label) for s in r.segments if s.kind != "template"] == [
        (s.kind, s.step, s.label) for s in kept.segments if s.kind != "template"
    ]
    assert r.not_rendered == [] and r.n_steps == 3
    # a transcript that does not end with an answer renders as is
    running = transcript_from_dict(tool_loop_transcript(1, final=False))
    assert render_as_generated(tok, running).text == render_transcript(tok, running).text


def test_slow_tokenizer_offsets_match_fast(tok):
    """The per-token decoding path (slow tokenizers such as K2's tiktoken one) gives the fast path's spans."""
    from workbench.transcripts import offsets

    t = transcript_from_dict(tool_loop_transcript(1))
    t.messages[1]["content"] = "Déjà vu — 3×(4+5)? ünïcödé ✓"
    fast = render_transcript(tok, t, preserve_thinking=True)

    class Slow:  # the same tokenizer seen through the slow-tokenizer interface only
        is_fast = False

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": tok(text, add_special_tokens=False)["input_ids"]}

        def decode(self, ids, skip_special_tokens=False):
            return tok.decode(ids, skip_special_tokens=skip_special_tokens)

    ids, starts = offsets.tokenize_with_starts(Slow(), fast.text)
    assert ids.tolist() == fast.token_ids.tolist()
    bounds = [s.char_start for s in fast.segments]
    import numpy as np

    assert np.searchsorted(starts, bounds).tolist() == [s.token_start for s in fast.segments]
