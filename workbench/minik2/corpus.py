"""Build the mini K2 corpus offline and reproducibly: math, code, language and tool-loop episodes.

Layout written under ``out`` (default ``build/minik2/corpus``)::

    train/{math,code,language}.jsonl     one {"key", "text"} document per line
    heldout/{math,code,language}.jsonl
    train/tools.jsonl, heldout/tools.jsonl   one {"id","domain","messages","tools"} episode per line
    manifest.json                         recipe, seeds, document and character counts

The held-out split is a pure function of the document key (``sha1(key) % 100 < heldout_pct``), so it
never changes between rebuilds; math and tool episodes use separate seeds per split.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from workbench.minik2 import sources
from workbench.minik2.episodes import episode, long_episode
from workbench.minik2.math_gen import math_documents
from workbench.minik2.tools_runtime import DictionarySearch

DOMAINS = ("math", "code", "language", "tools")


@dataclass(frozen=True)
class CorpusRecipe:
    """How big each domain is. Sizes were chosen so ~30 min of CPU training sees most documents once."""

    seed: int = 1234
    heldout_pct: int = 3  # percent of documents (by key hash) kept out of training
    math_docs: int = 12000  # generated documents of 3-6 worked problems
    code_max_chars: int = 6_000_000  # standard library chunks, in sorted path order, up to this size
    language_gcide_entries: int = 14000  # GCIDE entries sampled (seeded) alongside all fortunes
    tool_episodes: int = 9000
    heldout_tool_episodes: int = 300


def in_heldout(key: str, pct: int) -> bool:
    """True when the document ``key`` belongs to the held-out split (stable hash, not Python's hash)."""
    return int(hashlib.sha1(key.encode()).hexdigest(), 16) % 100 < pct


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return sum(len(r.get("text", "")) for r in rows)


def build_corpus(out: Path, recipe: CorpusRecipe | None = None, *, install_missing: bool = True) -> dict[str, Any]:
    """Build every split and domain under ``out`` and return the manifest (also written as JSON)."""
    recipe = recipe or CorpusRecipe()
    sources.ensure_debian_packages(install=install_missing)
    rng = random.Random(recipe.seed)
    split: dict[str, dict[str, list[dict[str, Any]]]] = {"train": {}, "heldout": {}}

    with tqdm(total=4, desc="corpus", unit="domain") as bar:
        # math: generated; held-out documents come from their own seed
        split["train"]["math"] = [
            {"key": f"math:{i}", "text": t} for i, t in enumerate(math_documents(recipe.seed, recipe.math_docs))
        ]
        n_held = max(50, recipe.math_docs * recipe.heldout_pct // 100)
        split["heldout"]["math"] = [
            {"key": f"math-heldout:{i}", "text": t} for i, t in enumerate(math_documents(recipe.seed + 1, n_held))
        ]
        bar.update()

        code: dict[str, list[dict[str, Any]]] = {"train": [], "heldout": []}
        size = 0
        for key, text in sources.code_chunks():
            if size > recipe.code_max_chars:
                break
            file_key = key.rsplit(":", 1)[0]
            code["heldout" if in_heldout(file_key, recipe.heldout_pct) else "train"].append({"key": key, "text": text})
            size += len(text)
        split["train"]["code"], split["heldout"]["code"] = code["train"], code["heldout"]
        bar.update()

        gcide = list(sources.gcide_entries())
        lang = list(sources.fortunes()) + rng.sample(gcide, min(recipe.language_gcide_entries, len(gcide)))
        split["train"]["language"] = [{"key": k, "text": t} for k, t in lang if not in_heldout(k, recipe.heldout_pct)]
        split["heldout"]["language"] = [{"key": k, "text": t} for k, t in lang if in_heldout(k, recipe.heldout_pct)]
        bar.update()

        search = DictionarySearch(gcide)
        train_rng, held_rng = random.Random(recipe.seed + 2), random.Random(recipe.seed + 3)
        split["train"]["tools"] = [episode(train_rng, search, f"tools:{i}") for i in range(recipe.tool_episodes)]
        split["train"]["tools"] += [
            long_episode(train_rng, search, f"tools-long:{i}", train_rng.randint(4, 12))
            for i in range(recipe.tool_episodes // 20)
        ]
        split["heldout"]["tools"] = [
            episode(held_rng, search, f"tools-heldout:{i}") for i in range(recipe.heldout_tool_episodes)
        ]
        bar.update()

    manifest: dict[str, Any] = {"recipe": asdict(recipe), "splits": {}}
    for name, domains in split.items():
        for domain, rows in domains.items():
            chars = _write_jsonl(out / name / f"{domain}.jsonl", rows)
            if domain == "tools":
                chars = sum(len(json.dumps(r["messages"])) for r in rows)
            manifest["splits"].setdefault(name, {})[domain] = {"documents": len(rows), "chars": chars}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def read_documents(corpus: Path, split: str, domain: str) -> list[dict[str, Any]]:
    """Read one split/domain file; a missing corpus raises a WorkbenchError that says how to build it."""
    path = corpus / split / f"{domain}.jsonl"
    if not path.exists():
        from workbench.errors import WorkbenchError

        raise WorkbenchError(
            f"{path} is missing; build the corpus first with `workbench mini-k2 corpus --out {corpus}`"
        )
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
