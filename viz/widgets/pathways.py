"""Expert pathways of a set of token rows, counted with numpy for interactive widgets.

A widget preloads one sequence's routing into memory once; every click then aggregates the rows it
selects here (a few ms for a 300-token step of a K2-shaped model), with no xarray or dask on the
interactive path. The counts follow the reasoning-graph contract of ``workbench.graph``:

- node ``L{layer}:E{expert}``: ``tokens`` = number of selected tokens routed to the expert in that
  layer (any of the top-k ranks); ``mean_gate`` = mean gate weight over those routings.
- edge between consecutive MoE layers ``l`` and ``l'`` for every token and every pair of its experts
  (all k x k pairs): ``count`` = number of tokens taking the pair; ``weight`` = sum over those tokens
  of ``g(l, e) * g(l', e')``, the product of the two gate weights (NaN for ids-only stores).

``to_networkx`` turns the result into that graph, so the widget's export and the library's
``reasoning_graph`` describe the same object (a test checks they agree).
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import numpy as np


@dataclass(frozen=True)
class Pathways:
    """Node and edge totals of a token selection.

    Shapes: ``node_tokens`` / ``node_gate_sum`` (L, E); edge arrays (M,) where ``edge_layer`` is the
    position (0..L-2) of the source layer along ``layers``.
    """

    layers: np.ndarray  # (L,) the model's real MoE layer indices
    n_experts: int
    n_tokens: int
    has_weights: bool
    node_tokens: np.ndarray  # (L, E) int64
    node_gate_sum: np.ndarray  # (L, E) float64 (zeros for ids-only)
    edge_layer: np.ndarray  # (M,) int64
    edge_src: np.ndarray  # (M,) int64 expert id at layer position edge_layer
    edge_dst: np.ndarray  # (M,) int64 expert id at the next layer position
    edge_count: np.ndarray  # (M,) int64
    edge_weight: np.ndarray  # (M,) float64 (NaN for ids-only)

    @property
    def mean_gate(self) -> np.ndarray:
        """(L, E) mean gate weight per node; NaN where the node is unused or weights are missing."""
        with np.errstate(invalid="ignore", divide="ignore"):
            out = self.node_gate_sum / self.node_tokens
        if not self.has_weights:
            out[:] = np.nan
        return out

    def strength(self) -> np.ndarray:
        """(M,) what ranks edges: ``weight`` when gate weights exist, else ``count``."""
        return self.edge_weight if self.has_weights else self.edge_count.astype(np.float64)

    def top_edges(self, per_layer_pair: int) -> np.ndarray:
        """Indices of the ``per_layer_pair`` strongest edges of each layer pair, shape (≤ M,)."""
        strength = self.strength()
        keep: list[np.ndarray] = []
        for lp in np.unique(self.edge_layer):
            idx = np.nonzero(self.edge_layer == lp)[0]
            if idx.size > per_layer_pair:
                idx = idx[np.argpartition(-strength[idx], per_layer_pair - 1)[:per_layer_pair]]
            keep.append(idx)
        return np.concatenate(keep) if keep else np.zeros(0, dtype=np.int64)

    def to_networkx(self, *, domain: str | None = None, top_edges: int | None = None) -> nx.DiGraph:
        """The reasoning graph of this selection (node ids ``L{layer}:E{expert}``).

        ``domain`` adds ``share_<domain>`` = 1.0 to every node (a widget shows one sequence, so one
        domain); ``top_edges`` keeps only that many edges per layer pair (None keeps all).
        """
        g = nx.DiGraph(n_tokens=self.n_tokens, has_gate_weights=self.has_weights)
        mean_gate = self.mean_gate
        li, ei = np.nonzero(self.node_tokens)
        for l_pos, e in zip(li.tolist(), ei.tolist(), strict=True):
            layer = int(self.layers[l_pos])
            attrs = {
                "layer": layer,
                "expert": e,
                "tokens": int(self.node_tokens[l_pos, e]),
                "mean_gate": float(mean_gate[l_pos, e]),
            }
            if domain is not None:
                attrs[f"share_{domain}"] = 1.0
            g.add_node(node_id(layer, e), **attrs)
        idx = np.arange(self.edge_src.size) if top_edges is None else self.top_edges(top_edges)
        for i in idx.tolist():
            lp = int(self.edge_layer[i])
            g.add_edge(
                node_id(int(self.layers[lp]), int(self.edge_src[i])),
                node_id(int(self.layers[lp + 1]), int(self.edge_dst[i])),
                count=int(self.edge_count[i]),
                weight=float(self.edge_weight[i]),
            )
        return g


def node_id(layer: int, expert: int) -> str:
    """The one place widget node ids are formed (same as ``workbench.graph``)."""
    return f"L{layer}:E{expert}"


def compute_pathways(
    expert_ids: np.ndarray,
    gate_weights: np.ndarray | None,
    layers: np.ndarray,
    n_experts: int,
) -> Pathways:
    """Count nodes and consecutive-layer edges of the given token rows.

    Parameters
    ----------
    expert_ids : (n, L, k) int
        The selected tokens' expert ids in rank order.
    gate_weights : (n, L, k) float or None
        Their gate weights; None or all-NaN for ids-only captures.
    layers : (L,) int
        Real layer indices of the MoE layers.
    n_experts : int
        Routed experts per layer (E).
    """
    n, n_layers, _k = expert_ids.shape  # (n, L, k)
    ids = expert_ids.astype(np.int64, copy=False)
    has_weights = gate_weights is not None and bool(np.isfinite(gate_weights).any())
    w = np.nan_to_num(gate_weights.astype(np.float64)) if has_weights and gate_weights is not None else None

    codes = ids + (np.arange(n_layers, dtype=np.int64) * n_experts)[None, :, None]  # (n, L, k)
    node_tokens = np.bincount(codes.ravel(), minlength=n_layers * n_experts).reshape(n_layers, n_experts)
    node_gate_sum = (
        np.bincount(codes.ravel(), weights=w.ravel(), minlength=n_layers * n_experts).reshape(n_layers, n_experts)
        if w is not None
        else np.zeros((n_layers, n_experts))
    )

    parts: list[tuple[np.ndarray, ...]] = []
    for lp in range(n_layers - 1):
        pair = (ids[:, lp, :, None] * n_experts + ids[:, lp + 1, None, :]).ravel()  # (n * k * k,)
        uniq, inverse = np.unique(pair, return_inverse=True)
        count = np.bincount(inverse, minlength=uniq.size)
        if w is not None:
            prod = (w[:, lp, :, None] * w[:, lp + 1, None, :]).ravel()  # (n * k * k,)
            weight = np.bincount(inverse, weights=prod, minlength=uniq.size)
        else:
            weight = np.full(uniq.size, np.nan)
        parts.append((np.full(uniq.size, lp, dtype=np.int64), uniq // n_experts, uniq % n_experts, count, weight))
    if parts:
        el, es, ed, ec, ew = (np.concatenate(c) for c in zip(*parts, strict=True))
    else:
        el = es = ed = ec = np.zeros(0, dtype=np.int64)
        ew = np.zeros(0)
    return Pathways(
        layers=np.asarray(layers),
        n_experts=n_experts,
        n_tokens=n,
        has_weights=has_weights,
        node_tokens=node_tokens,
        node_gate_sum=node_gate_sum,
        edge_layer=el,
        edge_src=es,
        edge_dst=ed,
        edge_count=ec,
        edge_weight=ew,
    )
