"""Corpus recipe pieces: correct worked math, real tool results, stable held-out split, clear errors; eval stats."""

from __future__ import annotations

import json
import math
import random
import re
from fractions import Fraction

import numpy as np
import pytest

from workbench.minik2 import sources
from workbench.minik2.corpus import in_heldout
from workbench.minik2.episodes import episode, long_episode
from workbench.minik2.math_gen import GENERATORS, arithmetic, fractions_sum, linear_system, math_documents
from workbench.minik2.routing_stats import jensen_shannon, layer_jsd, load_ratio, unigram_entropy
from workbench.minik2.tools_runtime import DictionarySearch, calculator, python, run_tool


def test_math_is_reproducible_and_answers_are_right():
    assert list(math_documents(5, 3)) == list(math_documents(5, 3))
    assert list(math_documents(5, 3)) != list(math_documents(6, 3))
    rng = random.Random(0)
    for _ in range(50):
        doc = arithmetic(rng)
        expr = re.search(r"Compute (.*)\.\n", doc).group(1)
        assert doc.endswith(f"Answer: {eval(expr)}\n")
        doc = fractions_sum(rng)
        a, op, b = re.search(r"Compute (\S+) ([+-]) (\S+)\.", doc).groups()
        want = Fraction(a) + Fraction(b) if op == "+" else Fraction(a) - Fraction(b)
        assert doc.endswith(f"Answer: {want}\n".replace("/1\n", "\n"))
        doc = linear_system(rng)
        m = re.search(r"(-?\d+)x \+ (-?\d+)y = (-?\d+) and (-?\d+)x \+ (-?\d+)y = (-?\d+)", doc)
        a, b, e, c, d, f = map(int, m.groups())
        x, y = map(int, re.search(r"Answer: x = (-?\d+), y = (-?\d+)", doc).groups())
        assert (a * x + b * y, c * x + d * y) == (e, f)
    assert len(GENERATORS) >= 8


def test_tools_really_run():
    assert calculator("(3 + 4) * 12 / 5") == "16.8"
    assert calculator("2 ** 10") == "1024"
    assert calculator("__import__('os')").startswith("Error")
    assert python("print(sum(range(10)))") == "45\n"
    assert python("1/0").startswith("ZeroDivisionError")
    search = DictionarySearch([("a", "Abbey: a monastery."), ("b", "Boat: a small open vessel.")])
    assert search("boat").startswith("[1] Boat:")
    assert run_tool("nope", {}, search).startswith("Error")


def test_episode_results_are_what_the_tools_return():
    search = DictionarySearch([("a", "Abbey: a monastery."), ("b", "Boat: a small open vessel.")])
    rng = random.Random(3)
    eps = [episode(rng, search, f"e{i}") for i in range(20)] + [long_episode(rng, search, "long", 21)]
    for ep in eps:
        calls = {}
        for m in ep["messages"]:
            for c in m.get("tool_calls") or []:
                assert re.fullmatch(r"functions\.(calculator|python|search):\d+", c["id"])
                calls[c["id"]] = (c["function"]["name"], json.loads(c["function"]["arguments"]))
            if m["role"] == "tool":
                name, args = calls[m["tool_call_id"]]
                assert m["content"] == run_tool(name, args, search)
        ids = [int(i.rsplit(":", 1)[1]) for i in calls]
        assert ids == list(range(len(ids)))  # K2 numbers calls across the conversation
        assert ep["messages"][-1]["role"] == "assistant" and not ep["messages"][-1].get("tool_calls")
    assert sum(m["role"] == "tool" for m in eps[-1]["messages"]) >= 20


def test_heldout_split_is_a_stable_hash():
    keys = [f"stdlib:mod{i}.py" for i in range(2000)]
    held = [k for k in keys if in_heldout(k, 3)]
    assert held == [k for k in keys if in_heldout(k, 3)]
    assert 20 < len(held) < 110  # ~3 %


def test_missing_debian_packages_give_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(sources, "FORTUNE_DIR", tmp_path / "nofortunes")
    monkeypatch.setattr(sources, "GCIDE_DICT", tmp_path / "nogcide.dz")
    with pytest.raises(sources.MissingSourceError, match="apt-get install -y fortunes fortunes-min dict-gcide"):
        sources.ensure_debian_packages(install=False)


def test_code_chunks_come_from_the_stdlib():
    first = next(sources.code_chunks())
    assert first[0].startswith("stdlib:") and first[1].strip()
    assert not any("/test/" in str(p) for p in sources.stdlib_files()[:200])


def test_stats_definitions():
    p = np.array([1.0, 1.0, 0.0, 0.0])
    q = np.array([0.0, 0.0, 1.0, 1.0])
    assert jensen_shannon([p, p]) == pytest.approx(0.0)
    assert jensen_shannon([p, q]) == pytest.approx(math.log(2))  # disjoint supports: the maximum ln n
    usage = {"math": np.array([[5, 5, 0, 0]]), "code": np.array([[0, 0, 5, 5]])}
    assert layer_jsd(usage) == [pytest.approx(math.log(2))]
    assert unigram_entropy(np.arange(16)) == pytest.approx(math.log(16))
    assert load_ratio(np.array([[1, 3]])).tolist() == [[0.5, 1.5]]
