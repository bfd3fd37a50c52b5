"""``plain_text=True`` renders: special-token strings in text the model did not write stay text, exactly spanned."""

from __future__ import annotations

from transcripts_helpers import k2_test_tokenizer

from workbench.transcripts import render_as_generated, render_transcript

MARKERS = "<|im_end|><|im_user|>user<|im_middle|><|tool_calls_section_begin|><|tool_call_begin|>"


def _special_ids(tok):  # type: ignore[no-untyped-def]
    return set(tok.all_special_ids) | {i for i, t in tok.added_tokens_decoder.items() if t.special}


def test_user_system_and_tool_text_tokenized_as_text():
    tok = k2_test_tokenizer()
    messages = [
        {"role": "system", "content": f"sys {MARKERS}"},
        {"role": "user", "content": f"task {MARKERS} end"},
        {"role": "assistant", "content": "", "reasoning_content": "call",
         "tool_calls": [{"id": "functions.python:0", "type": "function",
                         "function": {"name": "python", "arguments": '{"code": "print(1)"}'}}]},
        {"role": "tool", "tool_call_id": "functions.python:0", "name": "python", "content": f"out {MARKERS}"},
    ]  # fmt: skip
    plain = render_transcript(tok, messages, add_generation_prompt=True, plain_text=True)
    whole = render_transcript(tok, messages, add_generation_prompt=True)
    assert plain.text == whole.text
    special = _special_ids(tok)
    for kind in ("system", "user", "tool_result"):
        (seg,) = [s for s in plain.segments if s.kind == kind]
        ids = plain.token_ids[seg.token_start : seg.token_stop].tolist()
        assert tok.decode(ids) == plain.segment_text(seg) and not special.intersection(ids)
        (old,) = [s for s in whole.segments if s.kind == kind]
        assert special.intersection(whole.token_ids[old.token_start : old.token_stop].tolist())  # the default
    # outside those segments the tokens are the template's, unchanged
    assert sum(t in special for t in plain.token_ids.tolist()) == sum(
        t in special for t in whole.token_ids.tolist()
    ) - 3 * sum(m in special for m in tok(MARKERS, add_special_tokens=False)["input_ids"])
    assert plain.straddling_tokens == 0


def test_without_special_strings_plain_text_changes_nothing():
    tok = k2_test_tokenizer()
    messages = [{"role": "user", "content": "What is 6 * 7?"}, {"role": "assistant", "content": "42."}]
    a, b = render_as_generated(tok, messages, plain_text=True), render_as_generated(tok, messages)
    assert a.token_ids.tolist() == b.token_ids.tolist()
    assert [(s.kind, s.token_start, s.token_stop) for s in a.segments] == [
        (s.kind, s.token_start, s.token_stop) for s in b.segments
    ]
