"""The search tool: Okapi BM25 over a local document set (no network).

Documents are the paragraphs of the ``.md`` / ``.txt`` files in a folder (default: the small set bundled
in ``workbench/agent/documents``), or the lines of a JSONL file with ``{"title", "text"}``.

Score of document d for query q (Robertson & Zaragoza, "The Probabilistic Relevance Framework: BM25
and Beyond", 2009, eq. 3.26)::

    score(d, q) = sum_{t in q} idf(t) * f(t, d) * (k1 + 1) / (f(t, d) + k1 * (1 - b + b * |d| / avgdl))
    idf(t) = ln(1 + (N - n(t) + 0.5) / (n(t) + 0.5))

with k1 = 1.5, b = 0.75, f(t, d) the term count, n(t) the number of documents holding t.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from workbench.errors import WorkbenchError
from workbench.jsonl import json_lines, read_text

DEFAULT_DOCS = Path(__file__).parent / "documents"
_WORD = re.compile(r"[a-z0-9]+")


def _terms(text: str) -> list[str]:
    return _WORD.findall(text.lower())


@dataclass
class Document:
    title: str
    text: str


def load_documents(path: str | Path | None = None) -> list[Document]:
    """Paragraphs of the text files under ``path`` (a folder) or lines of a JSONL file."""
    p = Path(path) if path is not None else DEFAULT_DOCS
    docs: list[Document] = []
    if p.is_file() and p.suffix == ".jsonl":
        for where, obj in json_lines(p, WorkbenchError, "{name} line {line}"):  # UTF-8, bounded lines, one-line errors
            if not isinstance(obj, dict) or "text" not in obj:
                raise WorkbenchError(f"{where}: expected {{'title': ..., 'text': ...}}")
            docs.append(Document(str(obj.get("title", where)), str(obj["text"])))
    elif p.is_dir():
        for f in sorted([*p.glob("*.md"), *p.glob("*.txt")]):
            for para in re.split(r"\n\s*\n", read_text(f, WorkbenchError)):
                if para.strip() and not para.lstrip().startswith("#"):
                    docs.append(Document(f.stem, " ".join(para.split())))
    else:
        raise WorkbenchError(f"search documents {str(p)!r}: not a folder of .md/.txt files or a .jsonl file")
    if not docs:
        raise WorkbenchError(f"search documents {str(p)!r}: no documents found")
    return docs


class BM25Index:
    """An in-memory BM25 index. ``index.search("expert routing", k=3)`` -> [(score, Document)]."""

    def __init__(self, docs: list[Document], k1: float = 1.5, b: float = 0.75) -> None:
        self.docs, self.k1, self.b = docs, k1, b
        self.counts = [Counter(_terms(d.title + " " + d.text)) for d in docs]
        self.lengths = [sum(c.values()) for c in self.counts]
        self.avgdl = sum(self.lengths) / max(1, len(docs))
        df: Counter[str] = Counter()
        for c in self.counts:
            df.update(c.keys())
        n = len(docs)
        self.idf = {t: math.log(1 + (n - m + 0.5) / (m + 0.5)) for t, m in df.items()}

    def search(self, query: str, k: int = 3) -> list[tuple[float, Document]]:
        q = _terms(query)
        scored = []
        for i, c in enumerate(self.counts):
            s = 0.0
            norm = self.k1 * (1 - self.b + self.b * self.lengths[i] / self.avgdl)
            for t in q:
                f = c.get(t, 0)
                if f:
                    s += self.idf[t] * f * (self.k1 + 1) / (f + norm)
            if s > 0:
                scored.append((s, i))
        scored.sort(key=lambda x: (-x[0], x[1]))
        return [(s, self.docs[i]) for s, i in scored[:k]]

    def __call__(self, query: str, k: int = 3) -> str:
        """Tool-result text: numbered hits with title and text, or ``No results.``"""
        hits = self.search(query, k)
        if not hits:
            return "No results."
        return "\n".join(f"[{n + 1}] {d.title}: {d.text[:400]}" for n, (_, d) in enumerate(hits))
