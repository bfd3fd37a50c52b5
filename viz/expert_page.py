"""A self-contained HTML page for one expert (``workbench expert STORE L:E --export page.html``).

Renders an ``ExpertPage`` as one HTML file with inline CSS and inline SVG (no script, no CDN, no
server): it opens from file:// anywhere. Sections mirror the data object: top contexts, lift-ranked
and frequent tokens, domain and segment shares against the base rate (bars with bootstrap intervals),
gate-weight and router-rank histograms, and neighbouring experts.
"""

from __future__ import annotations

import html
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from workbench.experts.logit_effect import LogitEffect
from workbench.experts.page import ExpertPage
from workbench.experts.shares import GroupShare

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1100px;color:#222;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:26px 0 6px;border-bottom:1px solid #ddd}
.sub{color:#555}.note{background:#fff6d6;border-left:4px solid #e0b400;padding:4px 10px;margin:8px 0}
table{border-collapse:collapse;font-size:13px}td,th{padding:2px 8px;text-align:left;vertical-align:top}
th{border-bottom:1px solid #bbb;font-weight:600}tr:nth-child(even) td{background:#f7f7f7}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
.ctx{font-family:ui-monospace,monospace;white-space:pre-wrap;word-break:break-all}
.hit{background:#ffd54f;border-radius:3px;padding:0 2px;font-weight:700}
.tok{font-family:ui-monospace,monospace;background:#eef;padding:0 3px;border-radius:3px}
.cols{display:flex;gap:32px;flex-wrap:wrap}.cols>div{flex:1;min-width:300px}
.key{font-size:12px;color:#555}.sw{display:inline-block;width:12px;height:10px;margin:0 4px 0 10px}
svg text{font:11px system-ui,sans-serif;fill:#333}
"""


def _e(x: object) -> str:
    return html.escape(str(x))


def _share_bars(rows: list[GroupShare], what: str) -> str:
    """Horizontal bars: the expert's share (blue, with its interval) against the base rate (grey)."""
    if not rows:
        return "<p>no tokens</p>"
    h, left, width = 22, 90, 240
    top = max(max(r.share_high if np.isfinite(r.share_high) else r.share, r.share, r.base) for r in rows)
    scale = width / max(top, 1e-9)
    vw, vh = left + width + 170, len(rows) * h + 34
    parts = [f'<svg viewBox="0 0 {vw} {vh}" width="{vw}" height="{vh}" style="max-width:100%;height:auto" '
             f'role="img" aria-label="share by {_e(what)}">']  # fmt: skip
    for i, r in enumerate(rows):
        y = i * h + 4
        parts.append(f'<text x="{left - 6}" y="{y + 13}" text-anchor="end">{_e(r.group)}</text>')
        parts.append(f'<rect x="{left}" y="{y + 1}" width="{r.base * scale:.1f}" height="7" fill="#bbb"/>')
        parts.append(f'<rect x="{left}" y="{y + 8}" width="{r.share * scale:.1f}" height="9" fill="#3b6fd8"/>')
        if np.isfinite(r.share_low):
            x0, x1 = left + r.share_low * scale, left + r.share_high * scale
            parts.append(f'<line x1="{x0:.1f}" x2="{x1:.1f}" y1="{y + 12.5}" y2="{y + 12.5}" stroke="#111"/>')
        ratio = f"×{r.ratio:.2f}" if np.isfinite(r.ratio) else ""
        parts.append(f'<text x="{left + width + 6}" y="{y + 13}">{r.share:.1%} vs {r.base:.1%} {ratio}</text>')
    y = len(rows) * h + 8
    parts.append(f'<line x1="{left}" x2="{left + width}" y1="{y}" y2="{y}" stroke="#999"/>')
    parts.append(f'<text x="{left}" y="{y + 14}">0</text>')
    parts.append(f'<text x="{left + width}" y="{y + 14}" text-anchor="end">{top:.0%} of tokens</text></svg>')
    key = ('<div class="key"><span class="sw" style="background:#3b6fd8"></span>share of this expert\'s tokens '
           '(line: 95% bootstrap interval over sequences)<span class="sw" style="background:#bbb"></span>'
           'base rate in the selection; ×: share / base</div>')  # fmt: skip
    return "".join(parts) + key


def _histogram(counts: np.ndarray, labels: list[str], xlabel: str, title: str) -> str:
    """Vertical bar chart of ``counts`` with x tick ``labels`` and axis titles, as inline SVG."""
    if counts.size == 0:
        return f"<p>{_e(title)}: not available (this store has no gate weights)</p>"
    w, h, left, bottom = 420, 180, 48, 40
    bw = w / counts.size
    top = max(int(counts.max()), 1)
    vw, vh = left + w + 10, h + bottom + 24
    parts = [f'<svg viewBox="0 0 {vw} {vh}" width="{vw}" height="{vh}" style="max-width:100%;height:auto" '
             f'role="img" aria-label="{_e(title)}">',
             f'<text x="{left + w / 2}" y="14" text-anchor="middle" font-weight="600">{_e(title)}</text>']  # fmt: skip
    for i, c in enumerate(counts.tolist()):
        bh = c / top * h
        parts.append(f'<rect x="{left + i * bw + 1:.1f}" y="{20 + h - bh:.1f}" width="{max(bw - 2, 1):.1f}" '
                     f'height="{bh:.1f}" fill="#3b6fd8"><title>{_e(labels[i])}: {c}</title></rect>')  # fmt: skip
    step = max(1, counts.size // 8)
    for i in range(0, counts.size, step):
        x = left + (i + 0.5) * bw
        parts.append(f'<text x="{x:.1f}" y="{20 + h + 14}" text-anchor="middle">{_e(labels[i])}</text>')
    parts.append(f'<line x1="{left}" x2="{left}" y1="20" y2="{20 + h}" stroke="#999"/>')
    parts.append(f'<line x1="{left}" x2="{left + w}" y1="{20 + h}" y2="{20 + h}" stroke="#999"/>')
    parts.append(f'<text x="{left - 4}" y="24" text-anchor="end">{top}</text>')
    parts.append(f'<text x="{left - 4}" y="{20 + h}" text-anchor="end">0</text>')
    mid = 20 + h / 2
    parts.append(f'<text x="12" y="{mid}" transform="rotate(-90 12 {mid})" text-anchor="middle">tokens</text>')
    parts.append(f'<text x="{left + w / 2}" y="{20 + h + 32}" text-anchor="middle">{_e(xlabel)}</text></svg>')
    return "".join(parts)


def _table(head: list[str], rows: list[list[Any]], num: set[int], empty: str = "none") -> str:
    if not rows:
        return f"<p class='sub'>{_e(empty)}</p>"
    th = "".join(f'<th class="{"num" if i in num else ""}">{_e(h)}</th>' for i, h in enumerate(head))
    body = "".join(
        "<tr>" + "".join(f'<td class="{"num" if i in num else ""}">{c}</td>' for i, c in enumerate(r)) + "</tr>"
        for r in rows
    )
    return f"<table><tr>{th}</tr>{body}</table>"


def page_html(page: ExpertPage) -> str:
    """The page as one self-contained HTML document (string)."""
    p = page
    out = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Expert {_e(p.title)} — {_e(p.model)}"
           f"</title><style>{_CSS}</style></head><body>",
           f"<h1>Expert {p.expert} of MoE layer {p.layer} <span class='sub'>({_e(p.model)})</span></h1>",
           f"<p class='sub'>Selection: {_e(p.selection)} · {p.n_routed:,} of {p.n_selected:,} selected tokens routed "
           f"here ({p.load:.2%}; uniform routing would give top-k/experts = {p.top_k}/{p.n_experts} = "
           f"{p.top_k / p.n_experts:.2%})</p>"]  # fmt: skip
    out += [f"<div class='note'>{_e(n)}</div>" for n in p.notes]
    out.append(f"<h2>Top contexts</h2><p class='sub'>Ordered by {_e(p.context_order)}; the routed token is "
               "highlighted; ↵ marks a newline. Repeats of the same token in the same surrounding tokens are "
               "shown once (copies).</p>")  # fmt: skip
    rows = [[f"{c.gate_weight:.3f}" if p.has_gate_weights else "–", c.rank,
             f"<span class='ctx'>{_e(c.before)}<span class='hit'>{_e(c.token)}</span>{_e(c.after)}</span>",
             _e(c.sequence), _e(c.domain), _e(c.segment), c.step if c.step >= 0 else "–", c.copies]
            for c in p.contexts]  # fmt: skip
    rank_col = "rank" if p.rank_ordered else "slot"
    out.append(_table(["gate weight", rank_col, "context", "sequence", "domain", "segment", "step", "copies"], rows,
                      {0, 1, 6, 7}))  # fmt: skip

    def tok_rows(items: list) -> list[list[Any]]:
        return [[f"<span class='tok'>{_e(t.text)}</span>", t.count, f"{t.frequency:.2%}", t.base_count,
                 f"{t.specialization:.2f}", f"{t.lift:.2f}"] for t in items]  # fmt: skip

    NUM = {1, 2, 3, 4, 5}
    head = ["token", "here", "freq. here", "in selection", "VS = here/sel.", "lift"]
    out.append("<h2>Tokens special to this expert</h2><p class='sub'>Lift = P(token | routed here) / "
               "P(token | selection), add-one smoothed; VS = share of the token's occurrences routed here "
               "(OLMoE vocabulary specialisation). ␣ is a space, ↵ a newline.</p><div class='cols'>"
               f"<div><b>By lift</b>{_table(head, tok_rows(p.lift), NUM)}</div>"
               f"<div><b>Most frequent</b>{_table(head, tok_rows(p.frequent), NUM)}</div></div>")  # fmt: skip
    out.append("<h2>Where its tokens come from</h2><div class='cols'>"
               f"<div><b>By domain</b>{_share_bars(p.domain_shares, 'domain')}</div>"
               f"<div><b>By segment kind</b>{_share_bars(p.segment_shares, 'segment')}</div></div>")  # fmt: skip
    edges = p.weight_edges
    wl = [f"{(edges[i] + edges[i + 1]) / 2:.2f}" for i in range(edges.size - 1)]
    weights = _histogram(p.weight_hist, wl, "gate weight", "Gate weight of its routed tokens")
    rl = [str(i + 1) for i in range(p.rank_hist.size)]
    ranks = (
        _histogram(p.rank_hist, rl, "router rank (1 = first choice)", "Router rank of this expert")
        if p.rank_ordered
        else _histogram(p.rank_hist, rl, "top-k slot (unordered capture: not a rank)", "Top-k slot of this expert")
    )
    out.append(f"<h2>How strongly it is chosen</h2><div class='cols'><div>{weights}</div><div>{ranks}</div></div>")

    def nb_rows(items: list) -> list[list[Any]]:
        return [[f"L{n.layer}:E{n.expert}", n.count, f"{n.share:.1%}", f"{n.lift:.2f}"] for n in items]

    first, last = "none: this is the first MoE layer", "none: this is the last MoE layer"
    nh = ["expert", "tokens", "share of this expert's tokens", "lift vs its load"]
    out.append("<h2>Neighbouring experts</h2><p class='sub'>Experts on the same tokens: in the same layer "
               "(co-activated), the layer before (predecessors) and after (successors).</p><div class='cols'>"
               f"<div><b>Co-activated (layer {p.layer})</b>{_table(nh, nb_rows(p.co_activated), {1, 2, 3})}</div>"
               f"<div><b>Predecessors</b>{_table(nh, nb_rows(p.predecessors), {1, 2, 3}, first)}</div>"
               f"<div><b>Successors</b>{_table(nh, nb_rows(p.successors), {1, 2, 3}, last)}</div></div>")  # fmt: skip
    if p.logit_effect is not None:
        out.append(_logit_effect_html(p.logit_effect))
    out.append("</body></html>")
    return "".join(out)


def _logit_effect_html(le: LogitEffect) -> str:
    """The logit-effect section: promoted / suppressed tokens (mean DLA) and the masking Δloss."""

    def rows(items: list) -> list[list[Any]]:
        return [[f"<span class='tok'>{_e(t.text)}</span>", f"{t.logit:+.3f}"] for t in items]

    notes = "".join(f"<div class='note'>{_e(n)}</div>" for n in le.notes)
    return (
        "<h2>Logit effect</h2><p class='sub'>Direct logit attribution: gate weight × the expert's output, "
        "through the final norm (its scale frozen at each token's final residual) and the unembedding, "
        f"averaged over {le.n_tokens} of its {le.n_routed} routed tokens (highest gate weights, cap "
        f"{le.max_tokens}); logit units. Counts only the direct path.</p><div class='cols'>"
        f"<div><b>Promoted</b>{_table(['token', 'mean logit'], rows(le.promoted), {1})}</div>"
        f"<div><b>Suppressed</b>{_table(['token', 'mean logit'], rows(le.suppressed), {1})}</div></div>"
        f"<p>Masking it (its tokens rerouted to their next-best expert): next-token loss {le.base_loss:.3f} → "
        f"{le.base_loss + le.delta_loss:.3f} nats, <b>Δ {le.delta_loss:+.4f}</b> at {le.n_loss} routed positions "
        f"with a next token.</p>{notes}"
    )


def write_page_html(page: ExpertPage, path: str | Path) -> Path:
    """Write ``page_html(page)`` to ``path`` atomically (a temporary file renamed into place)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=".expert-", suffix=".html", dir=path.parent)
    try:
        os.chmod(tmp, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(page_html(page))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# The page's face in Jupyter: the view layer gives the data object its HTML (the same document
# ``--export`` writes), as xarray's accessors are registered from above, so workbench.experts never
# imports viz. ``workbench.expert_page``, ``ds.routing.expert`` and ``workbench expert`` import this module.
ExpertPage._repr_html_ = page_html  # type: ignore[attr-defined]
