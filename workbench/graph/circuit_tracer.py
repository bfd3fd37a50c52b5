"""Reasoning graphs as the graph JSON that circuit-tracer's frontend draws (``circuit_tracer/frontend``).

The schema follows ``circuit_tracer/frontend/graph_models.py`` (safety-research/circuit-tracer, PyPI
``circuit-tracer`` 0.5): a ``Model`` of ``metadata`` (slug, scan, transcoder_list, prompt_tokens, prompt,
node_threshold, schema_version), ``qParams`` (pinnedIds, supernodes, linkType, clickedId, sg_pos),
``nodes`` and ``links`` ({source, target, weight}). Node ids are formed in one place per node kind, as
there: ``expert_node`` (a "cross layer transcoder" feature), ``embedding_node``, ``output_node`` (a logit).

What the frontend needs, read from its JavaScript (``attribution_graph/util-cg.js`` ``formatData``,
``init-cg-link-graph.js``), and how this module meets it:

- it deletes every node whose ``layer_feature_ctx`` occurs more than ``2/3 · len(prompt_tokens)`` times,
  so a prompt of 0 or 1 tokens empties the graph: ``prompt_tokens`` always has at least 2 entries;
- x = ``ctx_idx`` (a column per prompt token), y = layer; its y axis has ``logit layer + 2`` rows and
  26 + 2 without a logit node, so a 60-layer K2 graph needs the output node to be drawn at all;
- with ``node_threshold`` set it keeps nodes with ``influence <= threshold``: ``influence`` is
  circuit-tracer's cumulative influence in [0, 1] (``circuit_tracer/graph.py``, ``prune_graph``), below;
- edges are drawn for the clicked node and between pinned nodes: ``clickedId`` is the heaviest path's
  first-layer expert and ``pinnedIds`` the input and that path through the first ``PIN_LAYERS`` layers
  (its subgraph panel stacks pinned nodes by layer: 60 of them do not read), so it opens with both drawn.

Mapping. An expert is a feature at ``layer`` = its real MoE layer with ``feature`` = Cantor pairing of
(layer, expert), as circuit-tracer pairs (layer, feature index); ``activation`` = mean gate weight;
``clerp`` names the expert and its top tokens. One-token path: ``prompt_tokens`` = up to ``CONTEXT``
tokens before it in its sequence, then the token (``⟨start⟩`` before the first token of a sequence;
``…`` when no store is given); every node sits at the token's column. Aggregate (many tokens, a
thinking step, a domain): column 0 holds one input node for the whole selection, labelled with its
token count (the menu names the selection), column 1 the experts and the output. The input node
links to the first layer's experts and the last layer's experts to the output node, with the node's
summed gate weight (ids-only stores: its token count; difference graphs: its ``delta``);
expert-to-expert links carry the edge ``weight`` (difference graphs: the signed ``delta``).

Influence (circuit-tracer's definition on our graph): with ``A[v, u] = |w(u → v)| / Σ_u' |w(u' → v)|``
(each node's inputs normalised to 1) and the output node weighted 1, a node's influence is
``I(n) = Σ_{k ≥ 1} (e_out A^k)[n]``: the share of the output's input reaching it, summed over paths.
Sorted by I descending, a node's ``influence`` field is ``Σ_{m ranked ≤ n} I(m) / Σ_m I(m)`` (cumulative,
in [0, 1]); circuit-tracer computes it on its unpruned graph, this module on the exported (pruned) one.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

import networkx as nx
import numpy as np

from workbench.experts.vocab import text_vocab
from workbench.graph.paths import heaviest_paths

FEATURE_TYPE = "cross layer transcoder"
CONTEXT = 15  # tokens before a one-token path's token kept in its prompt_tokens
START = "⟨start⟩"  # stands before the first token of a sequence (the frontend needs two prompt tokens)
NO_CONTEXT = "…"  # stands for the context of a one-token path exported without its store
NODE_THRESHOLD = 1.0  # the frontend's pruning slider starts here: every exported node shown
PIN_LAYERS = 8  # pinned: the input and the heaviest path's first layers (60 pinned nodes are unreadable)


@dataclass
class CTMetadata:
    slug: str
    scan: str
    transcoder_list: list[str]
    prompt_tokens: list[str]
    prompt: str
    node_threshold: float | None = NODE_THRESHOLD
    schema_version: int | None = 1


@dataclass
class CTQParams:
    pinnedIds: list[str]  # camelCase: the frontend's field names
    supernodes: list[list[str]]
    linkType: str = "both"
    clickedId: str = ""
    sg_pos: str = ""


@dataclass
class CTNode:
    node_id: str
    feature: int
    layer: str
    ctx_idx: int
    feature_type: str
    jsNodeId: str
    token_prob: float = 0.0
    is_target_logit: bool = False
    run_idx: int = 0
    reverse_ctx_idx: int = 0
    clerp: str = ""
    influence: float | None = None
    activation: float | None = None


def cantor(x: int, y: int) -> int:
    """Cantor pairing of two non-negative integers (circuit-tracer's ``_cantor_pairing``)."""
    return (x + y) * (x + y + 1) // 2 + y


def expert_node(layer: int, expert: int, ctx_idx: int, *, activation: float | None = None, clerp: str = "") -> CTNode:
    """The feature node of ``expert`` at MoE ``layer`` in prompt column ``ctx_idx`` (ids formed only here)."""
    return CTNode(
        node_id=f"{layer}_{expert}_{ctx_idx}",
        feature=cantor(layer, expert),
        layer=str(layer),
        ctx_idx=ctx_idx,
        feature_type=FEATURE_TYPE,
        jsNodeId=f"{layer}_{expert}-0",
        clerp=clerp,
        activation=activation,
    )


def embedding_node(ctx_idx: int, vocab: int | str) -> CTNode:
    """The input node at column ``ctx_idx`` (a token id, or ``"sel"`` for a whole selection)."""
    return CTNode(
        node_id=f"E_{vocab}_{ctx_idx}",
        feature=ctx_idx,
        layer="E",
        ctx_idx=ctx_idx,
        feature_type="embedding",
        jsNodeId=f"E_{vocab}-{ctx_idx}",
    )


def output_node(ctx_idx: int, top_layer: int, text: str) -> CTNode:
    """The output (a "logit" node, one layer above the last MoE layer). ``clerp`` needs ``(p=…)``: the
    frontend parses it; routing stores keep no probabilities, so p is n/a."""
    layer = str(top_layer + 1)
    return CTNode(
        node_id=f"{layer}_out_{ctx_idx}",
        feature=0,
        layer=layer,
        ctx_idx=ctx_idx,
        feature_type="logit",
        jsNodeId=f"L_out-{ctx_idx}",
        is_target_logit=True,
        clerp=f"{text} (p=n/a)",
    )


@dataclass
class CTGraph:
    metadata: CTMetadata
    qParams: CTQParams
    nodes: list[CTNode] = field(default_factory=list)
    links: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TokenContext:
    """A one-token path's surroundings in its sequence: up to ``CONTEXT`` tokens before it, the next one."""

    before: list[str]
    token: str
    next_token: str | None
    token_id: int | None = None


def cumulative_influence(nodes: list[str], links: list[tuple[str, str, float]], output: str) -> dict[str, float]:
    """circuit-tracer's cumulative node influence (module docstring) of ``nodes`` on ``output``, in [0, 1].

    ``links`` are (source, target, weight); weights enter as |w|. The graph must be a DAG (ours is layered).
    """
    incoming: dict[str, list[tuple[str, float]]] = {n: [] for n in nodes}
    outgoing: dict[str, list[str]] = {n: [] for n in nodes}
    for u, v, w in links:
        incoming[v].append((u, abs(w)))
        outgoing[u].append(v)
    order = list(reversed(list(nx.topological_sort(nx.DiGraph([(u, v) for u, v, _ in links])))))
    reach = {n: 0.0 for n in nodes}  # Σ_k (e_out A^k)[n], accumulated from the output downwards
    reach[output] = 1.0
    for v in order:  # every node's reach is final before its inputs are visited
        total = sum(w for _, w in incoming[v])
        if total <= 0 or reach[v] == 0:
            continue
        for u, w in incoming[v]:
            reach[u] += reach[v] * w / total
    reach[output] = 0.0  # e_out itself is k = 0, not counted (as in circuit-tracer)
    scores = np.array([reach[n] for n in nodes])
    ranked = np.lexsort((np.arange(len(nodes)), -scores))
    cum = np.cumsum(scores[ranked]) / max(float(scores.sum()), 1e-300)
    out = np.empty(len(nodes))
    out[ranked] = np.minimum(cum, 1.0)
    return {n: float(x) for n, x in zip(nodes, out, strict=True)}


def _node_flow(d: dict[str, Any], difference: bool) -> float:
    """What a node passes on from the input / to the output: Σ gate weights (ids-only: tokens; diff: delta)."""
    if difference:
        return float(d.get("delta", 0.0))
    if "mean_gate" in d:
        return float(d["mean_gate"]) * float(d.get("tokens", 0))
    return float(d.get("tokens", d.get("load", 0.0)))


def _label(g: nx.DiGraph) -> tuple[str, str]:
    """(short label under the input column, full description for the input node's panel)."""
    if g.graph.get("kind") == "difference":
        text = f"{g.graph.get('label_a', 'a')} − {g.graph.get('label_b', 'b')}"
        return text, text
    n = int(g.graph.get("n_tokens", 0) or 0)
    return f"{n:,} tokens", f"{g.graph.get('selection', '') or 'all tokens'} ({n:,} tokens)"


def safe_name(text: str) -> str:
    """``text`` as a file/URL-safe name (letters, digits, ``._-``), never empty."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "moe"


def scan_name(g: nx.DiGraph) -> str:
    """The ``scan``: a path under the server's ``data/`` folder, where the frontend finds feature files
    (``init-feature-examples.js``: a scan starting with ``./`` is fetched as ``{scan}/{feature}.json``)."""
    return f"./data/{safe_name(str(g.graph.get('model', '') or 'moe'))}-experts"


def circuit_tracer_graph(g: nx.DiGraph, *, slug: str, context: TokenContext | None = None) -> dict[str, Any]:
    """``g`` as circuit-tracer graph JSON (a dict for ``json.dump``): every node and edge, plus input and output.

    ``context`` (a one-token path's surroundings, ``workbench.graph.circuit_tracer_export``) fills its
    prompt; without it the context is shown as ``…``.
    """
    difference = g.graph.get("kind") == "difference"
    single = g.graph.get("n_tokens") == 1 and not difference
    if single:
        tokens = text_vocab([str(t) for t in g.graph.get("prompt_tokens", [])]) or ["?"]
        ctx_tok = context or TokenContext([NO_CONTEXT], tokens[0], None)
        prompt_tokens = [*(ctx_tok.before or [START]), ctx_tok.token]
        col = in_col = len(prompt_tokens) - 1
        out_text = f'Next token "{ctx_tok.next_token}"' if ctx_tok.next_token is not None else '"end of sequence"'
        prompt = "".join(t for t in prompt_tokens if t not in (START, NO_CONTEXT))
        vocab: int | str = ctx_tok.token_id if ctx_tok.token_id is not None else "tok"
        full = ctx_tok.token
    else:
        short, full = _label(g)
        prompt_tokens = [short, "experts"]
        in_col, col = 0, 1
        out_text = '"output" after the last MoE layer'
        tokens = text_vocab([str(t) for t in g.graph.get("prompt_tokens", [])])  # Ġ, Ċ, ... as text
        n = int(g.graph.get("n_tokens", 0) or 0)
        prompt = "".join(tokens) if tokens and len(tokens) == n else full
        vocab = "sel"
    layers = sorted({int(d["layer"]) for _, d in g.nodes(data=True)})
    ids: dict[str, str] = {}
    nodes: list[CTNode] = []
    for n, d in sorted(g.nodes(data=True), key=lambda x: (int(x[1]["layer"]), int(x[1]["expert"]))):
        label = f"expert {d['expert']} @ L{d['layer']}"
        if d.get("top_tokens"):
            label += f": {d['top_tokens']}"
        act = float(d["mean_gate"]) if "mean_gate" in d and not difference else None
        node = expert_node(int(d["layer"]), int(d["expert"]), col, activation=act, clerp=label)
        ids[n] = node.node_id
        nodes.append(node)
    emb = embedding_node(in_col, vocab)
    emb.clerp = f"Input: {full}"
    out = output_node(col, layers[-1] if layers else 0, out_text)
    links: list[dict[str, Any]] = []
    for n, d in g.nodes(data=True):
        if layers and int(d["layer"]) == layers[0]:
            links.append({"source": emb.node_id, "target": ids[n], "weight": _node_flow(d, difference)})
        if layers and int(d["layer"]) == layers[-1]:
            links.append({"source": ids[n], "target": out.node_id, "weight": _node_flow(d, difference)})
    for u, v, d in g.edges(data=True):
        w = float(d["delta"] if difference else d.get("weight", 0.0))
        links.append({"source": ids[u], "target": ids[v], "weight": w, "count": int(d.get("count", 0))})
    all_nodes = [emb, *nodes, out]
    infl = cumulative_influence(
        [x.node_id for x in all_nodes], [(x["source"], x["target"], x["weight"]) for x in links], out.node_id
    )
    for x in all_nodes:
        x.influence = infl[x.node_id]
    comms: dict[int, list[str]] = {}
    for n, c in g.nodes(data="community"):
        if c is not None:
            comms.setdefault(int(c), []).append(ids[n])
    supernodes = [[f"circuit {c}", *sorted(m)] for c, m in sorted(comms.items()) if len(m) > 1]
    paths = heaviest_paths(g, 1)
    if paths:
        pinned = [ids[n] for n in paths[0][0]][:PIN_LAYERS]
    else:  # no path through every layer: the heaviest expert of each of the first layers
        best: dict[int, tuple[float, str]] = {}
        for n, d in g.nodes(data=True):
            key = (abs(_node_flow(d, difference)), ids[n])
            best[int(d["layer"])] = max(best.get(int(d["layer"]), key), key)
        pinned = [best[layer][1] for layer in sorted(best)][:PIN_LAYERS]
    meta = CTMetadata(
        slug=slug, scan=scan_name(g), transcoder_list=[], prompt_tokens=prompt_tokens, prompt=prompt[:2000]
    )
    qparams = CTQParams(pinnedIds=[emb.node_id, *pinned], supernodes=supernodes, clickedId=pinned[0] if pinned else "")
    return CTGraph(meta, qparams, all_nodes, links).to_dict()


# JSON schema of the graph file (mirrors graph_models.py; tests validate exports against it).
CIRCUIT_TRACER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["metadata", "qParams", "nodes", "links"],
    "properties": {
        "metadata": {
            "type": "object",
            "required": ["slug", "scan", "transcoder_list", "prompt_tokens", "prompt"],
            "properties": {
                "slug": {"type": "string"},
                "scan": {"type": "string"},
                "transcoder_list": {"type": "array", "items": {"type": "string"}},
                "prompt_tokens": {"type": "array", "items": {"type": "string"}, "minItems": 2},
                "prompt": {"type": "string"},
                "node_threshold": {"type": ["number", "null"]},
                "schema_version": {"type": ["integer", "null"]},
            },
        },
        "qParams": {
            "type": "object",
            "required": ["pinnedIds", "supernodes", "linkType", "clickedId", "sg_pos"],
            "properties": {
                "pinnedIds": {"type": "array", "items": {"type": "string"}},
                "supernodes": {"type": "array", "items": {"type": "array", "items": {"type": "string"}}},
                "linkType": {"type": "string"},
                "clickedId": {"type": "string"},
                "sg_pos": {"type": "string"},
            },
        },
        "nodes": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["node_id", "feature", "layer", "ctx_idx", "feature_type", "jsNodeId"],
                "properties": {
                    "node_id": {"type": "string"},
                    "feature": {"type": "integer"},
                    "layer": {"type": "string"},
                    "ctx_idx": {"type": "integer", "minimum": 0},
                    "feature_type": {"type": "string"},
                    "jsNodeId": {"type": "string"},
                    "token_prob": {"type": "number"},
                    "is_target_logit": {"type": "boolean"},
                    "run_idx": {"type": "integer"},
                    "reverse_ctx_idx": {"type": "integer"},
                    "clerp": {"type": "string"},
                    "influence": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
                    "activation": {"type": ["number", "null"]},
                },
            },
        },
        "links": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["source", "target", "weight"],
                "properties": {
                    "source": {"type": "string"},
                    "target": {"type": "string"},
                    "weight": {"type": "number"},
                },
            },
        },
    },
}
