"""The graph pane's edge lines: four SVG paths (one per strength bin) and their legend key.

The drawn edges (the ``top_edges`` strongest per layer pair) are binned by strength at the 50th, 80th
and 95th percentile of the drawn edges' strengths; each bin is one width and colour, wider and darker
= stronger. Each bin is drawn as one layout shape whose SVG path holds all its segments
(``M x0,y0 L x1,y1 M ...`` in data coordinates). A line trace with NaN gaps would draw the same
picture, but plotly makes one ``<path>`` element per gap-separated segment and styles each one: a K2
graph's 1,416 edges cost ~15-50 ms of every redraw that way, against ~1 ms for four paths. The legend
keys are data-less line traces (one per bin, same width and colour), so the figure still says what
the widths mean. Hover and clicks on edges are the invisible midpoint markers of ``graph_pane``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from workbench.graph.tables import RoutingCounts

EDGE_BINS = 4
EDGE_COLOURS = ("rgba(120,120,120,0.25)", "rgba(90,90,140,0.4)", "rgba(60,60,160,0.6)", "rgba(30,30,180,0.85)")
BIN_NAMES = ("below the 50th", "50th–80th", "80th–95th", "95th and above")  # percentiles of the drawn strengths


def edge_width(b: int) -> float:
    """Line width of strength bin ``b`` (0 = weakest), px: 0.6 .. 3.9."""
    return 0.6 + 1.1 * b


def edge_keys() -> list[dict[str, Any]]:
    """Legend entries of the four strength bins: line traces without data, in the bins' width and colour."""
    return [
        {
            "type": "scatter",
            "x": [None],
            "y": [None],
            "mode": "lines",
            "line": {"width": edge_width(b), "color": EDGE_COLOURS[b]},
            "hoverinfo": "skip",
            "showlegend": True,
            "name": BIN_NAMES[b],
        }
        for b in range(EDGE_BINS)
    ]


def edge_legend(top_edges: int, weighted: bool) -> dict[str, Any]:
    """The legend (the bins' keys) below the plot, with a title saying what is drawn and what strength is."""
    strength = "Σ gate products" if weighted else "tokens"
    return {
        "orientation": "h",
        "x": 0.0,
        "xanchor": "left",
        "y": -0.16,
        "yanchor": "top",
        "title": {
            "text": f"lines: the {top_edges} strongest edges per layer pair; width = percentile of their strength"
            f" ({strength})",
            "side": "top",
        },
        "font": {"size": 11},
        "itemclick": False,  # the keys have no data to hide
        "itemdoubleclick": False,
    }


def strength_bins(p: RoutingCounts) -> np.ndarray:
    """Bin 0..3 of each drawn edge: below the 50th, 80th, 95th percentile of the drawn strengths, or above."""
    strength = p.edges.weight  # gate-product sums, or counts for ids-only routing
    if not strength.size:
        return np.zeros(0, dtype=np.int64)
    return np.searchsorted(np.quantile(strength, [0.5, 0.8, 0.95]), strength, side="right")


def edge_shapes(p: RoutingCounts, *, above: bool) -> list[dict[str, Any]]:
    """One path shape per strength bin holding its edges' segments (layer, expert) → (next layer, expert);
    ``above`` the traces (over a heatmap of nodes) or between the grid lines and the traces (under node markers)."""
    e = p.edges
    bins = strength_bins(p)
    x0, x1 = p.layers[e.pair], p.layers[e.pair + 1]
    shapes = []
    for b in range(EDGE_BINS):
        m = bins == b
        if not m.any():
            continue
        path = "".join(map("M{},{}L{},{}".format, x0[m].tolist(), e.src[m].tolist(), x1[m].tolist(), e.dst[m].tolist()))
        shapes.append(
            {
                "type": "path",
                "path": path,
                "xref": "x",
                "yref": "y",
                "line": {"width": edge_width(b), "color": EDGE_COLOURS[b]},
                "layer": "above" if above else "between",
            }
        )
    return shapes
