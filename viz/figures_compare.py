"""Plotly figures of a domain comparison (``workbench.analysis.compare.Comparison``).

Up to ``MAX_PANELS`` groups (a few domains or segments), each group gets its own panel or line. More groups
(``--by sequence``, ``--by step``) switch every figure to the one-row-per-group heatmaps of
``figures_many``, which stay readable for any number of groups. Group names are user text: they reach
plotly only through ``workbench.viz.text.plain``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from workbench.viz import figures_many as many
from workbench.viz import load_heatmap
from workbench.viz.figures_many import UNORDERED_TITLE
from workbench.viz.text import plain, plain_all

MAX_PANELS = 8  # more groups than this: one heatmap row per group (figures_many)
MAX_PAIR_LINES = 10  # more pairs than this (over 5 groups): the divergence matrix instead of lines
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


def _color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _cluster_ticks(
    edges: np.ndarray, layers: list[int], n_experts: int
) -> tuple[list[float | None], list[float | None]]:
    """One vertical white tick per layer and cluster boundary, as one line trace (segments split by None);
    y in layer numbers."""
    xs: list[float | None] = []
    ys: list[float | None] = []
    for layer, row in zip(layers, edges[:, :-1].tolist(), strict=True):
        for x in row:
            if 0 < x < n_experts:
                xs += [x - 0.5, x - 0.5, None]
                ys += [layer - 0.5, layer + 0.5, None]
    return xs, ys


def usage_heatmap(cmp: Any) -> go.Figure:
    """Relative load N_l(e) / (N k / E) per (layer, expert), one panel per group; 1 = balanced.

    Each layer's experts are clustered by the group that uses them most and sorted by load within each
    cluster (``load_heatmap.by_preferred_group``), the same columns in every panel; white ticks mark the
    cluster boundaries of each layer; hovering a cell shows its expert id.
    """
    groups = cmp.groups
    if len(groups) > MAX_PANELS:
        return many.usage_rows(cmp)
    fig = make_subplots(
        rows=len(groups), cols=1, shared_xaxes=True, subplot_titles=plain_all(groups), vertical_spacing=0.06
    )
    rel_da = cmp.load["relative_load"].transpose(cmp.by, "layer", "expert")
    rel = np.asarray(rel_da.values, dtype=np.float64)  # (G, L, E)
    order, preferred = load_heatmap.by_preferred_group(rel)
    edges = load_heatmap.cluster_edges(preferred, len(groups))
    layers = [int(v) for v in cmp.load["layer"].values]
    columns = np.arange(rel.shape[2])
    zmax = load_heatmap.relative_load_bounds(rel)
    for i, g in enumerate(groups):
        z = np.take_along_axis(rel[i], order, axis=1)  # (L, E) in the sorted column order
        fig.add_trace(
            go.Heatmap(
                z=z.astype(np.float32),
                x=columns,
                y=layers,
                customdata=order.astype(np.int16),
                zmin=0,
                zmax=zmax,
                colorscale="Viridis",
                colorbar=load_heatmap.relative_load_colorbar(zmax),
                showscale=i == 0,
                hovertemplate=f"{plain(g)}<br>layer %{{y}}, expert %{{customdata}}"
                "<br>relative load %{z:.2f}<extra></extra>",
            ),
            row=i + 1,
            col=1,
        )
        xs, ys = _cluster_ticks(edges, layers, rel.shape[2])
        fig.add_trace(
            go.Scatter(
                x=xs, y=ys, mode="lines", line={"color": "white", "width": 2}, hoverinfo="skip", showlegend=False
            ),
            row=i + 1,
            col=1,
        )
        fig.update_yaxes(
            title_text="layer",
            dtick=1 if len(layers) <= 20 else 5,
            range=[min(layers) - 0.5, max(layers) + 0.5],
            showgrid=False,
            zeroline=False,
            row=i + 1,
            col=1,
        )
    order_text = " | ".join(plain_all(groups))
    fig.update_xaxes(showticklabels=False, range=[-0.5, rel.shape[2] - 0.5], showgrid=False)
    fig.update_xaxes(
        title_text=f"experts, clustered by the {plain(cmp.by)} using them most ({order_text}), busiest first "
        "(hover: expert id)",
        row=len(groups),
        col=1,
    )
    per_panel = max(200, 10 * len(layers) + 40)
    fig.update_layout(
        title="Expert usage per layer (DeepSeek-V3 relative load: count ÷ (N·k/E); 1 = balanced)",
        height=100 + per_panel * len(groups),
        margin={"t": 80},
    )
    return fig


def divergence_figure(cmp: Any) -> go.Figure:
    """JSD per layer for each pair of groups, with the bootstrap interval and the permutation-null mean."""
    fig = go.Figure()
    d = cmp.divergence
    if d is None:
        fig.update_layout(title="Divergence: needs at least two groups")
        return fig
    if d.sizes["pair"] > MAX_PAIR_LINES:
        return many.divergence_matrix(cmp)
    layers = d["layer"].values
    for i, pair in enumerate(d["pair"].values):
        sub = d.sel(pair=pair)
        c = _color(i)
        name = plain(pair.replace("|", " vs ") if pair.count("|") == 1 else pair)
        lo, hi = sub["ci_low"].values, sub["ci_high"].values
        if np.isfinite(lo).any():
            fig.add_trace(
                go.Scatter(
                    x=np.concatenate([layers, layers[::-1]]),
                    y=np.concatenate([hi, lo[::-1]]),
                    fill="toself",
                    fillcolor=c,
                    opacity=0.2,
                    line={"width": 0},
                    name=f"{name}: {int(d.attrs['ci'] * 100)}% interval",
                    legendgroup=name,
                    hoverinfo="skip",
                )
            )
        fig.add_trace(
            go.Scatter(
                x=layers,
                y=sub["jsd"].values,
                mode="lines+markers",
                line={"color": c},
                name=f"{name}: JSD",
                legendgroup=name,
                customdata=np.stack([sub["p_value"].values, lo, hi], axis=1),
                hovertemplate="layer %{x}: JSD %{y:.4f} [%{customdata[1]:.4f}, %{customdata[2]:.4f}]"
                "<br>p = %{customdata[0]:.3g}<extra>" + name + "</extra>",
            )
        )
        fig.add_trace(
            go.Scatter(
                x=layers,
                y=sub["null_mean"].values,
                mode="lines",
                line={"color": c, "dash": "dot"},
                name=f"{name}: shuffled labels",
                legendgroup=name,
            )
        )
    fig.update_layout(
        title="Jensen-Shannon divergence of expert usage per layer (bits; bootstrap CI over sequences)",
        xaxis_title="layer",
        yaxis_title="JSD (bits)",
    )
    return fig


def specialization_bars(cmp: Any, per_group: int = 8) -> go.Figure:
    """DS(E, D) of the most group-specific (layer, expert) pairs of each group, bars per group, uniform k/E line."""
    fig = go.Figure()
    table = cmp.specific
    if table is None or table.empty:
        fig.update_layout(title="Specialisation: needs at least two groups")
        return fig
    if len(cmp.groups) > MAX_PANELS:
        return many.specialization_rows(cmp)
    picks: list[tuple[int, int]] = []
    for g in cmp.groups:
        top = table[table[cmp.by] == g].sort_values("lift", ascending=False).head(per_group)
        picks += [(int(r.layer), int(r.expert)) for r in top.itertuples() if (int(r.layer), int(r.expert)) not in picks]
    labels = [f"L{layer}:E{e}" for layer, e in picks]
    spec = cmp.specialization["specialization"]
    for i, g in enumerate(cmp.groups):
        vals = [float(spec.sel({cmp.by: g, "layer": layer, "expert": e})) for layer, e in picks]
        fig.add_trace(go.Bar(x=labels, y=vals, name=plain(g), marker_color=_color(i)))
    uniform = float(cmp.specialization.attrs["uniform"])
    fig.add_hline(y=uniform, line_dash="dash", annotation_text=f"uniform k/E = {uniform:.3g}")
    fig.update_layout(
        title="OLMoE domain specialisation DS(E, D) = N_k(E, D) / N_D of the most domain-specific experts",
        barmode="group",
        xaxis_title="layer:expert",
        yaxis_title="DS(E, D)",
    )
    return fig


def agreement_figure(cmp: Any) -> go.Figure:
    """Mixtral consecutive-token agreement per layer and group against the analytic random baselines."""
    if len(cmp.groups) > MAX_PANELS:
        return many.agreement_rows(cmp)
    a = cmp.agreement
    first = "same first choice" + ("" if "first_choice_note" not in a.attrs else UNORDERED_TITLE)
    fig = make_subplots(rows=1, cols=2, subplot_titles=(first, "any shared top-k expert"))
    layers = a["layer"].values
    for i, g in enumerate(cmp.groups):
        for col, var in ((1, "first_choice"), (2, "any_topk")):
            fig.add_trace(
                go.Scatter(
                    x=layers,
                    y=a[var].sel({cmp.by: g}).values,
                    mode="lines+markers",
                    name=plain(g),
                    legendgroup=plain(g),
                    showlegend=col == 1,
                    line={"color": _color(i)},
                ),
                row=1,
                col=col,
            )
    fig.add_hline(y=a.attrs["baseline_first_choice"], line_dash="dash", annotation_text="1/E", row=1, col=1)
    fig.add_hline(y=a.attrs["baseline_any_topk"], line_dash="dash", annotation_text="1 − C(E−k,k)/C(E,k)", row=1, col=2)
    fig.update_xaxes(title_text="layer")
    fig.update_yaxes(title_text="share of consecutive token pairs", row=1, col=1)
    fig.update_layout(title="Consecutive-token agreement (Mixtral §5) vs random routing")
    return fig


def entropy_transitions_figure(cmp: Any) -> go.Figure:
    """Load entropy per layer per group, and the top-20% transition mass per layer pair."""
    if len(cmp.groups) > MAX_PANELS:
        return many.entropy_rows(cmp)
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=("routing entropy ÷ log2 E", "next-layer mass in the top 20% candidates")
    )
    for i, g in enumerate(cmp.groups):
        fig.add_trace(
            go.Scatter(
                x=cmp.entropy["layer"].values,
                y=cmp.entropy["normalized"].sel({cmp.by: g}).values,
                mode="lines+markers",
                name=plain(g),
                line={"color": _color(i)},
            ),
            row=1,
            col=1,
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
    fig.update_xaxes(title_text="layer")
    fig.update_yaxes(title_text="entropy ÷ log2 E (1 = balanced)", row=1, col=1)
    fig.update_yaxes(title_text="share of next-layer mass", row=1, col=2)
    fig.update_layout(title="Routing entropy and inter-layer transition concentration")
    return fig
