"""How many routing decisions change when the routed experts are INT4 (K2 Thinking's quantization)?

Quantizes the checkpoint's routed experts with ``workbench.hooks.quantize`` (compressed-tensors
pack-quantized, symmetric INT4, group size 32, or the largest power of two <= 32 dividing every expert
input width; attention, shared expert, router and lm_head stay bf16), loads both checkpoints in bf16
with transformers, routes the same token sequences teacher-forced through each, and compares.

Decision = one (token, MoE layer). Reported: share of decisions whose top-k *set* differs, share whose
first choice differs, share of the k expert slots that differ (|A \\ B| / k), each overall and per layer.

    python benchmarks/bench_quant_routing.py --out benchmarks/results [--model k2-mini|PATH]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from workbench.hooks import route_tokens
from workbench.hooks.quantize import expert_group_size, quantize_routed_experts

from workbench.models import BUNDLED, load_model


def _checkpoint(model: str | None, work: Path) -> tuple[Path, str]:
    if model is not None:
        return (BUNDLED.get(model, Path(model)), model)
    path = BUNDLED["k2-mini"]
    if (path / "config.json").is_file() and any(path.glob("*.safetensors")):
        return path, "k2-mini"
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import DeepseekV3ForCausalLM, PreTrainedTokenizerFast

    from workbench.minik2.config import mini_k2_config

    torch.manual_seed(0)
    model_ = DeepseekV3ForCausalLM(mini_k2_config()).eval()
    with torch.no_grad():  # a trained router has a non-zero selection bias; give the random one some
        for m in model_.modules():
            if hasattr(m, "e_score_correction_bias"):
                m.e_score_correction_bias.normal_(0.0, 0.02)
    out = work / "random-mini-k2"
    model_.save_pretrained(out)
    tok = Tokenizer(models.WordLevel({"[PAD]": 0, "[UNK]": 1}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]").save_pretrained(out)
    return out, "random DeepseekV3 with the mini K2 shape (k2-mini not built yet)"


def _sequences(path: Path, tokenizer: Any, vocab: int, n_seq: int, seq_len: int) -> list[np.ndarray]:
    suite = Path(__file__).resolve().parent.parent / "data" / "prompts" / "suite.jsonl"
    if path == BUNDLED["k2-mini"] and suite.is_file():
        from workbench.prompts import read_prompts

        seqs = []
        for p in read_prompts(suite)[:n_seq]:
            text = p.text if p.text is not None else json.dumps(p.messages)
            seqs.append(np.asarray(tokenizer(text)["input_ids"][:seq_len]))
        return seqs
    rng = np.random.default_rng(0)
    return [rng.integers(10, vocab, seq_len) for _ in range(n_seq)]


def compare(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """a, b: (T, L, k) expert ids of the same tokens. Shares of changed decisions, overall and per layer."""
    k = a.shape[-1]
    sa, sb = np.sort(a, -1), np.sort(b, -1)
    set_changed = (sa != sb).any(-1)  # (T, L)
    first_changed = a[..., 0] != b[..., 0]  # (T, L)
    # slots of A's top-k that B did not choose: |A \ B| per decision
    missing = k - (a[..., :, None] == b[..., None, :]).any(-1).sum(-1)  # (T, L)
    return {
        "decisions": int(set_changed.size),
        "topk_set_changed": int(set_changed.sum()),
        "topk_set_changed_share": float(set_changed.mean()),
        "first_choice_changed_share": float(first_changed.mean()),
        "expert_slots_changed_share": float(missing.sum() / (missing.size * k)),
        "per_layer_topk_set_changed_share": set_changed.mean(0).round(4).tolist(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--model", default=None, help="k2-mini or a checkpoint dir (default: k2-mini if built)")
    ap.add_argument("--sequences", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=128)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        src, name = _checkpoint(args.model, work)
        group = expert_group_size(src, 32)
        summary = quantize_routed_experts(src, work / "int4", group_size=group)
        dense, tokenizer = load_model(src, dtype="bf16")
        quant, _ = load_model(work / "int4", dtype="bf16")
        seqs = _sequences(src, tokenizer, dense.config.vocab_size, args.sequences, args.seq_len)
        a = np.concatenate([route_tokens(dense, s).expert_ids for s in seqs])  # (T, L, k)
        b = np.concatenate([route_tokens(quant, s).expert_ids for s in seqs])
        layers = [i for i, layer in enumerate(dense.model.layers) if hasattr(layer.mlp, "gate")]
    result = {
        "benchmark": "int4_routing_changes",
        "model": name,
        "quantization": f"compressed-tensors pack-quantized int4 symmetric group {group}",
        "group_size": group,
        "group_size_note": "32 as in K2 Thinking" if group == 32 else "32 does not divide an expert input width",
        "checkpoint_bytes": {"before": summary["bytes_before"], "after": summary["bytes_after"]},
        "tokens": int(a.shape[0]),
        "moe_layers": layers,
        "baseline": "same checkpoint unquantized, bf16",
        **compare(a, b),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_quant_routing.json").write_text(json.dumps(result, indent=2))
    print(
        f"{name}: {result['topk_set_changed']} of {result['decisions']} routing decisions changed "
        f"({100 * result['topk_set_changed_share']:.2f}%), "
        f"first choice {100 * result['first_choice_changed_share']:.2f}%, "
        f"expert slots {100 * result['expert_slots_changed_share']:.2f}% (INT4 g{group})"
    )


if __name__ == "__main__":
    main()
