"""``graph_figure``: a reasoning graph (or difference graph) as a plotly figure that carries its own key.

Layered layout (``workbench.graph.layout``): x = MoE layer, experts of a layer stacked by community
and load (the vertical axis is an order, so it has no ticks; the caption says so). Every encoding is
keyed on the figure (words in ``workbench.viz.graph_text``):

- node area ∝ load (difference graphs: ∝ |Δ load|), with a size key of three reference circles;
- node colour = circuit, one legend entry per circuit (difference graphs: Δ load on a diverging,
  zero-centred red-white-blue scale with a colour bar; red = more in the first selection);
- edge width = weight class (five classes, one legend entry each), edge colour grey (difference
  graphs: red / blue by sign, one legend entry per side);
- a subtitle with what the graph holds (difference graphs: each side's tokens, edges and the share of
  its difference the kept edges show) and a caption with the definitions and the pruning.

Edges are drawn first, nodes on top (opaque). Edge hover sits on an invisible marker at each edge's
midpoint (plotly lines have no per-segment hover). Node labels (``E<id>``, 10 px) go on every node when
there is room, else on the heaviest expert of each layer; a graph with many layers (K2: 60) gets a
wider figure (at least ``LAYER_PX`` per layer) and smaller nodes, so columns do not overlap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import networkx as nx
import numpy as np
import plotly.graph_objects as go
from workbench.viz.graph_text import caption, edge_hover, is_difference, node_hover, side_labels, subtitle
from workbench.viz.text import plain

from workbench.graph.layout import layered_layout

# Circuit colours: plotly's "D3" qualitative palette without its grey, fixed so figures are stable;
# circuits beyond these share OTHER.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf")
OTHER = "#c7c7c7"
POSITIVE, NEGATIVE, NEUTRAL = "#c0392b", "#2471a3", "#999999"
DIVERGING = [[0.0, NEGATIVE], [0.5, "#f7f7f7"], [1.0, POSITIVE]]  # Δ < 0 blue, 0 white, Δ > 0 red
EDGE_GREY = "rgb(90,90,90)"
WIDTH_CLASSES = 5
LABEL_PX = 10  # node labels; every other text is larger
KEY_PX = 11  # legend, caption, colour bar
RIGHT_PX = 250  # the key column right of the plot (legend, colour bar, size key)
LAYER_PX = 36  # at least this many px per layer column (wider figures for many layers)
MARGIN = {"l": 30, "r": 10, "t": 84, "b": 128}


@dataclass(frozen=True)
class _Frame:
    """Pixel geometry of the figure: sizes, the plot's domain, spacing of columns and ranks."""

    width: int
    height: int
    x_end: float  # the plot's x domain is [0, x_end]; the key column is right of it
    dx: float  # px between layer columns
    dy: float  # px between ranks
    d_max: float  # diameter of the largest node, px
    label_all: bool  # room for a label beside every node


def _frame(n_layers: int, max_rank: int, width: int | None, height: int | None) -> _Frame:
    w = width or max(1100, n_layers * LAYER_PX + RIGHT_PX + MARGIN["l"] + MARGIN["r"] + 40)
    h = height or max(700, max_rank * 22 + MARGIN["t"] + MARGIN["b"])
    plot_w = max(w - MARGIN["l"] - MARGIN["r"], 100)
    x_end = max(0.3, 1.0 - RIGHT_PX / plot_w)
    dx = x_end * plot_w / (max(n_layers - 1, 0) + 1.4)
    dy = (h - MARGIN["t"] - MARGIN["b"]) / (max_rank + 0.6)
    d_max = float(np.clip(min(0.8 * dy, 0.45 * dx), 6.0, 30.0))
    return _Frame(w, h, x_end, dx, dy, d_max, label_all=dx >= 70 and dy >= 14)


def _size_values(data: list[dict[str, Any]], difference: bool) -> np.ndarray:
    key = "delta" if difference else "load"
    return np.array([abs(float(d.get(key, 0.0))) for d in data])


def _diameters(values: np.ndarray, d_max: float) -> np.ndarray:
    """Area ∝ value: diameter = d_max · √(value / max); at least 3 px so every node shows."""
    top = float(values.max()) if values.size and values.max() > 0 else 1.0
    return np.maximum(d_max * np.sqrt(values / top), 3.0)


def _labels(g: nx.DiGraph, nodes: list[str], values: np.ndarray, label_all: bool) -> list[str]:
    """``E<id>`` for every node, or (no room) for the heaviest node of each layer only."""
    if label_all:
        return [f"E{g.nodes[n]['expert']}" for n in nodes]
    best: dict[int, int] = {}
    for i, n in enumerate(nodes):
        layer = int(g.nodes[n]["layer"])
        if layer not in best or values[i] > values[best[layer]]:
            best[layer] = i
    chosen = set(best.values())
    return [f"E{g.nodes[n]['expert']}" if i in chosen else "" for i, n in enumerate(nodes)]


