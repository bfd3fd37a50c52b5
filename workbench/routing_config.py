"""A model's identity and routing configuration, as the routing store records it.

Stores refuse appends from another model or routing config, so everything that changes which
experts a token gets (and how the gate weights are formed) is part of ``signature()``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class RoutingConfig:
    """Identity and routing of an MoE model.

    Field values for Kimi K2 (config.json of moonshotai/Kimi-K2-Instruct): 61 layers, layer 0 dense
    (``first_k_dense_replace`` 1) so ``moe_layers`` is 1..60; 384 routed experts, 8 per token,
    1 shared; sigmoid scores, ``noaux_tc`` selection with a per-expert correction bias, ``n_group`` 1,
    ``topk_group`` 1, ``norm_topk_prob`` true, ``routed_scaling_factor`` 2.827.
    """

    model_name: str  # a hub id, "k2-mini", or a local path's final component
    model_type: str  # transformers' config.model_type, e.g. "deepseek_v3", "mixtral"
    family: str  # the hooks adapter that captured it, e.g. "deepseek_v3", "deepseek_remote", "softmax_topk"
    num_hidden_layers: int
    moe_layers: tuple[int, ...]  # real layer indices of the MoE layers, in order
    n_routed_experts: int
    top_k: int
    n_shared_experts: int = 0
    scoring_func: str = "softmax"  # "sigmoid" (DeepSeek-V3/K2) or "softmax" (Mixtral, Qwen3-MoE, OLMoE)
    topk_method: str = "greedy"  # "noaux_tc" (DeepSeek-V3/K2) or "greedy"
    n_group: int = 1
    topk_group: int = 1
    norm_topk_prob: bool = False
    routed_scaling_factor: float = 1.0
    quantization: str | None = None  # e.g. "compressed-tensors:pack-quantized:int4:g32"
    config_sha256: str = ""  # hash of the model's full config.json (identity, not just routing)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_attrs(self) -> dict[str, Any]:
        d = asdict(self)
        d["moe_layers"] = list(self.moe_layers)
        return d

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> RoutingConfig:
        d = dict(attrs)
        d["moe_layers"] = tuple(d["moe_layers"])
        return cls(**d)

    def signature(self) -> str:
        """Hash of what makes two runs' routing comparable: model identity plus routing config."""
        d = self.to_attrs()
        d.pop("extra", None)
        blob = json.dumps(d, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def describe_difference(self, other: RoutingConfig) -> str:
        """One line naming the fields that differ (for refusal messages)."""
        a, b = self.to_attrs(), other.to_attrs()
        diffs = [f"{k}: {a[k]!r} vs {b[k]!r}" for k in a if k != "extra" and a[k] != b.get(k)]
        return "; ".join(diffs) or "identical"
