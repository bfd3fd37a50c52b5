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
import numba
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
        bounds = np.searchsorted(self.edge_layer, np.arange(self.layers.size))  # edges are grouped by layer
        bounds = np.append(bounds, self.edge_layer.size)
        keep: list[np.ndarray] = []
        for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
            idx = np.arange(a, b)
            if idx.size > per_layer_pair:
                idx = a + np.argpartition(-strength[a:b], per_layer_pair - 1)[:per_layer_pair]
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


@numba.njit(cache=True, nogil=True)
def _edge_counts(
    ids: np.ndarray, w: np.ndarray, n_experts: int, has_w: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover  (compiled)
    """Distinct (layer pair, expert pair) edges with token counts and summed gate products.

    One pass over the n * k * k pairs of each layer pair with a dense E*E scratch that is reset only
    where it was touched, so a click costs O(n k^2 L) and never a scan of all E^2 pairs.
    Returns (layer position, pair code e * E + e', count, weight), grouped by layer position.
    """
    n, n_layers, k = ids.shape
    e2 = n_experts * n_experts
    scratch_count = np.zeros(e2, np.int64)
    scratch_weight = np.zeros(e2, np.float64)
    cap = max(1, min(n * k * k, e2) * max(0, n_layers - 1))  # distinct pairs per layer pair <= min(n k^2, E^2)
    out_layer = np.empty(cap, np.int64)
    out_code = np.empty(cap, np.int64)
    out_count = np.empty(cap, np.int64)
    out_weight = np.empty(cap, np.float64)
    m = 0
    for lp in range(n_layers - 1):
        start = m
        for t in range(n):
            for a in range(k):
                ea = ids[t, lp, a]
                for b in range(k):
                    code = ea * n_experts + ids[t, lp + 1, b]
                    if scratch_count[code] == 0:
                        out_code[m] = code
                        m += 1
                    scratch_count[code] += 1
                    if has_w:
                        scratch_weight[code] += w[t, lp, a] * w[t, lp + 1, b]
        for i in range(start, m):
            code = out_code[i]
            out_layer[i] = lp
            out_count[i] = scratch_count[code]
            out_weight[i] = scratch_weight[code] if has_w else np.nan
            scratch_count[code] = 0
            scratch_weight[code] = 0.0
    return out_layer[:m], out_code[:m], out_count[:m], out_weight[:m]


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

    w_in = np.zeros((0, 0, 0)) if w is None else np.ascontiguousarray(w)
    el, pair_codes, ec, ew = _edge_counts(np.ascontiguousarray(ids), w_in, n_experts, w is not None)
    es, ed = pair_codes // n_experts, pair_codes % n_experts
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
