"""Router adapters: find the MoE layers of a loaded model and say where their routing can be read.

Found by inspecting the loaded modules (not by trusting class names alone):

``deepseek_v3``
    transformers' own DeepSeek-V3 family (model_type ``deepseek_v3``; Kimi K2 and Moonlight load as
    it). Each MoE block has a ``gate`` (router) and an ``experts`` module whose forward receives
    ``(hidden_states, top_k_index, top_k_weights)`` throughout transformers 5.x: we read the
    routing that *reaches the experts*, so a router that changes its return value between
    versions does not break capture. Sigmoid scores, ``noaux_tc`` selection with a bias.
``softmax_topk``
    transformers' Mixtral, Qwen3-MoE and OLMoE: the same ``gate`` + ``experts`` layout with a
    softmax top-k router.
``deepseek_remote``
    the DeepSeek/K2 remote code shipped with K2 checkpoints (``trust_remote_code=True``): a
    ``MoEGate`` whose forward returns ``(topk_idx, topk_weight)``; captured at the gate's output.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from workbench.errors import WorkbenchError
from workbench.routing_config import RoutingConfig

DEEPSEEK_TYPES = frozenset({"deepseek_v3", "kimi_k2"})
SOFTMAX_TYPES = frozenset({"mixtral", "qwen3_moe", "olmoe"})
SUPPORTED = (
    "transformers DeepSeek-V3 / Kimi K2 / Moonlight (model_type deepseek_v3), "
    "DeepSeek/K2 remote code (MoEGate, trust_remote_code), "
    "Mixtral, Qwen3-MoE and OLMoE (softmax top-k routers)"
)
_LAYER_RE = re.compile(r"(?:^|\.)layers\.(\d+)\.")
# config.json keys that do not change the model's identity (where it was loaded from, runtime choices).
_VOLATILE_KEYS = frozenset(
    {
        "_name_or_path",
        "transformers_version",
        "torch_dtype",
        "dtype",
        "use_cache",
        "_attn_implementation",
        "_attn_implementation_autoset",
        "_experts_implementation",
        "quantization_config",
        "auto_map",
        "architectures",
    }
)


class UnsupportedModelError(WorkbenchError):
    """The model has no MoE layer of a supported family."""


@dataclass
class MoESite:
    """One MoE layer: where its routing is read.

    ``experts`` is the module whose forward receives ``(hidden_states, top_k_index, top_k_weights)``
    (transformers 5.x families) or None where the routing is read at the gate's output (remote code).
    """

    layer: int  # the model's real layer index (1..60 for K2)
    name: str  # module path of the MoE block, e.g. "model.layers.3.mlp"
    gate: nn.Module
    experts: nn.Module | None
    experts_params: tuple[str, ...] = ()  # the experts forward's parameter names, in order
    index_param: str = "top_k_index"
    weights_param: str = "top_k_weights"

    def selection_bias(self) -> torch.Tensor | None:
        """The router's selection bias (E,) (``e_score_correction_bias``), or None."""
        bias = getattr(self.gate, "e_score_correction_bias", None)
        return bias if isinstance(bias, torch.Tensor) else None


@dataclass
class Adapter:
    """A family's MoE sites plus how its router scores (``scoring``: "sigmoid" or "softmax")."""

    family: str
    scoring: str
    sites: list[MoESite]
    n_experts: int
    top_k: int


def _layer_index(name: str) -> int:
    m = _LAYER_RE.search(name + ".")
    if m is None:
        raise UnsupportedModelError(f"cannot tell the layer index of MoE module {name!r} (no 'layers.N.' in its path)")
    return int(m.group(1))


def experts_routing_params(module: nn.Module) -> tuple[tuple[str, ...], str, str] | None:
    """How an experts module's forward receives the routing: (parameter names, index name, weights name).

    transformers 5.x names them ``(hidden_states, top_k_index, top_k_weights)``; any forward with one
    parameter naming indices (``index``/``indices``/``idx``) and one naming weights is accepted, so a
    rename between releases does not break capture. None if the forward takes no routing.
    """
    return _routing_params(type(module).forward)


@functools.lru_cache(maxsize=64)
def _routing_params(forward: Any) -> tuple[tuple[str, ...], str, str] | None:
    """``experts_routing_params`` of one forward function (cached: a model has one experts class, 60 layers)."""
    try:
        names = tuple(p for p in inspect.signature(forward).parameters if p != "self")
    except (TypeError, ValueError):
        return None
    index = next((n for n in names if any(t in n for t in ("index", "indices", "idx"))), None)
    weights = next((n for n in names if "weight" in n), None)
    if index is None or weights is None:
        return None
    return names, index, weights


def _is_remote_gate(module: nn.Module) -> bool:
    return (
        type(module).__name__ == "MoEGate"
        and isinstance(getattr(module, "weight", None), torch.Tensor)
        and hasattr(module, "top_k")
    )


def _model_type(model: nn.Module) -> str:
    config = getattr(model, "config", None)
    return str(getattr(config, "model_type", "") or "")


def _rows(gate: nn.Module) -> int:
    weight = getattr(gate, "weight", None)
    return int(weight.shape[0]) if isinstance(weight, torch.Tensor) else 0


