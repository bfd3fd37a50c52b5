"""The graph pane: a plotly figure of expert pathways, updated in place, with an export row.

Layout: x = the model's MoE layer, y = expert id. The axes never move between selections, so clicking
from step to step shows how the pathway changes. The edges are four path shapes, one per strength bin
(``edge_layer``), keyed by four data-less legend traces; the figure's other traces are the invisible
markers at the edges' midpoints that carry their hover text and clicks, and one node trace (markers, or
on a K2-sized grid one heatmap image: ``node_layer``). Their arrays are replaced and sent as binary
buffers to a ``PlotPane``, which redraws in place with ``Plotly.react`` and reports clicks on nodes and
edges. The subtitle says what node size and colour mean, the legend what line width means.
"""

from __future__ import annotations

import copy
import functools
import html
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import networkx as nx
import numpy as np
import plotly.graph_objects as go
from workbench.viz.export import export_figure
from workbench.viz.file_meta import set_svg_title
from workbench.viz.text import figure_title, plain

from workbench.errors import WorkbenchError
from workbench.graph.export import write_graph_data
from workbench.graph.tables import RoutingCounts
from workbench.outputs import atomic_path

from .edge_layer import edge_keys, edge_legend, edge_shapes
from .node_layer import NODE_TRACE, clicked_node, node_trace, use_grid
from .pathways import pathway_graph
from .plot_pane import PlotPane

EXPORT_FORMATS = ("png", "svg", "graphml")
# PNG pixels per CSS pixel of an export from the button (the pane's size as shown): sharp when zoomed or
# printed, as the CLI's PNGs (``export_figure``, scale 2); the WebGL layer is drawn at 2 pixels per CSS pixel.
BUTTON_PNG_SCALE = 2.0
_EMPTY = np.zeros(0)
_EDGE_HOVER = (
    "%{text}<br>%{customdata[0]} tokens · weight %{customdata[1]:.3f} · share %{customdata[2]:.1%}"
    "<br>%{hovertext}<extra>click: its tokens</extra>"
)
EDGE_TRACE = "edges"
# The edges' invisible hover markers are drawn with WebGL (plotly's scattergl: one canvas) above this many
# edges on a heatmap-sized grid: a K2 graph draws 24 edges × 59 layer pairs = 1,416 of them, as SVG 1,416
# path elements styled one by one per click; a small graph stays all SVG (a WebGL canvas of its own costs
# more than a few hundred markers).
GL_EDGE_MARKERS = 500
NodeHandler = Callable[[int, int], None]  # (layer index, expert)
EdgeHandler = Callable[[int, int, int], None]  # (layer-pair index, source expert, target expert)
EdgeTokens = Callable[[np.ndarray, np.ndarray, np.ndarray], "list[str] | None"]


