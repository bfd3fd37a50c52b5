"""The agent's tools: the python sandbox's limits are real, the calculator is exact, search ranks by BM25."""

from __future__ import annotations

import json
import math

import pytest

from workbench.agent.calculator import calculate
from workbench.agent.sandbox import SandboxLimits, run_python
from workbench.agent.search import BM25Index, Document, load_documents
from workbench.agent.tools import make_toolbox
from workbench.errors import WorkbenchError


def test_python_runs_in_a_fresh_temporary_directory():
    r = run_python("import os, sys\nprint(os.getcwd())\nprint(sorted(os.listdir('.')))\nprint(sys.flags.isolated)")
    cwd, listing, isolated = r.stdout.splitlines()
    assert cwd.startswith("/tmp") and "wb-python-" in cwd and listing == "[]" and isolated == "1"
    assert r.returncode == 0 and not r.timed_out
    assert run_python(f"import os; print(os.path.exists({cwd!r}))").stdout.strip() == "False"  # removed after


def test_python_has_no_network():
    r = run_python("import socket\nsocket.create_connection(('127.0.0.1', 9), timeout=1)")
    assert "network access is disabled" in r.as_tool_result()
    # below the Python guard: the raw socket module, where the network namespace is what stops it
    raw = run_python("import _socket\ns = _socket.socket()\ns.settimeout(1)\nprint(s.connect_ex(('127.0.0.1', 9)))")
    if r.network in ("netns", "userns+netns"):
        assert raw.stdout.strip() in ("101", "111")  # ENETUNREACH / ECONNREFUSED on a down loopback
    assert r.network in ("netns", "userns+netns", "python-guard")


def test_python_time_and_memory_limits():
    slow = run_python("while True:\n    pass", SandboxLimits(timeout_s=1.5, cpu_s=5))
    assert slow.timed_out and "time limit" in slow.as_tool_result()
    big = run_python("x = bytearray(1 << 30)\nprint('allocated')", SandboxLimits(memory_mb=256))
    assert "allocated" not in big.stdout and "MemoryError" in big.as_tool_result()
    crash = run_python("import os\nos.abort()")
    assert crash.as_tool_result().startswith("Error: killed by signal")
    many = run_python("print('x' * 10000)", SandboxLimits(max_output_chars=100))
    assert len(many.stdout) < 200 and "more characters cut" in many.stdout


def test_calculator():
    assert calculate("3*(4+5) + 2**10") == "1051"
    assert calculate("7/2") == "3.5" and calculate("8/2") == "4"
    assert calculate("sqrt(16) + pi") == repr(round(4 + 3.141592653589793, 10))
    assert calculate("2**100") == str(2**100)
    assert calculate("9**9**9").startswith("Error: exponent")
    assert calculate("1/0").startswith("Error:")
    assert calculate("__import__('os')").startswith("Error: unknown function")
    assert calculate("x.y").startswith("Error: unsupported")


def test_bm25_ranks_rare_terms_and_short_documents():
    docs = [
        Document("a", "the cat sat on the mat"),
        Document("b", "the dog sat on the log the end"),
        Document("c", "the cat and the dog and the cat again " + "with many more words " * 6),
    ]
    idx = BM25Index(docs)
    ranked = [d.title for _, d in idx.search("cat")]
    assert ranked == ["a", "c"]  # c has cat twice but is much longer

    def by_hand(doc_len: int, f: int, n_with: int, n: int = 3, k1: float = 1.5, b: float = 0.75) -> float:
        avgdl = sum(idx.lengths) / n
        idf = math.log(1 + (n - n_with + 0.5) / (n_with + 0.5))
        return idf * f * (k1 + 1) / (f + k1 * (1 - b + b * doc_len / avgdl))

    (s_a, _), (s_c, _) = idx.search("cat")
    assert s_a == pytest.approx(by_hand(7, 1, 2)) and s_c == pytest.approx(by_hand(idx.lengths[2], 2, 2))
    assert idx.search("the") and idx.search("zebra") == []
    assert idx("zebra") == "No results."
    bundled = BM25Index(load_documents())
    assert "2.827" in bundled("routed scaling factor")


def test_toolbox_errors_become_results():
    tb = make_toolbox(["calculator", "python", "search"])
    assert [d["function"]["name"] for d in tb.declarations()] == ["calculator", "python", "search"]
    assert tb.run("calculator", json.dumps({"expression": "6*7"})) == "42"
    assert tb.run("calculator", "{oops").startswith("Error: arguments are not valid JSON")
    assert tb.run("calculator", '{"expr": "1"}').startswith("Error: calculator needs")
    assert tb.run("browser", "{}").startswith("Error: unknown tool 'browser'")
    assert tb.run("python", json.dumps({"code": "raise KeyError('k')"})) == "Error: KeyError: 'k'"
    with pytest.raises(WorkbenchError, match="unknown tool"):
        make_toolbox(["python", "web"])
    with pytest.raises(WorkbenchError, match="not a folder"):
        make_toolbox(["search"], docs="/nonexistent")
