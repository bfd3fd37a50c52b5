"""The graph pane's node layer: a marker per drawn expert, or one image of the whole layer × expert grid.

Small grids (the mini K2's 6 layers × 64 experts) draw one marker per (layer, expert) that the
selection routed a token to: size grows with √(tokens there / selected tokens), colour is the mean
gate weight (token count on ids-only stores). A K2-sized grid (60 × 384 = 23,040 cells; a 100-token
step fills ~16k of them) draws the nodes as one heatmap instead: a cell per (layer, expert), coloured
by the tokens routed there, empty where none was. Plotly draws a heatmap as a single image (one
pixel per cell, scaled up), so a redraw costs the same for 500 nodes or 23,000, where 16k WebGL
markers took most of a click's time in a browser without a GPU; at K2's size the markers overlapped
into a carpet anyway (under 1.5 px per expert), and the cells keep every node's own colour. The edges
are drawn on top of the cells. Hover shows the same numbers in both (tokens, mean gate), and a click
on a cell is a click on that node.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from workbench.graph.tables import RoutingCounts

NODE_TRACE = "experts"
# Grids with more cells than this draw the nodes as a heatmap (K2: 23,040; the mini K2: 384).
HEATMAP_CELLS = 3000
# Cell colours of the heatmap, from 0 tokens (never drawn: empty cells are left blank) to the most: light
# orange to dark red, so that a 1-token cell still shows on white and the blue-grey edges stand out on top.
GRID_COLOURS = [[0.0, "#fee6c6"], [0.35, "#fdae6b"], [0.7, "#e6550d"], [1.0, "#7f2704"]]
_MARKER_HOVER = "L%{x}:E%{y}<br>%{customdata} tokens<br>mean gate %{marker.color:.3f}<extra></extra>"
_MARKER_HOVER_IDS_ONLY = "L%{x}:E%{y}<br>%{customdata} tokens<extra></extra>"
_CELL_HOVER = "L%{x}:E%{y}<br>%{z} tokens<br>mean gate %{customdata:.3f}<extra>click: expert card</extra>"
_CELL_HOVER_IDS_ONLY = "L%{x}:E%{y}<br>%{z} tokens<extra>click: expert card</extra>"


def use_grid(p: RoutingCounts) -> bool:
    """Whether ``p``'s nodes are drawn as a heatmap (its layer × expert grid has over ``HEATMAP_CELLS`` cells)."""
    return p.layers.size * p.n_experts > HEATMAP_CELLS


def node_trace(p: RoutingCounts) -> tuple[dict[str, Any], tuple[np.ndarray, np.ndarray], str]:
    """The node trace of ``p`` (a plotly trace dict with numpy arrays), the drawn nodes as
    (layer index, expert) arrays, and a one-line key of what size and colour mean (for the subtitle)."""
    li, ei = np.nonzero(p.node_tokens)
    at = (li.astype(np.int64), ei.astype(np.int64))
    if use_grid(p):
        return _grid(p, li, ei), at, "cell colour = tokens routed to that expert (hover: mean gate)"
    what = "mean gate" if p.weighted else "tokens"
    return _markers(p, li, ei), at, f"node size ∝ √tokens, colour = {what}"


def _markers(p: RoutingCounts, li: np.ndarray, ei: np.ndarray) -> dict[str, Any]:
    tokens = p.node_tokens[li, ei]
    colour = p.mean_gate[li, ei] if p.weighted else tokens.astype(np.float64)
    size = 4 + 14 * np.sqrt(tokens / max(1, p.n_tokens))
    # 32-bit on the wire: token counts are exact in int32, sizes and colours need no more than 7 digits.
    # Hover reads the token count from a numeric customdata and the mean gate from the colour: no
    # per-node strings to build and send.
    return {
        "type": "scatter",
        "x": p.layers[li].astype(np.int32),
        "y": ei.astype(np.int32),
        "mode": "markers",
        "marker": {
            "size": size.astype(np.float32),
            "color": colour.astype(np.float32),
            "colorscale": "Viridis",
            "showscale": True,
            "line": {"width": 0},
            "colorbar": {"title": {"text": "mean gate" if p.weighted else "tokens"}},
        },
        "customdata": tokens.astype(np.int32),
        "hovertemplate": _MARKER_HOVER if p.weighted else _MARKER_HOVER_IDS_ONLY,
        "showlegend": False,
        "name": NODE_TRACE,
    }


def _grid(p: RoutingCounts, li: np.ndarray, ei: np.ndarray) -> dict[str, Any]:
    """One heatmap: z (experts × layers, float32) = tokens, NaN (blank, no hover) where none was routed."""
    z = np.full((p.n_experts, p.layers.size), np.nan, dtype=np.float32)
    tokens = p.node_tokens[li, ei]
    z[ei, li] = tokens
    trace: dict[str, Any] = {
        "type": "heatmap",
        "x": p.layers.astype(np.int32),
        "z": z,
        "zmin": 0,
        "zmax": int(max(1, tokens.max(initial=1))),
        "colorscale": GRID_COLOURS,
        "hoverongaps": False,
        "colorbar": {"title": {"text": "tokens"}},
        "hovertemplate": _CELL_HOVER if p.weighted else _CELL_HOVER_IDS_ONLY,
        "showlegend": False,
        "name": NODE_TRACE,
    }
    if p.weighted:
        gate = np.full(z.shape, np.nan, dtype=np.float32)
        gate[ei, li] = p.mean_gate[li, ei]
        trace["customdata"] = gate
    return trace


def clicked_node(trace: dict[str, Any], at: tuple[np.ndarray, np.ndarray], point: tuple[int, ...]) -> tuple[int, int]:
    """(layer index, expert) of a click on the node trace, or (-1, -1) when it hit no drawn node: a
    marker's index, or a heatmap cell's (row = expert, column = layer index)."""
    if trace.get("type") == "heatmap":
        if len(point) == 2:
            expert, layer = point
            drawn = np.any((at[0] == layer) & (at[1] == expert))
            return (int(layer), int(expert)) if drawn else (-1, -1)
        return -1, -1
    i = point[0] if point else -1
    return (int(at[0][i]), int(at[1][i])) if 0 <= i < at[0].size else (-1, -1)
