"""Parse Kimi K2 tool calls out of generated text.

K2 (moonshotai/Kimi-K2-Instruct, docs/tool_call_guidance.md) writes tool calls as one section::

    <|tool_calls_section_begin|>
    <|tool_call_begin|>functions.{name}:{idx}<|tool_call_argument_begin|>{json arguments}<|tool_call_end|>
    ... more calls ...
    <|tool_calls_section_end|>

The call id is ``functions.{name}:{idx}`` (vLLM and SGLang's K2 parsers also accept a bare
``{name}:{idx}``; so does this one). A call is well formed when its id has that shape and its
arguments are one JSON object. Anything else inside a section (an unterminated call, arguments that
are not a JSON object, stray text between calls, a missing section end) raises
:class:`ToolCallParseError` naming the problem, so callers can keep the raw text and report why.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from workbench.errors import WorkbenchError

SECTION_BEGIN = "<|tool_calls_section_begin|>"
SECTION_END = "<|tool_calls_section_end|>"
CALL_BEGIN = "<|tool_call_begin|>"
ARG_BEGIN = "<|tool_call_argument_begin|>"
CALL_END = "<|tool_call_end|>"

_ID = re.compile(r"^(?:functions\.)?([A-Za-z_][A-Za-z0-9_\-.]*):(\d+)$")


class ToolCallParseError(WorkbenchError):
    """A K2 tool-call section is malformed; the message says where and how."""


@dataclass(frozen=True)
class ToolCall:
    """One parsed call: ``id`` as K2 wrote it (``functions.name:idx``), the tool ``name``, raw JSON ``arguments``."""

    id: str
    name: str
    arguments: str

    @property
    def index(self) -> int:
        """The call's ``idx`` (K2 numbers calls in order across the conversation)."""
        return int(self.id.rsplit(":", 1)[1])


def _parse_call(body: str, n: int) -> ToolCall:
    if ARG_BEGIN not in body:
        raise ToolCallParseError(f"tool call {n}: no {ARG_BEGIN} after the call id")
    raw_id, args = body.split(ARG_BEGIN, 1)
    call_id = raw_id.strip()
    m = _ID.match(call_id)
    if m is None:
        raise ToolCallParseError(f"tool call {n}: id {call_id!r} is not of the form functions.NAME:IDX")
    args = args.strip()
    try:
        value = json.loads(args)
    except json.JSONDecodeError as err:
        raise ToolCallParseError(f"tool call {n} ({call_id}): arguments are not valid JSON ({err.msg})") from None
    if not isinstance(value, dict):
        raise ToolCallParseError(
            f"tool call {n} ({call_id}): arguments must be a JSON object, got {type(value).__name__}"
        )
    return ToolCall(call_id, m.group(1), args)


def _parse_section(section: str, first: int) -> list[ToolCall]:
    calls: list[ToolCall] = []
    rest = section
    while True:
        stripped = rest.strip()
        if not stripped:
            return calls
        if not stripped.startswith(CALL_BEGIN):
            raise ToolCallParseError(
                f"unexpected text {stripped[:30]!r} in the tool-call section (expected {CALL_BEGIN})"
            )
        body = stripped[len(CALL_BEGIN) :]
        end = body.find(CALL_END)
        nxt = body.find(CALL_BEGIN)
        if end < 0 or (0 <= nxt < end):
            raise ToolCallParseError(f"tool call {first + len(calls)}: no {CALL_END}")
        calls.append(_parse_call(body[:end], first + len(calls)))
        rest = body[end + len(CALL_END) :]


def parse_tool_calls(text: str) -> list[ToolCall]:
    """Every tool call in ``text``, in order.

    Text outside the sections is ignored; text without a section yields ``[]``; a section with no
    calls yields no calls. A call outside any section or a malformed section raises
    :class:`ToolCallParseError`.

    Examples
    --------
    >>> s = ('<|tool_calls_section_begin|><|tool_call_begin|>functions.calculator:0'
    ...      '<|tool_call_argument_begin|>{"expression": "2+2"}<|tool_call_end|><|tool_calls_section_end|>')
    >>> parse_tool_calls(s)
    [ToolCall(id='functions.calculator:0', name='calculator', arguments='{"expression": "2+2"}')]
    """
    calls: list[ToolCall] = []
    pos = 0
    while True:
        begin = text.find(SECTION_BEGIN, pos)
        outside = text[pos:] if begin < 0 else text[pos:begin]
        if CALL_BEGIN in outside:
            raise ToolCallParseError(f"a {CALL_BEGIN} outside a {SECTION_BEGIN} section")
        if begin < 0:
            return calls
        start = begin + len(SECTION_BEGIN)
        end = text.find(SECTION_END, start)
        if end < 0:
            raise ToolCallParseError(f"the tool-call section has no {SECTION_END} (generation cut off?)")
        calls += _parse_section(text[start:end], len(calls))
        pos = end + len(SECTION_END)
