"""Turn the text a K2-format model generated for one assistant turn into an OpenAI-format message.

K2 Thinking writes ``<think>{reasoning}</think>{content}`` and, when it calls tools, a section
``<|tool_calls_section_begin|><|tool_call_begin|>functions.NAME:IDX<|tool_call_argument_begin|>{json}
<|tool_call_end|>...<|tool_calls_section_end|>``, then ``<|im_end|>``. The section is parsed by the K2
parser (``workbench.transcripts.k2_toolcalls``). A malformed section is kept verbatim in ``content`` (so
the recorded sequence holds exactly what the model wrote) and its reason is returned in ``error``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
SECTION_BEGIN = "<|tool_calls_section_begin|>"
CALL_BEGIN = "<|tool_call_begin|>"


@dataclass
class ParsedTurn:
    reasoning: str | None
    content: str
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None  # why the tool-call section could not be parsed

    def message(self) -> dict[str, Any]:
        msg: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.reasoning is not None:
            msg["reasoning_content"] = self.reasoning
        if self.tool_calls:
            msg["tool_calls"] = self.tool_calls
        return msg


def parse_assistant_output(text: str, stop_strings: tuple[str, ...] = ("<|im_end|>",)) -> ParsedTurn:
    """Split one generated assistant turn into reasoning, content and tool calls (OpenAI format)."""
    from workbench.transcripts.k2_toolcalls import ToolCallParseError, parse_tool_calls

    for stop in stop_strings:
        if stop and text.endswith(stop):
            text = text[: -len(stop)]
            break
    reasoning = None
    rest = text
    if text.startswith(THINK_OPEN):
        end = text.find(THINK_CLOSE)
        if end < 0:  # cut off while thinking (max new tokens)
            return ParsedTurn(text[len(THINK_OPEN) :], "")
        reasoning, rest = text[len(THINK_OPEN) : end], text[end + len(THINK_CLOSE) :]
    at = rest.find(SECTION_BEGIN)
    if at < 0:
        if CALL_BEGIN in rest:
            return ParsedTurn(reasoning, rest, error=f"a tool call outside a {SECTION_BEGIN} section")
        return ParsedTurn(reasoning, rest)
    try:
        calls = parse_tool_calls(rest[at:])
    except ToolCallParseError as err:
        return ParsedTurn(reasoning, rest, error=str(err) or type(err).__name__)
    if not calls:
        return ParsedTurn(reasoning, rest, error="an empty tool-call section")
    return ParsedTurn(
        reasoning,
        rest[:at],
        [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in calls],
    )