def _edge_traces(g: nx.DiGraph, pos: dict[str, tuple[float, float]], difference: bool) -> list[go.Scatter]:
    """Edges in width classes (one line trace per class and sign, segments joined by None gaps), plus keys."""
    if g.number_of_edges() == 0:
        return []
    uv = list(g.edges())
    w = np.array([abs(float(g.edges[e].get("weight", 0.0))) for e in uv])
    sign = np.array([int(np.sign(g.edges[e].get("delta", 0.0))) for e in uv]) if difference else np.ones(len(uv))
    top = float(w.max()) or 1.0
    cls = np.minimum((w / top * WIDTH_CLASSES).astype(int), WIDTH_CLASSES - 1)
    unit = (lambda x: f"{100 * x:.2g}") if difference else (lambda x: f"{x:.3g}")
    width_title = "edge width: |Δ share| (% points)" if difference else "edge width: " + _weight_name(g)
    traces: list[go.Scatter] = []
    if difference:
        a, b = (plain(x) for x in side_labels(g))
        for s, colour, name in ((1, POSITIVE, f"more in {a}"), (-1, NEGATIVE, f"more in {b}")):
            n = int((sign == s).sum())
            title = "edge colour: side" if s == 1 else None
            traces.append(_key_line(f"{name} ({n} edges)", colour, 4.0, f"sign{s}", title, rank=1 + (s < 0)))
    for c in range(WIDTH_CLASSES):
        lo, hi = unit(c / WIDTH_CLASSES * top), unit((c + 1) / WIDTH_CLASSES * top)
        name = f"{lo} – {hi}" if c < WIDTH_CLASSES - 1 else f"≥ {lo}"
        if difference and (cls == c).any():
            first = not any(t.legendgroup == "width" for t in traces)
            title = width_title if first else None
            traces.append(_key_line(name, EDGE_GREY, _line_width(c), "width", title, rank=100 + c))
        for s in (1, -1, 0) if difference else (1,):
            idx = np.flatnonzero((cls == c) & (sign == s))
            if idx.size == 0:
                continue
            xs: list[float | None] = []
            ys: list[float | None] = []
            for i in idx.tolist():
                (x0, y0), (x1, y1) = pos[uv[i][0]], pos[uv[i][1]]
                xs += [x0, x1, None]
                ys += [y0, y1, None]
            colour = {1: POSITIVE, -1: NEGATIVE, 0: NEUTRAL}[s] if difference else EDGE_GREY
            traces.append(
                go.Scatter(
                    x=xs,
                    y=ys,
                    mode="lines",
                    line={"width": _line_width(c), "color": colour},
                    opacity=0.3 + 0.13 * c,
                    hoverinfo="skip",
                    meta="edges",
                    name=name,
                    legendgroup=f"sign{s}" if difference else f"width{c}",
                    legendrank=100 + c,
                    showlegend=not difference,
                    legendgrouptitle={"text": width_title} if not difference and not traces else None,
                )
            )
    return traces


def _line_width(c: int) -> float:
    """Edge width of class ``c``: 0.6 .. 5 px (plotly's legend draws lines of at most 5 px, so keys match)."""
    return 0.6 + 1.1 * c


def _weight_name(g: nx.DiGraph) -> str:
    return "weight (Σ gate products)" if g.graph.get("weighted", True) else "tokens (ids only)"


def _key_entry(name: str, group: str, title: str | None, *, rank: int, **style: Any) -> go.Scatter:
    """A legend-only entry (no data) in ``group``, drawn with ``style`` (``mode`` and ``line`` or ``marker``);
    clicking it toggles the group's traces."""
    return go.Scatter(
        x=[None],
        y=[None],
        name=name,
        legendgroup=group,
        legendrank=rank,
        legendgrouptitle={"text": title} if title else None,
        meta="key",
        hoverinfo="skip",
        **style,
    )


def _key_line(name: str, colour: str, width: float, group: str, title: str | None, *, rank: int) -> go.Scatter:
    """A legend-only line entry in ``group``; clicking it toggles the group's edges."""
    return _key_entry(name, group, title, rank=rank, mode="lines", line={"width": width, "color": colour})


