"""The agent's tools (python, calculator, search): OpenAI-format declarations and a failure-proof runner.

``ToolBox.run(name, arguments)`` never raises: unknown tools, arguments that are not JSON or miss a
required field, a tool that crashes or times out all come back as ``Error: ...`` text, which becomes
the tool result the model reads (as an API-driven agent loop would do).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.agent.calculator import calculate
from workbench.agent.sandbox import SandboxLimits, run_python
from workbench.agent.search import BM25Index, load_documents
from workbench.errors import WorkbenchError

TOOL_NAMES = ("python", "calculator", "search")


@dataclass
class Tool:
    """One tool: its declaration (name, description, the one string argument it takes) and its function."""

    name: str
    description: str
    argument: str  # the single required string argument
    argument_help: str
    fn: Callable[[str], str]

    def declaration(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": {
                    "type": "object",
                    "properties": {self.argument: {"type": "string", "description": self.argument_help}},
                    "required": [self.argument],
                },
            },
        }


class ToolBox:
    """The tools of one agent run, by name."""

    def __init__(self, tools: list[Tool]) -> None:
        self.tools = {t.name: t for t in tools}

    def declarations(self) -> list[dict[str, Any]]:
        """The ``tools`` list of the chat request (rendered by the template's tool_declare turn)."""
        return [t.declaration() for t in self.tools.values()]

    def run(self, name: str, arguments: str) -> str:
        """Run one call; any failure becomes ``Error: ...`` text (the tool result), never an exception."""
        tool = self.tools.get(name)
        if tool is None:
            return f"Error: unknown tool {name!r}; available: {', '.join(self.tools)}"
        try:
            args = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as err:
            return f"Error: arguments are not valid JSON ({err.msg} at column {err.colno})"
        if not isinstance(args, dict) or not isinstance(args.get(tool.argument), str):
            return f"Error: {name} needs a JSON object with a string field {tool.argument!r}"
        try:
            return tool.fn(args[tool.argument])
        except Exception as err:  # a crashing tool is a tool result, not the end of the loop
            return f"Error: the {name} tool failed: {type(err).__name__}: {err}"


def make_toolbox(
    names: list[str] | tuple[str, ...] = TOOL_NAMES,
    *,
    docs: str | Path | None = None,
    limits: SandboxLimits | None = None,
) -> ToolBox:
    """Tools by name: ``python`` (sandboxed), ``calculator``, ``search`` (BM25 over ``docs``)."""
    unknown = [n for n in names if n not in TOOL_NAMES]
    if unknown:
        raise WorkbenchError(f"unknown tool(s) {', '.join(unknown)}; choose from {', '.join(TOOL_NAMES)}")
    if not names:
        raise WorkbenchError(f"no tools given; choose from {', '.join(TOOL_NAMES)}")
    tools: list[Tool] = []
    for name in names:
        if name == "python":
            lim = limits or SandboxLimits()

            def run_code(code: str, lim: SandboxLimits = lim) -> str:
                return run_python(code, lim).as_tool_result()

            tools.append(
                Tool("python", "Run a short Python program and return what it prints.", "code",
                     "Python source; use print()", run_code)
            )  # fmt: skip
        elif name == "calculator":
            tools.append(
                Tool("calculator", "Evaluate an arithmetic expression exactly.", "expression",
                     "e.g. (3 + 4) * 12 / 5", calculate)
            )  # fmt: skip
        else:
            index = BM25Index(load_documents(docs))
            tools.append(
                Tool("search", "Search a local document collection and return the best matching passages.",
                     "query", "words to look up", index)
            )  # fmt: skip
    return ToolBox(tools)
