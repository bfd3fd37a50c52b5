"""Reasoning graphs as the graph JSON that circuit-tracer's frontend loads.

The schema follows ``circuit_tracer/frontend/graph_models.py`` (safety-research/circuit-tracer):
a ``Model`` of ``metadata`` (slug, scan, transcoder_list, prompt_tokens, prompt, node_threshold,
schema_version), ``qParams`` (pinnedIds, supernodes, linkType, clickedId, sg_pos), ``nodes`` and
``links`` ({source, target, weight}). As there, node ids are formed in one place: one factory per
node kind (here only experts).

Mapping: an expert node is a "feature" at ``layer`` = the MoE layer, ``feature`` = Cantor pairing of
(layer, expert) as circuit-tracer does for features, ``ctx_idx`` = the token's position for a
single-token path and 0 for an aggregate graph; ``influence`` = load, ``activation`` = mean gate
weight; ``clerp`` (the label) names the expert and its top tokens. ``feature_type`` is
"cross layer transcoder", the kind the frontend draws as an ordinary feature node (override with
``feature_type=``). Communities become ``qParams.supernodes`` (``[name, node_id, ...]``).
Link weights are the edge ``weight`` (summed gate-weight products; ``delta`` for difference graphs).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import networkx as nx

FEATURE_TYPE = "cross layer transcoder"


@dataclass
class CTMetadata:
    slug: str
    scan: str
    transcoder_list: list[str]
    prompt_tokens: list[str]
    prompt: str
    node_threshold: float | None = None
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


def _cantor(x: int, y: int) -> int:
    return (x + y) * (x + y + 1) // 2 + y


def expert_node(
    layer: int,
    expert: int,
    ctx_idx: int = 0,
    *,
    influence: float | None = None,
    activation: float | None = None,
    clerp: str = "",
    feature_type: str = FEATURE_TYPE,
) -> CTNode:
    """The node of ``expert`` at MoE ``layer`` (the only place expert node ids are formed)."""
    return CTNode(
        node_id=f"{layer}_{expert}_{ctx_idx}",
        feature=_cantor(layer, expert),
        layer=str(layer),
        ctx_idx=ctx_idx,
        feature_type=feature_type,
        jsNodeId=f"{layer}_{expert}-0",
        clerp=clerp,
        influence=influence,
        activation=activation,
    )


@dataclass
class CTGraph:
    metadata: CTMetadata
    qParams: CTQParams
    nodes: list[CTNode] = field(default_factory=list)
    links: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def circuit_tracer_graph(
    g: nx.DiGraph, *, slug: str = "reasoning-graph", feature_type: str = FEATURE_TYPE
) -> dict[str, Any]:
    """``g`` as circuit-tracer graph JSON (a dict ready for ``json.dump``), keeping every node and edge."""
    difference = g.graph.get("kind") == "difference"
    ctx = int(g.graph.get("position", 0) or 0)
    ids: dict[str, str] = {}
    nodes = []
    for n, d in g.nodes(data=True):
        label = f"expert {d['expert']} @ L{d['layer']}"
        if d.get("top_tokens"):
            label += f": {d['top_tokens']}"
        node = expert_node(
            int(d["layer"]),
            int(d["expert"]),
            ctx,
            influence=float(d["delta"] if difference else d.get("load", 0.0)),
            activation=float(d["mean_gate"]) if "mean_gate" in d else None,
            clerp=label,
            feature_type=feature_type,
        )
        ids[n] = node.node_id
        nodes.append(node)
    links = [
        {
            "source": ids[u],
            "target": ids[v],
            "weight": float(d["delta"] if difference else d.get("weight", 0.0)),
            "count": int(d.get("count", 0)),
        }
        for u, v, d in g.edges(data=True)
    ]
    comms: dict[int, list[str]] = {}
    for n, c in g.nodes(data="community"):
        if c is not None:
            comms.setdefault(int(c), []).append(ids[n])
    supernodes = [[f"circuit {c}", *sorted(m)] for c, m in sorted(comms.items()) if len(m) > 1]
    tokens = [str(t) for t in g.graph.get("prompt_tokens", [])]
    meta = CTMetadata(
        slug=slug,
        scan=f"{g.graph.get('model', '') or 'moe'}-routing",
        transcoder_list=[],
        prompt_tokens=tokens,
        prompt=str(g.graph.get("selection", "")) if not tokens else "".join(tokens),
    )
    return CTGraph(meta, CTQParams(pinnedIds=[], supernodes=supernodes), nodes, links).to_dict()


# JSON schema of the written file (mirrors graph_models.py; tests validate exports against it).
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
                "prompt_tokens": {"type": "array", "items": {"type": "string"}},
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
                    "ctx_idx": {"type": "integer"},
                    "feature_type": {"type": "string"},
                    "jsNodeId": {"type": "string"},
                    "token_prob": {"type": "number"},
                    "is_target_logit": {"type": "boolean"},
                    "run_idx": {"type": "integer"},
                    "reverse_ctx_idx": {"type": "integer"},
                    "clerp": {"type": "string"},
                    "influence": {"type": ["number", "null"]},
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
