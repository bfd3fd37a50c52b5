"""The overview as files: a self-contained HTML page where clicking a supernode lists its experts, and static figures.

``supernode_panel`` renders one supernode's zoom (its flows in and out, and its experts with tokens, load
and top tokens) as an HTML fragment; the HTML page embeds one fragment per supernode and shows it when its
block is clicked, and the widget (``workbench.viz.widgets.overview``) shows the same fragment for the
supernode picked in its controls. The page holds plotly.js once (inline, so it opens offline) and
the figure; nothing is fetched. It is an ``html_page`` page: the smallest plotly.js bundle that draws a
Sankey (the vendored ``sankey`` partial bundle, 1.28 MB instead of the full 4.8 MB) and the figure and
panels travel gzipped (``html_page.packed_scripts``), so a K2-shaped overview (60 layers × 8 supernodes)
is about 1 MB instead of 6.7 MB.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
from workbench.viz.export import export_figure
from workbench.viz.html_page import packed_scripts, plotly_bundle
from workbench.viz.overview import overview_figure, shown_tokens

from workbench.graph.export import FIGURE_FORMATS, ExportError, export_format
from workbench.graph.supernodes import Supernodes
from workbench.outputs import atomic_path, check_output_file

PANEL_ROWS = 12  # experts listed with their numbers; the rest in one line


def _flows_text(sn: Supernodes, i: int, g: int, incoming: bool) -> str:
    """``from L11: S2 (E17) 61% · S0 (E3) 30%`` — the largest shares of a supernode's inflow (or outflow),
    each supernode named by its heaviest expert as its block is labelled in the figure."""
    if (incoming and i == 0) or (not incoming and i == sn.layers.size - 1):
        return ""
    f = sn.flows[i - 1][:, g] if incoming else sn.flows[i][g, :]
    total = max(int(f.sum()), 1)
    order = [int(s) for s in np.argsort(-f, kind="stable") if f[s] > 0][:4]
    j = i - 1 if incoming else i + 1
    parts = " · ".join(f"S{s} ({sn.label(j, s, 1).split()[0]}) {f[s] / total:.0%}" for s in order)
    other = sn.layers[j]
    return f"{'from' if incoming else 'to'} L{other}: {parts}"


def supernode_panel(
    sn: Supernodes, layer_pos: int, group: int, rows: int = PANEL_ROWS, shown: dict[str, str] | None = None
) -> str:
    """One supernode's zoom as an HTML fragment (all text escaped): header, flows, a table of its experts.

    ``shown`` maps top-token strings to their display form (``shown_tokens(sn)``; computed if None)."""
    shown = shown if shown is not None else shown_tokens(sn)
    i, g = layer_pos, group
    members = sn.members(i, g)
    tokens = int(sn.expert_tokens[i, members].sum())
    load = tokens / max(sn.n_tokens, 1)
    head = (
        f"<h3>L{sn.layers[i]} · S{g} (the block labelled E{members[0]}): {members.size} experts, "
        f"load {load:.2f} of k = {sn.top_k} "
        f"({load / sn.top_k:.0%} of the layer's routing)</h3>"
    )
    lines = [t for t in (_flows_text(sn, i, g, True), _flows_text(sn, i, g, False)) if t]
    if len(sn.domains) > 1:
        lift = sn.domain_lift()[:, i, g]
        lines.append("lift: " + " · ".join(f"{html.escape(d)} ×{lift[j]:.2f}" for j, d in enumerate(sn.domains)))
    body = "".join(f"<p>{t}</p>" for t in lines)
    sample = "" if sn.sample_tokens >= sn.n_tokens else f" (of {sn.sample_tokens:,} sampled tokens)"
    table = [
        "<table><thead><tr><th>expert</th><th>tokens</th><th>load</th><th>share</th>"
        f"<th>top tokens{sample}</th></tr></thead><tbody>"
    ]
    for e in members[:rows]:
        n = int(sn.expert_tokens[i, e])
        top = " · ".join(f"{html.escape(shown.get(t, t))} ({c})" for t, c in sn.top_tokens.get((i, int(e)), []))
        table.append(
            f"<tr><td>E{e}</td><td>{n:,}</td><td>{n / max(sn.n_tokens, 1):.3f}</td>"
            f"<td>{n / max(tokens, 1):.0%}</td><td>{top}</td></tr>"
        )
    table.append("</tbody></table>")
    rest = members[rows:]
    more = (
        f"<p class='more'>{rest.size} more: " + ", ".join(f"E{e} ({sn.expert_tokens[i, e]:,})" for e in rest) + "</p>"
        if rest.size
        else ""
    )
    return f"<div class='sn' data-layer='{sn.layers[i]}' data-group='{g}'>{head}{body}{''.join(table)}{more}</div>"


_STYLE = """body{font-family:system-ui,sans-serif;margin:12px;color:#222}
#panel{border-top:1px solid #ccc;margin-top:8px;padding-top:4px;font-size:13px}
#panel h3{font-size:15px;margin:6px 0}#panel p{margin:3px 0}
#panel table{border-collapse:collapse;margin-top:6px}#panel td,#panel th{padding:2px 8px;text-align:left;
border-bottom:1px solid #eee}#panel td:nth-child(2),#panel td:nth-child(3),#panel td:nth-child(4){text-align:right}
#panel .more{color:#555;max-width:1400px}"""

# %(panels)s: {"layer_pos,group": panel HTML}; %(figure)s: the figure's plotly JSON
_SCRIPT = """(function(){
const panels = %(panels)s;
const f = %(figure)s;
const plot = document.getElementById('wb-overview');
const drawn = Plotly.newPlot(plot, f.data, f.layout, {responsive: false, displaylogo: false});
window.workbenchFigures = {'wb-overview': drawn};
const panel = document.getElementById('panel');
function show(key){
  if(!panels[key]) return;
  panel.innerHTML = panels[key]; panel.dataset.key = key;
  panel.scrollIntoView({block: 'nearest'});  // the panel sits below a tall figure: bring it into view
}
plot.on('plotly_click', function(ev){
  const pt = ev && ev.points && ev.points[0];
  if(!pt || pt.source !== undefined || !pt.customdata) return;  // a ribbon, not a block
  show(pt.customdata[0] + ',' + pt.customdata[1]);
});
})();"""


def overview_html(sn: Supernodes, fig: go.Figure | None = None) -> str:
    """The self-contained page: plotly.js once, the figure, and a panel that shows a clicked supernode."""
    fig = fig if fig is not None else overview_figure(sn)
    shown = shown_tokens(sn)
    panels = {
        f"{i},{g}": supernode_panel(sn, i, g, shown=shown)
        for i in range(sn.layers.size)
        for g in range(int(sn.n_groups[i]))
        if sn.members(i, g).size
    }
    script = _SCRIPT % {"panels": json.dumps(panels, ensure_ascii=False), "figure": pio.to_json(fig, validate=False)}
    title = html.escape(f"overview · {sn.selection}")
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title><style>{_STYLE}</style>"
        "</head><body><div id='wb-overview'></div>"
        "<div id='panel'><p>Click a block (a supernode) to list its experts: tokens, load and top tokens.</p></div>"
        f"{packed_scripts(plotly_bundle([fig]), [script])}</body></html>"
    )


def write_overview_html(sn: Supernodes, path: str | Path, fig: go.Figure | None = None) -> Path:
    """Write ``overview_html`` to ``path`` atomically (refused first where ``workbench.outputs`` refuses)."""
    target = check_output_file(path, flag="path")
    with atomic_path(target, flag="path") as tmp:
        tmp.write_text(overview_html(sn, fig), encoding="utf-8")
    return target


def export_overview(sn: Supernodes, path: str | Path, *, fmt: str | None = None, title: str | None = None) -> Path:
    """Write the overview of ``sn``: ``.html`` (the clickable page) or ``.png``/``.svg``/``.pdf`` (the figure)."""
    kind = export_format(path, fmt)
    if kind not in FIGURE_FORMATS:
        raise ExportError(
            f"{Path(path).name!r}: the overview is a figure; use one of {', '.join(FIGURE_FORMATS)}", param="path"
        )
    fig = overview_figure(sn, title=title)
    return write_overview_html(sn, path, fig) if kind == "html" else export_figure(fig, path, kind, scale=1.0)
