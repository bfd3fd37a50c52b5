"""The agent's tools: the python sandbox's limits are real, the calculator is exact and bounded, search ranks by BM25.

The attacks on the sandbox are in test_agent_sandbox_attacks.py.
"""

from __future__ import annotations

import json
import math

import pytest

from workbench.agent.bwrap import SandboxUnavailable
from workbench.agent.calculator import calculate
from workbench.agent.sandbox import SandboxLimits, run_python, sandbox_available
from workbench.agent.search import BM25Index, Document, load_documents
from workbench.agent.tools import make_toolbox
from workbench.errors import WorkbenchError


def _sandbox_missing() -> str | None:
    try:
        sandbox_available()
        return None
    except SandboxUnavailable as err:
        return str(err)


needs_sandbox = pytest.mark.skipif(_sandbox_missing() is not None, reason=f"no bubblewrap: {_sandbox_missing()}")


@needs_sandbox
def test_python_runs_in_a_fresh_private_temp_dir():
    r = run_python("import os\nprint(os.getcwd())\nprint(sorted(os.listdir('.')))\nopen('left.txt', 'w').write('x')")
    assert r.stdout.splitlines() == ["/tmp", "[]"] and r.returncode == 0 and not r.timed_out
    assert run_python("import os\nprint(os.listdir('.'))").stdout == "[]\n"  # nothing carried over


@needs_sandbox
def test_python_time_and_memory_limits():
    slow = run_python("while True:\n    pass", SandboxLimits(timeout_s=1.5, cpu_s=5))
    assert slow.timed_out and "time limit" in slow.as_tool_result()
    big = run_python("x = bytearray(1 << 30)\nprint('allocated')", SandboxLimits(memory_mb=256))
    assert "allocated" not in big.stdout and big.as_tool_result() == "MemoryError"
    crash = run_python("import os\nos.abort()")
    assert crash.as_tool_result().startswith("Error: killed by signal 6")
    many = run_python("print('x' * 10000)", SandboxLimits(max_output_chars=100))
    assert len(many.stdout) < 200 and "output cut at 100 characters; 10001 bytes in all" in many.stdout


@needs_sandbox
def test_python_result_format_is_the_corpus_format():
    """What the mini K2 was trained on: the output verbatim, the exception's last line, ``(no output)``."""
    assert run_python("print(sum(range(10)))").as_tool_result() == "45\n"
    assert run_python("print('a')\n1/0").as_tool_result() == "a\nZeroDivisionError: division by zero"
    assert run_python("x = 1").as_tool_result() == "(no output)"
    assert run_python("import sys\nsys.exit(3)").as_tool_result() == "Error: exit status 3"
    assert run_python("print('\\ud800')").as_tool_result().startswith("UnicodeEncodeError")
    assert run_python("\ud800 = 1").as_tool_result().startswith("SyntaxError")  # lone surrogate in the source


def test_python_tool_never_raises_at_the_api():
    for code in (None, b"print(1)", 42):
        r = run_python(code)  # type: ignore[arg-type]
        assert r.returncode is None and r.as_tool_result().startswith("Error: ")


def test_calculator():
    assert calculate("3*(4+5) + 2**10") == "1051"
    assert calculate("7/2") == "3.5" and calculate("8/2") == "4"
    assert calculate("1/3") == "0.333333" and calculate("(3 + 4) * 12 / 5") == "16.8"  # the corpus's format
    assert calculate("sqrt(16) + pi") == str(round(4 + math.pi, 6))
    assert calculate("2**100") == str(2**100) and calculate("2**70") == str(2**70)
    assert calculate("log(8)") == str(round(math.log(8), 6))
    assert calculate("9**9**9").startswith("Error: the result of ** would have more than")
    assert calculate("1/0").startswith("Error:")
    assert calculate("__import__('os')").startswith("Error: unknown function")
    assert calculate("x.y").startswith("Error: unsupported")
    assert calculate("x").startswith("Error: unknown name 'x'")


