"""A reasoning graph as one self-contained HTML page: the interactive figure, and an expert card per node.

Clicking a node opens its **expert card** beside the figure: what the graph knows about the expert
(layer, tokens routed there, load, mean gate weight, its traffic by domain, its circuit, its most
frequent tokens, its strongest incoming and outgoing edges) and, when the page is written with the
routing store (``export_graph(g, "g.html", store=ds, selection=sel)``), a compact summary of its
expert page (``workbench.experts.expert_page`` over the graph's selection): the tokens special to it by
lift and its top contexts. Cards are precomputed text, rendered with ``textContent`` (user text is never
parsed as HTML), a few hundred bytes each; plotly.js is inlined once (``html_page``).

Store summaries are computed for the ``MAX_STORE_CARDS`` nodes of highest load (one store read each);
the other nodes' cards say so.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import networkx as nx
import plotly.graph_objects as go
import xarray as xr
from workbench.viz.html_page import page
from workbench.viz.text import figure_title

from workbench.graph.build import describe_selection
from workbench.store.select import Selection

MAX_STORE_CARDS = 150  # nodes (heaviest first) whose card carries an expert-page summary from the store
CARD_TOKENS = 5  # tokens by lift, and top contexts, per card
CARD_EDGES = 3  # strongest incoming and outgoing edges per card
Card = dict[str, Any]  # {"title": str, "facts": [[label, value]], "sections": [[heading, [line, ...]]]}

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1em; color: #222; }
#wb-layout { display: flex; gap: 1em; align-items: flex-start; }
#wb-figure { flex: 1 1 auto; min-width: 0; }
#wb-card { flex: 0 0 300px; font-size: 13px; border: 1px solid #ddd; border-radius: 4px; padding: 0.6em 0.8em;
           max-height: 90vh; overflow-y: auto; background: #fafafa; }
#wb-card h3 { margin: 0 0 0.4em; font-size: 15px; }
#wb-card h4 { margin: 0.8em 0 0.2em; font-size: 13px; color: #555; }
#wb-card table { border-collapse: collapse; }
#wb-card td { padding: 1px 4px; vertical-align: top; } #wb-card td:first-child { color: #555; white-space: nowrap; }
#wb-card ul { margin: 0; padding-left: 1.1em; } #wb-card li { margin: 0.15em 0; word-break: break-word; }
#wb-card .hint { color: #777; }
"""

# Renders CARDS[id] into #wb-card with textContent only; a click on a node (customdata = node id) opens it.
_SCRIPT = """
const CARDS = %s;
function showCard(id) {
  const card = CARDS[id], box = document.getElementById('wb-card');
  if (!card) return;
  box.replaceChildren();
  const h = document.createElement('h3'); h.textContent = card.title; box.append(h);
  const table = document.createElement('table');
  for (const [label, value] of card.facts) {
    const tr = table.insertRow(); tr.insertCell().textContent = label; tr.insertCell().textContent = value;
  }
  box.append(table);
  for (const [heading, lines] of card.sections) {
    const h4 = document.createElement('h4'); h4.textContent = heading; box.append(h4);
    const ul = document.createElement('ul');
    for (const line of lines) { const li = document.createElement('li'); li.textContent = line; ul.append(li); }
    box.append(ul);
  }
  box.dataset.node = id;
}
window.workbenchFigures['wb-graph'].then(gd => gd.on('plotly_click', ev => {
  const pt = (ev.points || []).find(p => typeof p.customdata === 'string' && CARDS[p.customdata]);
  if (pt) showCard(pt.customdata);
}));
"""


def _pct(x: float) -> str:
    return f"{x:.0%}"


