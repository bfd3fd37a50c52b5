"""Layer × expert heatmaps of relative load: column orders that show structure, and a colour scale from 0.

Expert ids carry no meaning (expert 17 of one layer has nothing to do with expert 17 of the next), so a
heatmap in id order reads as noise. The report sorts each layer's experts, one order per layer, the same
in every group's panel so the panels stay comparable cell by cell (hover shows each cell's expert id):

- ``by_preferred_group`` (a few groups, e.g. math, code, language): experts are clustered by the group
  that uses them most (argmax over groups of the relative load), in group order, and sorted within each
  cluster by that group's relative load, busiest first. A domain-specific expert then sits in its
  domain's block, so each panel shows a bright block where its own experts are;
- ``by_load`` (many groups): experts sorted by their load pooled over all groups, busiest first, which
  shows how concentrated each layer's routing is.

The colour scale runs from 0 (an expert the group never uses) to the 99.5th percentile of the relative
loads (at least 2), and its bar labels 0 "unused" and 1 "balanced" (DeepSeek-V3's relative expert load,
arXiv:2412.19437, App. C: count ÷ (N·k/E), 1 = perfectly balanced routing).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def by_load(counts: np.ndarray) -> np.ndarray:
    """Per layer, expert ids by pooled count, largest first (ties: lower id first).

    ``counts`` (L, E) routed-token counts pooled over groups; returns (L, E) int: ``order[l, j]`` is the
    expert shown in column j of layer l.
    """
    return np.argsort(-np.asarray(counts, dtype=np.float64), axis=1, kind="stable")


def by_preferred_group(relative: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per layer, expert ids clustered by their preferred group, busiest first within each cluster.

    ``relative`` (G, L, E) relative load per group (NaN counts as 0). Returns ``(order, preferred)``:
    ``order`` (L, E) as in ``by_load``, and ``preferred`` (L, E) the group index (0..G-1) of the expert in
    each column; an expert no group routes to (all zero) joins the last cluster.
    """
    rel = np.nan_to_num(np.asarray(relative, dtype=np.float64))
    g_count = rel.shape[0]
    best = rel.argmax(axis=0)  # (L, E)
    best = np.where(rel.max(axis=0) > 0, best, g_count - 1)
    own = np.take_along_axis(rel, best[None], axis=0)[0]  # (L, E): the preferred group's relative load
    experts = np.arange(rel.shape[2])
    order = np.empty(best.shape, dtype=np.int64)
    for layer in range(best.shape[0]):
        order[layer] = np.lexsort((experts, -own[layer], best[layer]))
    preferred = np.take_along_axis(best, order, axis=1)
    return order, preferred


def cluster_edges(preferred: np.ndarray, n_groups: int) -> np.ndarray:
    """Column positions where each cluster ends, per layer: (L, n_groups) with ``edges[l, g]`` the number
    of experts of layer l in clusters 0..g (so cluster g spans columns ``edges[l, g-1] .. edges[l, g]-1``)."""
    counts = np.stack([(preferred == g).sum(axis=1) for g in range(n_groups)], axis=1)
    return np.cumsum(counts, axis=1)


def relative_load_colorbar(zmax: float) -> dict[str, Any]:
    """The colour bar of a relative-load heatmap: from 0 (unused) up, with 1 (balanced load) labelled."""
    step = 1.0 if zmax <= 6 else float(np.ceil(zmax / 6))
    ticks = np.unique(np.r_[0.0, 1.0, np.arange(step, zmax + 1e-9, step)])
    text = ["0 unused" if t == 0 else "1 balanced" if t == 1 else f"{t:g}" for t in ticks]
    return {"title": {"text": "relative load"}, "tickvals": ticks.tolist(), "ticktext": text}


def relative_load_bounds(rel: np.ndarray) -> float:
    """Upper colour bound: the 99.5th percentile of the relative loads (a few outliers do not wash the
    scale out), at least 2 so "twice the balanced load" always has its own colour."""
    finite = rel[np.isfinite(rel)]
    return max(float(np.percentile(finite, 99.5)) if finite.size else 2.0, 2.0)
