"""Per-layer GPU placement for DeepSeek-V3-family checkpoints (K2, K2 Thinking) in transformers.

``device_map="auto"`` balances by parameter count but knows nothing of what a forward pass adds
(KV cache per layer, activations, a dequantised layer); and it splits by module, so a decoder layer
may straddle two GPUs. ``layer_device_map`` places whole decoder layers on consecutive GPUs from
byte estimates read off ``config.json`` (no torch, no weights), keeping the embeddings on the first
GPU and the final norm and ``lm_head`` on the last, and refuses (one line) a model that cannot fit.

Byte model, per decoder layer (``layer_bytes``), DeepSeek-V3 modelling code (``modeling_deepseek_v3``):

- MLA attention: ``q_a_proj`` H x q_lora, ``q_b_proj`` q_lora x n_heads(d_nope + d_rope) (or ``q_proj``
  H x n_heads(d_nope + d_rope) without q_lora), ``kv_a_proj_with_mqa`` H x (kv_lora + d_rope),
  ``kv_b_proj`` kv_lora x n_heads(d_nope + d_v), ``o_proj`` n_heads d_v x H, norms; dtype bytes;
- dense MLP (layers < ``first_k_dense_replace``): 3 H I;
- MoE: router E x H (+ E correction bias), shared experts 3 H (I_moe n_shared), routed experts
  3 H I_moe E at the quantised size ``bits/8 + 2/group`` bytes per weight (INT4, group 32, bf16
  scales: 0.5625 B) when ``quantization_config`` has one weight group (K2 Thinking quantises the
  routed experts only), else dtype bytes.

K2 Thinking (INT4): 9.5 GB per MoE layer, 594 GB in all; BF16 would be 2.05 TB.
"""

from __future__ import annotations

from typing import Any

from workbench.engines.client import EngineError
from workbench.engines.model_info import _text_config, moe_layers_from_config

GB = 1e9


def _expert_bytes_per_weight(cfg: dict[str, Any], dtype_bytes: float) -> float:
    q = cfg.get("quantization_config")
    if not isinstance(q, dict):
        return dtype_bytes
    for group in (q.get("config_groups") or {}).values():
        w = group.get("weights") or {}
        if w.get("num_bits"):
            scale = 2.0 / float(w["group_size"]) if w.get("group_size") else 0.0
            return float(w["num_bits"]) / 8.0 + scale
    return dtype_bytes


def attention_params(cfg: dict[str, Any]) -> int:
    """Parameters of one MLA attention block with its two RMSNorms (the decoder layer's norms)."""
    h, heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
    d_nope, d_rope, d_v = int(cfg["qk_nope_head_dim"]), int(cfg["qk_rope_head_dim"]), int(cfg["v_head_dim"])
    q_lora, kv_lora = cfg.get("q_lora_rank"), int(cfg["kv_lora_rank"])
    bias = bool(cfg.get("attention_bias", False))
    if q_lora:
        q = h * q_lora + (q_lora if bias else 0) + q_lora + q_lora * heads * (d_nope + d_rope)
    else:
        q = h * heads * (d_nope + d_rope)
    kv = h * (kv_lora + d_rope) + (kv_lora + d_rope if bias else 0) + kv_lora + kv_lora * heads * (d_nope + d_v)
    o = heads * d_v * h + (h if bias else 0)
    return int(q + kv + o + 2 * h)


def layer_bytes(cfg: dict[str, Any], layer: int, *, dtype_bytes: float = 2.0) -> dict[str, float]:
    """Estimated bytes of decoder layer ``layer``: {"attention", "mlp", "routed_experts", "total"}."""
    cfg = _text_config(cfg)
    h = int(cfg["hidden_size"])
    moe = layer in set(moe_layers_from_config(cfg))
    att = attention_params(cfg) * dtype_bytes
    if moe:
        i_moe, n_exp = int(cfg["moe_intermediate_size"]), int(cfg["n_routed_experts"])
        shared = 3 * h * i_moe * int(cfg.get("n_shared_experts") or 0)
        router = n_exp * h * 4 + n_exp * 4  # fp32 weight and e_score_correction_bias (kept in fp32)
        mlp = shared * dtype_bytes + router
        routed = 3 * h * i_moe * n_exp * _expert_bytes_per_weight(cfg, dtype_bytes)
    else:
        mlp, routed = 3 * h * int(cfg["intermediate_size"]) * dtype_bytes, 0.0
    return {"attention": att, "mlp": mlp, "routed_experts": routed, "total": att + mlp + routed}


