"""The tool declarations (OpenAI ``tools`` format) of the live agent and of the mini K2's corpus: one table.

The mini K2 (``data/models/k2-mini``) was trained on episodes whose ``tool_declare`` turn renders exactly
``TOOL_SPECS``, so these texts are kept as they were. The live agent declares the same ``calculator`` and
``python``; its ``search`` is a BM25 search over a document folder rather than the corpus's dictionary, so
its declaration is the same entry with a description that names what it searches (``declaration``).
"""

from __future__ import annotations

import copy
from typing import Any

TOOL_SPECS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "calculator",
            "description": "Evaluate an arithmetic expression exactly.",
            "parameters": {
                "type": "object",
                "properties": {"expression": {"type": "string", "description": "e.g. (3 + 4) * 12 / 5"}},
                "required": ["expression"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "python",
            "description": "Run a short Python program and return what it prints.",
            "parameters": {
                "type": "object",
                "properties": {"code": {"type": "string", "description": "Python source; use print()"}},
                "required": ["code"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "search",
            "description": "Search an English dictionary and return the best matching entries.",
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string", "description": "words to look up"}},
                "required": ["query"],
            },
        },
    },
]
TOOL_NAMES: tuple[str, ...] = tuple(spec["function"]["name"] for spec in TOOL_SPECS)
DOCUMENT_SEARCH = "Search a local document collection and return the best matching passages."


def declaration(name: str, description: str | None = None) -> dict[str, Any]:
    """A copy of the declaration of tool ``name``, with ``description`` replaced where given."""
    for spec in TOOL_SPECS:
        if spec["function"]["name"] == name:
            out = copy.deepcopy(spec)
            if description is not None:
                out["function"]["description"] = description
            return out
    raise KeyError(name)


def argument_name(name: str) -> str:
    """The one required string argument of tool ``name`` (``expression``, ``code``, ``query``)."""
    return str(declaration(name)["function"]["parameters"]["required"][0])
