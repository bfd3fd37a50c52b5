"""``overview_figure``: the supernodes of a selection as an alluvial (Sankey) diagram, one column per MoE layer.

A column is a MoE layer; its blocks are the layer's supernodes (``workbench.graph.supernodes``), their
height the supernode's load, their label its heaviest experts. Ribbons join supernodes of consecutive
layers, their width the token transitions between them. Blocks are ordered in each column by the mean
position of the blocks they exchange tokens with (the barycentre heuristic of Sugiyama et al. 1981), so ribbons
that carry the same tokens run straight and crossings show real mixing. Colour says which domain a
supernode serves more than its share (lift = domain share of the supernode's tokens / domain share of
the selection), grey when none does. The figure carries that key as a legend and a caption.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
from workbench.viz.text import plain

from workbench.experts.vocab import text_vocab, visible
from workbench.graph.supernodes import Supernodes

DOMAIN_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
MIXED = "#b4b4b4"
STRONG, WEAK = 1.5, 1.15  # lift thresholds: full colour, pale colour
MIN_RIBBON = 0.002  # ribbons under this share of their layer pair are not drawn (but each block's largest in and out)
PAD = 6  # px between blocks of a column
NODE_PX = 12  # block thickness
LABEL_MIN_PX = 13  # blocks shorter than this carry no label (hover still names them)


@dataclass(frozen=True)
class OverviewNodes:
    """The drawn blocks: index i of the Sankey's nodes is ``(layer_pos[i], group[i])``."""

    layer_pos: np.ndarray  # (N,) int
    group: np.ndarray  # (N,) int
    colour: list[str]
    x: np.ndarray  # (N,) normalised column position
    y: np.ndarray  # (N,) normalised block centre
    label: list[str]


def _mix(hex_colour: str, white: float) -> str:
    r, g, b = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return "#" + "".join(f"{round(c + (255 - c) * white):02x}" for c in (r, g, b))


def _rgba(hex_colour: str, alpha: float) -> str:
    r, g, b = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def node_colours(sn: Supernodes) -> np.ndarray:
    """(L, K) colour of each supernode: its domain of highest lift (full colour ≥ STRONG, pale ≥ WEAK), else grey."""
    out = np.full((sn.layers.size, sn.flows.shape[1]), MIXED, dtype=object)
    if len(sn.domains) < 2:
        return out
    lift = sn.domain_lift()  # (D, L, K)
    best = lift.argmax(0)
    top = lift.max(0)
    for (i, g), d in np.ndenumerate(best):
        base = DOMAIN_COLOURS[d % len(DOMAIN_COLOURS)]
        out[i, g] = base if top[i, g] >= STRONG else _mix(base, 0.55) if top[i, g] >= WEAK else MIXED
    return out


def _order(sn: Supernodes, sweeps: int = 4) -> list[list[int]]:
    """Supernodes of each layer in drawing order, by the barycentre heuristic (Sugiyama et al. 1981).

    Start: every layer by load. Then ``sweeps`` passes, alternately left to right (a column ordered by
    the mean position of its inflow in the column before) and right to left (by its outflow's mean
    position in the column after); ties keep the current order.
    """
    tokens = sn.tokens
    orders = [[g for g in range(int(sn.n_groups[i])) if tokens[i, g] > 0] for i in range(sn.layers.size)]

    def place(i: int, j: int) -> None:  # reorder column i by its flows with column j (j = i ± 1)
        rank = np.zeros(sn.flows.shape[1])
        rank[orders[j]] = np.arange(len(orders[j]))
        flows = sn.flows[j][:, orders[i]] if j < i else sn.flows[i][orders[i], :].T  # (K of column j, G)
        w = flows.astype(np.float64)
        centre = (rank[:, None] * w).sum(0) / np.maximum(w.sum(0), 1)
        orders[i] = [orders[i][m] for m in np.lexsort((np.arange(len(orders[i])), centre))]

    n = sn.layers.size
    for sweep in range(sweeps):
        cols = range(1, n) if sweep % 2 == 0 else range(n - 2, -1, -1)
        for i in cols:
            place(i, i - 1 if sweep % 2 == 0 else i + 1)
    return orders


