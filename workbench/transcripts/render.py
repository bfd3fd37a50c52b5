"""Render a chat transcript with the model's own chat template and keep every segment's exact token span.

How: every piece of message text (system/user content, reasoning, answer, each tool call's id, name and
arguments, each tool result) is replaced by a unique sentinel (private-use characters) and the template is
rendered once with sentinels and once with the real text. The sentinel render shows exactly which
characters the template wrote itself (scaffolding: role markers, ``<|im_middle|>``, ``<think>``, section
markers, ``## Return of …``) and where each piece sits; walking both renders side by side gives each piece's
character range in the real render, and the pieces plus scaffolding reassemble it exactly (checked).
Tool declarations are found as the JSON the template writes for ``tools`` (K2: compact ``tojson``).
Character ranges become token ranges through the tokenizer's offsets (a token belongs to the segment
holding its first character), on the very token ids ``apply_chat_template(tokenize=True)`` gives.

Nothing here is specific to one template: the mini K2's K2-style template and K2 Thinking's published
``chat_template.jinja`` (which drops ``reasoning_content`` of turns before the last final answer) both
work; a piece the template leaves out is listed in ``RenderedTranscript.not_rendered``.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from workbench.store.dataset import SpanRecord
from workbench.transcripts.messages import Transcript, TranscriptError, message_steps
from workbench.transcripts.offsets import tokenize_with_plain

_SENTINEL = re.compile("\ue000(\\d+)\ue001")
PLAIN_KINDS = ("system", "user", "tool_result", "tool_declare")  # text the model did not write
_END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>")


@dataclass
class Segment:
    """One contiguous piece of the rendered transcript.

    ``kind`` is one of schema.SEGMENT_KINDS; ``message`` the index of the message it belongs to (-1 for
    tool declarations); ``[char_start, char_stop)`` in ``text``; ``[token_start, token_stop)`` in token ids.
    """

    kind: str
    step: int
    label: str
    message: int
    char_start: int
    char_stop: int
    token_start: int = 0
    token_stop: int = 0


@dataclass
class RenderedTranscript:
    """A rendered transcript: the text, its token ids and its segments in order (covering it exactly)."""

    text: str
    token_ids: np.ndarray  # (T,) int64
    segments: list[Segment]
    n_steps: int
    not_rendered: list[str] = field(default_factory=list)  # pieces the template left out, e.g. old reasoning
    straddling_tokens: int = 0  # tokens whose characters fall in two segments (0 on K2-style templates)

    def spans(self) -> list[SpanRecord]:
        """Token spans for the store (empty segments, e.g. a zero-length answer, are dropped)."""
        return [
            SpanRecord(s.kind, s.token_start, s.token_stop, s.step, s.label)
            for s in self.segments
            if s.token_stop > s.token_start
        ]

    def segment_text(self, seg: Segment) -> str:
        return self.text[seg.char_start : seg.char_stop]


@dataclass
class _Piece:
    kind: str
    message: int
    label: str
    group: int  # pieces with one group form one segment (a tool call's id, name and arguments)
    text: str


def _placeholders(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[_Piece]]:
    """Copy of ``messages`` with each non-empty text piece replaced by a sentinel, and the pieces."""
    pieces: list[_Piece] = []
    out = copy.deepcopy(messages)
    group = 0

    def put(kind: str, i: int, label: str, text: str | None, grp: int) -> str | None:
        if not text:
            return text
        pieces.append(_Piece(kind, i, label, grp, text))
        return f"\ue000{len(pieces) - 1}\ue001"

    for i, m in enumerate(out):
        role = m["role"]
        if role in ("system", "user"):
            m["content"] = put(role, i, m.get("name") or role, m["content"], group)
        elif role == "tool":
            m["content"] = put("tool_result", i, m["tool_call_id"], m["content"], group)
        else:
            if m.get("reasoning_content"):
                m["reasoning_content"] = put("think", i, "", m["reasoning_content"], group)
                group += 1
            m["content"] = put("answer", i, "", m["content"], group)
            for call in m.get("tool_calls", []):
                group += 1
                call["id"] = put("tool_call", i, call["id"], call["id"], group)
                fn = call["function"]
                fn["name"] = put("tool_call", i, pieces[-1].label, fn["name"], group)
                fn["arguments"] = put("tool_call", i, pieces[-1].label, fn["arguments"], group)
        group += 1
    return out, pieces


def _render(tokenizer: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, **kw: Any) -> str:
    try:
        return str(tokenizer.apply_chat_template(messages, tools=tools or None, tokenize=False, **kw))
    except Exception as err:  # jinja errors (raise_exception in templates) carry the template's own message
        raise TranscriptError(f"the chat template refused this transcript: {err}") from err


def _mark_tool_declare(p_with: str, tools: list[dict[str, Any]], pieces: list[_Piece], group: int) -> str:
    """Replace the tools JSON in the sentinel render by a sentinel of kind tool_declare."""
    for text in (
        json.dumps(tools, separators=(",", ":"), ensure_ascii=False),  # K2: tools | tojson(separators=...)
        json.dumps(tools, ensure_ascii=False),
        json.dumps(tools, ensure_ascii=False, indent=4),
        json.dumps(tools, ensure_ascii=False, indent=2),
    ):
        at = p_with.find(text)
        if at >= 0 and p_with.find(text, at + 1) < 0:
            pieces.append(_Piece("tool_declare", -1, "tools", group, text))
            return p_with[:at] + f"\ue000{len(pieces) - 1}\ue001" + p_with[at + len(text) :]
    return p_with  # declarations in another form (e.g. TypeScript): left as scaffolding


def _align(placeholder: str, real: str, pieces: list[_Piece]) -> list[tuple[int, int, int]]:
    """Character range of every sentinel occurrence in the real render: [(piece, start, stop)]."""
    marks = list(_SENTINEL.finditer(placeholder))
    literals = [placeholder[a.end() if a else 0 : b.start() if b else len(placeholder)]
                for a, b in zip([None, *marks], [*marks, None], strict=True)]  # fmt: skip
    out: list[tuple[int, int, int]] = []
    pos = 0
    for k, mark in enumerate(marks):
        lit = literals[k]
        if not real.startswith(lit, pos):
            raise TranscriptError(
                f"the chat template writes different scaffolding around real text than around placeholders "
                f"(near character {pos}: expected {lit[:40]!r}); spans cannot be located exactly"
            )
        pos += len(lit)
        piece = pieces[int(mark.group(1))]
        nxt = literals[k + 1]
        if real.startswith(piece.text, pos) and real.startswith(nxt, pos + len(piece.text)):
            stop = pos + len(piece.text)
        elif nxt:  # the template transformed the text (e.g. stripped it): take what lies before the next literal
            stop = len(real) - len(nxt) if k + 1 == len(marks) else real.find(nxt, pos)
            if stop < pos or (k + 1 == len(marks) and not real.endswith(nxt)):
                raise TranscriptError(f"cannot locate the {piece.kind} of message {piece.message} in the render")
        else:
            raise TranscriptError(
                f"the chat template changed the {piece.kind} of message {piece.message} and wrote it next to "
                "other text with nothing in between; spans cannot be located"
            )
        out.append((int(mark.group(1)), pos, stop))
        pos = stop
    if real[pos:] != literals[-1]:
        raise TranscriptError("the chat template's output with real text does not end like the placeholder render")
    return out


def _split_gap(text: str, a: int, b: int) -> int:
    """Where scaffolding between two messages passes from the first to the second (after its end token)."""
    best = -1
    for tok in _END_OF_TURN:
        at = text.find(tok, a, b)
        if at >= 0 and (best < 0 or at < best):
            best = at + len(tok)
    return best if best >= 0 else a


def render_transcript(
    tokenizer: Any,
    transcript: Transcript | list[dict[str, Any]],
    tools: list[dict[str, Any]] | None = None,
    *,
    add_generation_prompt: bool = False,
    plain_text: bool = False,
    **template_kwargs: Any,
) -> RenderedTranscript:
    """Render with ``tokenizer``'s chat template; segments with exact character and token spans.

    Parameters
    ----------
    tokenizer : a transformers tokenizer with a chat template (fast tokenizers give exact offsets).
    transcript : a Transcript, or normalised messages (``normalize_messages``) with ``tools``.
    add_generation_prompt : append the assistant opener (for generation); it is scaffolding of the next step.
    plain_text : tokenize special-token strings inside system, user and tool-result text and the tool
        declarations as plain text (the live agent: text the model did not write must not become a control
        token). By default the render is tokenized as a whole, as ``apply_chat_template(tokenize=True)`` does.
    template_kwargs : passed to the template (e.g. ``thinking=True``).
    """
    if isinstance(transcript, Transcript):
        messages, tools = transcript.messages, transcript.tools
    else:
        messages = transcript
    tools = tools or []
    kw = {"add_generation_prompt": add_generation_prompt, **template_kwargs}
    ph_messages, pieces = _placeholders(messages)
    placeholder = _render(tokenizer, ph_messages, tools, **kw)
    if tools:
        placeholder = _mark_tool_declare(placeholder, tools, pieces, group=10**9)
    real = _render(tokenizer, messages, tools, **kw)
    located = _align(placeholder, real, pieces)

    seen = {pieces[p].group for p, _, _ in located}
    not_rendered = []
    for piece in pieces:
        if piece.group not in seen:
            seen.add(piece.group)
            what = f"{piece.kind} {piece.label}".strip()
            not_rendered.append(f"{what} of message {piece.message}")
    steps = message_steps(messages)
    n_steps = max(steps, default=-1) + 1

    # One content segment per group: a tool call's id, name and arguments (with the markers between) join.
    by_group: dict[int, list[int]] = {}
    for p, a, b in located:
        g = by_group.setdefault(pieces[p].group, [a, b, p])
        g[0], g[1] = min(g[0], a), max(g[1], b)
    content = sorted(by_group.values())
    segments: list[Segment] = []
    pos = 0
    prev_msg = -1
    for a, b, p in content:
        piece = pieces[p]
        step = steps[piece.message] if piece.message >= 0 else -1
        if a < pos:
            raise TranscriptError(f"the template interleaves the {piece.kind} of message {piece.message} with others")
        _add_gap(segments, real, pos, a, prev_msg, piece.message, steps)
        segments.append(Segment(piece.kind, step, piece.label, piece.message, a, b))
        pos, prev_msg = b, piece.message
    _add_gap(segments, real, pos, len(real), prev_msg, -2 if add_generation_prompt else -3, steps, n_steps)

    ids, straddling = attach_tokens(tokenizer, real, segments, plain_text=plain_text)
    out = RenderedTranscript(real, ids, segments, n_steps, not_rendered, straddling)
    if "".join(out.segment_text(s) for s in segments) != real:  # pragma: no cover - guarded by construction
        raise TranscriptError("internal: segments do not reassemble the rendered text")
    return out


def attach_tokens(
    tokenizer: Any, text: str, segments: list[Segment], *, plain_text: bool = False
) -> tuple[np.ndarray, int]:
    """Tokenize ``text`` and set each segment's token range (a token goes where its first character is).

    ``plain_text``: special-token strings inside the segments of ``PLAIN_KINDS`` are tokenized as text (see
    ``offsets.tokenize_with_plain``). Returns ``(token_ids (T,), straddling)``: the number of segment
    boundaries that fall inside a token.
    """
    plain = [(s.char_start, s.char_stop) for s in segments if s.kind in PLAIN_KINDS] if plain_text else []
    ids, starts = tokenize_with_plain(tokenizer, text, plain)
    bounds = np.array([s.char_start for s in segments] + [len(text)], dtype=np.int64)
    tok = np.searchsorted(starts, bounds, side="left")  # first token starting at or after each boundary
    for s, t0, t1 in zip(segments, tok[:-1], tok[1:], strict=True):
        s.token_start, s.token_stop = int(t0), int(t1)
    straddling = 0
    if len(starts) and len(bounds) > 2:
        inner = bounds[1:-1]
        holder = np.searchsorted(starts, inner, side="right") - 1  # the token holding each boundary character
        straddling = int(np.sum((holder >= 0) & (starts[np.clip(holder, 0, None)] < inner)))
    return ids, straddling


def _add_gap(
    segments: list[Segment],
    text: str,
    a: int,
    b: int,
    prev_msg: int,
    next_msg: int,
    steps: list[int],
    n_steps: int = 0,
) -> None:
    """Scaffolding [a, b): split between the message before and the one after at the end-of-turn token.

    ``next_msg`` -2 means the generation prompt (it opens step ``n_steps``); -3 the end of the text.
    """
    if b <= a:
        return

    def step_of(i: int) -> int:
        if i == -2:
            return n_steps
        return steps[i] if 0 <= i < len(steps) else -1

    if prev_msg != next_msg and prev_msg >= 0:
        cut = _split_gap(text, a, b)
        if cut > a:
            segments.append(Segment("template", step_of(prev_msg), "", prev_msg, a, cut))
            a = cut
        if a >= b:
            return
    owner = next_msg if next_msg != -3 else prev_msg
    label = "generation prompt" if owner == -2 else ""
    segments.append(Segment("template", step_of(owner), label, max(owner, -1), a, b))
