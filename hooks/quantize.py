"""Write a DeepSeek-V3/K2 checkpoint with its routed experts quantized the way Kimi K2 Thinking ships.

K2 Thinking's ``quantization_config`` (compressed-tensors): routed-expert projections INT4,
``pack-quantized`` format (eight 4-bit values per int32), symmetric, ``group`` strategy with group
size 32, one bf16 scale per group; attention, the shared expert, the dense layer-0 MLP, the router
and ``lm_head`` stay bf16 (the ``ignore`` list below). The router therefore sees the same weights;
routing changes only through the quantized experts' outputs feeding later layers.

Used to check that hooks record quantized models and to count how many routing decisions INT4
changes (``benchmarks/bench_quant_routing.py``). Quantization uses compressed-tensors' own
``PackedQuantizationCompressor``, so transformers' loader reads the result like a real K2 Thinking
checkpoint.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from workbench.errors import WorkbenchError

_EXPERT_RE = re.compile(r"\.mlp\.experts\.\d+\.(gate_proj|up_proj|down_proj)\.weight$")


def k2_thinking_quantization_config(group_size: int = 32) -> dict[str, Any]:
    """The compressed-tensors ``quantization_config`` of K2 Thinking (group size as given)."""
    return {
        "quant_method": "compressed-tensors",
        "format": "pack-quantized",
        "quantization_status": "compressed",
        "config_groups": {
            "group_0": {
                "targets": [r"re:.*mlp\.experts\.\d+\.(gate_proj|up_proj|down_proj)$"],
                "weights": {
                    "num_bits": 4,
                    "type": "int",
                    "symmetric": True,
                    "strategy": "group",
                    "group_size": group_size,
                    "dynamic": False,
                    "observer": "minmax",
                },
                "input_activations": None,
                "output_activations": None,
            }
        },
        "ignore": ["lm_head", r"re:.*self_attn.*", r"re:.*shared_experts.*", r"re:.*mlp\.(gate|up|down)_proj.*"],
        "kv_cache_scheme": None,
    }


def _scheme(group_size: int) -> Any:
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

    args = QuantizationArgs(num_bits=4, type="int", symmetric=True, strategy="group", group_size=group_size)
    return QuantizationScheme(targets=["Linear"], weights=args)


def quantize_weight(weight: torch.Tensor, group_size: int) -> dict[str, torch.Tensor]:
    """INT4 symmetric group quantization of one (out, in) weight: weight_packed, weight_scale, weight_shape."""
    from compressed_tensors.compressors.pack_quantized.base import PackedQuantizationCompressor
    from compressed_tensors.quantization.utils import calculate_qparams

    out_f, in_f = weight.shape
    if in_f % group_size:
        raise WorkbenchError(
            f"an expert projection has {in_f} input features, not a multiple of group size {group_size}; "
            f"pass a group size that divides it (e.g. {largest_group(in_f)})"
        )
    scheme = _scheme(group_size)
    groups = weight.float().reshape(out_f, in_f // group_size, group_size)  # (out, n_groups, g)
    max_abs = groups.abs().amax(-1)  # (out, n_groups)
    scale, _ = calculate_qparams(-max_abs, max_abs, scheme.weights)
    state = {"weight": weight.to(torch.bfloat16), "weight_scale": scale.to(torch.bfloat16)}
    return dict(PackedQuantizationCompressor.compress(state, scheme))


def largest_group(in_features: int, start: int = 32) -> int:
    """The largest power-of-two group size <= ``start`` that divides ``in_features``."""
    g = start
    while g > 1 and in_features % g:
        g //= 2
    return g


def expert_group_size(src: Path, wanted: int = 32) -> int:
    """``wanted`` if every routed-expert projection's input width is a multiple of it, else the largest that is."""
    cfg = json.loads((src / "config.json").read_text())
    widths = [int(cfg["hidden_size"]), int(cfg["moe_intermediate_size"])]
    return min(largest_group(w, wanted) for w in widths)


def quantize_routed_experts(src: str | Path, dst: str | Path, *, group_size: int = 32) -> dict[str, Any]:
    """Copy checkpoint ``src`` to ``dst`` with routed experts INT4 pack-quantized (K2 Thinking layout).

    Returns a summary: quantized tensor count, bytes before/after, group size.
    """
    src, dst = Path(src), Path(dst)
    files = sorted(src.glob("*.safetensors"))
    if not files:
        raise WorkbenchError(f"{src} has no *.safetensors weights to quantize")
    if dst.exists():
        raise WorkbenchError(f"{dst} exists; choose a new directory for the quantized checkpoint")
    dst.mkdir(parents=True)
    n_quant, before, after = 0, 0, 0
    for file in files:
        out: dict[str, torch.Tensor] = {}
        with safe_open(str(file), "pt") as f:
            for key in f.keys():  # noqa: SIM118  (safe_open has no __iter__)
                tensor = f.get_tensor(key)
                before += tensor.numel() * tensor.element_size()
                if _EXPERT_RE.search(key):
                    prefix = key[: -len(".weight")]
                    for name, value in quantize_weight(tensor, group_size).items():
                        out[f"{prefix}.{name}"] = value.contiguous()
                    n_quant += 1
                elif tensor.is_floating_point() and "e_score_correction_bias" not in key:
                    out[key] = tensor.to(torch.bfloat16)  # attention, shared expert, router, norms: bf16
                else:
                    out[key] = tensor  # the selection bias stays fp32, as in K2's checkpoints
        after += sum(t.numel() * t.element_size() for t in out.values())
        save_file(out, str(dst / file.name), metadata={"format": "pt"})
    if n_quant == 0:
        shutil.rmtree(dst)
        raise WorkbenchError(f"{src} has no routed-expert weights (model.layers.N.mlp.experts.E.*_proj.weight)")
    for extra in src.iterdir():
        if extra.suffix != ".safetensors" and extra.name != "model.safetensors.index.json" and extra.is_file():
            shutil.copy2(extra, dst / extra.name)
    if (src / "model.safetensors.index.json").exists():
        index = json.loads((src / "model.safetensors.index.json").read_text())
        weight_map: dict[str, str] = {}
        for key, fname in index["weight_map"].items():
            if _EXPERT_RE.search(key):
                prefix = key[: -len(".weight")]
                weight_map.update({f"{prefix}.{n}": fname for n in ("weight_packed", "weight_scale", "weight_shape")})
            else:
                weight_map[key] = fname
        (dst / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    cfg = json.loads((src / "config.json").read_text())
    cfg["quantization_config"] = k2_thinking_quantization_config(group_size)
    cfg["dtype"] = "bfloat16"
    (dst / "config.json").write_text(json.dumps(cfg, indent=2))
    return {"quantized_tensors": n_quant, "bytes_before": before, "bytes_after": after, "group_size": group_size}