def find_adapter(model: nn.Module) -> Adapter:
    """Inspect ``model``'s modules and return the adapter of its MoE family.

    Raises
    ------
    UnsupportedModelError
        If no MoE layer of a supported family is found (the message names the supported families).
    """
    model_type = _model_type(model)
    remote: list[MoESite] = []
    native: list[MoESite] = []
    for name, module in model.named_modules():
        if _is_remote_gate(module):
            block = name.rsplit(".", 1)[0]
            remote.append(MoESite(_layer_index(name), block, module, None))
        gate, experts = getattr(module, "gate", None), getattr(module, "experts", None)
        if isinstance(gate, nn.Module) and isinstance(experts, nn.Module):
            params = experts_routing_params(experts)
            if params is not None:
                native.append(MoESite(_layer_index(name), name, gate, experts, *params))

    if remote:
        gate = remote[0].gate
        scoring = str(getattr(gate, "scoring_func", "sigmoid"))
        n_experts = int(getattr(gate, "n_routed_experts", 0) or _rows(gate))
        return Adapter("deepseek_remote", scoring, remote, n_experts, int(gate.top_k))  # type: ignore[arg-type]
    if native and (model_type in DEEPSEEK_TYPES or model_type in SOFTMAX_TYPES):
        deepseek = model_type in DEEPSEEK_TYPES
        gate = native[0].gate
        n_experts = int(getattr(gate, "num_experts", 0) or _rows(gate))
        top_k = int(gate.top_k)  # type: ignore[arg-type]
        return Adapter(
            "deepseek_v3" if deepseek else "softmax_topk",
            "sigmoid" if deepseek else "softmax",
            native,
            n_experts,
            top_k,
        )
    what = f"model_type {model_type!r}" if model_type else f"{type(model).__name__}"
    raise UnsupportedModelError(
        f"{what} has no MoE router the workbench can record; supported families: {SUPPORTED}. "
        "Pass an MoE checkpoint of one of these (remote-code K2 checkpoints need trust_remote_code=True, "
        "--trust-remote-code)."
    )


def config_sha256(model: nn.Module) -> str:
    """Hash of the model's config.json (identity, without load-time keys such as dtype or path)."""
    config = getattr(model, "config", None)
    if config is None:
        return ""
    source = Path(str(getattr(config, "_name_or_path", "") or "")) / "config.json"
    data: dict[str, Any]
    if source.is_file():
        data = json.loads(source.read_text())
    else:
        data = config.to_diff_dict() if hasattr(config, "to_diff_dict") else dict(vars(config))
    clean = {k: v for k, v in data.items() if k not in _VOLATILE_KEYS}
    return hashlib.sha256(json.dumps(clean, sort_keys=True, default=str).encode()).hexdigest()


def quantization_label(model: nn.Module) -> str | None:
    """e.g. "compressed-tensors:pack-quantized:int4:g32" for K2 Thinking's routed experts; None if dense."""
    qc = getattr(getattr(model, "config", None), "quantization_config", None)
    if qc is None:
        return None
    d = qc if isinstance(qc, dict) else qc.to_dict() if hasattr(qc, "to_dict") else vars(qc)
    method = d.get("quant_method", "unknown")
    fmt = d.get("format", "")
    bits, group = None, None
    for group_cfg in (d.get("config_groups") or {}).values():
        w = (group_cfg or {}).get("weights") or {}
        bits, group = w.get("num_bits", bits), w.get("group_size", group)
    parts = [str(method), str(fmt)]
    if bits:
        parts.append(f"int{bits}")
    if group:
        parts.append(f"g{group}")
    return ":".join(p for p in parts if p)


def routing_config(model: nn.Module, adapter: Adapter, *, model_name: str | None = None) -> RoutingConfig:
    """The store's RoutingConfig for ``model`` as seen through ``adapter``."""
    cfg = getattr(model, "config", None)

    def get(name: str, default: Any) -> Any:
        value = getattr(cfg, name, None)
        return default if value is None else value

    if model_name is None:
        raw = str(get("_name_or_path", "") or type(model).__name__)
        model_name = Path(raw).name if raw else type(model).__name__
    gate = adapter.sites[0].gate
    deepseek = adapter.family in ("deepseek_v3", "deepseek_remote")
    norm = getattr(gate, "norm_topk_prob", get("norm_topk_prob", _model_type(model) == "mixtral"))
    return RoutingConfig(
        model_name=model_name,
        model_type=_model_type(model),
        family=adapter.family,
        num_hidden_layers=int(get("num_hidden_layers", max(s.layer for s in adapter.sites) + 1)),
        moe_layers=tuple(s.layer for s in adapter.sites),
        n_routed_experts=adapter.n_experts,
        top_k=adapter.top_k,
        n_shared_experts=int(get("n_shared_experts", 0)) if deepseek else 0,
        scoring_func=adapter.scoring,
        topk_method=str(getattr(gate, "topk_method", get("topk_method", "noaux_tc"))) if deepseek else "greedy",
        n_group=int(getattr(gate, "n_group", getattr(gate, "num_group", get("n_group", 1)))) if deepseek else 1,
        topk_group=int(getattr(gate, "topk_group", get("topk_group", 1))) if deepseek else 1,
        norm_topk_prob=bool(norm),
        routed_scaling_factor=float(getattr(gate, "routed_scaling_factor", get("routed_scaling_factor", 1.0)))
        if deepseek
        else 1.0,
        quantization=quantization_label(model),
        config_sha256=config_sha256(model),
    )
