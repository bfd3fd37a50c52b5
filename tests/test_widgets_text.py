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