def test_calculator_bounds_and_never_raises():
    """The review's cases: huge intermediates, huge results, deep nesting, non-text input."""
    assert calculate("((2**4096)**4096)**4096").startswith("Error: the result of ** would have more than 65536 bits")
    product = "*".join(["2**4096"] * 17)
    assert calculate(product).startswith("Error: the result of * would")
    assert calculate("10**4000") == "1.000000e+4000" and calculate("-(10**4000) * 7") == "-7.000000e+4000"
    assert calculate("factorial(3000)").endswith("e+9130")
    assert calculate("10**4000 - 1") == "9" * 4000 and calculate("10**3999") == "1" + "0" * 3999
    assert calculate("-" * 1999 + "1").startswith("Error: the expression is nested more than")
    assert calculate("(" * 150 + "1" + ")" * 150) == "1" and calculate("(" * 300 + "1" + ")" * 300).startswith("Error:")
    assert calculate("+".join(["1"] * 999)).startswith("Error: the expression is nested more than")
    assert calculate("+".join(["1"] * 150)) == "150"
    assert calculate("1" * 3000).startswith("Error: the expression is longer than")
    for bad in (None, 42, b"1+1", "1\x002", "1e308*10 - 1e308*10", "max()"):
        assert calculate(bad).startswith("Error") or calculate(bad) == "nan"  # type: ignore[arg-type]


def test_tool_declarations_are_the_corpus_declarations():
    """One table: the live agent declares calculator and python exactly as the mini K2 saw them in training."""
    from workbench.minik2.tools_runtime import TOOL_SPECS, calculator

    tb = make_toolbox(["search", "calculator"])
    decl = tb.declarations()
    assert [d["function"]["name"] for d in decl] == ["calculator", "search"]  # the trained order
    assert decl[0] == TOOL_SPECS[0]
    assert decl[1]["function"]["parameters"] == TOOL_SPECS[2]["function"]["parameters"]
    for expr in ("1/3", "2**70", "log(8)", "round(1234 / 7, 2)", "((2**4096)**4096)**4096"):
        assert calculator(expr) == calculate(expr) == tb.run("calculator", json.dumps({"expression": expr}))


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
    tb = make_toolbox(["calculator", "python", "search"] if _sandbox_missing() is None else ["calculator", "search"])
    assert next(d["function"]["name"] for d in tb.declarations()) == "calculator"
    assert tb.run("calculator", json.dumps({"expression": "6*7"})) == "42"
    assert tb.run("calculator", "{oops").startswith("Error: arguments are not valid JSON")
    assert tb.run("calculator", '{"expr": "1"}').startswith("Error: calculator needs")
    assert tb.run("browser", "{}").startswith("Error: unknown tool 'browser'")
    if _sandbox_missing() is None:
        assert tb.run("python", json.dumps({"code": "raise KeyError('k')"})) == "KeyError: 'k'"
    with pytest.raises(WorkbenchError, match="unknown tool"):
        make_toolbox(["python", "web"])
    with pytest.raises(WorkbenchError, match="not a folder"):
        make_toolbox(["search"], docs="/nonexistent")


@needs_sandbox
def test_live_tools_reproduce_the_shipped_tool_results(repo_root):
    """Every calculator and python result the mini K2's bundled tool loops hold comes back byte for byte."""
    tb = make_toolbox(["calculator", "python"])
    n = 0
    for line in (repo_root / "data" / "transcripts" / "tool_loops.jsonl").read_text().splitlines():
        calls: dict[str, dict] = {}
        for m in json.loads(line)["messages"]:
            for c in m.get("tool_calls") or []:
                calls[c["id"]] = c["function"]
            fn = calls.get(m.get("tool_call_id", ""))
            if m["role"] == "tool" and fn and fn["name"] in ("calculator", "python"):
                assert tb.run(fn["name"], fn["arguments"]) == m["content"], fn
                n += 1
    assert n >= 50
