"""Prompt files: JSON Lines, one prompt per line (DESIGN.md, "Prompt files").

Plain prompts ``{"id": ..., "domain": "math", "text": "..."}`` or chat/agent prompts
``{"id": ..., "domain": ..., "messages": [...], "tools": [...]}`` in the OpenAI chat format that
K2's API uses. Every error names the file and the line, and the whole file is checked before any
model is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError
from workbench.jsonl import json_lines


class PromptFileError(WorkbenchError):
    """A prompt file is missing, or one of its lines is malformed (the message names the line)."""


@dataclass(frozen=True)
class PromptRecord:
    """One prompt: exactly one of ``text`` or ``messages`` is set."""

    id: str
    domain: str
    text: str | None = None
    messages: list[dict[str, Any]] | None = None
    tools: list[dict[str, Any]] | None = None
    source: str = ""  # "<file name>:<line>"
    extra: dict[str, Any] = field(default_factory=dict)  # any other keys of the line, kept for the caller

    @property
    def is_chat(self) -> bool:
        return self.messages is not None


_KNOWN = {"id", "domain", "text", "messages", "tools"}


def _parse_line(obj: Any, where: str) -> PromptRecord:
    if not isinstance(obj, dict):
        raise PromptFileError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    pid = obj.get("id")
    if pid is None or (isinstance(pid, str) and not pid.strip()):
        raise PromptFileError(f'{where}: missing "id"; every prompt needs a unique id')
    domain = obj.get("domain")
    if not isinstance(domain, str) or not domain.strip():
        raise PromptFileError(f'{where}: missing "domain" (e.g. "math", "code", "language")')
    text, messages, tools = obj.get("text"), obj.get("messages"), obj.get("tools")
    if (text is None) == (messages is None):
        raise PromptFileError(f'{where}: give exactly one of "text" or "messages"')
    if text is not None:
        if not isinstance(text, str):
            raise PromptFileError(f'{where}: "text" must be a string')
        if not text.strip():
            raise PromptFileError(f"{where}: prompt {pid!r} is empty; remove the line or give it text")
    if messages is not None:
        if not isinstance(messages, list) or not messages:
            raise PromptFileError(f'{where}: "messages" must be a non-empty list of chat messages')
        for j, msg in enumerate(messages):
            if not isinstance(msg, dict) or "role" not in msg:
                raise PromptFileError(f'{where}: message {j} must be an object with a "role"')
    if tools is not None and not isinstance(tools, list):
        raise PromptFileError(f'{where}: "tools" must be a list of tool declarations')
    extra = {k: v for k, v in obj.items() if k not in _KNOWN}
    return PromptRecord(str(pid), domain, text, messages, tools, where, extra)


def read_prompts(path: str | Path) -> list[PromptRecord]:
    """Read and check a JSONL prompt file; blank lines are skipped.

    Raises
    ------
    PromptFileError
        Missing file, invalid JSON, missing id/domain, empty prompt, duplicate id, or no prompt at all;
        the message names ``file:line``.
    """
    p = Path(path)
    if not p.is_file():
        raise PromptFileError(f"prompts file {p} does not exist")
    records: list[PromptRecord] = []
    seen: dict[str, str] = {}
    for where, obj in json_lines(p, PromptFileError):
        rec = _parse_line(obj, where)
        if rec.id in seen:
            raise PromptFileError(f"{where}: duplicate id {rec.id!r} (first at {seen[rec.id]})")
        seen[rec.id] = where
        records.append(rec)
    if not records:
        raise PromptFileError(f"prompts file {p} holds no prompts")
    return records