def layout_nodes(sn: Supernodes, values: np.ndarray, plot_height: int) -> OverviewNodes:
    """Block positions: columns evenly spaced, blocks stacked in ``_order`` with plotly's own scale.

    ``values`` (L, K) are the Sankey node values (max of drawn in- and outflow); plotly scales every
    column by ``min_c (H − (n_c − 1)·PAD) / Σ_c values``, which is reproduced here so the fixed centres
    never make blocks overlap.
    """
    orders = _order(sn)
    scale = min((plot_height - (len(o) - 1) * PAD) / max(values[i, o].sum(), 1) for i, o in enumerate(orders))
    colours = node_colours(sn)
    lp, gr, col, xs, ys, labels = [], [], [], [], [], []
    n_layers = sn.layers.size
    for i, order in enumerate(orders):
        top = 0.0
        for g in order:
            h = values[i, g] * scale
            lp.append(i)
            gr.append(g)
            col.append(str(colours[i, g]))
            xs.append(0.001 + 0.998 * i / max(n_layers - 1, 1))
            ys.append((top + h / 2) / plot_height)
            top += h + PAD
            labels.append(f"E{sn.members(i, g)[0]}" if h >= LABEL_MIN_PX else "")
    return OverviewNodes(np.array(lp), np.array(gr), col, np.array(xs), np.array(ys), labels)


def shown_tokens(sn: Supernodes) -> dict[str, str]:
    """Each top-token string as a reader should see it: byte-level BPE markers undone (``Ġ`` → space,
    ``Ċ`` → newline; ``workbench.experts.vocab.text_vocab``) and whitespace made visible (␣ ↵ ⇥)."""
    raw = sorted({t for tops in sn.top_tokens.values() for t, _ in tops})
    return dict(zip(raw, (visible(t) for t in text_vocab(raw)), strict=True))


def _node_hover(
    sn: Supernodes, i: int, g: int, lift: np.ndarray | None, load: np.ndarray, shown: dict[str, str]
) -> str:
    members = sn.members(i, g)
    lines = [
        f"<b>L{sn.layers[i]} · S{g}</b>: {members.size} experts",
        "heaviest: " + " ".join(f"E{e}" for e in members[:8]) + (" …" if members.size > 8 else ""),
        f"load {load[i, g]:.2f} of k = {sn.top_k} ({load[i, g] / sn.top_k:.0%} of the layer's routing)",
    ]
    if lift is not None:
        lines.append("lift " + " · ".join(f"{plain(d)} ×{lift[j, i, g]:.2f}" for j, d in enumerate(sn.domains)))
    top = sn.top_tokens.get((i, int(members[0]))) if members.size else None
    if top:
        lines.append(f"E{members[0]} tokens: " + " · ".join(f"{plain(shown.get(t, t))} ({n})" for t, n in top))
    lines.append("click: its experts")
    return "<br>".join(lines)


def overview_figure(sn: Supernodes, *, title: str | None = None, height: int = 820) -> go.Figure:
    """The alluvial overview of ``sn`` (module docstring). Node ``customdata`` is ``[layer_pos, group]``."""
    n_layers, kk = sn.layers.size, sn.flows.shape[1]
    total = sn.n_tokens * sn.top_k**2
    keep = sn.flows >= MIN_RIBBON * total  # (L-1, K, K)
    # every supernode keeps its largest ribbon out and in, so no block vanishes (plotly drops unlinked nodes)
    pp, ss = np.nonzero(sn.flows.sum(2))
    keep[pp, ss, sn.flows[pp, ss].argmax(1)] = True
    pp, uu = np.nonzero(sn.flows.sum(1))
    keep[pp, sn.flows[pp, :, uu].argmax(1), uu] = True
    drawn = np.where(keep, sn.flows, 0)
    values = np.zeros((n_layers, kk))
    values[:-1] = drawn.sum(2)
    values[1:] = np.maximum(values[1:], drawn.sum(1))
    width = max(900, 110 + 42 * n_layers)
    margin = {"l": 30, "r": 30, "t": 80, "b": 220 if n_layers < 20 else 160}
    nodes = layout_nodes(sn, values, height - margin["t"] - margin["b"])
    index = {(int(i), int(g)): n for n, (i, g) in enumerate(zip(nodes.layer_pos, nodes.group, strict=True))}
    lift = sn.domain_lift() if len(sn.domains) > 1 else None
    load = sn.load
    shown = shown_tokens(sn)
    src, dst, val, lcol, lhover = [], [], [], [], []
    for (p, s, u), v in np.ndenumerate(drawn):
        if v <= 0 or (p, s) not in index or (p + 1, u) not in index:
            continue
        a, b = index[(p, s)], index[(p + 1, u)]
        src.append(a)
        dst.append(b)
        val.append(int(v))
        lcol.append(_rgba(nodes.colour[a] if nodes.colour[a] != MIXED else "#8c8c8c", 0.35))
        lhover.append(f"L{sn.layers[p]} · S{s} → L{sn.layers[p + 1]} · S{u} ({v / total:.1%}")
    hidden = 1.0 - drawn.sum() / max(sn.flows.sum(), 1)
    fig = go.Figure(
        go.Sankey(
            arrangement="fixed",
            node={
                "label": nodes.label,
                "x": nodes.x,
                "y": nodes.y,
                "color": nodes.colour,
                "pad": PAD,
                "thickness": NODE_PX,
                "line": {"width": 0.4, "color": "#555"},
                "customdata": [
                    [int(i), int(g), _node_hover(sn, int(i), int(g), lift, load, shown)]
                    for i, g in zip(nodes.layer_pos, nodes.group, strict=True)
                ],
                "hovertemplate": "%{customdata[2]}<extra></extra>",
            },
            link={
                "source": src,
                "target": dst,
                "value": val,
                "color": lcol,
                "customdata": lhover,
                "hovertemplate": "%{customdata} of the layer pair's |T|·k²)<br>%{value:,} token transitions"
                "<extra></extra>",
            },
            textfont={"size": 11, "color": "#222"},
        )
    )
    _add_key(fig, sn, hidden, width)
    _add_layer_ticks(fig, sn, nodes)
    what = title or f"{sn.model or 'routing'} · {sn.selection} · {sn.n_tokens:,} token" + (
        "s" if sn.n_tokens != 1 else ""
    )
    fig.update_layout(
        title={"text": plain(what) + f"<br><sup>{n_layers} MoE layers × {sn.n_experts} experts → "
               f"{int(sn.n_groups.sum())} supernodes (≤ {kk} per layer)</sup>", "x": 0.01, "font": {"size": 16}},
        width=width, height=height, margin=margin, font={"size": 12}, paper_bgcolor="white",
        xaxis={"visible": False}, yaxis={"visible": False}, plot_bgcolor="white",
        legend={"orientation": "h", "x": 0.0, "y": -0.02, "yanchor": "top", "font": {"size": 12}, "entrywidth": 175,
                "title": {"text": "colour: the domain a supernode serves more than its share (lift)", "side": "top"}},
    )  # fmt: skip
    return fig


