"""Domain comparison: pick layers and domains; see expert usage, divergence per layer, specific experts.

Three views of one selection, all computed by ``workbench.analysis`` (formulas and sources in
docs/metrics.md):

- usage heatmap (layer x expert) of one domain's DeepSeek-V3 relative load N_l(e) / (N k / E), or of
  its contrast with the other selected domains (share_D - share_rest);
- Jensen-Shannon divergence per layer for every pair of selected domains, with the bootstrap
  interval over sequences and the permutation null mean (``domain_divergence``);
- the most domain-specific experts per layer (OLMoE DS(E, D) lift, ``specific_experts``).

Changing a control does not recompute: the bootstrap takes seconds on big stores, so the
"Compare" button does (and the widget computes once when built). The figures are ``PlotPane``s
(redrawn in place, arrays as binary buffers); a click on a heatmap cell shows that expert's card
(``workbench.experts.expert_page`` over the selected domains, read from the store).
"""

from __future__ import annotations

import html
from pathlib import Path

import ipywidgets as widgets
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import xarray as xr
from workbench.viz.text import plain

from workbench.errors import WorkbenchError
from workbench.store import schema as S
from workbench.store.select import Selection

from .expert_card import ExpertCard
from .plot_pane import PlotPane
from .sequence_data import as_dataset

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")


