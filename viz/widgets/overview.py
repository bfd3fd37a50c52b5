"""Overview widget: the supernode alluvial of a selection, and a zoom from one supernode to its experts.

The figure is ``workbench.viz.overview.overview_figure`` (one column per MoE layer, blocks = supernodes,
ribbons = token transitions); below it a layer and a supernode picker show that supernode's panel
(``workbench.viz.overview_page.supernode_panel``: its flows in and out, and its experts with tokens,
load and top tokens), the same fragment the HTML export shows when a block is clicked. The figure is a
``PlotPane`` (``plot_pane.py``); picking is by controls, because plotly.js reports a Sankey block and a
ribbon click with the same trace and point number.
"""

from __future__ import annotations

from pathlib import Path

import ipywidgets as widgets
import xarray as xr
from workbench.viz.overview import overview_figure, shown_tokens
from workbench.viz.overview_page import supernode_panel

from workbench.errors import WorkbenchError
from workbench.graph.supernodes import Supernodes, supernodes
from workbench.store.select import parse_where

from .plot_pane import PlotPane
from .sequence_data import as_dataset


class OverviewWidget(widgets.VBox):
    """Supernodes of every MoE layer of a selection, their flows, and their experts on demand.

    Parameters
    ----------
    store : xarray.Dataset | str | Path
        A routing store (Dataset from ``workbench.open_store`` or its path/URL).
    where : list[str] | str, optional
        Selection clauses (``"domain=math"``); default all tokens.
    n_supernodes : int
        Supernodes per layer (``workbench.graph.supernodes``).
    """

    def __init__(
        self, store: xr.Dataset | str | Path, *, where: list[str] | str | None = None, n_supernodes: int = 8
    ) -> None:
        self._ds = as_dataset(store)
        self.supernodes: Supernodes = supernodes(self._ds, parse_where(where), n_supernodes=n_supernodes)
        sn = self.supernodes
        self.figure = overview_figure(sn)
        self._shown = shown_tokens(sn)
        self.plot = PlotPane(height=int(self.figure.layout.height or 600), pane="overview")
        self.layer = widgets.Dropdown(
            options=[(f"L{layer}", i) for i, layer in enumerate(sn.layers.tolist())], value=0, description="layer"
        )
        self.group = widgets.Dropdown(options=self._groups(0), description="supernode", layout={"width": "420px"})
        self.panel = widgets.HTML()
        super().__init__([self.plot, widgets.HBox([self.layer, self.group]), self.panel])
        self.layer.observe(self._layer_changed, names="value")
        self.group.observe(lambda _c: self._draw_panel(), names="value")
        self.plot.show_figure(self.figure)
        self._draw_panel()

    def _groups(self, i: int) -> list[tuple[str, int]]:
        sn = self.supernodes
        share = sn.load[i] / sn.top_k
        return [(f"S{g} · {share[g]:.0%} · {sn.label(i, g)}", g) for g in range(int(sn.n_groups[i]))]

    def _layer_changed(self, change: dict) -> None:
        self.group.options = self._groups(int(change["new"]))  # selects the first option, which redraws
        self._draw_panel()

    def _draw_panel(self) -> None:
        if self.group.value is not None:
            self.panel.value = supernode_panel(
                self.supernodes, int(self.layer.value), int(self.group.value), shown=self._shown
            )

    def show(self, layer: int, group: int) -> None:
        """Zoom to supernode ``group`` of MoE layer ``layer`` (the real layer index, as in ``L12 · S3``)."""
        sn = self.supernodes
        layers = sn.layers.tolist()
        if layer not in layers:
            raise WorkbenchError(f"layer {layer} is not in the overview (MoE layers {layers[0]}..{layers[-1]})")
        i = layers.index(layer)
        if not 0 <= group < int(sn.n_groups[i]):
            raise WorkbenchError(f"supernode {group} does not exist in layer {layer} (S0..S{int(sn.n_groups[i]) - 1})")
        self.layer.value = i
        self.group.value = group
        self._draw_panel()
