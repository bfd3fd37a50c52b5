"""The bundled held-out data: ``data/prompts/suite.jsonl`` and ``data/transcripts/tool_loops.jsonl``.

- prompt suite: ``n_per_domain`` prompts per domain as ``{"id", "domain", "text"}``. math: problem
  statements from a seed the training corpus never used; code: the opening lines of held-out standard
  library chunks; language: held-out fortunes and dictionary entries (the first sentence or two).
- transcripts: tool loops in the OpenAI chat format (``reasoning_content``, ``tool_calls``, ``tool``
  messages with ``tool_call_id``) with tool results computed by running the tools; half of them run
  20+ tool steps, the others 1-8. Domain = what the loop mostly does (math: calculator, code: python, language: search).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from workbench.minik2 import sources
from workbench.minik2.corpus import read_documents
from workbench.minik2.episodes import episode, long_episode
from workbench.minik2.math_gen import math_prompt
from workbench.minik2.tools_runtime import DictionarySearch

SUITE_SEED = 777  # never used by the training corpus (which uses 1234..1237)


def _head(text: str, max_chars: int, min_chars: int = 30) -> str:
    """The first lines of ``text`` up to ``max_chars``, cut at a line or sentence end."""
    cut = text[:max_chars]
    for sep in ("\n", ". "):
        at = cut.rfind(sep)
        if at >= min_chars:
            return cut[: at + (1 if sep == ". " else 0)].rstrip()
    return cut.rstrip()


def prompt_suite(corpus: Path, n_per_domain: int = 64) -> list[dict[str, Any]]:
    rng = random.Random(SUITE_SEED)
    rows = [{"id": f"math-{i:03d}", "domain": "math", "text": math_prompt(rng)} for i in range(n_per_domain)]
    code = read_documents(corpus, "heldout", "code")
    for i, doc in enumerate(rng.sample(code, min(n_per_domain, len(code)))):
        rows.append({"id": f"code-{i:03d}", "domain": "code", "text": _head(doc["text"], 360)})
    lang = [d for d in read_documents(corpus, "heldout", "language") if len(d["text"]) > 60]
    for i, doc in enumerate(rng.sample(lang, min(n_per_domain, len(lang)))):
        rows.append({"id": f"language-{i:03d}", "domain": "language", "text": _head(doc["text"], 300)})
    return rows


def tool_loops(n_short: int = 6, n_long: int = 6, seed: int = SUITE_SEED) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    search = DictionarySearch(sources.gcide_entries())
    domain_of = {"calculator": "math", "python": "code", "search": "language"}
    out = []
    for i in range(n_short):  # alternately one-question episodes (1-3 calls) and 3-8 step loops
        if i % 2 == 0:
            ep = episode(rng, search, f"loop-short-{i:02d}")
        else:
            ep = long_episode(rng, search, f"loop-short-{i:02d}", steps=rng.randint(3, 8))
        first = ep["messages"][1]["tool_calls"][0]["function"]["name"]
        ep["domain"] = domain_of[first]
        out.append(ep)
    for i in range(n_long):
        ep = long_episode(rng, search, f"loop-long-{i:02d}", steps=rng.randint(20, 30))
        ep["domain"] = domain_of[ep["messages"][1]["tool_calls"][0]["function"]["name"]]
        out.append(ep)
    return out


def write_bundled(corpus: Path, data_dir: Path) -> dict[str, int]:
    """Write both files under ``data_dir`` (``prompts/`` and ``transcripts/``); return row counts."""
    suite = prompt_suite(corpus)
    loops = tool_loops()
    (data_dir / "prompts").mkdir(parents=True, exist_ok=True)
    (data_dir / "transcripts").mkdir(parents=True, exist_ok=True)
    with (data_dir / "prompts" / "suite.jsonl").open("w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in suite)
    with (data_dir / "transcripts" / "tool_loops.jsonl").open("w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in loops)
    return {"prompts": len(suite), "transcripts": len(loops)}
