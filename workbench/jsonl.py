"""JSON Lines and text input shared by prompt, transcript and document files: one object per non-blank line.

Every way a file can be unreadable becomes one ``WorkbenchError`` naming the file and line, before any
model is loaded: bytes that are not UTF-8 (a binary file), a line longer than ``max_line_bytes`` (read
in bounded pieces, so a 50 MB line never sits in memory whole), invalid JSON, and strings holding a lone
UTF-16 surrogate (``"\\ud800"`` is valid JSON but not a character: no tokenizer can encode it).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError

MAX_LINE_BYTES = 16 * 2**20  # 16 MiB: far above any context window's worth of text (K2: 256k tokens ~ 1 MB)


def _decode(raw: bytes, at: str, error: type[WorkbenchError]) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise error(
            f"{at}: not UTF-8 text (byte 0x{raw[err.start]:02x} at byte {err.start + 1} of the line); "
            "is this a binary file? save it as UTF-8 JSON Lines"
        ) from None


def find_surrogate(obj: Any, path: str = "") -> str | None:
    """The JSON path (``messages[1].content``) of the first string holding a lone surrogate, else None."""
    if isinstance(obj, str):
        try:
            obj.encode("utf-8")
        except UnicodeEncodeError:
            return path or "the value"
        return None
    if isinstance(obj, dict):
        for key, value in obj.items():
            found = find_surrogate(key, path or "a key") or find_surrogate(value, f"{path}.{key}" if path else key)
            if found:
                return found
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            found = find_surrogate(value, f"{path}[{i}]")
            if found:
                return found
    return None


def json_lines(
    path: Path, error: type[WorkbenchError], where: str = "{name}:{line}", *, max_line_bytes: int = MAX_LINE_BYTES
) -> Iterator[tuple[str, Any]]:
    """Yield ``(where, object)`` for each non-blank line of ``path``.

    ``where`` formats the location for messages (``name`` is the file name, ``line`` is 1-based). A line
    that is not UTF-8, longer than ``max_line_bytes``, not valid JSON, or holding a lone surrogate raises
    ``error`` naming that location.
    """
    try:
        fh = path.open("rb")
    except OSError as err:
        raise error(f"{path}: cannot be read ({err.strerror})") from None
    with fh:
        lineno = 0
        while True:
            raw = fh.readline(max_line_bytes + 1)
            if not raw:
                return
            lineno += 1
            at = where.format(name=path.name, line=lineno)
            if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
                raise error(
                    f"{at}: the line is longer than {max_line_bytes:,} bytes; a prompt or transcript that long "
                    "cannot fit a model's context (split it into several lines)"
                )
            line = _decode(raw, at, error)
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise error(f"{at}: not valid JSON ({err.msg} at column {err.colno})") from None
            bad = find_surrogate(obj)
            if bad is not None:
                raise error(
                    f"{at}: {bad} holds a lone surrogate escape (e.g. \\ud800), which is not a character; "
                    "fix the line's \\u escapes"
                )
            yield at, obj


def read_text(path: Path, error: type[WorkbenchError], *, max_bytes: int = 64 * 2**20) -> str:
    """A whole UTF-8 text file (a document for the search tool), or one ``error`` line saying why not."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise error(f"{path}: {size:,} bytes is more than the {max_bytes:,} a text file may have here")
        raw = path.read_bytes()
    except OSError as err:
        raise error(f"{path}: cannot be read ({err.strerror})") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise error(f"{path.name}:{line}: not UTF-8 text (byte 0x{raw[err.start]:02x}); save it as UTF-8") from None
