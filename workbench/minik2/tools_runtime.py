"""The three tools of the mini K2's tool-loop episodes, really executed: calculator, python, search.

Every tool result in the corpus and in ``data/transcripts`` comes from running these functions, so the
model is trained on true results. The calculator, the python tool (the bubblewrap sandbox) and the
declarations (``TOOL_SPECS``) are the live agent's own (:mod:`workbench.agent`): one implementation, so
the agent returns exactly what the model was trained on. Only the search differs in what it searches
(the GCIDE dictionary here, a document folder in the agent).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from workbench.agent.bwrap import SandboxUnavailable
from workbench.agent.calculator import calculate
from workbench.agent.declarations import TOOL_SPECS
from workbench.agent.sandbox import run_python, sandbox_available
from workbench.errors import WorkbenchError

__all__ = ["TOOL_SPECS", "DictionarySearch", "calculator", "python", "run_tool"]


def calculator(expression: str) -> str:
    """The agent's calculator (:func:`workbench.agent.calculator.calculate`)."""
    return calculate(expression)


def python(code: str) -> str:
    """Run ``code`` in the agent's sandbox and return its tool result (what it printed, or the error line).

    Raises ``WorkbenchError`` where no sandbox can be had: a corpus must never hold the refusal as a result.
    """
    try:
        sandbox_available()
    except SandboxUnavailable as err:
        raise WorkbenchError(f"building tool episodes runs the python tool: {err}") from None
    return run_python(code).as_tool_result()


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