class DomainComparisonWidget(widgets.VBox):
    """Compare expert usage across domains of a routing store.

    Parameters
    ----------
    store : xarray.Dataset | str | Path
        A routing store with at least two domains (e.g. the prompt suite recorded by ``workbench record``).
    domains : sequence of str, optional
        Domains selected at start (default: all in the store).
    layers : (int, int), optional
        Real MoE layer range, inclusive (default: all).
    n_boot, n_perm : int
        Bootstrap resamples and permutations for the divergence intervals and p-values.
    top : int
        Specific experts listed per (domain, layer).
    """

    def __init__(
        self,
        store: xr.Dataset | str | Path,
        *,
        domains: list[str] | tuple[str, ...] | None = None,
        layers: tuple[int, int] | None = None,
        n_boot: int = 200,
        n_perm: int = 200,
        top: int = 3,
    ) -> None:
        self._ds = as_dataset(store)
        known = sorted({str(d) for d in self._ds[S.SEQUENCE_DOMAIN].values})
        if len(known) < 2:
            raise WorkbenchError(f"domain comparison needs a store with two or more domains; this one has {known}")
        chosen = list(domains) if domains is not None else known
        unknown = [d for d in chosen if d not in known]
        if unknown:
            raise WorkbenchError(f"unknown domain(s) {unknown}; this store has {known}")
        all_layers = [int(x) for x in self._ds[S.LAYER].values]
        lo, hi = layers if layers is not None else (all_layers[0], all_layers[-1])
        self.top = top
        self.load: xr.Dataset | None = None
        self.divergence: xr.Dataset | None = None
        self.specific: pd.DataFrame | None = None

        self.domains = widgets.SelectMultiple(options=known, value=tuple(chosen), description="domains", rows=4)
        self.layers = widgets.IntRangeSlider(
            value=(lo, hi), min=all_layers[0], max=all_layers[-1], description="layers", continuous_update=False
        )
        self.n_boot = widgets.BoundedIntText(value=n_boot, min=10, max=100_000, description="bootstrap")
        self.n_perm = widgets.BoundedIntText(value=n_perm, min=10, max=100_000, description="permutations")
        self.compare_button = widgets.Button(description="Compare", button_style="primary", icon="refresh")
        self.heatmap_of = widgets.Dropdown(description="heatmap")
        self.heatmap_mode = widgets.ToggleButtons(options=["relative load", "contrast"], value="relative load")
        self.status = widgets.HTML("")
        self.heatmap = go.Figure(
            data=[go.Heatmap(z=[[0.0]], colorscale="RdBu_r", zmid=1.0, name="usage")],
            layout={
                "height": 380,
                "margin": {"l": 50, "r": 10, "t": 36, "b": 40},
                "xaxis": {"title": {"text": "expert"}},
                "yaxis": {"title": {"text": "MoE layer"}, "autorange": "reversed"},
            },
        )
        self.divergence_figure = go.Figure(
            layout={
                "height": 320,
                "margin": {"l": 50, "r": 10, "t": 36, "b": 40},
                "xaxis": {"title": {"text": "MoE layer"}},
                "yaxis": {"title": {"text": "JSD (bits)"}, "rangemode": "tozero"},
                "title": {"text": "divergence per layer (bootstrap interval; dotted: permutation null)"},
            }
        )
        self.heatmap_plot = PlotPane(height=380, pane="usage")
        self.divergence_plot = PlotPane(height=320, pane="divergence")
        self.card = ExpertCard()
        self.heatmap_plot.on_click(self._cell_clicked)
        self.table = widgets.HTML(layout={"max_height": "320px", "overflow_y": "auto"})
        controls = widgets.HBox(
            [self.domains, widgets.VBox([self.layers, self.n_boot, self.n_perm, self.compare_button])]
        )
        super().__init__(
            [
                controls,
                self.status,
                widgets.HBox([self.heatmap_of, self.heatmap_mode]),
                self.heatmap_plot,
                self.card,
                self.divergence_plot,
                widgets.HTML("<b>Most domain-specific experts</b> (lift of DS(E, D) over the other domains)"),
                self.table,
            ]
        )
        self.compare_button.on_click(lambda _b: self._compare_clicked())
        self.heatmap_of.observe(lambda _c: self._draw_heatmap(), names="value")
        self.heatmap_mode.observe(lambda _c: self._draw_heatmap(), names="value")
        self.compare()

    def selection(self) -> Selection:
        """The Selection the controls describe."""
        a, b = self.layers.value
        return Selection(domains=tuple(self.domains.value), layers=(int(a), int(b)))

    def compare(self) -> None:
        """Recompute usage, divergence and specific experts for the current controls."""
        from workbench.analysis import domain_divergence, expert_load, specific_experts

        if len(self.domains.value) < 2:
            raise WorkbenchError("select at least two domains to compare")
        sel = self.selection()
        self.status.value = "computing ..."
        self.load = expert_load(self._ds, sel, by="domain")
        self.divergence = domain_divergence(self._ds, sel, n_boot=int(self.n_boot.value), n_perm=int(self.n_perm.value))
        self.specific = specific_experts(self._ds, sel, top=self.top)
        names = [str(d) for d in self.load["domain"].values]
        keep = self.heatmap_of.value if self.heatmap_of.value in names else names[0]
        self.heatmap_of.options = names
        self.heatmap_of.value = keep
        self._draw_heatmap()
        self._draw_divergence()
        self._draw_table()
        n_tok = ", ".join(f"{d}: {int(n)}" for d, n in zip(names, self.load["n_tokens"].values, strict=True))
        self.status.value = f"tokens per domain: {n_tok}; layers {sel.layers[0]}..{sel.layers[1]}"  # type: ignore[index]

    def show_expert(self, layer: int, expert: int) -> None:
        """The card of ``expert`` at real MoE layer ``layer`` over the selected domains (a heatmap click)."""
        from workbench.experts import expert_page

        from .expert_card import card_html

        page = expert_page(self._ds, layer, expert, Selection(domains=tuple(self.domains.value)), top=8, width=6)
        self.card.page = page
        self.card.value = card_html(page)

    def _cell_clicked(self, _trace: str, where: tuple[int, ...]) -> None:
        if self.load is None or len(where) != 2:
            return
        layers = [int(x) for x in self.load["layer"].values]
        row, col = where
        if 0 <= row < len(layers):
            try:
                self.show_expert(layers[row], int(col))
            except WorkbenchError as err:  # a callback has no cell to raise into
                self.status.value = f"<span style='color:#b00'>{html.escape(str(err))}</span>"

    def _compare_clicked(self) -> None:
        try:
            self.compare()
        except WorkbenchError as err:  # shown in the widget: a callback has no cell to raise into
            self.status.value = f"<span style='color:#b00'>{html.escape(str(err))}</span>"

    def _draw_heatmap(self) -> None:
        if self.load is None or self.heatmap_of.value is None:
            return
        dom = self.heatmap_of.value
        layers = [str(int(x)) for x in self.load["layer"].values]
        if self.heatmap_mode.value == "relative load":
            z = self.load["relative_load"].sel(domain=dom).values  # (L, E)
            zmid, title = 1.0, f"{dom}: relative load N_l(e) / (N k / E)  (1 = balanced)"
        else:
            share = self.load["share"]
            rest = share.sel(domain=[d for d in share["domain"].values if d != dom]).mean("domain")
            z = (share.sel(domain=dom) - rest).values  # (L, E)
            zmid, title = 0.0, f"{dom}: expert share minus the other domains' mean share"
        with self.heatmap.batch_update():
            hm = self.heatmap.data[0]
            hm.z = z
            hm.y = layers
            hm.x = np.arange(z.shape[1])
            hm.zmid = zmid
            self.heatmap.layout.title.text = plain(title)
            self.heatmap.layout.yaxis.type = "category"
        self.heatmap_plot.show_figure(self.heatmap)

    def _draw_divergence(self) -> None:
        assert self.divergence is not None
        div = self.divergence
        layers = np.asarray(div["layer"].values)
        traces = []
        for i, pair in enumerate(div["pair"].values):
            colour = PALETTE[i % len(PALETTE)]
            jsd = div["jsd"].sel(pair=pair).values
            lo, hi = div["ci_low"].sel(pair=pair).values, div["ci_high"].sel(pair=pair).values
            traces.append(
                go.Scatter(
                    x=layers,
                    y=jsd,
                    mode="lines+markers",
                    name=plain(str(pair).replace("|", " vs ")),
                    line={"color": colour},
                    error_y={"type": "data", "symmetric": False, "array": hi - jsd, "arrayminus": jsd - lo},
                )
            )
            traces.append(
                go.Scatter(
                    x=layers,
                    y=div["null_mean"].sel(pair=pair).values,
                    mode="lines",
                    line={"color": colour, "dash": "dot", "width": 1},
                    name=plain(f"{pair} null"),
                    showlegend=False,
                )
            )
        with self.divergence_figure.batch_update():
            self.divergence_figure.data = ()
        self.divergence_figure.add_traces(traces)
        self.divergence_plot.show_figure(self.divergence_figure)

    def _draw_table(self) -> None:
        assert self.specific is not None
        df = self.specific.copy()
        if df.empty:
            self.table.value = "<i>no experts used</i>"
            return
        df = df[["domain", "layer", "rank", "expert", "ds", "ds_rest", "lift", "tokens"]]
        self.table.value = df.to_html(index=False, float_format=lambda x: f"{x:.3f}", border=0)
