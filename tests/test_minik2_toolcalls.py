"""The K2 tool-call parser accepts K2's format and rejects malformed sections with a reason."""

from __future__ import annotations

import json

import pytest

from workbench.transcripts.k2_toolcalls import ToolCall, ToolCallParseError, parse_tool_calls

B, E = "<|tool_calls_section_begin|>", "<|tool_calls_section_end|>"


def call(cid: str, args: str) -> str:
    return f"<|tool_call_begin|>{cid}<|tool_call_argument_begin|>{args}<|tool_call_end|>"


def test_single_and_multiple_calls():
    one = B + call("functions.calculator:0", '{"expression": "2+2"}') + E
    assert parse_tool_calls(one) == [ToolCall("functions.calculator:0", "calculator", '{"expression": "2+2"}')]
    many = "thinking done" + B + "\n" + call("functions.search:3", '{"query": "abbey"}') + "\n"
    many += call("functions.python:4", json.dumps({"code": "print({1: 2})"})) + "\n" + E + "<|im_end|>"
    calls = parse_tool_calls(many)
    assert [(c.name, c.index) for c in calls] == [("search", 3), ("python", 4)]
    assert json.loads(calls[1].arguments) == {"code": "print({1: 2})"}  # braces inside strings are fine


def test_bare_name_id_and_no_section():
    assert parse_tool_calls(B + call("get_weather:1", "{}") + E)[0].name == "get_weather"
    assert parse_tool_calls("just an answer, no tools") == []
    assert parse_tool_calls(B + E) == []


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (B + call("functions.calculator:0", '{"expression": "2+2"'), "section_end"),  # cut off
        (B + call("functions.calculator:0", '{"expression": 2+2}') + E, "not valid JSON"),
        (B + call("functions.calculator:0", '["2+2"]') + E, "JSON object"),
        (B + call("calculator", "{}") + E, "functions.NAME:IDX"),
        (B + call("functions.calc ulator:0", "{}") + E, "functions.NAME:IDX"),
        (B + "<|tool_call_begin|>functions.a:0{}<|tool_call_end|>" + E, "argument_begin"),
        (B + "<|tool_call_begin|>functions.a:0<|tool_call_argument_begin|>{}" + E, "tool_call_end"),
        (B + "oops" + call("functions.a:0", "{}") + E, "unexpected text"),
        (call("functions.a:0", "{}"), "outside"),
    ],
)
def test_rejects_malformed(text, reason):
    with pytest.raises(ToolCallParseError, match=reason):
        parse_tool_calls(text)


def test_round_trip_with_the_template_rendering():
    """What the chat template renders for an assistant turn parses back to the same calls."""
    from workbench.minik2.episodes import EpisodeBuilder
    from workbench.minik2.tools_runtime import DictionarySearch

    ep = EpisodeBuilder(DictionarySearch([]), "q")
    ep.call("r", [("calculator", {"expression": "1+1"}), ("python", {"code": "print(2)"})])
    tool_calls = ep.messages[1]["tool_calls"]
    text = B + "".join(call(c["id"], c["function"]["arguments"]) for c in tool_calls) + E
    got = parse_tool_calls(text)
    assert [(c.id, c.arguments) for c in got] == [(c["id"], c["function"]["arguments"]) for c in tool_calls]
    assert ep.messages[2]["content"] == "2" and ep.messages[3]["content"].strip() == "2"  # tools really ran