def _graph_card(g: nx.DiGraph, node: str) -> Card:
    """The card of ``node`` from the graph alone (its attributes and its strongest edges)."""
    d = g.nodes[node]
    difference = g.graph.get("kind") == "difference"
    facts: list[list[str]] = [["expert", str(d.get("expert", "?"))], ["MoE layer", str(d.get("layer", "?"))]]
    if difference:
        a, b = str(g.graph.get("label_a", "a")), str(g.graph.get("label_b", "b"))
        facts += [
            [f"load in {a}", f"{float(d.get('load_a', 0.0)):.3f}"],
            [f"load in {b}", f"{float(d.get('load_b', 0.0)):.3f}"],
            ["Δ load", f"{float(d.get('delta', 0.0)):+.3f}"],
        ]
    else:
        facts += [["tokens routed", f"{int(d.get('tokens', 0)):,}"], ["load", f"{float(d.get('load', 0.0)):.3f}"]]
        if "mean_gate" in d:
            facts.append(["mean gate weight", f"{float(d['mean_gate']):.3f}"])
    if "community" in d:
        facts.append(["circuit", str(d["community"])])
    sections: list[list[Any]] = []
    shares = sorted(((k[6:], float(v)) for k, v in d.items() if k.startswith("share_")), key=lambda kv: -kv[1])
    if shares:
        sections.append(["tokens by domain", [f"{name}: {_pct(v)}" for name, v in shares]])
    if d.get("top_tokens"):
        sections.append(["most frequent tokens", [str(d["top_tokens"])]])
    for heading, edges, other in (
        ("strongest incoming edges", g.in_edges(node, data=True), 0),
        ("strongest outgoing edges", g.out_edges(node, data=True), 1),
    ):
        ranked = sorted(edges, key=lambda e: -abs(float(e[2].get("weight", 0.0))))[:CARD_EDGES]
        if ranked:
            has_share = all("share" in e[2] for e in ranked)
            lines = [
                f"{e[other]}  {float(e[2].get('weight', 0.0)):.3g}"
                + (f" ({float(e[2]['share']):.1%})" if has_share else "")
                for e in ranked
            ]
            sections.append([heading + (" (weight, share of the layer pair)" if has_share else " (weight)"), lines])
    return {"title": f"{node}: expert {d.get('expert', '?')} of layer {d.get('layer', '?')}", "facts": facts,
            "sections": sections}  # fmt: skip


def _store_sections(ds: xr.Dataset, layer: int, expert: int, selection: Selection | None) -> list[list[Any]]:
    """Tokens by lift and top contexts from the expert's page (``workbench.experts``)."""
    from workbench.experts import expert_page

    p = expert_page(ds, layer, expert, selection, top=CARD_TOKENS, width=6, n_boot=0)
    out: list[list[Any]] = []
    if p.lift:
        out.append(
            [
                "tokens special to it (lift; routed here / occurrences)",
                [f"{t.text}  ×{t.lift:.1f}  ({t.count}/{t.base_count})" for t in p.lift],
            ]
        )
    if p.contexts:
        out.append(["top contexts (the [token] routed here)", [f"{c.before}[{c.token}]{c.after}" for c in p.contexts]])
    return out


def expert_cards(g: nx.DiGraph, store: xr.Dataset | None = None, selection: Selection | None = None) -> dict[str, Card]:
    """One card per node of ``g`` (see the module docstring); with ``store``, expert-page summaries over
    ``selection`` for the ``MAX_STORE_CARDS`` heaviest nodes."""
    cards = {str(n): _graph_card(g, n) for n in g.nodes}
    if store is None:
        return cards
    weight = "delta" if g.graph.get("kind") == "difference" else "load"
    heavy = sorted(g.nodes, key=lambda n: -abs(float(g.nodes[n].get(weight, 0.0))))
    where = f"({describe_selection(selection)})"
    for i, n in enumerate(heavy):
        card = cards[str(n)]
        if i >= MAX_STORE_CARDS:
            card["sections"].append(["expert page", [f"not summarised here (only the {MAX_STORE_CARDS} heaviest)"]])
            continue
        d = g.nodes[n]
        sections = _store_sections(store, int(d["layer"]), int(d["expert"]), selection)
        card["sections"] += [[f"{h} {where}", lines] for h, lines in sections]
    return cards


def graph_page(fig: go.Figure, cards: Mapping[str, Card]) -> str:
    """The page: the figure (div ``wb-graph``, as wide as the window allows) with the card panel to its right,
    plotly.js inlined once."""
    shown = go.Figure(fig)
    shown.update_layout(width=None, autosize=True)  # fills the space the card panel leaves
    body = (
        "<div id='wb-layout'><div id='wb-figure'>{{figure:wb-graph}}</div>"
        "<div id='wb-card'><p class='hint'>Click a node to see its expert card.</p></div></div>"
    )
    script = _SCRIPT % json.dumps(cards, ensure_ascii=False).replace("</", "<\\/")
    return page(figure_title(fig)[0], body, [("wb-graph", shown)], css=_CSS, script=script)