def _edge_hover_trace(g: nx.DiGraph, pos: dict[str, tuple[float, float]], difference: bool) -> list[go.Scatter]:
    """Invisible markers at edge midpoints that carry each edge's hover text."""
    if g.number_of_edges() == 0:
        return []
    uv = list(g.edges())
    weighted = bool(g.graph.get("weighted", True))
    labels = side_labels(g)
    return [
        go.Scatter(
            x=[(pos[u][0] + pos[v][0]) / 2 for u, v in uv],
            y=[(pos[u][1] + pos[v][1]) / 2 for u, v in uv],
            mode="markers",
            marker={"size": 9, "color": "rgba(0,0,0,0)"},
            hovertext=[edge_hover(u, v, g.edges[u, v], difference, weighted, labels) for u, v in uv],
            hovertemplate="%{hovertext}<extra></extra>",
            customdata=[f"{u}->{v}" for u, v in uv],
            meta="edge-hover",
            showlegend=False,
        )
    ]


def _node_traces(
    g: nx.DiGraph, nodes: list[str], pos: dict[str, tuple[float, float]], frame: _Frame, difference: bool
) -> list[go.Scatter]:
    """Nodes: one trace per circuit colour (with its legend entry), or one Δ-coloured trace with a colour bar."""
    data = [g.nodes[n] for n in nodes]
    values = _size_values(data, difference)
    sizes = _diameters(values, frame.d_max)
    text = _labels(g, nodes, values, frame.label_all)
    labels = side_labels(g)
    hover = [node_hover(n, d, difference, labels) for n, d in zip(nodes, data, strict=True)]

    def trace(idx: list[int], marker: dict[str, Any], **kw: Any) -> go.Scatter:
        return go.Scatter(
            x=[pos[nodes[i]][0] for i in idx],
            y=[pos[nodes[i]][1] for i in idx],
            mode="markers+text",
            marker={"size": sizes[idx].tolist(), "opacity": 1.0, "line": {"width": 0.6, "color": "#333"}, **marker},
            text=[text[i] for i in idx],
            textposition="middle right" if frame.label_all else "top center",
            textfont={"size": LABEL_PX, "color": "#222"},
            hovertext=[hover[i] for i in idx],
            hovertemplate="%{hovertext}<extra></extra>",
            customdata=[nodes[i] for i in idx],
            meta="nodes",
            showlegend=False,
            **kw,
        )

    if difference:
        delta = np.array([float(d.get("delta", 0.0)) for d in data])
        bound = float(np.abs(delta).max()) or 1.0
        a, b = (plain(x) for x in labels)
        scale = {
            "color": delta.tolist(),
            "colorscale": DIVERGING,
            "cmin": -bound,
            "cmax": bound,
            "cmid": 0.0,
            "colorbar": {
                "title": {"text": f"Δ load<br>{a} − {b}", "font": {"size": KEY_PX}},
                "x": frame.x_end + 0.01,
                "xanchor": "left",
                "y": 0.24,
                "yanchor": "bottom",
                "len": 0.34,
                "thickness": 12,
                "tickformat": "+.2f",
                "tickfont": {"size": KEY_PX},
            },
        }
        return [trace(list(range(len(nodes))), scale)]
    comm = np.array([int(d.get("community", 0)) for d in data])
    load = {c: float(values[comm == c].sum()) for c in set(comm.tolist())}
    total = sum(load.values()) or 1.0
    out = []
    shown = sorted(load)[: len(PALETTE)]
    groups = [(f"circuit {c} · {int((comm == c).sum())} experts · {load[c] / total:.0%} of load", [c]) for c in shown]
    rest = sorted(set(load) - set(shown))
    if rest:
        groups.append((f"{len(rest)} smaller circuits · {int(np.isin(comm, rest).sum())} experts", rest))
    for j, (name, members) in enumerate(groups):
        fill = PALETTE[j] if j < len(shown) else OTHER
        title = "node colour: circuit" if j == 0 else None
        out.append(_key_marker(name, fill, f"circuit{j}", title, rank=10 + j))
        out.append(trace(np.flatnonzero(np.isin(comm, members)).tolist(), {"color": fill}, legendgroup=f"circuit{j}"))
    return out


def _key_marker(name: str, colour: str, group: str, title: str | None, *, rank: int) -> go.Scatter:
    """A legend-only marker entry in ``group``; clicking it toggles the group's nodes."""
    marker = {"size": 11, "color": colour, "line": {"width": 0.6, "color": "#333"}}
    return _key_entry(name, group, title, rank=rank, mode="markers", marker=marker)


