"""The comparison report: one self-contained HTML file (plotly.js inlined once) plus CSV and JSON numbers.

``write_report(cmp, out_dir)`` writes, atomically (into a temporary folder whose files are renamed into
place at the end, so a failure never leaves half a report), and never into a routing store:

- ``report.html``: summary tables (plain-language column labels, ``LABELS``) and the figures of
  ``figures_compare``, as one page of ``html_page`` (plotly.js inlined once, compact data; works offline,
  no CDN; a K2-shaped report is ~0.9 MB);
- ``summary.json``: the small summary (``Comparison.summary()``);
- ``per_layer.csv``, ``experts.csv``, ``divergence.csv``, ``specific_experts.csv``, ``transitions.csv``.
"""

from __future__ import annotations

import contextlib
import html
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from workbench.viz import figures_compare as F
from workbench.viz.html_page import page

from workbench.outputs import OutputPathError, check_output_dir

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


# Column names of the CSVs and summary.json, as a reader of the report sees them (units and baselines in
# the section notes). A column not listed keeps its name.
LABELS = {
    "tokens": "tokens",
    "sequences": "sequences",
    "mean_load_entropy_normalized": "routing entropy ÷ log₂E (mean over layers; 1 = balanced)",
    "mean_agreement_first_choice": "same first expert as the previous token (mean over layers)",
    "mean_agreement_any_topk": "shares a top-k expert with the previous token (mean over layers)",
    "pair": "pair",
    "mean_jsd": "mean JSD (bits)",
    "max_jsd": "largest JSD (bits)",
    "max_jsd_layer": "at layer",
    "mean_null_jsd": "mean JSD with shuffled labels (bits)",
    "p_value_overall": "permutation p-value",
    "layer": "layer",
    "expert": "expert",
    "rank": "rank in its layer",
    "ds": "DS(E, D)",
    "ds_rest": "DS(E, other groups)",
    "lift": "lift",
    "share_of_expert": "share of the expert's tokens from D",
}


def _table(df: pd.DataFrame, digits: int = 4) -> str:
    if df.empty:
        return "<p class='note'>(none)</p>"
    shown = df.rename(columns=LABELS)
    return shown.to_html(index=False, float_format=lambda x: f"{x:.{digits}g}", border=0, escape=True, na_rep="n/a")


def _groups_table(cmp: Any) -> pd.DataFrame:
    s = cmp.summary()
    rows = [{cmp.by: g, **v} for g, v in s["groups"].items()]
    return pd.DataFrame(rows)


MAX_PAIRS_LISTED = 40  # divergence pairs in the HTML summary table; divergence.csv holds every pair


def _divergence_summary(cmp: Any) -> tuple[pd.DataFrame, str]:
    """The per-pair summary (the most divergent ``MAX_PAIRS_LISTED`` when there are more) and a note."""
    s = cmp.summary().get("divergence", {})
    df = pd.DataFrame([{"pair": p, **v} for p, v in s.items()])
    if len(df) <= MAX_PAIRS_LISTED:
        return df, ""
    note = f"The {MAX_PAIRS_LISTED} most divergent of {len(df)} pairs; divergence.csv and summary.json hold all."
    return df.sort_values("mean_jsd", ascending=False).head(MAX_PAIRS_LISTED), note


