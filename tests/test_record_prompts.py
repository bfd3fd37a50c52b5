"""read_prompts: the JSONL prompt format (workbench.prompts), errors naming file:line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from workbench.prompts import PromptFileError, read_prompts


def _write(tmp_path: Path, *lines: str) -> Path:
    p = tmp_path / "prompts.jsonl"
    p.write_text("\n".join(lines) + "\n")
    return p


def test_text_and_chat_prompts(tmp_path: Path) -> None:
    chat = {
        "id": "agent-1",
        "domain": "agent",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}],
        "tools": [{"type": "function", "function": {"name": "calculator", "parameters": {}}}],
        "difficulty": "easy",
    }
    p = _write(tmp_path, json.dumps({"id": 7, "domain": "math", "text": "1 + 1 ="}), "", "   ", json.dumps(chat))
    a, b = read_prompts(p)
    assert (a.id, a.domain, a.text, a.is_chat, a.source) == ("7", "math", "1 + 1 =", False, "prompts.jsonl:1")
    assert b.is_chat and b.messages is not None and len(b.messages) == 2 and b.tools is not None
    assert b.source == "prompts.jsonl:4" and b.extra == {"difficulty": "easy"}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('["not", "an", "object"]', "expected a JSON object"),
        ('{"domain": "math", "text": "x"}', 'missing "id"'),
        ('{"id": "a", "domain": "", "text": "x"}', 'missing "domain"'),
        ('{"id": "a", "domain": "m"}', 'exactly one of "text" or "messages"'),
        ('{"id": "a", "domain": "m", "text": "x", "messages": []}', 'exactly one of "text" or "messages"'),
        ('{"id": "a", "domain": "m", "text": 3}', '"text" must be a string'),
        ('{"id": "a", "domain": "m", "text": "\\n\\t "}', "is empty"),
        ('{"id": "a", "domain": "m", "messages": []}', "non-empty list"),
        ('{"id": "a", "domain": "m", "messages": [{"content": "hi"}]}', 'message 0 must be an object with a "role"'),
        ('{"id": "a", "domain": "m", "text": "x", "tools": {}}', '"tools" must be a list'),
        ('{"id": "a", "domain": "m", "text": "x"', "not valid JSON"),
    ],
)
def test_malformed_line_is_named(tmp_path: Path, line: str, message: str) -> None:
    p = _write(tmp_path, '{"id": "ok", "domain": "math", "text": "fine"}', line)
    with pytest.raises(PromptFileError, match=rf"^prompts\.jsonl:2: .*{message}"):
        read_prompts(p)


def test_missing_empty_and_duplicate(tmp_path: Path) -> None:
    with pytest.raises(PromptFileError, match="does not exist"):
        read_prompts(tmp_path / "nope.jsonl")
    with pytest.raises(PromptFileError, match="holds no prompts"):
        read_prompts(_write(tmp_path, "", " "))
    dup = _write(tmp_path, '{"id": "a", "domain": "m", "text": "x"}', '{"id": "a", "domain": "m", "text": "y"}')
    with pytest.raises(PromptFileError, match=r"prompts\.jsonl:2: duplicate id 'a' \(first at prompts\.jsonl:1\)"):
        read_prompts(dup)


def test_unreadable_lines_are_named(tmp_path: Path) -> None:
    from workbench.jsonl import json_lines

    p = tmp_path / "prompts.jsonl"
    p.write_bytes(b'{"id": "a", "domain": "m", "text": "ok"}\n{"id": "b", "domain": "m", "text": "caf\xe9"}\n')
    with pytest.raises(PromptFileError, match=r"^prompts\.jsonl:2: not UTF-8 text \(byte 0xe9 at byte 40"):
        read_prompts(p)
    p.write_text('{"id": "a", "domain": "m", "messages": [{"role": "user", "content": "x \\udc00"}]}\n')
    with pytest.raises(PromptFileError, match=r"^prompts\.jsonl:1: messages\[0\]\.content holds a lone surrogate"):
        read_prompts(p)
    long = '{"id": "b", "domain": "m", "text": "' + "x" * 100 + '"}\n'
    p.write_text('{"id": "a", "domain": "m", "text": "short"}\n' + long)
    lines = json_lines(p, PromptFileError, max_line_bytes=80)
    assert next(lines)[1]["id"] == "a"  # the short line is read; the long one is refused, not read whole
    with pytest.raises(PromptFileError, match=r"^prompts\.jsonl:2: the line is longer than 80 bytes"):
        next(lines)