def _add_key(fig: go.Figure, sn: Supernodes, hidden: float, width: int) -> None:
    """Legend entries for the colours (invisible markers) and a caption for height, width and grouping."""
    entries = []
    if len(sn.domains) > 1:
        for j, d in enumerate(sn.domains):
            c = DOMAIN_COLOURS[j % len(DOMAIN_COLOURS)]
            entries += [(f"{plain(d)} (lift ≥ {STRONG})", c), (f"{plain(d)} ({WEAK}–{STRONG})", _mix(c, 0.55))]
        entries.append((f"no domain above ×{WEAK}", MIXED))
    else:
        entries.append(("one domain: colour unused", MIXED))
    per_row = max(1, (width - 60) // 215)
    rows = -(-len(entries) // per_row)
    for name, colour in entries:
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=name, showlegend=True, hoverinfo="skip",
                                 marker={"symbol": "square", "size": 13, "color": colour}))  # fmt: skip
    caption = (
        "Column: MoE layer. Block: a supernode, the experts of one layer grouped by where their tokens come from and "
        "go to (Ward clustering of Hellinger flow profiles); label: its heaviest expert; height: its load (tokens "
        "routed to its experts).<br>Ribbon: token transitions between supernodes of consecutive layers (k × k pairs "
        "per token), width ∝ count"
        + (f"; ribbons under {MIN_RIBBON:.1%} of a layer pair, other than a block's largest in and out, are not drawn "
              f"({hidden:.1%} of all transitions)."
           if hidden > 0 else ".")
        + " Hover a block or ribbon for numbers; in the HTML, click a block for its experts."
    )  # fmt: skip
    caption = "<br>".join(textwrap.wrap(caption.replace("<br>", " "), max(60, (width - 80) // 6)))
    fig.add_annotation(
        text=caption, xref="paper", yref="paper", x=0.0, y=0.0, yshift=-(36 + 22 * rows), xanchor="left", yanchor="top",
        showarrow=False, align="left", font={"size": 11, "color": "#333"},
    )  # fmt: skip


def _add_layer_ticks(fig: go.Figure, sn: Supernodes, nodes: OverviewNodes) -> None:
    """Layer numbers above the columns (every column up to 20 layers, else every 5th and the ends)."""
    n = sn.layers.size
    step = 1 if n <= 20 else 5
    for i in range(n):
        if i % step and i != n - 1:
            continue
        fig.add_annotation(
            text=f"L{sn.layers[i]}", x=0.001 + 0.998 * i / max(n - 1, 1), y=1.0, xref="paper", yref="paper",
            yanchor="bottom", showarrow=False, font={"size": 11, "color": "#444"},
        )  # fmt: skip
