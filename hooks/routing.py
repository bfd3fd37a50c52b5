"""What the recorder hands back per sequence, and the host-side steps that turn raw captures into it.

Everything here runs after a forward has finished (off the hot path) on host numpy arrays: putting
the top-k into the router's rank order. (Router scores are computed where the buffers are, at flush
time: ``hooks/buffer.py``'s ``device_scores``.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Routing:
    """Routing of one sequence (one batch row), in token order, pad tokens dropped.

    Shapes: ``expert_ids`` (T, L, k) int16 in the router's rank order (rank 0 = first choice);
    ``gate_weights`` (T, L, k) float32, the weights the MoE layer multiplies each expert's output
    by (after normalisation and ``routed_scaling_factor``); ``router_scores`` (T, L, E) float32 or
    None (DeepSeek-V3/K2: sigmoid scores before the selection bias; softmax routers: the softmax
    over all experts). ``token_ids`` (T,) int64 (-1 where the forward got embeddings, not ids);
    ``generated`` (T,) bool, True for tokens fed back by decoding steps; ``layers`` (L,) the real
    layer index of each MoE layer (1..60 for K2).
    """

    expert_ids: np.ndarray  # (T, L, k) int16
    gate_weights: np.ndarray  # (T, L, k) float32
    router_scores: np.ndarray | None = None  # (T, L, E) float32
    token_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (T,)
    generated: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # (T,)
    layers: tuple[int, ...] = ()

    @property
    def n_tokens(self) -> int:
        return int(self.expert_ids.shape[0])

    @classmethod
    def empty(cls, layers: tuple[int, ...], top_k: int, n_experts: int | None = None) -> Routing:
        """A routing of no tokens; ``router_scores`` (0, L, E) when ``n_experts`` is given, else None."""
        n = len(layers)
        scores = np.zeros((0, n, n_experts), np.float32) if n_experts is not None else None
        return cls(np.zeros((0, n, top_k), np.int16), np.zeros((0, n, top_k), np.float32), scores, layers=layers)

    @classmethod
    def concat(cls, parts: list[Routing]) -> Routing:
        """The pieces of one sequence, in token order, as one Routing (the single piece itself, uncopied)."""
        if len(parts) == 1:
            return parts[0]
        first = parts[0]
        scores = None if first.router_scores is None else np.concatenate([p.router_scores for p in parts])  # type: ignore[misc]
        return cls(
            np.concatenate([p.expert_ids for p in parts]),
            np.concatenate([p.gate_weights for p in parts]),
            scores,
            np.concatenate([p.token_ids for p in parts]),
            np.concatenate([p.generated for p in parts]),
            first.layers,
        )

    def window(self, start: int, stop: int | None = None) -> Routing:
        """The tokens ``start:stop`` of this routing (views, no copy)."""
        sl = slice(start, stop)
        scores = None if self.router_scores is None else self.router_scores[sl]
        return Routing(
            self.expert_ids[sl], self.gate_weights[sl], scores, self.token_ids[sl], self.generated[sl], self.layers
        )


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function, float32."""
    x = x.astype(np.float32, copy=False)
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    ex = np.exp(x[~pos])
    out[~pos] = ex / (1.0 + ex)
    return out


def rank_key(selected_logits: np.ndarray, expert_ids: np.ndarray, scoring: str, bias: np.ndarray | None) -> np.ndarray:
    """The value the router ranks the chosen experts by, per (token, [layer,] rank).

    DeepSeek-V3/K2 (``noaux_tc``) select by ``sigmoid(logit) + e_score_correction_bias``
    (DeepSeek-V3 report, section 2.1.2, auxiliary-loss-free balancing); softmax routers (Mixtral,
    Qwen3-MoE, OLMoE) by the logit itself, since softmax is monotone. ``selected_logits`` and
    ``expert_ids`` are (N, k) with ``bias`` (E,), or (N, L, k) with ``bias`` (L, E) (one row per
    MoE layer; zeros where a layer has none), or ``bias`` None.
    """
    if scoring == "sigmoid":
        key = sigmoid(selected_logits)
        if bias is not None:
            ids = expert_ids.astype(np.intp, copy=False)
            key = key + (bias[ids] if bias.ndim == 1 else bias[np.arange(bias.shape[0])[:, None], ids])
        return key
    return selected_logits.astype(np.float32, copy=False)


def to_rank_order(
    expert_ids: np.ndarray, gate_weights: np.ndarray, key: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Reorder each token's top-k by descending ``key`` (stable), so rank 0 is the first choice.

    transformers' DeepSeek-V3 router and K2's remote code call ``torch.topk(..., sorted=False)``,
    whose output order is unspecified; ranking here gives every capture path the same order.
    All arrays are (..., k). Without a key the weights decide (exact for softmax routers).
    """
    if key is None:
        key = gate_weights
    order = np.argsort(-key, axis=-1, kind="stable")  # (..., k)
    return np.take_along_axis(expert_ids, order, -1), np.take_along_axis(gate_weights, order, -1)
