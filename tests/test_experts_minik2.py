"""Done-when of the expert pages (issue 13) on the bundled mini K2 and the bundled prompt suite.

Records data/prompts/suite.jsonl with `workbench record --model k2-mini` once per module, finds the most
math-specific expert (OLMoE domain specialisation, ranked by ``specific_experts``' lift), and checks that
its page is about math: most of its top contexts come from math prompts, math's share of its tokens is
above math's base rate, and its lift-ranked tokens differ from those of the most code-specific expert.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from workbench.analysis.specialization import specific_experts
from workbench.cli.app import app
from workbench.experts import expert_page
from workbench.store.io import open_store

pytestmark = pytest.mark.slow


def _most_specific(ds, domain: str) -> tuple[int, int]:
    table = specific_experts(ds, top=1)
    best = table[table["domain"] == domain].sort_values("lift", ascending=False).iloc[0]
    return int(best["layer"]), int(best["expert"])


def test_math_expert_page_is_about_math(suite_store: Path, tmp_path: Path) -> None:
    ds = open_store(suite_store)
    math_le, code_le = _most_specific(ds, "math"), _most_specific(ds, "code")
    assert math_le != code_le
    math = expert_page(ds, *math_le, top=20)
    code = expert_page(ds, *code_le, top=20)
    from_math = sum(c.domain == "math" for c in math.contexts)
    assert len(math.contexts) == 20 and from_math > len(math.contexts) / 2, [c.domain for c in math.contexts]
    share = {r.group: r for r in math.domain_shares}["math"]
    assert share.ratio > 2.0 and share.ratio_low > 1.0
    top_math = {t.token_id for t in math.lift[:10]}
    top_code = {t.token_id for t in code.lift[:10]}
    assert len(top_math & top_code) <= 2, ([t.text for t in math.lift[:10]], [t.text for t in code.lift[:10]])
    assert sum(c.domain == "code" for c in code.contexts) > len(code.contexts) / 2
    # the faces: terminal summary and a self-contained HTML page
    out = tmp_path / "math.html"
    layer, expert = math_le
    result = CliRunner().invoke(app, ["expert", str(suite_store), f"{layer}:{expert}", "--export", str(out)])
    assert result.exit_code == 0, result.output
    assert f"Expert L{layer}:E{expert}" in result.output and out.stat().st_size > 10_000
