"""Token path: one token's experts and gate weights across all MoE layers.

A heatmap with one row per MoE layer and one column per router rank (0 = first choice): the colour
is the gate weight the MoE applied, the cell text the expert id. ``TokenPathWidget`` adds a
sequence picker and a position slider; the transcript + graph widget embeds the figure and points
it at whichever token was clicked.
"""

from __future__ import annotations

from pathlib import Path

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go
import xarray as xr
from workbench.viz.text import plain

from workbench.errors import WorkbenchError

from .render import render_into
from .sequence_data import SequenceData, as_dataset, load_sequence, sequence_ids


class TokenPathFigure:
    """A figure of one token's path in an Output widget; ``show`` swaps the arrays in place."""

    def __init__(self, *, height: int = 320) -> None:
        self.output = widgets.Output(layout={"min_height": f"{height}px"})
        self.figure = go.Figure(
            data=[
                go.Heatmap(
                    z=[[0.0]],
                    text=[[""]],
                    texttemplate="%{text}",
                    colorscale="Blues",
                    colorbar={"title": {"text": "gate"}},
                    hovertemplate="layer %{y}, k %{x}<br>expert %{text}<br>gate %{z:.3f}<extra></extra>",
                )
            ],
            layout={
                "height": height,
                "margin": {"l": 50, "r": 10, "t": 36, "b": 36},
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
        with self.figure.batch_update():
            hm = self.figure.data[0]
            hm.z = z
            hm.text = ids.astype(str)
            hm.x = np.arange(ids.shape[1])
            hm.y = [str(int(x)) for x in layers]
            self.figure.layout.title.text = plain(title) + (
                "" if np.isfinite(w).any() else " (ids only: no gate weights)"
            )
            self.figure.layout.xaxis.title.text = "router rank" if rank_ordered else "top-k slot (unordered capture)"
        render_into(self.output, self.figure)


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
        super().__init__([widgets.HBox([self.sequence, self.position]), self.path_figure.output])
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

    def _sequence_changed(self, change: dict) -> None:
        self.data = load_sequence(self._ds, change["new"])
        self.position.max = max(0, self.data.n_tokens - 1)
        self.show(min(int(self.position.value), self.data.n_tokens - 1))
