"""Token path: one token's experts and gate weights across all MoE layers.

A heatmap with one row per MoE layer and one column per router rank (0 = first choice): the colour
is the gate weight the MoE applied, the cell text the expert id (where rows are tall enough to read
it: the mini K2's 6 layers, not K2's 60 in the same pane; the hover names it always). ``TokenPathWidget`` adds a
sequence picker, a position slider and the expert card of a clicked cell (over the whole sequence);
the transcript + graph widget embeds the figure and points it at whichever token was clicked. The
figure is a ``PlotPane``: a move redraws in place, a click on a cell reports (layer, rank).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go
import xarray as xr
from workbench.viz.text import plain

from workbench.errors import WorkbenchError
from workbench.experts.vocab import text_vocab

from .expert_card import ExpertCard, card_page
from .pathways import store_vocab
from .plot_pane import PlotPane
from .sequence_data import SequenceData, as_dataset, load_sequence, sequence_ids

# Cell labels (expert ids) are drawn only where a row is at least this tall (px): at K2's 60 layers in a
# 300 px pane a row is ~4 px and plotly shrinks the labels to unreadable specks, while drawing its 480
# labels (each with its own contrast colour) took ~35 of the figure's ~45 ms redraw in Chromium. The
# hover names the expert either way.
MIN_LABEL_ROW_PX = 11
MARGIN_TB = 36 + 36  # top and bottom margins (px) of the figure


class TokenPathFigure:
    """A figure of one token's path in a ``PlotPane``; ``show`` swaps the arrays in place.

    ``on_expert(handler)``: ``handler(layer_index, expert)`` when a cell is clicked."""

    def __init__(self, *, height: int = 320) -> None:
        self.height = height
        self.plot = PlotPane(height=height, pane="token-path")
        self._ids = np.zeros((0, 0), dtype=np.int64)
        self._handlers: list = []
        self.plot.on_click(self._clicked)
        self.figure = go.Figure(
            data=[
                go.Heatmap(
                    z=[[0.0]],
                    text=[[""]],
                    texttemplate="%{text}",
                    colorscale="Blues",
                    colorbar={"title": {"text": "gate"}},
                    hovertemplate="layer %{y}, k %{x}<br>expert %{text}<br>gate %{z:.3f}<extra>click: card</extra>",
                    name="path",
                )
            ],
            layout={
                "height": height,
                "margin": {"l": 50, "r": 10, "t": MARGIN_TB // 2, "b": MARGIN_TB // 2},
                "xaxis": {"title": {"text": "router rank"}, "dtick": 1},
                "yaxis": {"title": {"text": "MoE layer"}, "autorange": "reversed", "type": "category"},
                "title": {"text": "token path", "font": {"size": 13}},
                "template": "none",
            },
        )

    def show(
        self, expert_ids: np.ndarray, gate_weights: np.ndarray, layers: np.ndarray, *, title: str,
        rank_ordered: bool = True,
    ) -> None:  # fmt: skip
        """Draw one token: ``expert_ids`` and ``gate_weights`` of shape (L, k), ``layers`` (L,).

        ``rank_ordered=False`` (an engine capture, whose ids are not in the router's rank order) labels
        the k axis as top-k slots, not ranks."""
        ids = np.asarray(expert_ids)  # (L, k)
        w = np.asarray(gate_weights, dtype=np.float64)  # (L, k), NaN for ids-only
        z = np.where(np.isfinite(w), w, 0.0)
        labels = self.labelled(ids.shape[0])
        k_axis = "router rank" if rank_ordered else "top-k slot (unordered capture)"
        with self.figure.batch_update():
            hm = self.figure.data[0]
            hm.z = z
            hm.text = ids.astype(str)
            hm.texttemplate = "%{text}" if labels else ""
            hm.x = np.arange(ids.shape[1])
            hm.y = [str(int(x)) for x in layers]
            self.figure.layout.title.text = plain(title) + (
                "" if np.isfinite(w).any() else " (ids only: no gate weights)"
            )
            self.figure.layout.xaxis.title.text = k_axis if labels else f"{k_axis} · hover a cell for its expert"
        self._ids = ids
        self.plot.show_figure(self.figure)

    def labelled(self, n_layers: int) -> bool:
        """Whether cells carry their expert id: rows of ``n_layers`` at least ``MIN_LABEL_ROW_PX`` tall."""
        return (self.height - MARGIN_TB) / max(1, n_layers) >= MIN_LABEL_ROW_PX

    def on_expert(self, handler: Any) -> None:
        """Call ``handler(layer_index, expert)`` when the cell of that layer's expert is clicked."""
        self._handlers.append(handler)

    def click(self, layer_index: int, rank: int) -> None:
        """Act as a click on the cell (layer index, router rank / slot)."""
        self.plot.click("path", layer_index, rank)

    def _clicked(self, _trace: str, where: tuple[int, ...]) -> None:
        if len(where) != 2 or not (0 <= where[0] < self._ids.shape[0] and 0 <= where[1] < self._ids.shape[1]):
            return
        for h in self._handlers:
            h(int(where[0]), int(self._ids[where[0], where[1]]))


def token_title(data: SequenceData, position: int) -> str:
    kind = data.segment_kinds[int(data.segment[position])]
    step = int(data.step[position])
    return f"token {position} {data.token_text[position]!r} · {kind}" + (f" · step {step}" if step >= 0 else "")


class TokenPathWidget(widgets.VBox):
    """One token's experts and weights across all layers, for any sequence and position of a store.

    Parameters
    ----------
    store : xarray.Dataset | str | Path
        A routing store (Dataset from ``workbench.open_store`` or its path/URL).
    sequence : str, optional
        Sequence id (default: the first).
    position : int
        Position of the token within the sequence.
    """

    def __init__(self, store: xr.Dataset | str | Path, *, sequence: str | None = None, position: int = 0) -> None:
        self._ds = as_dataset(store)
        self.data = load_sequence(self._ds, sequence)
        self.sequence = widgets.Dropdown(
            options=sequence_ids(self._ds), value=self.data.sequence_id, description="sequence"
        )
        self.position = widgets.IntSlider(
            value=0, min=0, max=max(0, self.data.n_tokens - 1), description="position", continuous_update=False
        )
        self.path_figure = TokenPathFigure()
        self.card = ExpertCard()
        self._texts = text_vocab(store_vocab(self._ds))
        self.path_figure.on_expert(self._expert_clicked)
        super().__init__([widgets.HBox([self.sequence, self.position]), self.path_figure.plot, self.card])
        self.sequence.observe(self._sequence_changed, names="value")
        self.position.observe(lambda _c: self._draw(), names="value")
        self.show(position)

    @property
    def figure(self) -> go.Figure:
        return self.path_figure.figure

    def show(self, position: int) -> None:
        """Move to ``position`` (raises WorkbenchError when outside the sequence)."""
        if not 0 <= position < self.data.n_tokens:
            raise WorkbenchError(
                f"position {position} is outside sequence {self.data.sequence_id!r} (0..{self.data.n_tokens - 1})"
            )
        if self.position.value == position:
            self._draw()
        else:
            self.position.value = position  # observer draws

    def _draw(self) -> None:
        p = int(self.position.value)
        d = self.data
        self.path_figure.show(
            d.expert_ids[p], d.gate_weights[p], d.layers, title=token_title(d, p), rank_ordered=d.rank_ordered
        )

    def _expert_clicked(self, layer_index: int, expert: int) -> None:
        """The card of the clicked expert over the whole sequence."""
        d = self.data
        rows = np.arange(d.n_tokens)
        model = str(self._ds.attrs.get("model", {}).get("model_name", ""))
        page = card_page(d, rows, layer_index, expert, self._texts, model=model, selection=f"sequence {d.sequence_id}")
        self.card.show_page(page)

    def _sequence_changed(self, change: dict) -> None:
        self.data = load_sequence(self._ds, change["new"])
        self.position.max = max(0, self.data.n_tokens - 1)
        self.show(min(int(self.position.value), self.data.n_tokens - 1))
