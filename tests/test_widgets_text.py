"""Widget figures show user text literally and label the k axis by what the store's order means."""

from __future__ import annotations

import numpy as np
from workbench.viz.widgets.token_path import TokenPathFigure

LINK = '<a href="https://evil.example/">math</a>'


def _draw(rank_ordered: bool) -> TokenPathFigure:
    fig = TokenPathFigure()
    ids = np.array([[1, 2], [3, 0]], dtype=np.int16)  # (L, k)
    weights = np.array([[0.6, 0.4], [0.7, 0.3]], dtype=np.float32)
    fig.show(ids, weights, np.array([1, 2]), title=f"token 3 {LINK}", rank_ordered=rank_ordered)
    return fig


def test_token_path_title_escapes_user_text() -> None:
    title = _draw(True).figure.layout.title.text
    assert "&lt;a href" in title and "<a href" not in title


def test_token_path_k_axis_says_slot_on_unordered_stores() -> None:
    assert _draw(True).figure.layout.xaxis.title.text == "router rank"
    assert "unordered" in _draw(False).figure.layout.xaxis.title.text


def test_token_path_labels_cells_only_where_a_row_can_hold_a_label() -> None:
    small = _draw(True)  # 2 layers: tall rows, each cell shows its expert id
    assert small.figure.data[0].texttemplate == "%{text}"
    assert small.figure.layout.xaxis.title.text == "router rank"
    k2 = TokenPathFigure(height=300)  # K2's 60 layers in the transcript widget's pane: ~4 px per row
    rng = np.random.default_rng(0)
    k2.show(rng.integers(0, 384, (60, 8)), rng.random((60, 8)), np.arange(1, 61), title="t")
    hm = k2.figure.data[0]
    assert hm.texttemplate == "" and "hover a cell for its expert" in k2.figure.layout.xaxis.title.text
    assert "expert %{text}" in hm.hovertemplate and list(hm.text[5]) == [str(int(x)) for x in k2._ids[5]]
