"""Render a finished transcript the way the model processed it while generating its final answer.

K2 Thinking's published template (and the mini K2's, which mirrors it) keeps ``reasoning_content`` only
for assistant turns after the last answer without tool calls; turns before it, and that answer itself,
render an empty ``<think></think>``. So rendering a finished tool loop drops *all* its reasoning, although
the model read every step's reasoning while the loop ran (interleaved thinking) and wrote the final
answer's reasoning itself. For recording routing, the faithful single pass is the sequence of that last
generation: the conversation before the final answer rendered by the template with a generation prompt
(all tool-loop reasoning kept), followed by the final answer as the model emits it, i.e. the template's
own rendering of that turn with its reasoning put back between the empty think tags.
"""

from __future__ import annotations

from typing import Any

from workbench.transcripts.messages import Transcript, TranscriptError
from workbench.transcripts.render import RenderedTranscript, Segment, attach_tokens, render_transcript

_EMPTY_THINK = (("<think>", "</think>"), ("<think>\n", "\n</think>"))


def render_as_generated(
    tokenizer: Any,
    transcript: Transcript | list[dict[str, Any]],
    tools: list[dict[str, Any]] | None = None,
    *,
    plain_text: bool = False,
    **template_kwargs: Any,
) -> RenderedTranscript:
    """Like ``render_transcript``, but with the final answer's turn as the model generated it.

    Falls back to the plain render when nothing is lost (the template kept all reasoning, or the
    transcript does not end with an answer); ``plain_text`` as in ``render_transcript``. ``not_rendered`` then
    lists only what the model really did
    not see (reasoning of answers before an earlier user turn).
    """
    if isinstance(transcript, Transcript):
        messages, tools = transcript.messages, transcript.tools
    else:
        messages = transcript
    full = render_transcript(tokenizer, messages, tools, plain_text=plain_text, **template_kwargs)
    last = messages[-1]
    if len(messages) < 2 or last["role"] != "assistant" or last.get("tool_calls") or not full.not_rendered:
        return full
    n = len(messages) - 1
    head = render_transcript(
        tokenizer, messages[:-1], tools, add_generation_prompt=True, plain_text=plain_text, **template_kwargs
    )
    opener = head.segment_text(head.segments[-1])
    last_segs = [s for s in full.segments if s.message == n]
    joined = "".join(full.segment_text(s) for s in last_segs)
    if head.segments[-1].label != "generation prompt" or not joined.startswith(opener):
        raise TranscriptError("the chat template's generation prompt does not open its own assistant turn")

    tail: list[tuple[str, str, str]] = []  # (kind, label, text) of the final turn after the opener
    skip = len(opener)
    for s in last_segs:
        text = full.segment_text(s)[skip:]
        skip = max(0, skip - len(full.segment_text(s)))
        if text:
            tail.append((s.kind, s.label, text))
    reasoning = last.get("reasoning_content") or ""
    if reasoning:
        for i, (kind, _label, text) in enumerate(tail):
            hit = next(((o, c) for o, c in _EMPTY_THINK if kind == "template" and o + c in text), None)
            if hit:
                cut = text.index(hit[0] + hit[1]) + len(hit[0])
                tail[i : i + 1] = [("template", "", text[:cut]), ("think", "", reasoning), ("template", "", text[cut:])]
                break
        else:
            raise TranscriptError("cannot place the final answer's reasoning: the template writes no empty think tags")

    step = head.segments[-1].step
    segments = [Segment(s.kind, s.step, s.label, s.message, s.char_start, s.char_stop) for s in head.segments]
    segments[-1].label = ""
    pos = len(head.text)
    for kind, label, text in tail:
        if text:
            segments.append(Segment(kind, step, label, n, pos, pos + len(text)))
            pos += len(text)
    text = head.text + "".join(t for _, _, t in tail)
    ids, straddling = attach_tokens(tokenizer, text, segments, plain_text=plain_text)
    return RenderedTranscript(text, ids, segments, step + 1, list(head.not_rendered), straddling)
