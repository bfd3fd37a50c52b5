"""Prompt files and how a prompt becomes token ids.

A prompt file is JSON Lines (UTF-8), one prompt per non-blank line:

- plain text: ``{"id": "m1", "domain": "math", "text": "2 + 2 ="}``;
- chat/agent: ``{"id": "a1", "domain": "agent", "messages": [{"role": "user", "content": "..."}],
  "tools": [...]}`` in the OpenAI chat format that K2's API uses (rendered with the model's chat template).

``id`` (unique in the file; numbers are read as strings) and ``domain`` (the label analyses group by)
are required, and exactly one of ``text`` or ``messages``; any other keys are kept in
``PromptRecord.extra``. Every error names ``file:line``, and the whole file is checked before any model
is loaded. The same checks apply to prompts given in memory (``parse_prompts``).

Special-token strings: by default prompt text is plain text. ``"<|im_end|>"`` written in a prompt is
tokenized as the characters it consists of, never as the tokenizer's end-of-turn token (a prompt could
otherwise end a turn or open a fake one). ``allow_special=True`` (``--allow-special``) parses them as
special tokens. Chat prompts: only the tokens the chat template writes itself are special; the same
strings inside messages or tool declarations are plain text (transformers' ``sanitize_control_tokens``).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError
from workbench.jsonl import find_surrogate, json_lines


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
    return _checked(json_lines(p, PromptFileError), f"prompts file {p} holds no prompts")


def _checked(lines: Iterable[tuple[str, Any]], empty: str) -> list[PromptRecord]:
    """``PromptRecord``s of (where, object) pairs: each line's format checked, ids unique, at least one."""
    records: list[PromptRecord] = []
    seen: dict[str, str] = {}
    for where, obj in lines:
        rec = _parse_line(obj, where)
        if rec.id in seen:
            raise PromptFileError(f"{where}: duplicate id {rec.id!r} (first at {seen[rec.id]})")
        seen[rec.id] = where
        records.append(rec)
    if not records:
        raise PromptFileError(empty)
    return records


def parse_prompts(prompts: Iterable[PromptRecord | Mapping[str, Any]], source: str = "prompts") -> list[PromptRecord]:
    """Check prompts given in memory (``PromptRecord``s or dicts of the file format) as a file's lines are.

    Errors name ``prompts[i]`` instead of ``file:line``.
    """

    def lines() -> Iterator[tuple[str, Any]]:
        for i, item in enumerate(prompts):
            where = f"{source}[{i}]"
            if isinstance(item, PromptRecord):
                obj: Any = {"id": item.id, "domain": item.domain, "text": item.text, "messages": item.messages,
                            "tools": item.tools, **item.extra}  # fmt: skip
                obj = {k: v for k, v in obj.items() if v is not None}
            else:
                obj = dict(item) if isinstance(item, Mapping) else item
            bad = find_surrogate(obj)
            if bad is not None:
                raise PromptFileError(
                    f"{where}: {bad} holds a lone surrogate (e.g. '\\ud800'), which is not a character"
                )
            yield where, obj

    return _checked(lines(), f"{source}: no prompts given")


def special_strings(tokenizer: Any) -> list[str]:
    """The strings a tokenizer parses as special tokens (its special and added special tokens)."""
    found = {str(t) for t in getattr(tokenizer, "all_special_tokens", [])}
    decoder = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    found |= {str(tok.content) for tok in decoder.values() if getattr(tok, "special", False)}
    return sorted((s for s in found if s), key=len, reverse=True)


def _strings(obj: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(obj, str):
        yield path, obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _strings(value, f"{path}.{key}")
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from _strings(value, f"{path}[{i}]")


def refuse_special_strings(tokenizer: Any, obj: Any, path: str, where: str) -> None:
    """Raise PromptFileError if any string under ``obj`` holds a special-token string of ``tokenizer``."""
    specials = special_strings(tokenizer)
    if not specials:
        return
    for at, text in _strings(obj, path):
        hit = next((s for s in specials if s in text), None)
        if hit is not None:
            raise PromptFileError(
                f"{where}: {at} holds {hit!r}, a special token of this tokenizer; the chat template's output is "
                "parsed with its special tokens, so remove it, or pass allow_special=True to read it as that token"
            )


def encode_text(tokenizer: Any, text: str, *, allow_special: bool = False, where: str = "prompt") -> list[int]:
    """Token ids of plain text (with the tokenizer's own added BOS/EOS, if it adds any).

    By default special-token strings in ``text`` are split like any other text (transformers'
    ``split_special_tokens=True``); a tokenizer that ignores that flag is caught (more special ids than
    for empty text) and refused rather than trusted.
    """
    if allow_special:
        return [int(i) for i in tokenizer(text, verbose=False)["input_ids"]]
    ids = [int(i) for i in tokenizer(text, split_special_tokens=True, verbose=False)["input_ids"]]
    specials = special_strings(tokenizer)
    if any(s in text for s in specials):
        special_ids = set(getattr(tokenizer, "all_special_ids", []) or [])
        special_ids |= {int(k) for k, tok in (getattr(tokenizer, "added_tokens_decoder", {}) or {}).items()
                        if getattr(tok, "special", False)}  # fmt: skip
        base = sum(i in special_ids for i in tokenizer("", split_special_tokens=True)["input_ids"])
        if sum(i in special_ids for i in ids) > base:
            raise PromptFileError(
                f"{where}: the text holds a special-token string and this tokenizer cannot read it as plain "
                "text; remove it, or pass allow_special=True to read it as the special token"
            )
    return ids


def encode_prompt(tokenizer: Any, prompt: PromptRecord, *, allow_special: bool = False) -> list[int]:
    """Token ids of a prompt: plain text via ``encode_text``, chat prompts via the chat template.

    Chat prompts get the generation prompt (the model answers next); special-token strings inside their
    messages and tools are plain text (transformers' ``sanitize_control_tokens``) unless ``allow_special``.
    Raises PromptFileError for a prompt that encodes to no tokens.
    """
    where = prompt.source or prompt.id
    if prompt.messages is not None:
        if not getattr(tokenizer, "chat_template", None):
            raise PromptFileError(f"{where}: a chat prompt needs a tokenizer with a chat template")
        kwargs: dict[str, Any] = {"tokenizer_kwargs": {"verbose": False}}
        if not allow_special:
            if "sanitize_control_tokens" in inspect.signature(tokenizer.apply_chat_template).parameters:
                kwargs["sanitize_control_tokens"] = True  # control tokens inside messages/tools become plain text
            else:  # an older transformers: refuse what cannot be read as plain text
                refuse_special_strings(tokenizer, prompt.messages, "messages", where)
                refuse_special_strings(tokenizer, prompt.tools or [], "tools", where)
        out = tokenizer.apply_chat_template(
            prompt.messages, tools=prompt.tools, add_generation_prompt=True, tokenize=True, **kwargs
        )
        ids = out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out
        ids = [int(i) for i in ids]
    else:
        ids = encode_text(tokenizer, prompt.text or "", allow_special=allow_special, where=where)
    if not ids:
        raise PromptFileError(f"{where}: prompt {prompt.id!r} encodes to no tokens")
    return ids
