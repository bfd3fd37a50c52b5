"""Chat transcripts in the OpenAI chat format that K2's API returns, read and checked field by field.

A transcript line (JSON Lines) is ``{"id", "domain", "messages": [...], "tools": [...]}``:

- ``system`` / ``user`` messages: ``content`` a string (or a list of ``{"type": "text", "text"}`` parts);
- ``assistant`` messages: optional ``reasoning_content`` (K2 Thinking's thinking, rendered as
  ``<think>…</think>``), ``content`` (the visible answer, may be empty or null) and ``tool_calls``
  ``[{"id": "functions.NAME:IDX", "type": "function", "function": {"name", "arguments": JSON string}}]``;
- ``tool`` messages: ``tool_call_id`` (the id of the call answered), optional ``name``, ``content``;
- ``tools``: ``[{"type": "function", "function": {"name", "description", "parameters"}}]``.

Everything is normalised once here (text parts joined, dict ``arguments`` dumped to the JSON string the
API would send), so the renderer sees exactly one shape. Errors name the line and the field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError
from workbench.jsonl import json_lines

ROLES = ("system", "user", "assistant", "tool")


class TranscriptError(WorkbenchError):
    """A transcript is not valid chat JSON; the message names the line (if any) and the field."""


@dataclass
class Transcript:
    """One chat transcript: messages and tool declarations in the OpenAI chat format (normalised)."""

    id: str
    domain: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] = field(default_factory=list)
    source: str = ""

    @property
    def n_steps(self) -> int:
        """Tool-loop steps: one per assistant message (see ``message_steps``)."""
        return sum(1 for m in self.messages if m["role"] == "assistant")


def _text(value: Any, where: str) -> str | None:
    """Content as one string: None stays None, text parts are joined; anything else is an error."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = []
        for j, part in enumerate(value):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise TranscriptError(f"{where}[{j}]: only text parts {{'type': 'text', 'text': ...}} are supported")
            parts.append(part["text"])
        return "".join(parts)
    raise TranscriptError(f"{where}: expected a string, a list of text parts or null, got {type(value).__name__}")


def _tool_call(call: Any, where: str) -> dict[str, Any]:
    if not isinstance(call, dict):
        raise TranscriptError(f"{where}: a tool call must be an object")
    fn = call.get("function")
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
        raise TranscriptError(f"{where}.function.name: missing or not a string")
    args = fn.get("arguments", "{}")
    if isinstance(args, dict):
        args = json.dumps(args, ensure_ascii=False)  # what the API sends; also what tojson would render
    if not isinstance(args, str):
        raise TranscriptError(f"{where}.function.arguments: expected a JSON string or an object")
    call_id = call.get("id")
    if not isinstance(call_id, str) or not call_id:
        raise TranscriptError(f"{where}.id: missing (K2 ids look like 'functions.{fn['name']}:0')")
    return {"id": call_id, "type": "function", "function": {"name": fn["name"], "arguments": args}}


def normalize_messages(messages: Any, where: str = "messages") -> list[dict[str, Any]]:
    """Check and normalise a list of chat messages; raises TranscriptError naming the bad field."""
    if not isinstance(messages, list) or not messages:
        raise TranscriptError(f"{where}: expected a non-empty list of messages")
    out: list[dict[str, Any]] = []
    open_calls: set[str] = set()
    for i, msg in enumerate(messages):
        at = f"{where}[{i}]"
        if not isinstance(msg, dict):
            raise TranscriptError(f"{at}: a message must be an object")
        role = msg.get("role")
        if role not in ROLES:
            raise TranscriptError(f"{at}.role: {role!r} is not one of {', '.join(ROLES)}")
        m: dict[str, Any] = {"role": role, "content": _text(msg.get("content"), f"{at}.content")}
        if role in ("system", "user") and m["content"] is None:
            raise TranscriptError(f"{at}.content: a {role} message needs text content")
        if msg.get("name") is not None:
            if not isinstance(msg["name"], str):
                raise TranscriptError(f"{at}.name: expected a string")
            m["name"] = msg["name"]
        if role == "assistant":
            rc = msg.get("reasoning_content")
            if rc is not None:
                m["reasoning_content"] = _text(rc, f"{at}.reasoning_content")
            calls = msg.get("tool_calls") or []
            if not isinstance(calls, list):
                raise TranscriptError(f"{at}.tool_calls: expected a list")
            if calls:
                m["tool_calls"] = [_tool_call(c, f"{at}.tool_calls[{j}]") for j, c in enumerate(calls)]
                open_calls = {c["id"] for c in m["tool_calls"]}
        elif role == "tool":
            call_id = msg.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                raise TranscriptError(f"{at}.tool_call_id: missing; a tool message answers one call by its id")
            if call_id not in open_calls:
                raise TranscriptError(
                    f"{at}.tool_call_id: {call_id!r} answers no call of the preceding assistant message"
                )
            m["tool_call_id"] = call_id
            if m["content"] is None:
                m["content"] = ""
        out.append(m)
    return out


def normalize_tools(tools: Any, where: str = "tools") -> list[dict[str, Any]]:
    """Check tool declarations ``[{"type": "function", "function": {"name", ...}}]``."""
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise TranscriptError(f"{where}: expected a list of tool declarations")
    for j, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise TranscriptError(f"{where}[{j}].function.name: missing; expected {{'type': 'function', ...}}")
    return list(tools)


def transcript_from_dict(obj: Any, *, where: str = "transcript", source: str = "") -> Transcript:
    """A Transcript from one parsed JSON object (the JSONL line format above)."""
    if not isinstance(obj, dict):
        raise TranscriptError(f"{where}: expected a JSON object with id, domain, messages")
    tid = obj.get("id")
    if not isinstance(tid, str | int) or tid == "":
        raise TranscriptError(f"{where}: id missing")
    domain = obj.get("domain", "agent")
    if not isinstance(domain, str):
        raise TranscriptError(f"{where}: domain must be a string")
    return Transcript(
        id=str(tid),
        domain=domain,
        messages=normalize_messages(obj.get("messages"), f"{where}: messages"),
        tools=normalize_tools(obj.get("tools"), f"{where}: tools"),
        source=source,
    )


def read_transcripts(path: str | Path) -> list[Transcript]:
    """Read a JSONL file of transcripts; any bad line raises TranscriptError naming line and field."""
    p = Path(path)
    if not p.is_file():
        raise TranscriptError(f"transcripts file {str(p)!r} does not exist")
    out: list[Transcript] = []
    seen: set[str] = set()
    for where, obj in json_lines(p, TranscriptError, "{name} line {line}"):
        t = transcript_from_dict(obj, where=where, source=str(p))
        if t.id in seen:
            raise TranscriptError(f"{where}: id {t.id!r} appears twice in this file; ids must be unique")
        seen.add(t.id)
        out.append(t)
    if not out:
        raise TranscriptError(f"{p.name}: no transcripts (the file is empty)")
    return out


def message_steps(messages: list[dict[str, Any]]) -> list[int]:
    """Tool-loop step of each message.

    Step ``s`` is the s-th assistant message (0-based) together with the tool results that answer it;
    system, user and anything before the first assistant message are outside any step (-1).
    """
    steps, current = [], -1
    for m in messages:
        if m["role"] == "assistant":
            current += 1
            steps.append(current)
        elif m["role"] == "tool":
            steps.append(current)
        else:
            steps.append(-1)
    return steps