def _size_key(values: np.ndarray, frame: _Frame, difference: bool) -> tuple[go.Scatter, dict[str, Any]]:
    """Three reference circles (the largest value, a quarter and a sixteenth of it) in a small inset axis."""
    top = float(values.max()) if values.size and values.max() > 0 else 1.0
    refs = np.array([top, top / 4, top / 16])
    fmt = "{:+.3f}" if difference else "{:.3f}"
    key = go.Scatter(
        x=[0, 1, 2],
        y=[0, 0, 0],
        xaxis="x2",
        yaxis="y2",
        mode="markers+text",
        marker={
            "size": _diameters(refs, frame.d_max).tolist(),
            "color": "#bbbbbb",
            "line": {"width": 0.6, "color": "#333"},
        },
        text=[("|Δ| " if difference else "") + fmt.format(v).lstrip("+") for v in refs],
        textposition="bottom center",
        textfont={"size": KEY_PX},
        hoverinfo="skip",
        meta="key",
        showlegend=False,
    )
    axes = {
        "xaxis2": {"domain": [frame.x_end + 0.01, 1.0], "range": [-0.6, 2.6], "visible": False, "fixedrange": True},
        "yaxis2": {"domain": [0.0, 0.16], "range": [-1.2, 1.0], "visible": False, "fixedrange": True},
    }
    return key, axes


def graph_figure(
    g: nx.DiGraph, *, title: str | None = None, width: int | None = None, height: int | None = None
) -> go.Figure:
    """A plotly figure of ``g`` (a ``reasoning_graph`` or ``difference_graph``) with its key on it.

    Nodes without a ``community`` attribute get one (seeded Louvain) for the layout; positions are
    stored in the nodes' ``x``/``y`` attributes. ``width``/``height`` (px) default to 1100 × 700, or
    more when the graph has many layers or many experts per layer. ``fig.layout.meta`` holds the
    ``title`` and ``description`` (the caption, as plotly text) that static exports write as file metadata.

    Examples
    --------
    >>> fig = graph_figure(reasoning_graph(ds, parse_where("domain=math"), top_edges=20))  # doctest: +SKIP
    >>> fig.write_html("math.html")  # doctest: +SKIP
    """
    difference = is_difference(g)
    pos = layered_layout(g)
    nodes = list(g.nodes)
    layers = sorted({int(g.nodes[n]["layer"]) for n in nodes})
    per_layer = np.bincount([layers.index(int(g.nodes[n]["layer"])) for n in nodes]) if nodes else np.zeros(1, int)
    max_rank = int(per_layer.max(initial=1))
    frame = _frame(len(layers), max_rank, width, height)
    if title is None:
        title = " − ".join(side_labels(g)) if difference else str(g.graph.get("selection", "reasoning graph"))
    text_caption = caption(g, labelled_all=frame.label_all)
    size_key, inset = _size_key(_size_values([g.nodes[n] for n in nodes], difference), frame, difference)
    fig = go.Figure(
        data=[
            *_edge_traces(g, pos, difference),
            *_edge_hover_trace(g, pos, difference),
            *_node_traces(g, nodes, pos, frame, difference),
            size_key,
        ]
    )
    step = max(1, int(np.ceil(28 / frame.dx))) if frame.dx > 0 else 1  # tick labels at least 28 px apart
    half = (max_rank - 1) / 2 + 0.8
    fig.update_layout(
        title={
            "text": plain(title),  # selections and --title are user text
            "subtitle": {"text": subtitle(g), "font": {"size": 12}},
            "x": 0.01,
            "font": {"size": 17},
        },
        meta={"title": plain(title), "description": text_caption},  # plotly text; exports unmark it
        width=frame.width,
        height=frame.height,
        font={"size": 12},
        plot_bgcolor="white",
        margin=MARGIN,
        hoverlabel={"align": "left"},
        showlegend=True,
        legend={
            "x": frame.x_end + 0.01,
            "xanchor": "left",
            "y": 1.0,
            "yanchor": "top",
            "font": {"size": KEY_PX},
            "tracegroupgap": 3,
            "itemsizing": "trace",
        },
        xaxis={
            "title": {"text": "MoE layer", "standoff": 4},
            "domain": [0.0, frame.x_end],
            "tickvals": layers[::step],
            "range": [layers[0] - 0.5, layers[-1] + 0.9] if layers else None,
            "showgrid": False,
            "zeroline": False,
        },
        yaxis={"visible": False, "range": [-half, half]},
        **inset,
        annotations=[
            {
                "text": text_caption,
                "xref": "paper",
                "yref": "paper",
                "x": 0.0,
                "y": 0.0,
                "xanchor": "left",
                "yanchor": "top",
                "yshift": -46,
                "align": "left",
                "showarrow": False,
                "font": {"size": KEY_PX, "color": "#333"},
            },
            {
                "text": "node area ∝ " + ("|Δ load|" if difference else "load"),
                "xref": "x2 domain",
                "yref": "y2 domain",
                "x": 0.5,
                "y": 1.0,
                "yanchor": "bottom",
                "showarrow": False,
                "font": {"size": KEY_PX},
            },
        ],
    )
    return fig
