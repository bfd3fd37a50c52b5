"""``reasoning_graph``: the expert pathways of a selection of tokens as a networkx DiGraph.

Nodes are (MoE layer, routed expert), id ``"L{layer}:E{expert}"``. For the selected tokens ``T``
with top-k experts ``K_l(t)`` and gate weights ``g_l(t, e)`` at MoE layer ``l``:

- node ``tokens``     = |{t ∈ T : e ∈ K_l(t)}|
- node ``load``       = tokens / |T|            (fraction of selected tokens routed there; sums to k per layer)
- node ``mean_gate``  = Σ_t g_l(t, e) / tokens   (the weight the MoE applies; absent for ids-only stores)
- node ``share_<d>``  = tokens from sequences of domain d / tokens (the node's traffic by domain)
- edge ``count``      = |{t : a ∈ K_l(t), b ∈ K_l'(t)}| for consecutive MoE layers l, l'
- edge ``weight``     = Σ_t g_l(t, a) · g_l'(t, b)  (ids-only stores: the count)
- edge ``share``      = weight / Σ over all edges of the layer pair (before pruning)
- edge ``top_tokens`` = the most frequent tokens that take the edge (same format as the node's)

Sources: ``load`` is the expert load f_i of Switch Transformer (Fedus et al. 2021, eq. 4) restricted
to one layer and one selection; the gate weights are the ones the MoE applies (DeepSeek-V3, Liu et al.
2024, §2.1.2: normalised top-k sigmoid scores times the routed scaling factor). The cross-layer edges
are this workbench's own definition (no paper fixes one): a token's own path is the subgraph of its k
experts per layer (``token_path``), and a selection's graph is the sum of its tokens' paths.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import fields
from typing import Any

import networkx as nx
import numpy as np
import xarray as xr

from workbench.graph.counts import count_routing
from workbench.graph.ids import node_id
from workbench.graph.prune import describe_pruning
from workbench.graph.tables import RoutingCounts, sorted_unique
from workbench.store.select import Selection

PROMPT_TOKENS_MAX = 512  # selections up to this size keep their decoded tokens in G.graph["prompt_tokens"]


def describe_selection(selection: Selection | None) -> str:
    """``Selection`` as the ``--where`` text that would select it (``"all tokens"`` if none)."""
    if selection is None:
        return "all tokens"
    parts = []
    for f in fields(selection):
        v = getattr(selection, f.name)
        if v is None:
            continue
        key = {"domains": "domain", "sequences": "sequence", "segments": "segment", "steps": "step"}.get(f.name, f.name)
        text = f"{v[0]}:{v[1]}" if f.name in ("tokens", "positions", "layers") else ",".join(map(str, v))
        parts.append(f"{key}={text}")
    return " ".join(parts) or "all tokens"


@functools.lru_cache(maxsize=1 << 16)
def _escaped(tok: str) -> str:
    """A token's text as it appears in ``top_tokens``: JSON string escapes, no quotes (cached per text)."""
    return json.dumps(tok, ensure_ascii=False)[1:-1]


def _top_texts(
    counts: RoutingCounts, top_ids: Callable[[Any, int], tuple[np.ndarray, np.ndarray]], rows: Any, n: int
) -> list[str]:
    """The ``top_tokens`` text of each of ``rows`` (node codes or an ``EdgeTable``): ``"tok (count) · …"``."""
    if n <= 0 or counts.n_tokens == 0:
        return [""] * len(rows)
    ids, cnt = top_ids(rows, n)
    return counts.top_texts(ids, cnt, _escaped)


