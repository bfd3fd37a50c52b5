"""``graph_figure``: a reasoning graph (or difference graph) as a plotly figure.

Layered layout (``workbench.graph.layout``): x = MoE layer, y = experts ordered by community and
load. Nodes are sized by load (reasoning graphs) or |delta| (difference graphs) and coloured by
community (reasoning) or sign (difference: red = more in a, blue = more in b). Edges are drawn in
a few width classes (one trace each, lines joined with None gaps, so thousands of edges stay
fast); hovering a node shows its expert, layer, tokens, load, mean gate weight, domain shares and
the top tokens routed there.
"""

from __future__ import annotations

from typing import Any

import networkx as nx
import numpy as np
import plotly.graph_objects as go
from workbench.viz.text import plain

from workbench.graph.layout import layered_layout

# Colour cycle for communities (plotly's "D3" qualitative palette, fixed here so figures are stable).
PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
POSITIVE, NEGATIVE, NEUTRAL = "#c0392b", "#2471a3", "#999999"
WIDTH_CLASSES = 5
LABEL_MAX = 400  # label nodes with their expert id up to this many nodes (beyond, hover only)


def _hover(node: str, d: dict[str, Any], difference: bool) -> str:
    """A node's hover text; user text (domain names, token text) escaped by ``plain``."""
    lines = [f"<b>{plain(node)}</b>  expert {d.get('expert')} · layer {d.get('layer')}"]
    if difference:
        lines.append(f"load a {d.get('load_a', 0):.3f} · load b {d.get('load_b', 0):.3f} · Δ {d.get('delta', 0):+.3f}")
    else:
        lines.append(f"tokens {d.get('tokens', 0)} · load {d.get('load', 0):.3f}")
        if "mean_gate" in d:
            lines.append(f"mean gate {d['mean_gate']:.3f}")
        shares = [f"{plain(k[6:])} {v:.0%}" for k, v in sorted(d.items()) if k.startswith("share_")]
        if shares:
            lines.append("domains: " + ", ".join(shares))
        if "community" in d:
            lines.append(f"circuit {d['community']}")
    if d.get("top_tokens"):
        lines.append("top tokens: " + plain(d["top_tokens"]))
    return "<br>".join(lines)


def _edge_traces(g: nx.DiGraph, pos: dict[str, tuple[float, float]], difference: bool) -> list[go.Scatter]:
    if g.number_of_edges() == 0:
        return []
    uv = list(g.edges())
    w = np.array([abs(float(g.edges[e].get("weight", 0.0))) for e in uv])
    sign = np.array([int(np.sign(g.edges[e].get("delta", 1.0))) for e in uv]) if difference else np.ones(len(uv))
    top = float(w.max()) or 1.0
    cls = np.minimum((w / top * WIDTH_CLASSES).astype(int), WIDTH_CLASSES - 1)  # 0 .. WIDTH_CLASSES-1
    traces = []
    for s in (1, -1, 0) if difference else (1,):
        colour = {1: POSITIVE if difference else "rgba(90,90,90,0.45)", -1: NEGATIVE, 0: NEUTRAL}[s]
        for c in range(WIDTH_CLASSES):
            idx = np.flatnonzero((cls == c) & (sign == s))
            if idx.size == 0:
                continue
            xs: list[float | None] = []
            ys: list[float | None] = []
            for i in idx.tolist():
                (x0, y0), (x1, y1) = pos[uv[i][0]], pos[uv[i][1]]
                xs += [x0, x1, None]
                ys += [y0, y1, None]
            traces.append(
                go.Scatter(
                    x=xs,
                    y=ys,
                    mode="lines",
                    line={"width": 0.5 + 1.5 * c, "color": colour},
                    opacity=0.35 + 0.13 * c,
                    hoverinfo="skip",
                    showlegend=False,
                )
            )
    return traces


def graph_figure(g: nx.DiGraph, *, title: str | None = None, width: int = 1100, height: int = 700) -> go.Figure:
    """A plotly figure of ``g`` (a ``reasoning_graph`` or ``difference_graph``).

    Nodes without a ``community`` attribute get one (seeded Louvain) for the layout; positions are
    stored in the nodes' ``x``/``y`` attributes.

    Examples
    --------
    >>> fig = graph_figure(reasoning_graph(ds, parse_where("domain=math"), top_edges=20))  # doctest: +SKIP
    >>> fig.write_html("math.html")  # doctest: +SKIP
    """
    difference = g.graph.get("kind") == "difference"
    pos = layered_layout(g)
    nodes = list(g.nodes)
    data = [g.nodes[n] for n in nodes]
    if difference:
        size_val = np.array([abs(float(d.get("delta", 0.0))) for d in data])
        colours = [{1: POSITIVE, -1: NEGATIVE}.get(int(d.get("sign", 0)), NEUTRAL) for d in data]
    else:
        size_val = np.array([float(d.get("load", 0.0)) for d in data])
        colours = [PALETTE[int(d.get("community", 0)) % len(PALETTE)] for d in data]
    top = float(size_val.max()) if size_val.size and size_val.max() > 0 else 1.0
    sizes = 6 + 22 * np.sqrt(size_val / top)
    node_trace = go.Scatter(
        x=[pos[n][0] for n in nodes],
        y=[pos[n][1] for n in nodes],
        mode="markers+text" if len(nodes) <= LABEL_MAX else "markers",
        marker={"size": sizes.tolist(), "color": colours, "line": {"width": 0.5, "color": "#333"}},
        text=[f"E{d['expert']}" for d in data] if len(nodes) <= LABEL_MAX else None,
        textposition="middle right",
        textfont={"size": 9, "color": "#444"},
        hovertext=[_hover(n, d, difference) for n, d in zip(nodes, data, strict=True)],
        customdata=nodes,
        hovertemplate="%{hovertext}<extra></extra>",
        showlegend=False,
    )
    if title is None:
        if difference:
            title = f"{g.graph.get('label_a', 'a')} − {g.graph.get('label_b', 'b')}"
        else:
            title = f"{g.graph.get('selection', 'reasoning graph')} ({g.graph.get('n_tokens', '?')} tokens)"
    title = plain(title)  # selections and --title are user text
    layers = sorted({int(d["layer"]) for d in data})
    fig = go.Figure(data=[*_edge_traces(g, pos, difference), node_trace])
    step = max(1, len(layers) // 20)
    fig.update_layout(
        title={"text": title},
        width=width,
        height=height,
        plot_bgcolor="white",
        margin={"l": 40, "r": 20, "t": 50, "b": 40},
        hoverlabel={"align": "left"},
        xaxis={"title": "MoE layer", "tickvals": layers[::step], "showgrid": False, "zeroline": False},
        yaxis={"showticklabels": False, "showgrid": False, "zeroline": False, "title": "experts (by circuit, load)"},
    )
    return fig
