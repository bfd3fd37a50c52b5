"""Turn an engine's routed-experts array into the store's per-token routing.

Both engines return one row per token of ``prompt + generated`` *except the last*: the final
sampled token is never fed through the model (generation stops after sampling it), so no router
ever saw it. Row ``i`` is the routing of token ``i``; the last token is dropped from the record.

Layers: engines count rows over *all* decoder layers (``num_hidden_layers``, K2: 61 with layer 0
dense, whose columns hold no routing) or, in some versions, over MoE layers only. Either way the
store keeps the MoE layers only, in order, with their real indices as the ``layer`` coordinate.
"""

from __future__ import annotations

import numpy as np

from workbench.engines.client import EngineError
from workbench.routing_config import RoutingConfig


def select_moe_layers(raw: np.ndarray, config: RoutingConfig, engine: str) -> np.ndarray:
    """Keep the MoE layers of ``raw`` (rows, L_raw, k) -> (rows, len(moe_layers), k) int16.

    Raises ``EngineError`` when ``L_raw`` or ``k`` match neither layout of the model.
    """
    if raw.ndim != 3:
        raise EngineError(f"{engine} routed experts have shape {raw.shape}, expected (tokens, layers, top_k)")
    n_moe, k = len(config.moe_layers), config.top_k
    _rows, n_layers, k_raw = raw.shape
    if k_raw != k:
        raise EngineError(
            f"{engine} routed experts have top-{k_raw} per layer but the model {config.model_name} routes top-{k}: "
            "is the server running the same model?"
        )
    if n_layers == config.num_hidden_layers:
        moe = raw[:, list(config.moe_layers), :]  # (rows, L_moe, k): dense layers dropped
    elif n_layers == n_moe:
        moe = raw
    else:
        raise EngineError(
            f"{engine} routed experts have {n_layers} layers per token but the model {config.model_name} has "
            f"{config.num_hidden_layers} decoder layers ({n_moe} MoE): is the server running the same model?"
        )
    moe = moe.astype(np.int64, copy=False)
    bad = (moe < 0) | (moe >= config.n_routed_experts)
    if bad.any():
        t, layer, _ = np.argwhere(bad)[0]
        raise EngineError(
            f"{engine} routed experts hold {int(bad.sum())} ids outside 0..{config.n_routed_experts - 1} "
            f"(first: token {int(t)}, layer {config.moe_layers[int(layer)]}, value {int(moe[t, layer].min())}); "
            "older vLLM marks prefix-cached tokens with -1: upgrade vLLM (see docs/engines.md)"
        )
    return moe.astype(np.int16)


def align_to_tokens(
    moe: np.ndarray, prompt_ids: list[int], output_ids: list[int], engine: str, seq_id: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pair routing rows with tokens.

    Parameters
    ----------
    moe : (R, L, k) int16, routing rows from ``select_moe_layers``.
    prompt_ids, output_ids : the prompt's and the generated token ids (P and G tokens).

    Returns
    -------
    token_ids (T,), expert_ids (T, L, k), generated (T,) bool with ``T = R``: ``R`` is ``P + G - 1``
    (the last sampled token has no routing) or ``P + G`` (an engine that also routed the last token).
    """
    tokens = np.asarray(list(prompt_ids) + list(output_ids), dtype=np.int64)  # (P + G,)
    n, rows = len(tokens), moe.shape[0]
    if rows not in (n - 1, n) or rows == 0:
        raise EngineError(
            f"{engine} returned routing for {rows} tokens for sequence {seq_id!r} of {n} tokens "
            f"({len(prompt_ids)} prompt + {len(output_ids)} generated); expected {n - 1}: is the server running "
            "the same model (layers x top-k), without routed_experts_start_len / prompt_start?"
        )
    generated = np.arange(rows) >= len(prompt_ids)
    return tokens[:rows], moe, generated