def kv_cache_bytes_per_token(cfg: dict[str, Any], *, dtype_bytes: float = 2.0) -> float:
    """Per token per layer, as transformers' DeepSeek-V3 caches it: full per-head K (d_nope + d_rope)
    and V (d_v), not MLA's compressed latent (kv_lora + d_rope) that vLLM/SGLang cache."""
    cfg = _text_config(cfg)
    heads = int(cfg["num_attention_heads"])
    d_k = int(cfg["qk_nope_head_dim"]) + int(cfg["qk_rope_head_dim"])
    return heads * (d_k + int(cfg["v_head_dim"])) * dtype_bytes


def layer_device_map(
    cfg: dict[str, Any],
    n_gpus: int,
    *,
    gpu_gb: float = 141.0,
    reserve_gb: float = 12.0,
    tokens_in_flight: int = 0,
    dtype_bytes: float = 2.0,
    extra_modules: tuple[str, ...] = (),
) -> tuple[dict[str, int], list[float]]:
    """Whole decoder layers on consecutive GPUs, balanced by estimated bytes.

    Parameters
    ----------
    cfg : the model's config.json as a dict.
    n_gpus : GPUs 0..n_gpus-1.
    gpu_gb : memory per GPU (H200: 141 GB); ``reserve_gb`` kept free per GPU for activations and
        the CUDA context.
    tokens_in_flight : batch x sequence length the forward passes will hold; adds transformers' KV
        cache (``kv_cache_bytes_per_token``) to each layer.
    extra_modules : module names outside the decoder layers to put on GPU 0 (e.g.
        "model.rotary_emb" in transformers' own DeepseekV3Model).

    Returns
    -------
    (device_map, gb_per_gpu): ``{"model.embed_tokens": 0, "model.layers.0": 0, ..., "model.norm": n-1,
    "lm_head": n-1}`` for ``from_pretrained(device_map=...)``, and the estimated GB per GPU.

    Raises
    ------
    EngineError if the estimate exceeds the GPUs' budget (the message gives the numbers).
    """
    cfg = _text_config(cfg)
    n_layers, h, vocab = int(cfg["num_hidden_layers"]), int(cfg["hidden_size"]), int(cfg["vocab_size"])
    kv = kv_cache_bytes_per_token(cfg, dtype_bytes=dtype_bytes) * tokens_in_flight
    sizes = [layer_bytes(cfg, i, dtype_bytes=dtype_bytes)["total"] + kv for i in range(n_layers)]
    embed = vocab * h * dtype_bytes
    head = embed + h * dtype_bytes  # lm_head + final norm (untied in DeepSeek-V3/K2)
    budget = (gpu_gb - reserve_gb) * GB
    total = sum(sizes) + embed + head
    if total > budget * n_gpus:
        raise EngineError(
            f"the model needs about {total / GB:,.0f} GB of weights{' and KV cache' if kv else ''} but {n_gpus} GPUs "
            f"x {gpu_gb - reserve_gb:g} GB hold {budget * n_gpus / GB:,.0f} GB: use the INT4 checkpoint, more GPUs, "
            "or fewer tokens in flight"
        )
    # Contiguous split of [embeddings, layer 0 .. layer n-1, norm + lm_head] into n_gpus parts with the
    # smallest largest part: binary search on the capacity, greedy packing to test each capacity.
    items = [embed, *sizes, head]

    def pack(cap: float) -> list[int] | None:
        parts, load, owner = 0, 0.0, []
        for size in items:
            if load + size > cap and load > 0:
                parts, load = parts + 1, 0.0
            load += size
            owner.append(parts)
        return owner if parts < n_gpus else None

    lo, hi = max(items), total
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if pack(mid) is not None else (mid, hi)
    owner = pack(hi)
    assert owner is not None
    used = [0.0] * n_gpus
    for size, g in zip(items, owner, strict=True):
        used[g] += size
    if max(used) > budget:
        g = used.index(max(used))
        raise EngineError(
            f"GPU {g} would hold {used[g] / GB:,.0f} GB (> {budget / GB:g} GB): add GPUs or lower tokens in flight"
        )
    device_map: dict[str, int] = {"model.embed_tokens": owner[0], **{name: 0 for name in extra_modules}}
    device_map.update({f"model.layers.{i}": owner[i + 1] for i in range(n_layers)})
    device_map["model.norm"] = device_map["lm_head"] = owner[-1]
    return device_map, [u / GB for u in used]
