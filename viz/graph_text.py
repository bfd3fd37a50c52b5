"""The words of a graph figure: node and edge hover texts, the subtitle and the caption (its key).

A figure must read without the docs, so every encoding it uses is stated on the figure itself: what a
column, a node's size and colour, and an edge's width and colour mean, what was pruned, and (for a
difference graph) how much of each side's difference the kept edges show. ``graph_figure`` places
these texts; this module only words them. User text (domain names, selections, token text) goes
through ``workbench.viz.text.plain`` before it is wrapped in the figure's own markup.
"""

from __future__ import annotations

from typing import Any

import networkx as nx
from workbench.viz.text import plain


def is_difference(g: nx.DiGraph) -> bool:
    """True for a ``difference_graph`` (signed deltas), False for a reasoning graph."""
    return bool(g.graph.get("kind") == "difference")


def side_labels(g: nx.DiGraph) -> tuple[str, str]:
    """The two selections of a difference graph, as the user wrote them (not yet escaped)."""
    return str(g.graph.get("label_a", "a")), str(g.graph.get("label_b", "b"))


def node_hover(node: str, d: dict[str, Any], difference: bool, labels: tuple[str, str] = ("a", "b")) -> str:
    """A node's hover text: expert and layer, tokens and load (or both loads and Δ), gate, domains, tokens."""
    lines = [f"<b>{plain(node)}</b>  expert {d.get('expert')} · layer {d.get('layer')}"]
    if difference:
        a, b = (plain(x) for x in labels)
        lines.append(f"load in {a} {d.get('load_a', 0):.3f} · in {b} {d.get('load_b', 0):.3f}")
        lines.append(f"Δ load {d.get('delta', 0):+.3f} ({'more in ' + a if d.get('delta', 0) > 0 else 'more in ' + b})")
    else:
        lines.append(f"tokens {d.get('tokens', 0)} · load {d.get('load', 0):.3f}")
        if "mean_gate" in d:
            lines.append(f"mean gate {d['mean_gate']:.3f}")
        shares = [f"{plain(k[6:])} {v:.0%}" for k, v in sorted(d.items()) if k.startswith("share_")]
        if shares:
            lines.append("domains: " + ", ".join(shares))
        if "community" in d:
            lines.append(f"circuit {d['community']}")
    if d.get("top_tokens"):
        lines.append("top tokens: " + plain(d["top_tokens"]))
    return "<br>".join(lines)


def edge_hover(
    u: str, v: str, d: dict[str, Any], difference: bool, weighted: bool, labels: tuple[str, str] = ("a", "b")
) -> str:
    """An edge's hover text: tokens that take it, weight and share of its layer pair (or both shares and Δ)."""
    lines = [f"<b>{plain(u)} → {plain(v)}</b>"]
    if difference:
        a, b = (plain(x) for x in labels)
        delta = float(d.get("delta", 0.0))
        lines.append(f"share of the layer pair in {a} {d.get('share_a', 0):.2%} · in {b} {d.get('share_b', 0):.2%}")
        lines.append(f"Δ share {100 * delta:+.2f} points ({'more in ' + a if delta > 0 else 'more in ' + b})")
        lines.append(f"tokens in {a} {d.get('count_a', 0)} · in {b} {d.get('count_b', 0)}")
        side = a if delta > 0 else b
    else:
        weight = f"weight {float(d.get('weight', 0.0)):.4g}" if weighted else "weight = count (ids-only store)"
        lines.append(f"tokens {d.get('count', 0)} · {weight} · {float(d.get('share', 0.0)):.2%} of the layer pair")
        side = ""
    if d.get("top_tokens"):
        lines.append(f"top tokens{' in ' + side if side else ''}: " + plain(d["top_tokens"]))
    return "<br>".join(lines)


def subtitle(g: nx.DiGraph) -> str:
    """One line under the title: what the graph holds (and, for differences, each side's totals)."""
    if is_difference(g):
        a, b = (plain(x) for x in side_labels(g))
        sides = g.graph.get("sides") or {}
        parts = []
        for key, name, colour in (("a", a, "red"), ("b", b, "blue")):
            s = sides.get(key, {})
            parts.append(
                f"{colour}: more in {name} ({int(s.get('tokens', 0)):,} tokens): {int(s.get('edges', 0))} edges "
                f"carrying {float(s.get('kept', 0.0)):.0%} of that side's Δ share"
            )
        return " · ".join(parts)
    n_tok = int(g.graph.get("n_tokens", 0))
    n_c = g.graph.get("n_communities")
    circuits = f" · {n_c} circuits" if n_c else ""
    return f"{n_tok:,} tokens · {g.number_of_nodes()} experts · {g.number_of_edges()} edges{circuits}"


def pruning_text(g: nx.DiGraph) -> str:
    """The pruning applied (``G.graph["pruning"]``, e.g. ``"min_count=2, top_edges=12"``) in words."""
    text = str(g.graph.get("pruning", "none"))
    if text in ("none", ""):
        return "No pruning: every edge is drawn."
    diff = is_difference(g)
    words = []
    for rule in text.replace(";", ",").split(","):
        key, _, value = rule.strip().partition("=")
        if key == "top_edges":
            words.append(
                f"the {value} edges of largest |Δ| of each sign per layer pair (so both sides show)"
                if diff
                else f"the {value} heaviest edges per layer pair"
            )
        elif key == "flow":
            side = " and sign" if diff else ""
            words.append(
                f"the fewest edges carrying {float(value):.0%} of each layer pair's {'Δ' if diff else 'flow'}{side}"
            )
        elif key == "min_count":
            words.append(f"edges taken by at least {value} tokens")
        elif key and key != "none":
            words.append(plain(rule.strip()))
    return "Pruned to " + ", then ".join(words) + "."


def caption(g: nx.DiGraph, *, labelled_all: bool) -> str:
    """The figure's key in words (four lines of plotly text): columns, node size and colour, edges, pruning."""
    labels = (
        "every node is labelled with its expert id" if labelled_all else "labels: the heaviest expert of each layer"
    )
    lines = [
        "Columns: MoE layers. Within a column experts are stacked by circuit, then by size "
        f"(an order, not a value); {labels}."
    ]
    if is_difference(g):
        a, b = (plain(x) for x in side_labels(g))
        lines[0] = (
            f"Columns: MoE layers. In a column, experts with more load in {a} sit above those with more in {b}, "
            f"each stacked by circuit, then size (an order, not a value); {labels}."
        )
        lines += [
            f"Node colour and area: Δ load = load in {a} − load in {b}, load = tokens routed to the expert / tokens "
            "selected.",
            f"Edge: Δ share = its share of the layer pair's flow in {a} − in {b}; red: more in {a}, blue: more in {b}; "
            "width ∝ |Δ share|.",
        ]
    else:
        weight = (
            "width ∝ weight = Σ over those tokens of the product of the two gate weights"
            if g.graph.get("weighted", True)
            else "width ∝ tokens (ids-only store: no gate weights)"
        )
        lines += [
            "Node area ∝ load = tokens routed to the expert / tokens selected. Colour: circuit (Louvain community "
            "of the drawn graph).",
            f"Edge: tokens passing from an expert to one of the next layer's; {weight}.",
        ]
    lines.append(pruning_text(g) + " Hover a node, or the middle of an edge, for its numbers.")
    return "<br>".join(lines)