def counts_to_graph(
    counts: RoutingCounts,
    keep: np.ndarray | None = None,
    *,
    top_tokens: int = 5,
    graph_attrs: dict[str, Any] | None = None,
) -> nx.DiGraph:
    """Build the networkx graph of ``counts``, with only the edges where ``keep`` (shape (M,)) holds.

    Nodes come from the kept edges; a one-layer selection (no edges) keeps every node with tokens.
    Attributes are computed in arrays and each node and edge is added once with its dict
    (``add_nodes_from`` / ``add_edges_from``); node ids are formed once per node.
    """
    e = counts.edges.take(keep) if keep is not None else counts.edges
    n_layers, ne = counts.node_tokens.shape
    if n_layers > 1:
        codes = sorted_unique(np.concatenate([e.pair * ne + e.src, (e.pair + 1) * ne + e.dst]))[0]
    else:
        codes = np.flatnonzero(counts.node_tokens.ravel())
    g = nx.DiGraph()
    layers = counts.layers.tolist()
    n = max(counts.n_tokens, 1)
    li, ex = np.divmod(codes, ne)
    tok = counts.node_tokens.ravel()[codes]
    columns: dict[str, list[Any]] = {
        "layer": counts.layers[li].tolist(),
        "expert": ex.tolist(),
        "tokens": tok.tolist(),
        "load": (tok / n).tolist(),
    }
    with np.errstate(invalid="ignore", divide="ignore"):
        if counts.weighted:
            columns["mean_gate"] = np.where(tok > 0, counts.mean_gate.ravel()[codes], 0.0).tolist()
        for d, name in enumerate(counts.domains):
            dom = counts.node_domain[d].ravel()[codes]
            columns[f"share_{name}"] = np.where(tok > 0, dom / np.maximum(tok, 1), 0.0).tolist()
    columns["top_tokens"] = _top_texts(counts, counts.node_top_ids, codes, top_tokens)
    ids = {c: node_id(lay, x) for c, lay, x in zip(codes.tolist(), columns["layer"], columns["expert"], strict=True)}
    names = list(columns)
    g.add_nodes_from(
        (ids[c], dict(zip(names, values, strict=True)))
        for c, *values in zip(codes.tolist(), *columns.values(), strict=True)
    )
    totals = counts.flow_totals
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(totals[e.pair] != 0, e.weight / totals[e.pair], 0.0)
    edge_tops = _top_texts(counts, counts.edge_top_ids, e, top_tokens)
    src_code = (e.pair * ne + e.src).tolist()
    dst_code = ((e.pair + 1) * ne + e.dst).tolist()
    g.add_edges_from(
        (ids[u], ids[v], {"count": cnt, "weight": w, "share": sh, "top_tokens": top})
        for u, v, cnt, w, sh, top in zip(
            src_code, dst_code, e.count.tolist(), e.weight.tolist(), share.tolist(), edge_tops, strict=True
        )
    )
    g.graph.update(
        kind="reasoning",
        n_tokens=counts.n_tokens,
        top_k=counts.top_k,
        n_experts=counts.n_experts,
        layers=layers,
        domains=list(counts.domains),
        weighted=counts.weighted,
        weight_kind="gate_product" if counts.weighted else "count",
        flow_totals={str(layers[p]): float(t) for p, t in enumerate(totals.tolist())},
        note=(
            "edge weight = sum over tokens of the product of the two gate weights"
            if counts.weighted
            else "ids-only store (no gate weights): edge weight = token count, no mean_gate"
        ),
    )
    if 0 < counts.n_tokens <= PROMPT_TOKENS_MAX:
        g.graph["prompt_tokens"] = counts.decoded_tokens(PROMPT_TOKENS_MAX)
    if counts.n_tokens == 1 and counts.positions is not None:
        g.graph["position"] = int(counts.positions[0])
    if graph_attrs:
        g.graph.update(graph_attrs)
    return g


def reasoning_graph(
    ds: xr.Dataset,
    selection: Selection | None = None,
    *,
    min_count: int | None = None,
    top_edges: int | None = None,
    flow: float | None = None,
    top_tokens: int = 5,
    chunked: bool | None = None,
) -> nx.DiGraph:
    """The reasoning graph of the tokens in ``selection`` (all of ``ds`` if None).

    Counting is vectorised (``count_routing``); pruning (``min_count``, ``flow``, ``top_edges``,
    see ``workbench.graph.prune``) happens on each layer pair's arrays as it is counted, so neither
    the full edge table nor an unpruned networkx graph is ever held.
    Unpruned graphs of large selections of K2 have up to ~150k edges per layer pair: prune them.

    Parameters
    ----------
    ds : routing Dataset (``workbench.open_store``)
    selection : which tokens and layers (``workbench.parse_where(["domain=math"])``)
    top_tokens : how many most frequent tokens to list per node (``top_tokens`` attr; 0 for none)
    chunked : count by token blocks on the active dask scheduler (memory bounded, runs on a
        cluster); ``None``: for selections of 65,536 tokens or more (``workbench.graph.chunked``)

    Returns
    -------
    nx.DiGraph with the node and edge attributes in the module docstring; ``G.graph`` holds
    ``n_tokens``, ``layers``, ``weighted``, ``flow_totals`` (per source layer), ``selection``, ``pruning``.

    Examples
    --------
    >>> g = reasoning_graph(ds, parse_where("domain=math"), top_edges=20)  # doctest: +SKIP
    >>> g.nodes["L1:E5"]["tokens"], g.edges["L1:E5", "L2:E9"]["weight"]  # doctest: +SKIP
    """
    counts = count_routing(ds, selection, min_count=min_count, top_edges=top_edges, flow=flow, chunked=chunked)
    model = ds.attrs.get("model") or {}
    return counts_to_graph(
        counts,
        top_tokens=top_tokens,
        graph_attrs={
            "selection": describe_selection(selection),
            "pruning": describe_pruning(min_count, top_edges, flow),
            "model": str(model.get("model_name", "")),
        },
    )


def token_path(ds: xr.Dataset, token: int, *, top_tokens: int = 1) -> nx.DiGraph:
    """The path of one token (global row ``token``): its k experts per layer and the k × k edges between them."""
    return reasoning_graph(ds, Selection(tokens=(int(token), int(token) + 1)), top_tokens=top_tokens)
