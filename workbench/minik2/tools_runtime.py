"""The three tools of the mini K2's tool-loop episodes, really executed: calculator, python, search.

Every tool result in the corpus and in ``data/transcripts`` comes from running these functions, so the
model is trained on true results. ``TOOL_SPECS`` are the OpenAI-format declarations K2 receives.
"""

from __future__ import annotations

import ast
import contextlib
import io
import math
import operator
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
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

_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_FUNCS: dict[str, Callable[..., Any]] = {"sqrt": math.sqrt, "abs": abs, "round": round, "min": min, "max": max}


def calculator(expression: str) -> str:
    """Evaluate ``expression`` with + - * / // % ** and sqrt/abs/round/min/max; errors become text."""

    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            left, right = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Pow) and abs(right) > 64:
                raise ValueError("exponent too large")
            return _BINOPS[type(node.op)](left, right)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            v = ev(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCS:
            return _FUNCS[node.func.id](*[ev(a) for a in node.args])
        raise ValueError(f"unsupported syntax: {ast.dump(node)[:40]}")

    try:
        value = ev(ast.parse(expression, mode="eval"))
    except (SyntaxError, ValueError, ZeroDivisionError, OverflowError, TypeError) as err:
        return f"Error: {err}"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        value = int(value)
    return str(round(value, 6) if isinstance(value, float) else value)


def python(code: str) -> str:
    """Execute ``code`` in a fresh namespace and return its captured stdout (or the exception line)."""
    buf = io.StringIO()
    namespace: dict[str, Any] = {"__name__": "__tool__"}
    try:
        with contextlib.redirect_stdout(buf):
            exec(compile(code, "<tool>", "exec"), namespace)
    except Exception as err:
        return buf.getvalue() + f"{type(err).__name__}: {err}"
    out = buf.getvalue()
    return out[:2000] if out else "(no output)"


_WORD = re.compile(r"[a-z]+")


class DictionarySearch:
    """A small inverted index over ``(key, text)`` documents, ranked by matched query terms then brevity.

    The index is built once from the GCIDE entries (``sources.gcide_entries``); a headword match
    ranks first, then documents containing most query words.
    """

    def __init__(self, docs: Iterable[tuple[str, str]]) -> None:
        self.docs: list[str] = []
        self.heads: dict[str, list[int]] = defaultdict(list)
        self.index: dict[str, set[int]] = defaultdict(set)
        self.headwords: list[str] = []  # single-word headwords, in index order (for sampling lookups)
        for _key, text in docs:
            i = len(self.docs)
            self.docs.append(text)
            head = text.split(":", 1)[0].strip().lower()
            self.heads[head].append(i)
            if head.isalpha() and len(self.heads[head]) == 1:
                self.headwords.append(head)
            for w in set(_WORD.findall(text[:400].lower())):
                self.index[w].add(i)

    def __call__(self, query: str, k: int = 2) -> str:
        words = _WORD.findall(query.lower())
        if not words:
            return "No results."
        hits: dict[int, float] = defaultdict(float)
        for i in self.heads.get(" ".join(words), []):
            hits[i] += 10.0
        for w in words:
            for i in self.heads.get(w, []):
                hits[i] += 3.0
            postings = self.index.get(w, set())
            if len(postings) < 5000:
                for i in postings:
                    hits[i] += 1.0
        if not hits:
            return "No results."
        best = sorted(hits, key=lambda i: (-hits[i], len(self.docs[i]), i))[:k]
        return "\n".join(f"[{n + 1}] {self.docs[i][:300]}" for n, i in enumerate(best))


def run_tool(name: str, arguments: dict[str, Any], search: DictionarySearch) -> str:
    """Dispatch one call by tool name; unknown tools return an error string, as an agent loop would."""
    if name == "calculator":
        return calculator(str(arguments.get("expression", "")))
    if name == "python":
        return python(str(arguments.get("code", "")))
    if name == "search":
        return search(str(arguments.get("query", "")))
    return f"Error: unknown tool {name}"
