"""Proof against the truth: (a) recompute each router's top-k from its own weight and selection bias for
the hidden states that reached it; (b) K2's real configuration on the meta device, 60 MoE layers hooked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hooks_helpers import check_against_truth, padded_batch, save_remote_checkpoint, tiny_deepseek, tiny_softmax_model
from transformers import DeepseekV3Config, DeepseekV3ForCausalLM
from workbench.hooks import RoutingRecorder

from workbench.errors import WorkbenchError
from workbench.models import load_model


@pytest.mark.parametrize("family", ["deepseek", "mixtral", "qwen3_moe", "olmoe"])
def test_recomputed_topk_matches_capture(family: str) -> None:
    model = tiny_deepseek(seed=4) if family == "deepseek" else tiny_softmax_model(family, seed=4)
    ids, mask = padded_batch([12, 7], seed=4)
    check_against_truth(model, ids, mask)


def test_bias_changes_the_choice_and_the_capture_follows_it() -> None:
    """With a large selection bias the chosen set differs from top-k of the scores alone; ids follow the bias."""
    model = tiny_deepseek(seed=5)
    with torch.no_grad():
        for m in model.modules():
            if hasattr(m, "e_score_correction_bias"):
                m.e_score_correction_bias.zero_()
                m.e_score_correction_bias[3] = 5.0  # expert 3 always wins the first rank
    with RoutingRecorder(model, scores=True) as rec, torch.no_grad():
        model(input_ids=torch.arange(3, 20)[None])
    (r,) = rec.routing()
    assert (r.expert_ids[..., 0] == 3).all()
    assert r.router_scores is not None
    unbiased_top1 = r.router_scores.argmax(-1)  # (T, L): the bias-free choice differs somewhere
    assert (unbiased_top1 != 3).any()


def test_remote_code_moegate_matches_truth(tmp_path: Path) -> None:
    model, _ = load_model(save_remote_checkpoint(tmp_path / "k2-remote"), trust_remote_code=True)
    rec = RoutingRecorder(model)
    assert rec.config.family == "deepseek_remote" and rec.config.moe_layers == (1, 2, 3)
    assert rec.config.model_type == "kimi_k2" and rec.config.routed_scaling_factor == pytest.approx(2.827)
    ids, mask = padded_batch([10, 6], seed=6)
    check_against_truth(model, ids, mask)


# K2's config.json (moonshotai/Kimi-K2-Instruct): 61 layers, layer 0 dense, 384 experts, 8 per token, MLA dims.
K2 = dict(
    vocab_size=163840,
    hidden_size=7168,
    intermediate_size=18432,
    moe_intermediate_size=2048,
    num_hidden_layers=61,
    num_attention_heads=64,
    num_key_value_heads=64,
    n_routed_experts=384,
    num_experts_per_tok=8,
    n_shared_experts=1,
    first_k_dense_replace=1,
    q_lora_rank=1536,
    kv_lora_rank=512,
    qk_rope_head_dim=64,
    qk_nope_head_dim=128,
    v_head_dim=128,
    n_group=1,
    topk_group=1,
    norm_topk_prob=True,
    routed_scaling_factor=2.827,
    scoring_func="sigmoid",
    topk_method="noaux_tc",
    max_position_embeddings=131072,
)


@pytest.mark.slow
def test_k2_on_meta_device_hooks_exactly_60_moe_layers() -> None:
    with torch.device("meta"):
        model = DeepseekV3ForCausalLM(DeepseekV3Config(**K2)).to(torch.bfloat16).eval()
    rec = RoutingRecorder(model, scores=True)
    cfg = rec.config
    assert cfg.moe_layers == tuple(range(1, 61)) and cfg.num_hidden_layers == 61
    assert (cfg.n_routed_experts, cfg.top_k, cfg.n_shared_experts) == (384, 8, 1)
    assert (cfg.scoring_func, cfg.topk_method, cfg.n_group, cfg.topk_group) == ("sigmoid", "noaux_tc", 1, 1)
    assert cfg.norm_topk_prob and cfg.routed_scaling_factor == pytest.approx(2.827)
    b, t = 2, 5
    ids = torch.zeros(b, t, dtype=torch.long, device="meta")
    # A 4-D additive mask skips transformers' mask construction, which reads values (impossible on meta).
    mask = torch.zeros(b, 1, t, t, dtype=torch.bfloat16, device="meta")
    with rec, torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, use_cache=False)
    assert out.logits.shape == (b, t, 163840)
    (shapes,) = rec.shapes
    assert sorted(shapes) == list(range(1, 61))
    for layer in range(1, 61):
        assert shapes[layer] == {"expert_ids": (b * t, 8), "gate_weights": (b * t, 8), "router_logits": (b * t, 384)}
    with pytest.raises(WorkbenchError, match="meta device"):
        rec.routing()


class _LogitsOnlyRouter(torch.nn.Module):
    """The router as transformers 5.0 shaped it: returns only the logits; the MoE block selects."""

    def __init__(self, gate: torch.nn.Module) -> None:
        super().__init__()
        self.weight, self.e_score_correction_bias = gate.weight, gate.e_score_correction_bias
        self.top_k, self.num_experts = gate.top_k, gate.num_experts

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(hidden_states.reshape(-1, self.weight.shape[1]).float(), self.weight.float())


class _RenamedExperts(torch.nn.Module):
    """Experts whose forward names the routing arguments differently (`topk_indices`, `topk_weights`)."""

    def __init__(self, experts: torch.nn.Module) -> None:
        super().__init__()
        self.inner = experts

    def forward(self, hidden: torch.Tensor, topk_indices: torch.Tensor, topk_weights: torch.Tensor) -> torch.Tensor:
        return self.inner(hidden, topk_indices, topk_weights)


class _OldStyleMoE(torch.nn.Module):
    """A DeepSeek-V3 MoE block in the 5.0 layout: gate -> logits, block's own top-k, experts(h, idx, w)."""

    def __init__(self, moe: torch.nn.Module, cfg: DeepseekV3Config) -> None:
        super().__init__()
        self.gate, self.experts, self.shared_experts = (
            _LogitsOnlyRouter(moe.gate),
            _RenamedExperts(moe.experts),
            moe.shared_experts,
        )
        self.cfg = cfg

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        shape = hidden_states.shape
        scores = self.gate(hidden_states).sigmoid()  # (N, E)
        idx = (scores + self.gate.e_score_correction_bias).topk(self.cfg.num_experts_per_tok, dim=-1, sorted=False)[1]
        w = scores.gather(1, idx)
        w = w / (w.sum(-1, keepdim=True) + 1e-20) * self.cfg.routed_scaling_factor
        flat = hidden_states.reshape(-1, shape[-1])
        out = self.experts(flat, topk_indices=idx, topk_weights=w).reshape(shape)
        return out + self.shared_experts(hidden_states)


def test_capture_survives_an_older_5x_layout() -> None:
    """Router returning logits only, experts with renamed routing parameters called by keyword: same routing."""
    model = tiny_deepseek(seed=8)
    ids, mask = padded_batch([9, 5], seed=8)
    with RoutingRecorder(model, scores=True) as rec, torch.no_grad():
        model(input_ids=ids, attention_mask=mask)
    expected = rec.routing()
    for layer in model.model.layers[1:]:
        layer.mlp = _OldStyleMoE(layer.mlp, model.config)
    with RoutingRecorder(model, scores=True) as rec, torch.no_grad():
        model(input_ids=ids, attention_mask=mask)
    for a, b in zip(expected, rec.routing(), strict=True):
        assert np.array_equal(a.expert_ids, b.expert_ids)
        np.testing.assert_allclose(a.gate_weights, b.gate_weights, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(a.router_scores, b.router_scores, rtol=1e-5, atol=1e-6)
