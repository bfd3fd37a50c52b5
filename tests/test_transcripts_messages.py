"""Reading transcripts: valid chat JSON is normalised; anything else names the line and the field."""

from __future__ import annotations

import json

import pytest
from transcripts_helpers import tool_loop_transcript

from workbench.transcripts.messages import TranscriptError, message_steps, read_transcripts


def _write(tmp_path, lines):
    p = tmp_path / "t.jsonl"
    p.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return p


def test_reads_and_normalises(tmp_path):
    obj = tool_loop_transcript(2)
    obj["messages"][0]["content"] = [{"type": "text", "text": "You are "}, {"type": "text", "text": "careful."}]
    obj["messages"][2]["tool_calls"][0]["function"]["arguments"] = {"expression": "1+1"}
    (t,) = read_transcripts(_write(tmp_path, [obj]))
    assert t.id == "t1" and t.domain == "agent" and t.n_steps == 3
    assert t.messages[0]["content"] == "You are careful."
    assert t.messages[2]["tool_calls"][0]["function"]["arguments"] == '{"expression": "1+1"}'
    assert message_steps(t.messages) == [-1, -1, 0, 0, 0, 1, 1, 2]


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda o: o["messages"][1].update(role="robot"), "line 2: messages[1].role"),
        (lambda o: o["messages"][1].pop("content"), "line 2: messages[1].content"),
        (lambda o: o["messages"][2]["tool_calls"][0].pop("id"), "messages[2].tool_calls[0].id"),
        (lambda o: o["messages"][2]["tool_calls"][0]["function"].update(arguments=3), "function.arguments"),
        (lambda o: o["messages"][3].update(tool_call_id="functions.nope:9"), "messages[3].tool_call_id"),
        (lambda o: o.update(messages=[]), "line 2: messages: expected a non-empty list"),
        (lambda o: o.update(tools=[{"type": "function"}]), "tools[0].function.name"),
    ],
)
def test_bad_fields_name_line_and_field(tmp_path, mutate, needle):
    good, bad = tool_loop_transcript(1), tool_loop_transcript(1)
    bad["id"] = "t2"
    mutate(bad)
    with pytest.raises(TranscriptError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        read_transcripts(_write(tmp_path, [good, bad]))


def test_not_json_and_duplicates(tmp_path):
    with pytest.raises(TranscriptError, match="line 2: not valid JSON"):
        read_transcripts(_write(tmp_path, [tool_loop_transcript(1), '{"id": "x", "messages": [']))
    with pytest.raises(TranscriptError, match="appears twice"):
        read_transcripts(_write(tmp_path, [tool_loop_transcript(1), tool_loop_transcript(1)]))
    with pytest.raises(TranscriptError, match="does not exist"):
        read_transcripts(tmp_path / "missing.jsonl")