_SECTIONS = (
    (
        "usage",
        "Expert usage per layer",
        "Relative load = count ÷ (N·k/E) (DeepSeek-V3, arXiv:2412.19437, App. C): 1 is the load of perfectly "
        "balanced routing, 0 an expert the group never uses. Expert ids carry no meaning, so each layer's "
        "experts are clustered by the group that uses them most and sorted by load within each cluster; "
        "the columns are the same in every panel, so a group's own experts show as its bright block.",
    ),
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


MAX_SPECIFIC = 40  # rows of the "most specific experts" table, shared evenly by the groups; the CSV holds all


def _specific_section(cmp: Any) -> str:
    """The most specific experts by lift over all groups and layers, with a heading that says how many."""
    spec = cmp.specific
    if spec is None or spec.empty:
        return ""
    by = html.escape(cmp.by)
    n_groups = int(spec[cmp.by].nunique())
    per_group = max(1, MAX_SPECIFIC // max(n_groups, 1))
    ranked = spec.sort_values([cmp.by, "lift", "tokens"], ascending=[True, False, False], kind="stable")
    best = ranked.groupby(cmp.by, sort=False).head(per_group)
    per = int(spec["rank"].max())
    shortfall = [html.escape(str(g)) for g, n in best.groupby(cmp.by).size().items() if n < per_group]
    if n_groups > MAX_SPECIFIC:  # one per group would be too many rows: the groups with the highest lift
        best = best.sort_values("lift", ascending=False, kind="stable").head(MAX_SPECIFIC)
        heading = f"The most specific expert of the {len(best)} of {n_groups} {by}s with the highest lift"
    else:
        heading = f"The {per_group} most specific experts of each {by}, by lift ({len(best)} rows)"
        if shortfall:
            heading += f"; fewer for {', '.join(shortfall)}, which have fewer candidates"
    note = (
        f"Candidates: the {per} experts of highest lift in each layer for each {cmp.by} ({len(spec)} in all, every one "
        f"in specific_experts.csv). Lift = DS(E, D) ÷ DS(E, other groups), smoothed: how many times more often "
        f"the {cmp.by}'s tokens are routed to the expert than the other groups' tokens (OLMoE, arXiv:2409.02060, §5). "
        "DS(E, D) = share of D's tokens routed to E."
    )
    return f"<h2>{heading}</h2><p class='note'>{html.escape(note)}</p>{_table(best)}"


def _groups_note(cmp: Any) -> str:
    """What random routing would give for the columns of the groups table."""
    base = cmp.summary()["baselines"]["agreement"]
    first = base.get("first_choice")
    first_text = f" = {first:.3g}" if first is not None else ""
    return (
        f"Random routing would give: routing entropy 1; same first expert 1/E{first_text}; "
        f"shares a top-k expert 1 − C(E−k,k)/C(E,k) = {base['any_topk']:.3g}."
    )


def _pairs_readable(df: pd.DataFrame) -> pd.DataFrame:
    if "pair" in df:
        df = df.assign(pair=[p.replace("|", " vs ") if p.count("|") == 1 else p for p in df["pair"]])
    return df


def render_html(cmp: Any, *, title: str | None = None) -> str:
    """The report as one HTML string: plotly.js inlined once (``html_page``), no network needed to view it."""
    figs = figures(cmp)
    store = cmp.store
    title = title or f"Expert usage by {cmp.by}: {store.get('model', '?')}"
    parts = [
        f"<h1>{html.escape(title)}</h1>",
        "<p class='note'>"
        + html.escape(
            f"{store.get('tokens_selected', 0):,} of {store.get('tokens_total', 0):,} tokens; "
            f"{len(store.get('layers', []))} MoE layers; top-{store.get('top_k')} of {store.get('n_experts')} "
            f"experts; gate weights: {'yes' if store.get('has_gate_weights') else 'no (ids only)'}. "
            "Each section says what its numbers mean; docs/metrics.md has every formula with its source. "
            "Hover any figure for exact values; the CSV and JSON files beside this page hold all of them."
        )
        + "</p>",
        f"<h2>Groups</h2>{_table(_groups_table(cmp))}<p class='note'>{html.escape(_groups_note(cmp))}</p>",
    ]
    div, div_note = _divergence_summary(cmp)
    note_html = f"<p class='note'>{html.escape(div_note)}</p>" if div_note else ""
    parts.append(f"<h2>Divergence summary</h2>{note_html}{_table(_pairs_readable(div))}")
    for key, heading, note in _SECTIONS:
        parts.append(f"<h2>{html.escape(heading)}</h2><p class='note'>{html.escape(note)}</p>{{{{figure:fig-{key}}}}}")
    parts.append(_specific_section(cmp))
    return page(title, "\n".join(parts), [(f"fig-{key}", figs[key]) for key, _, _ in _SECTIONS], css=_CSS)


def _make_folder(out: Path) -> list[Path]:
    """Create ``out`` and its missing parents; returns the folders created (outermost first)."""
    missing = [p for p in (out, *out.parents) if not p.exists()][::-1]
    for folder in missing:
        folder.mkdir()
    return missing


def write_report(cmp: Any, out_dir: str | Path, *, title: str | None = None, flag: str = "out_dir") -> dict[str, Path]:
    """Write report.html, summary.json and the CSVs into ``out_dir``; returns the paths by name.

    ``out_dir`` is checked first (``workbench.outputs.check_output_dir``: writable, not under /proc, /sys or
    /dev, not inside a routing store) and created with its parents if missing. Everything is rendered into
    a temporary folder inside it, then each file is renamed into place: a failure at any point leaves the
    folder as it was (files of an earlier report intact, folders this call created removed) and raises one
    ``OutputPathError`` line. ``flag`` names ``out_dir`` in messages (the CLI passes ``--out``).
    """
    out = check_output_dir(out_dir, flag=flag, probe=False)
    created: list[Path] = []
    tmp: Path | None = None
    try:
        created = _make_folder(out)
        tmp = Path(tempfile.mkdtemp(prefix=".report-", dir=out))
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
        paths = {}
        for f in sorted(tmp.iterdir()):
            f.replace(out / f.name)
            paths[f.name] = out / f.name
        return paths
    except OSError as err:
        for folder in reversed(created):
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise OutputPathError(f"cannot write the report into {flag} {out_dir}: {err.strerror or err}") from None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
