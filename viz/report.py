"""The comparison report: one self-contained HTML file (plotly.js inlined once) plus CSV and JSON numbers.

``write_report(cmp, out_dir)`` writes, atomically (into a temporary folder renamed at the end, so a
failure never leaves half a report):

- ``report.html``: summary tables and the figures of ``figures_compare`` (works offline, no CDN);
- ``summary.json``: the small summary (``Comparison.summary()``);
- ``per_layer.csv``, ``experts.csv``, ``divergence.csv``, ``specific_experts.csv``, ``transitions.csv``.
"""

from __future__ import annotations

import html
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from workbench.viz import figures_compare as F

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1200px;
       color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
p.note { color: #555; font-size: 0.9em; }
"""


def figures(cmp: Any) -> dict[str, go.Figure]:
    """The report's figures by id."""
    return {
        "usage": F.usage_heatmap(cmp),
        "divergence": F.divergence_figure(cmp),
        "specialization": F.specialization_bars(cmp),
        "agreement": F.agreement_figure(cmp),
        "entropy": F.entropy_transitions_figure(cmp),
    }


def _table(df: pd.DataFrame, digits: int = 4) -> str:
    if df.empty:
        return "<p class='note'>(none)</p>"
    return df.to_html(index=False, float_format=lambda x: f"{x:.{digits}g}", border=0, escape=True)


def _groups_table(cmp: Any) -> pd.DataFrame:
    s = cmp.summary()
    rows = [{cmp.by: g, **v} for g, v in s["groups"].items()]
    return pd.DataFrame(rows)


def _divergence_summary(cmp: Any) -> pd.DataFrame:
    s = cmp.summary().get("divergence", {})
    return pd.DataFrame([{"pair": p, **v} for p, v in s.items()])


_SECTIONS = (
    ("usage", "Expert usage per layer", "Relative load = count ÷ (N·k/E) (DeepSeek-V3, arXiv:2412.19437, App. C)."),
    (
        "divergence",
        "Domain divergence per layer",
        "JSD between the groups' expert-usage distributions in bits (0 = same usage, 1 = disjoint); "
        "shaded: percentile bootstrap interval over sequences; dotted: mean JSD under shuffled labels "
        "(what finite samples give with no real difference).",
    ),
    (
        "specialization",
        "Domain specialisation",
        "OLMoE (arXiv:2409.02060, §5): DS(E, D) = N_k(E, D) / N_D; dashed: uniform routing k/E.",
    ),
    (
        "agreement",
        "Consecutive-token agreement",
        "Mixtral (arXiv:2401.04088, §5): share of consecutive tokens (same sequence) with the same first "
        "expert / any shared top-k expert; dashed: random routing 1/E and 1 − C(E−k,k)/C(E,k).",
    ),
    (
        "entropy",
        "Routing entropy and transitions",
        "Load entropy ÷ log2 E per layer (1 = perfectly balanced); share of P(e' at l+1 | e at l) held by "
        "the top 20% next-layer experts (inter-layer affinity, arXiv:2401.08383).",
    ),
)


def render_html(cmp: Any, *, title: str | None = None) -> str:
    """The report as one HTML string with plotly.js inlined (no network needed to view it)."""
    figs = figures(cmp)
    store = cmp.store
    title = title or f"Expert usage by {cmp.by}: {store.get('model', '?')}"
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<p class='note'>"
        + html.escape(
            f"{store.get('tokens_selected', 0):,} of {store.get('tokens_total', 0):,} tokens; "
            f"{len(store.get('layers', []))} MoE layers; top-{store.get('top_k')} of {store.get('n_experts')} "
            f"experts; gate weights: {'yes' if store.get('has_gate_weights') else 'no (ids only)'}. "
            "Every number is defined in docs/metrics.md."
        )
        + "</p>",
        f"<h2>Groups</h2>{_table(_groups_table(cmp))}",
        f"<h2>Divergence summary</h2>{_table(_divergence_summary(cmp))}",
    ]
    first = True
    for key, heading, note in _SECTIONS:
        fig_html = pio.to_html(figs[key], include_plotlyjs=bool(first), full_html=False, div_id=f"fig-{key}")
        first = False
        parts.append(f"<h2>{html.escape(heading)}</h2><p class='note'>{html.escape(note)}</p>{fig_html}")
    spec = cmp.specific
    if spec is not None and not spec.empty:
        best = spec[spec["rank"] == 1].sort_values("lift", ascending=False).head(40)
        parts.append(f"<h2>Most specific expert per layer and {html.escape(cmp.by)} (top 40 by lift)</h2>")
        parts.append(_table(best))
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(cmp: Any, out_dir: str | Path, *, title: str | None = None) -> dict[str, Path]:
    """Write report.html, summary.json and the CSVs into ``out_dir`` (created); returns the paths by name."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".report-", dir=out.parent))
    try:
        tables = {
            "per_layer.csv": cmp.per_layer(),
            "experts.csv": cmp.expert_table(),
            "divergence.csv": cmp.divergence_table(),
            "specific_experts.csv": cmp.specific,
            "transitions.csv": cmp.transitions_table(),
        }
        for name, df in tables.items():
            df.to_csv(tmp / name, index=False)
        (tmp / "summary.json").write_text(json.dumps(cmp.summary(), indent=2, default=float))
        (tmp / "report.html").write_text(render_html(cmp, title=title), encoding="utf-8")
        out.mkdir(parents=True, exist_ok=True)
        paths = {}
        for f in tmp.iterdir():
            target = out / f.name
            f.replace(target)
            paths[f.name] = target
        return paths
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
