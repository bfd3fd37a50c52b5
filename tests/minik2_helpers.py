"""A tiny mini-K2 corpus on disk (same layout as `workbench mini-k2 corpus`) for fast tests."""

from __future__ import annotations

import json
import random
from pathlib import Path

from workbench.minik2.episodes import episode
from workbench.minik2.math_gen import math_documents
from workbench.minik2.tools_runtime import DictionarySearch

CODE = [
    "def add(a, b):\n    return a + b\n",
    "class Stack:\n    def __init__(self):\n        self.items = []\n\n"
    "    def push(self, x):\n        self.items.append(x)\n",
    "import os\n\nfor name in os.listdir('.'):\n    print(name)\n",
    "def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n",
]
LANGUAGE = [
    "The quick brown fox jumps over the lazy dog while the farmer sleeps.",
    "Abbey: A monastery or society of persons secluded from the world and devoted to religion.",
    "Boat: A small open vessel, or water craft, usually moved by oars or paddles.",
    "It is a truth universally acknowledged that a single man must be in want of a wife.",
]


def write_tiny_corpus(root: Path, n_math: int = 40, n_tools: int = 30) -> Path:
    search = DictionarySearch([(f"k{i}", t) for i, t in enumerate(LANGUAGE)])
    rng = random.Random(0)
    docs = {
        "math": [{"key": f"m{i}", "text": t} for i, t in enumerate(math_documents(0, n_math))],
        "code": [{"key": f"c{i}", "text": t} for i, t in enumerate(CODE * 5)],
        "language": [{"key": f"l{i}", "text": t} for i, t in enumerate(LANGUAGE * 5)],
        "tools": [episode(rng, search, f"t{i}") for i in range(n_tools)],
    }
    for split in ("train", "heldout"):
        (root / split).mkdir(parents=True, exist_ok=True)
        for domain, rows in docs.items():
            with (root / split / f"{domain}.jsonl").open("w") as fh:
                fh.writelines(json.dumps(r) + "\n" for r in rows)
    (root / "manifest.json").write_text(json.dumps({"recipe": {}, "splits": {}}))
    return root
