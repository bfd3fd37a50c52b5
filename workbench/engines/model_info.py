"""What an engine client needs to know about the served model, read from its files without torch.

An inference server holds the weights; the client only needs the model's ``config.json`` (which
layers are MoE, how many experts, top-k) and its tokenizer (to send token ids and to store the
vocabulary). Both come from a local directory that mirrors the served checkpoint; the weights need
not be there (for K2 Thinking: download ``config.json``, ``tokenizer_config.json``,
``tiktoken.model``, ``tokenization_kimi.py`` and the chat template only, a few MB).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from workbench.engines.client import EngineError
from workbench.paths import BUNDLED_MODELS, bundled
from workbench.routing_config import RoutingConfig

# model_type values whose layers follow DeepSeek-V3's dense-then-MoE layout (K2 reports "kimi_k2").
_DEEPSEEK_TYPES = ("deepseek_v3", "deepseek_v2", "kimi_k2", "kimi_k25")


def resolve_model_dir(name_or_path: str) -> Path:
    """``"k2-mini"`` -> the bundled mini K2; anything else is a local directory holding config.json."""
    path = bundled(BUNDLED_MODELS[name_or_path]) if name_or_path in BUNDLED_MODELS else Path(name_or_path).expanduser()
    if not (path / "config.json").is_file():
        raise EngineError(
            f"model {name_or_path!r}: no config.json in {path}; give a local directory with the served "
            "model's config.json and tokenizer files (weights are not needed to record from a server)",
            param="model",
        )
    return path


def _text_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Multimodal wrappers (K2.5-style) nest the language model's config under ``text_config``."""
    inner = cfg.get("text_config")
    return {**cfg, **inner} if isinstance(inner, dict) else cfg


def moe_layers_from_config(cfg: dict[str, Any]) -> tuple[int, ...]:
    """Real indices of the MoE decoder layers, by the rule each model family's modelling code uses.

    DeepSeek-V3 / K2 (``modeling_deepseek.py``): layer i is MoE iff ``n_routed_experts`` is set,
    ``i >= first_k_dense_replace`` and ``i % moe_layer_freq == 0``; K2: 1..60.
    Qwen2/3-MoE: MoE iff ``i not in mlp_only_layers`` and ``(i + 1) % decoder_sparse_step == 0``.
    Mixtral, OLMoE, Qwen3-MoE without those keys: every layer.
    """
    cfg = _text_config(cfg)
    n = int(cfg["num_hidden_layers"])
    mtype = cfg.get("model_type", "")
    if mtype in _DEEPSEEK_TYPES or "first_k_dense_replace" in cfg:
        first = int(cfg.get("first_k_dense_replace", 0))
        freq = int(cfg.get("moe_layer_freq", 1))
        return tuple(i for i in range(n) if i >= first and i % freq == 0)
    if "decoder_sparse_step" in cfg or "mlp_only_layers" in cfg:
        step = int(cfg.get("decoder_sparse_step", 1))
        dense = set(cfg.get("mlp_only_layers", []) or [])
        return tuple(i for i in range(n) if i not in dense and (i + 1) % step == 0)
    if any(key in cfg for key in ("num_local_experts", "num_experts", "n_routed_experts")):
        return tuple(range(n))
    raise EngineError(f"config.json (model_type {mtype!r}) names no routed experts: is this an MoE model?")


def quantization_label(cfg: dict[str, Any]) -> str | None:
    """e.g. ``"compressed-tensors:pack-quantized:int4:g32"`` for K2 Thinking's INT4 checkpoint."""
    q = cfg.get("quantization_config")
    if not isinstance(q, dict):
        return None
    parts = [str(q.get("quant_method", "unknown"))]
    if q.get("format"):
        parts.append(str(q["format"]))
    for group in (q.get("config_groups") or {}).values():
        w = group.get("weights") or {}
        if w.get("num_bits"):
            parts.append(f"{w.get('type', 'int')}{w['num_bits']}")
        if w.get("group_size"):
            parts.append(f"g{w['group_size']}")
        break
    return ":".join(parts)


def routing_config_from_dir(path: Path, *, model_name: str | None = None) -> RoutingConfig:
    """The ``RoutingConfig`` a store records, from ``config.json`` alone.

    ``family`` is "deepseek_v3" for sigmoid/noaux_tc routers (DeepSeek-V3, K2) and "softmax_topk"
    otherwise, the names the hooks adapters use, so stores from hooks and engines describe the
    routing the same way.
    """
    raw = (path / "config.json").read_bytes()
    cfg = _text_config(json.loads(raw))
    mtype = str(cfg.get("model_type", ""))
    n_experts = cfg.get("n_routed_experts") or cfg.get("num_local_experts") or cfg.get("num_experts")
    top_k = cfg.get("num_experts_per_tok") or cfg.get("moe_topk")
    if not n_experts or not top_k:
        raise EngineError(f"{path / 'config.json'}: cannot find the number of routed experts and top-k")
    sigmoid = cfg.get("scoring_func") == "sigmoid"
    return RoutingConfig(
        model_name=model_name or path.name,
        model_type=mtype,
        family="deepseek_v3" if sigmoid or mtype in _DEEPSEEK_TYPES else "softmax_topk",
        num_hidden_layers=int(cfg["num_hidden_layers"]),
        moe_layers=moe_layers_from_config(cfg),
        n_routed_experts=int(n_experts),
        top_k=int(top_k),
        n_shared_experts=int(cfg.get("n_shared_experts") or 0),
        scoring_func=str(cfg.get("scoring_func", "softmax")),
        topk_method=str(cfg.get("topk_method", "greedy")),
        n_group=int(cfg.get("n_group") or 1),
        topk_group=int(cfg.get("topk_group") or 1),
        norm_topk_prob=bool(cfg.get("norm_topk_prob", False)),
        routed_scaling_factor=float(cfg.get("routed_scaling_factor", 1.0)),
        quantization=quantization_label(cfg),
        config_sha256=hashlib.sha256(raw).hexdigest(),
    )


def load_tokenizer(path: Path, *, trust_remote_code: bool = False) -> Any:
    """The served model's tokenizer (transformers, no torch needed). K2 needs ``trust_remote_code``."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except Exception as err:  # transformers raises many types here; all mean "cannot load"
        hint = "" if trust_remote_code else " (K2's tokenizer needs trust_remote_code=True, --trust-remote-code)"
        raise EngineError(f"cannot load the tokenizer from {path}{hint}: {type(err).__name__}: {err}") from err


def tokenizer_attrs(tokenizer: Any, name: str) -> dict[str, Any]:
    """The store's ``tokenizer`` attribute: name, vocabulary by id, special tokens (api.md)."""
    n = len(tokenizer)
    vocab = [str(t) if t is not None else "" for t in tokenizer.convert_ids_to_tokens(list(range(n)))]
    special = {str(t): int(i) for t, i in zip(tokenizer.all_special_tokens, tokenizer.all_special_ids, strict=False)}
    return {"name": name, "vocab": vocab, "special_tokens": special}
