"""JSON Lines input shared by prompt files and transcript files: one object per non-blank line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError


def json_lines(path: Path, error: type[WorkbenchError], where: str = "{name}:{line}") -> Iterator[tuple[str, Any]]:
    """Yield ``(where, object)`` for each non-blank line of ``path``.

    ``where`` formats the location for messages (``name`` is the file name, ``line`` is 1-based); a line
    that is not valid JSON raises ``error`` naming that location and the parser's column.
    """
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            at = where.format(name=path.name, line=lineno)
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise error(f"{at}: not valid JSON ({err.msg} at column {err.colno})") from None
            yield at, obj