class GraphPane(widgets.VBox):
    """Plotly figure of a selection's ``RoutingCounts`` plus an export row (format, path, button, status line).

    Parameters
    ----------
    top_edges : int
        Edges drawn per layer pair (the strongest by summed gate-weight product, or by count for
        ids-only stores; ties by expert ids, ``workbench.graph.prune``). Exports of GraphML keep every edge.
    height : int
        Figure height in pixels.
    """

    def __init__(self, *, top_edges: int = 24, height: int = 560) -> None:
        self.top_edges = top_edges
        self.pathways: RoutingCounts | None = None  # what is drawn: the top edges per layer pair
        self._all_edges: Callable[[], RoutingCounts] | None = None  # the same rows, every edge (export)
        self.graph: nx.DiGraph | None = None
        self.title = ""
        # The figure is a plain dict of fixed traces (four legend keys of the edge bins, the edges' hover
        # markers, one node trace) and layout (the edges as four path shapes) holding numpy arrays; a click
        # replaces the arrays and the PlotPane sends them as binary buffers, skipping plotly's per-property
        # validation, which costs more than the counting itself.
        self._keys = edge_keys()  # legend keys of the edge widths (the edges themselves are shapes)
        self._edges: dict[str, Any] = {
            "type": "scatter",
            "x": _EMPTY,
            "y": _EMPTY,
            "mode": "markers",
            "marker": {"size": 9, "color": "rgba(0,0,0,0)"},  # invisible, but hovered and clicked
            "customdata": np.zeros((0, 3)),
            "text": [],
            "hovertext": [],
            "hovertemplate": _EDGE_HOVER,
            "showlegend": False,
            "name": EDGE_TRACE,
        }
        self._nodes: dict[str, Any] = {"type": "scatter", "x": _EMPTY, "y": _EMPTY, "name": NODE_TRACE}
        self._data: list[dict[str, Any]] = [*self._keys, self._edges, self._nodes]
        self._layout: dict[str, Any] = {
            "height": height,
            "margin": {"l": 50, "r": 10, "t": 58, "b": 84},
            "xaxis": {"title": {"text": "MoE layer"}, "dtick": 1},
            "yaxis": {"title": {"text": "expert"}},
            "plot_bgcolor": "white",
            "template": "none",  # the default template would be most of the JSON sent per click
            "shapes": [],
            "showlegend": True,
            "legend": edge_legend(top_edges, True),
            "title": {
                "text": "select a step, segment or token",
                "font": {"size": 13},
                "subtitle": {"text": "", "font": {"size": 11, "color": "#555"}},
            },
        }
        self.format = widgets.Dropdown(options=list(EXPORT_FORMATS), value="png", layout={"width": "90px"})
        self.path = widgets.Text(value="reasoning_graph", description="file", layout={"width": "260px"})
        self.export_button = widgets.Button(description="Export graph", icon="download")
        self.status = widgets.HTML("")
        self.export_button.on_click(lambda _b: self._export_clicked())
        row = widgets.HBox([self.format, self.path, self.export_button])
        self.plot = PlotPane(height=height, pane="graph")
        self.plot.on_click(self._clicked)
        self._node_handlers: list[NodeHandler] = []
        self._edge_handlers: list[EdgeHandler] = []
        self._node_at = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))  # drawn nodes: layer index, expert
        super().__init__([self.plot, row, self.status])
        self.plot.show(self._data, self._layout)

    @property
    def figure(self) -> go.Figure:
        """The figure as shown, as a plotly Figure (built on access: for export and inspection)."""
        return go.Figure(data=copy.deepcopy(self._data), layout=copy.deepcopy(self._layout))

    def on_node(self, handler: NodeHandler) -> None:
        """Call ``handler(layer_index, expert)`` when a node is clicked (``layer_index`` into ``layers``)."""
        self._node_handlers.append(handler)

    def on_edge(self, handler: EdgeHandler) -> None:
        """Call ``handler(pair, src, dst)`` when an edge is clicked (``pair`` joins layer indices p, p+1)."""
        self._edge_handlers.append(handler)

    def click_node(self, layer: int, expert: int) -> None:
        """Act as a click on the node of real MoE layer ``layer`` and ``expert`` (it must be drawn)."""
        p = self._drawn()
        li = np.nonzero(p.layers == layer)[0]
        drawn = li.size and np.any((self._node_at[0] == li[0]) & (self._node_at[1] == expert))
        if not drawn:
            raise WorkbenchError(f"L{layer}:E{expert} is not in the graph of this selection")
        for h in self._node_handlers:
            h(int(li[0]), int(expert))

    def click_edge(self, layer: int, src: int, dst: int) -> None:
        """Act as a click on the drawn edge L{layer}:E{src} -> (next MoE layer):E{dst}."""
        p = self._drawn()
        li = np.nonzero(p.layers == layer)[0]
        e = p.edges
        hit = np.nonzero((e.pair == (li[0] if li.size else -1)) & (e.src == src) & (e.dst == dst))[0]
        if not hit.size:
            raise WorkbenchError(f"no drawn edge L{layer}:E{src} -> E{dst} in the graph of this selection")
        self.plot.click(EDGE_TRACE, int(hit[0]))

    def _drawn(self) -> RoutingCounts:
        if self.pathways is None:
            raise WorkbenchError("nothing selected yet: click a step, segment or token first")
        return self.pathways

    def _clicked(self, trace: str, where: tuple[int, ...]) -> None:
        point = where[0] if where else -1
        try:
            layer, expert = clicked_node(self._nodes, self._node_at, where) if trace == NODE_TRACE else (-1, -1)
            if layer >= 0:
                for hn in self._node_handlers:
                    hn(layer, expert)
            elif trace == EDGE_TRACE and self.pathways is not None and 0 <= point < len(self.pathways.edges):
                e = self.pathways.edges
                for he in self._edge_handlers:
                    he(int(e.pair[point]), int(e.src[point]), int(e.dst[point]))
        except WorkbenchError as err:  # shown in the widget: a click has no cell to raise into
            self.status.value = f"<span style='color:#b00'>{html.escape(str(err))}</span>"

    def show(
        self, p: RoutingCounts, *, title: str, all_edges: Callable[[], RoutingCounts] | None = None,
        edge_tokens: EdgeTokens | None = None,
    ) -> None:  # fmt: skip
        """Draw ``p``'s edges (already pruned to ``top_edges`` per layer pair; new arrays in the fixed
        traces, one figure message). ``all_edges`` counts the same rows with every edge, for exports;
        ``edge_tokens(pair, src, dst)`` gives each drawn edge's top tokens for its hover text (or None)."""
        self.pathways, self.title, self._all_edges = p, title, all_edges
        self.graph = None  # built on export only: the figure needs the arrays, not networkx
        grid = use_grid(p)
        self._layout["shapes"] = edge_shapes(p, above=grid)
        self._layout["legend"] = edge_legend(self.top_edges, p.weighted)
        self._show_edge_hover(p, edge_tokens, gl=grid)
        self._nodes, self._node_at, key = node_trace(p)
        # Plotly's hover (and so its click) goes to the last trace with a point near the mouse, and a heatmap
        # has one everywhere: the edges' markers come after it, and win only on the marker itself
        # (hoverdistance 5 px: WebGL markers measure it from their centre), the cells everywhere else. Node
        # markers come last, as they are drawn on top.
        self._data = [self._nodes, *self._keys, self._edges] if grid else [*self._keys, self._edges, self._nodes]
        self._layout["hoverdistance"] = 5 if grid else 20
        self._layout["title"]["text"] = plain(title)  # sequence ids and token text, shown literally
        self._layout["title"]["subtitle"]["text"] = key
        self._layout["yaxis"]["range"] = [-1, p.n_experts] if not grid else [-0.5, p.n_experts - 0.5]
        # every layer labelled while the labels fit (the mini K2's 6); K2's 60 would overlap: every 5th
        self._layout["xaxis"]["dtick"] = 1 if p.layers.size <= 24 else 5
        self.plot.show(self._data, self._layout)

    def _show_edge_hover(self, p: RoutingCounts, edge_tokens: EdgeTokens | None, *, gl: bool) -> None:
        """Midpoint markers of the drawn edges: label, (count, weight, share) and top tokens for the hover
        (WebGL when ``gl``, a K2-sized graph, and there are many)."""
        e = p.edges
        hover = self._edges
        hover["type"] = "scattergl" if gl and len(e) > GL_EDGE_MARKERS else "scatter"
        hover["x"] = (p.layers[e.pair] + p.layers[e.pair + 1]) / 2.0
        hover["y"] = (e.src + e.dst) / 2.0
        totals = p.flow_totals[e.pair] if e.pair.size else np.zeros(0)
        share = np.divide(e.weight, totals, out=np.zeros(e.weight.size), where=totals > 0)
        hover["customdata"] = np.stack([e.count.astype(np.float64), e.weight.astype(np.float64), share], axis=1)
        a, b = p.layers[e.pair].tolist(), p.layers[e.pair + 1].tolist()
        hover["text"] = [
            f"L{x}:E{s} → L{y}:E{d}" for x, s, y, d in zip(a, e.src.tolist(), b, e.dst.tolist(), strict=True)
        ]
        tops = edge_tokens(e.pair, e.src, e.dst) if edge_tokens is not None else None
        hover["hovertext"] = (
            ["top tokens: " + t for t in tops]
            if tops is not None
            else ["(large selection: click for its tokens)"] * len(e)
        )

    def current_graph(self) -> nx.DiGraph:
        """The networkx reasoning graph of what the pane shows (all edges, not only the drawn ones)."""
        if self.pathways is None:
            raise WorkbenchError("nothing selected yet: click a step, segment or token first")
        if self.graph is None:
            counts = self._all_edges() if self._all_edges is not None else self.pathways
            self.graph = pathway_graph(counts, title=self.title)
        return self.graph

    def export(self, path: str | Path, fmt: str | None = None) -> Path:
        """Write the current graph: PNG/SVG (the figure, 1000 × 700 px) or GraphML (every node and edge).

        PNG and SVG are drawn by kaleido in its own headless Chromium (``workbench.viz.export.export_figure``:
        it starts one per call, or uses the one a ``static_export_session()`` block keeps open; the
        *Export graph* button of a pane a browser shows uses that browser instead). GraphML is written
        by ``workbench.graph.export`` (the library's reasoning graph, list attributes as JSON). Files
        are written to a temporary name in the same folder and renamed, so a failed export never leaves
        a partial file. Returns the written path.
        """
        path = Path(path)
        fmt = (fmt or path.suffix.lstrip(".") or "png").lower()
        if fmt not in EXPORT_FORMATS:
            raise WorkbenchError(f"cannot export {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
        if path.suffix.lower() != f".{fmt}":
            path = path.with_name(path.name + f".{fmt}")
        graph = self.current_graph()
        path.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "graphml":
            return write_graph_data(graph, path, "graphml")
        return export_figure(self.figure, path, fmt, scale=1.0, width=1000, height=700)

    def _export_clicked(self) -> None:
        fmt = str(self.format.value)
        if fmt in ("png", "svg") and self.plot.live and self.pathways is not None:
            # the browser that shows the figure makes the image from what it has drawn, at the size shown
            # (plot_image.js): no kaleido start, no second plot of the figure
            path = Path(self.path.value)
            path = path if path.suffix.lower() == f".{fmt}" else path.with_name(path.name + f".{fmt}")
            self.status.value = "exporting ..."
            scale = BUTTON_PNG_SCALE if fmt == "png" else 1.0
            self.plot.request_image(fmt, None, None, functools.partial(self._write_image, path), scale=scale)
            return
        try:
            written = self.export(self.path.value, fmt)
        except Exception as err:  # shown in the widget: a button callback has no cell to raise into
            self.status.value = f"<span style='color:#b00'>export failed: {html.escape(str(err))}</span>"
        else:
            self.status.value = f"wrote <code>{html.escape(str(written))}</code>"

    def _write_image(self, path: Path, data: bytes | None, error: str) -> None:
        """Write an image the browser drew (atomically, as ``export`` does; an SVG gets the figure's title
        as its ``<title>``, as kaleido's do), or say why not."""
        if not data:
            self.status.value = f"<span style='color:#b00'>export failed: {html.escape(error or 'no image')}</span>"
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                Path(tmp).write_bytes(data)
                if path.suffix.lower() == ".svg":
                    set_svg_title(Path(tmp), *figure_title(go.Figure(layout=copy.deepcopy(self._layout))))
        except (OSError, ValueError, WorkbenchError) as err:
            self.status.value = f"<span style='color:#b00'>export failed: {html.escape(str(err))}</span>"
        else:
            info = self.plot.last_image  # the browser's reply, just received
            size = ""
            if info.get("width") and info.get("height"):
                s = float(info.get("scale", 1.0))
                size = f" ({int(float(info['width']) * s)} × {int(float(info['height']) * s)} px)"  # whole pixels
            self.status.value = f"wrote <code>{html.escape(str(path))}</code>{size}"
