"""The agent's tools (python, calculator, search) with their declarations, and a failure-proof runner.

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

from workbench.agent.bwrap import SandboxUnavailable
from workbench.agent.calculator import calculate
from workbench.agent.declarations import DOCUMENT_SEARCH, TOOL_NAMES, declaration
from workbench.agent.sandbox import SandboxLimits, run_python, sandbox_available
from workbench.agent.search import BM25Index, load_documents
from workbench.errors import WorkbenchError


@dataclass
class Tool:
    """One tool: its declaration (from :mod:`workbench.agent.declarations`) and the function that runs it."""

    spec: dict[str, Any]
    fn: Callable[[str], str]

    @property
    def name(self) -> str:
        return str(self.spec["function"]["name"])

    @property
    def argument(self) -> str:
        """The single required string argument."""
        return str(self.spec["function"]["parameters"]["required"][0])

    def declaration(self) -> dict[str, Any]:
        return self.spec


class ToolBox:
    """The tools of one agent run, by name."""

    def __init__(self, tools: list[Tool]) -> None:
        order = {n: i for i, n in enumerate(TOOL_NAMES)}  # the order the mini K2 saw them declared in
        self.tools = {t.name: t for t in sorted(tools, key=lambda t: order.get(t.name, len(order)))}

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
    """Tools by name: ``python`` (sandboxed), ``calculator``, ``search`` (BM25 over ``docs``).

    Raises ``WorkbenchError`` for an unknown name, and for ``python`` where no sandbox can be had (the
    message says how to install bubblewrap): the python tool never runs unsandboxed.
    """
    unknown = [n for n in names if n not in TOOL_NAMES]
    if unknown:
        raise WorkbenchError(f"unknown tool(s) {', '.join(unknown)}; choose from {', '.join(TOOL_NAMES)}")
    if not names:
        raise WorkbenchError(f"no tools given; choose from {', '.join(TOOL_NAMES)}")
    tools: list[Tool] = []
    for name in names:
        if name == "python":
            try:
                sandbox_available()
            except SandboxUnavailable as err:
                raise WorkbenchError(str(err)) from None
            lim = limits or SandboxLimits()

            def run_code(code: str, lim: SandboxLimits = lim) -> str:
                return run_python(code, lim).as_tool_result()

            tools.append(Tool(declaration("python"), run_code))
        elif name == "calculator":
            tools.append(Tool(declaration("calculator"), calculate))
        else:
            tools.append(Tool(declaration("search", DOCUMENT_SEARCH), BM25Index(load_documents(docs))))
    return ToolBox(tools)
