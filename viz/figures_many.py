"""Comparison figures for many groups (``--by sequence`` or ``--by step``): one row per group, not one panel.

With a handful of domains, ``figures_compare`` draws one panel or one line per group. Thirty sequences
would make thirty panels (taller than a screen, and beyond what plotly lays out) and thirty lines in an
eight-colour cycle. Here every figure becomes a heatmap with one row per group, so any number of groups
reads at a glance and stays comparable:

- usage: groups × experts of the relative load, one layer at a time (a slider picks the layer), each
  layer's experts sorted by their pooled load;
- divergence: the groups × groups matrix of JSD averaged over layers (per-layer values in divergence.csv);
- specialisation: groups × the most group-specific (layer, expert) pairs of DS(E, D);
- agreement and entropy: groups × layers.

A report shows at most ``MAX_ROWS`` groups (the ones with the most tokens, in store order) and says so in
the figure title; the tables and CSVs always hold every group. All user text (group names) goes through
``workbench.viz.text.plain``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from workbench.viz import load_heatmap
from workbench.viz.text import plain, plain_all

MAX_ROWS = 60  # groups drawn as heatmap rows; more are listed in the tables and CSVs only
ROW_PX = 18  # height of one heatmap row in pixels
UNORDERED_TITLE = ": not computed, ids not in router rank order"  # engine stores (workbench/rank_order.py)


def shown_groups(cmp: Any) -> tuple[list[str], str]:
    """The groups drawn (at most ``MAX_ROWS``, most tokens first chosen, store order kept) and a title note."""
    groups = list(cmp.groups)
    if len(groups) <= MAX_ROWS:
        return groups, ""
    tokens = cmp.load["n_tokens"].sel({cmp.by: groups}).values
    keep = set(np.argsort(-tokens, kind="stable")[:MAX_ROWS].tolist())
    note = (
        f"<br><sup>the {MAX_ROWS} of {len(groups)} {plain(cmp.by)}s with the most tokens; "
        "every one is in the tables and CSVs</sup>"
    )
    return [g for i, g in enumerate(groups) if i in keep], note


def _height(rows: int) -> int:
    return max(380, 170 + ROW_PX * rows)


def _rows_axis(labels: list[str]) -> dict[str, Any]:
    return {"type": "category", "autorange": "reversed", "automargin": True, "categoryarray": labels}


def usage_rows(cmp: Any) -> go.Figure:
    """Relative load N_l(e) / (N k / E) as groups × experts, one layer shown at a time (slider).

    Each layer's experts are sorted by their load pooled over all groups, busiest first
    (``load_heatmap.by_load``): expert ids carry no meaning, and the sort shows how concentrated the
    layer's routing is; hovering a cell shows its expert id.
    """
    groups, note = shown_groups(cmp)
    rel = cmp.load["relative_load"].sel({cmp.by: groups})
    layers = [int(x) for x in cmp.load["layer"].values]
    order = load_heatmap.by_load(cmp.load["count"].sum(cmp.by).transpose("layer", "expert").values)  # (L, E)
    zmax = load_heatmap.relative_load_bounds(np.asarray(rel.values, dtype=np.float64))
    labels = plain_all(groups)
    columns = np.arange(order.shape[1])
    fig = go.Figure()
    for i, layer in enumerate(layers):
        z = rel.sel(layer=layer).transpose(cmp.by, "expert").values[:, order[i]].astype(np.float32)  # (G, E)
        fig.add_trace(
            go.Heatmap(
                z=z,
                x=columns,
                y=labels,
                customdata=np.broadcast_to(order[i].astype(np.int16), z.shape),
                zmin=0,
                zmax=zmax,
                colorscale="Viridis",
                visible=i == 0,
                colorbar=load_heatmap.relative_load_colorbar(zmax),
                name=f"layer {layer}",
                hovertemplate=f"%{{y}}<br>layer {layer} expert %{{customdata}}<br>relative load %{{z:.2f}}"
                "<extra></extra>",
            )
        )
    steps = [
        {"method": "update", "label": str(layer), "args": [{"visible": [j == i for j in range(len(layers))]}]}
        for i, layer in enumerate(layers)
    ]
    fig.update_layout(
        title=f"Expert usage per {plain(cmp.by)} (relative load: count ÷ (N·k/E); 1 = balanced); "
        f"pick the layer below{note}",
        sliders=[
            {
                "active": 0,
                "currentvalue": {"prefix": "layer "},
                "pad": {"t": 40},
                "steps": steps,
                "font": {"size": 12 if len(layers) <= 30 else 9},
            }
        ],
        xaxis={
            "title": f"experts of the layer, by load pooled over all {plain(cmp.by)}s, busiest first (hover: id)",
            "showticklabels": False,
            "range": [-0.5, len(columns) - 0.5],
        },
        yaxis={"title": plain(cmp.by), **_rows_axis(labels)},
        height=_height(len(groups)) + 80,
    )
    return fig


def divergence_matrix(cmp: Any) -> go.Figure:
    """Mean over layers of the JSD between every two groups, as a symmetric groups × groups matrix."""
    fig = go.Figure()
    d = cmp.divergence
    if d is None:
        fig.update_layout(title="Divergence: needs at least two groups")
        return fig
    groups, note = shown_groups(cmp)
    index = {g: i for i, g in enumerate(groups)}
    n = len(groups)
    mean = np.full((n, n), np.nan)
    peak = np.full((n, n), np.nan)
    np.fill_diagonal(mean, 0.0)
    jsd = d["jsd"].values  # (pair, layer)
    layers = d["layer"].values
    for p, (a, b) in enumerate(zip(d["a"].values, d["b"].values, strict=True)):
        if str(a) in index and str(b) in index:
            i, j = index[str(a)], index[str(b)]
            mean[i, j] = mean[j, i] = float(np.nanmean(jsd[p]))
            peak[i, j] = peak[j, i] = float(layers[int(np.nanargmax(jsd[p]))]) if np.isfinite(jsd[p]).any() else np.nan
    labels = plain_all(groups)
    fig.add_trace(
        go.Heatmap(
            z=mean,
            x=labels,
            y=labels,
            customdata=peak,
            colorscale="Magma",
            reversescale=True,
            zmin=0,
            colorbar={"title": "mean JSD (bits)"},
            hovertemplate="%{y} vs %{x}<br>mean JSD %{z:.4f} bits<br>largest at layer %{customdata}<extra></extra>",
        )
    )
    fig.update_layout(
        title=f"Jensen-Shannon divergence between {plain(cmp.by)}s (bits, mean over layers; "
        f"per layer in divergence.csv){note}",
        xaxis={"type": "category", "tickangle": -45, "automargin": True, "categoryarray": labels},
        yaxis=_rows_axis(labels),
        height=_height(n) + 60,
        width=max(700, 260 + ROW_PX * n),
    )
    return fig


def specialization_rows(cmp: Any, columns: int = 40) -> go.Figure:
    """DS(E, D) of the most group-specific (layer, expert) pairs (about ``columns`` of them), groups × pairs."""
    fig = go.Figure()
    table = cmp.specific
    if table is None or table.empty:
        fig.update_layout(title="Specialisation: needs at least two groups")
        return fig
    groups, note = shown_groups(cmp)
    per_group = max(1, columns // len(groups))
    picks: list[tuple[int, int]] = []
    for g in groups:
        top = table[table[cmp.by] == g].sort_values("lift", ascending=False).head(per_group)
        picks += [(int(r.layer), int(r.expert)) for r in top.itertuples() if (int(r.layer), int(r.expert)) not in picks]
    spec = cmp.specialization["specialization"]
    z = np.array([[float(spec.sel({cmp.by: g, "layer": la, "expert": e})) for la, e in picks] for g in groups])
    labels = plain_all(groups)
    uniform = float(cmp.specialization.attrs["uniform"])
    fig.add_trace(
        go.Heatmap(
            z=z,
            x=[f"L{la}:E{e}" for la, e in picks],
            y=labels,
            colorscale="Blues",
            zmin=0,
            colorbar={"title": "DS(E, D)"},
            hovertemplate="%{y}<br>%{x}: DS %{z:.3f}<extra></extra>",
        )
    )
    fig.update_layout(
        title=f"OLMoE specialisation DS(E, D) = N_k(E, D) / N_D of each {plain(cmp.by)}'s most specific experts "
        f"(uniform k/E = {uniform:.3g}){note}",
        xaxis={"title": "layer:expert", "type": "category", "tickangle": -45},
        yaxis=_rows_axis(labels),
        height=_height(len(groups)),
    )
    return fig


def _layer_rows(fig: go.Figure, cmp: Any, values: Any, groups: list[str], col: int, **heatmap: Any) -> None:
    labels = plain_all(groups)
    z = values.sel({cmp.by: groups}).transpose(cmp.by, "layer").values
    fig.add_trace(go.Heatmap(z=z, x=[str(int(x)) for x in values["layer"].values], y=labels, **heatmap), row=1, col=col)
    fig.update_yaxes(_rows_axis(labels), row=1, col=col)
    fig.update_xaxes(title_text="layer", type="category", row=1, col=col)


def agreement_rows(cmp: Any) -> go.Figure:
    """Mixtral consecutive-token agreement, groups × layers, first choice and any shared top-k side by side."""
    a = cmp.agreement
    groups, note = shown_groups(cmp)
    first, anyk = float(a.attrs["baseline_first_choice"]), float(a.attrs["baseline_any_topk"])
    fig = make_subplots(
        rows=1,
        cols=2,
        horizontal_spacing=0.18,
        subplot_titles=(
            f"same first choice (random 1/E = {first:.3g})" + ("first_choice_note" in a.attrs) * UNORDERED_TITLE,
            f"any shared top-k (random {anyk:.3g})",
        ),
    )
    for col, var in ((1, "first_choice"), (2, "any_topk")):
        _layer_rows(
            fig,
            cmp,
            a[var],
            groups,
            col,
            zmin=0,
            zmax=1,
            colorscale="Cividis",
            showscale=col == 2,
            colorbar={"title": "share"},
            hovertemplate="%{y}<br>layer %{x}: %{z:.3f}<extra></extra>",
        )
    fig.update_layout(
        title=f"Consecutive-token agreement (Mixtral §5) per {plain(cmp.by)} and layer{note}",
        height=_height(len(groups)),
    )
    return fig


def entropy_rows(cmp: Any) -> go.Figure:
    """Load entropy ÷ log2 E as groups × layers, and the top-20% transition mass per layer pair."""
    groups, note = shown_groups(cmp)
    fig = make_subplots(
        rows=1,
        cols=2,
        column_widths=[0.6, 0.4],
        horizontal_spacing=0.2,
        subplot_titles=("routing entropy ÷ log2 E", "next-layer mass in the top 20% candidates"),
    )
    _layer_rows(
        fig,
        cmp,
        cmp.entropy["normalized"],
        groups,
        1,
        zmax=1,
        colorscale="Viridis",
        colorbar={"title": "normalised", "x": 0.5, "thickness": 14},
        hovertemplate="%{y}<br>layer %{x}: %{z:.3f}<extra></extra>",
    )
    if cmp.transitions is not None:
        t = cmp.transitions
        fig.add_trace(
            go.Scatter(
                x=t["layer"].values, y=t["layer_top_mass"].values, mode="lines+markers", name="all selected tokens"
            ),
            row=1,
            col=2,
        )
        fig.add_hline(y=t.attrs["uniform_top_mass"], line_dash="dash", annotation_text="uniform", row=1, col=2)
        fig.update_xaxes(title_text="layer", dtick=1, row=1, col=2)
    fig.update_layout(
        title=f"Routing entropy per {plain(cmp.by)} and inter-layer transition concentration{note}",
        height=_height(len(groups)),
        showlegend=False,
    )
    return fig
