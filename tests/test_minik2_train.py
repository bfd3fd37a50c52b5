"""Training machinery: DeepSeek-V3 balancing (bias update, sequence-wise loss) and a few real steps."""

from __future__ import annotations

import json

import pytest
import torch
from minik2_helpers import write_tiny_corpus
from transformers import DeepseekV3ForCausalLM

from workbench.minik2.balance import RouterTap, expert_loads, sequence_balance_loss, update_correction_bias
from workbench.minik2.config import MiniK2Shape, mini_k2_config
from workbench.minik2.fast_experts import register

TINY = MiniK2Shape(vocab_size=300, hidden_size=32, num_hidden_layers=3, intermediate_size=64,
                   moe_intermediate_size=16, n_routed_experts=8, num_experts_per_tok=2, num_attention_heads=2,
                   q_lora_rank=16, kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=8)  # fmt: skip


def test_bias_moves_against_load_deviation():
    gates = [torch.nn.Module() for _ in range(2)]
    for g in gates:
        g.register_buffer("e_score_correction_bias", torch.zeros(4))
    loads = torch.tensor([[10, 2, 4, 4], [5, 5, 5, 5]])
    ratio = update_correction_bias(gates, loads, gamma=0.01)
    assert gates[0].e_score_correction_bias.tolist() == pytest.approx([-0.01, 0.01, 0.01, 0.01])
    assert gates[1].e_score_correction_bias.tolist() == [0, 0, 0, 0]  # balanced layer: no move
    assert ratio.tolist() == pytest.approx([2.0, 1.0])


def test_sequence_balance_loss_formula():
    # one sequence, T=2, E=2, k=1: both tokens pick expert 0 with scores sigmoid(0)=0.5 each
    logits = torch.zeros(2, 2)
    idx = torch.tensor([[0], [0]])
    loss = sequence_balance_loss([(logits, idx)], batch=1, top_k=1, alpha=1.0)
    # f = [2*2/(1*2), 0] = [2, 0]; P = [0.5, 0.5] -> sum f*P = 1.0
    assert loss.item() == pytest.approx(1.0)
    balanced = sequence_balance_loss([(logits, torch.tensor([[0], [1]]))], batch=1, top_k=1, alpha=1.0)
    assert balanced.item() == pytest.approx(1.0)  # f = [1, 1], P = [.5, .5]
    skew = torch.tensor([[3.0, -3.0], [3.0, -3.0]])
    assert sequence_balance_loss([(skew, idx)], 1, 1, 1.0) > loss  # concentrated scores on the hot expert cost more


def test_config_has_k2_routing():
    cfg = mini_k2_config(TINY)
    assert (cfg.n_group, cfg.topk_group, cfg.norm_topk_prob, cfg.routed_scaling_factor) == (1, 1, True, 2.827)
    assert (cfg.n_shared_experts, cfg.first_k_dense_replace) == (1, 1)
    assert cfg.to_dict()["scoring_func"] == "sigmoid" and cfg.to_dict()["topk_method"] == "noaux_tc"


@pytest.mark.parametrize("prefer_grouped", [True, False])
def test_fast_experts_match_eager(prefer_grouped):
    torch.manual_seed(0)
    model = DeepseekV3ForCausalLM(mini_k2_config(TINY))
    x = torch.randint(0, 300, (2, 12))
    ref = model(input_ids=x, labels=x)
    ref.loss.backward()
    ref_grad = model.model.layers[1].mlp.experts.gate_up_proj.grad.clone()
    model.zero_grad()
    model.config._experts_implementation = register(prefer_grouped)
    assert model.config._experts_implementation == ("grouped_mm" if prefer_grouped else "padded_bmm")
    fast = model(input_ids=x, labels=x)
    fast.loss.backward()
    assert torch.allclose(ref.logits, fast.logits, atol=1e-5)
    assert torch.allclose(ref_grad, model.model.layers[1].mlp.experts.gate_up_proj.grad, atol=1e-6)


def test_bias_update_balances_a_skewed_router():
    """Many updates on a router biased towards a few experts bring its load towards uniform."""
    torch.manual_seed(0)
    model = DeepseekV3ForCausalLM(mini_k2_config(TINY)).eval()
    gate = model.model.layers[1].mlp.gate
    with torch.no_grad():
        gate.weight[:2] += 0.5  # experts 0 and 1 win for most tokens
    x = torch.randint(0, 300, (4, 32))
    with RouterTap(model) as tap, torch.no_grad():
        model(input_ids=x)
        before = expert_loads(tap.records, 8)[0].float()
        for _ in range(200):
            tap.clear()
            model(input_ids=x)
            update_correction_bias(tap.gates, expert_loads(tap.records, 8), gamma=0.01)
        tap.clear()
        model(input_ids=x)
        after = expert_loads(tap.records, 8)[0].float()
    assert gate.e_score_correction_bias[:2].max() < 0 < gate.e_score_correction_bias[2:].max()
    assert after.max() / after.mean() < before.max() / before.mean()


@pytest.mark.slow
def test_training_smoke(tmp_path):
    """A few real steps of `train` on a tiny config: loss falls, bias moves against the step's load."""
    from workbench.minik2.train import TrainSettings, train

    corpus = write_tiny_corpus(tmp_path / "corpus")
    out = tmp_path / "model"
    shape = MiniK2Shape(**{**TINY.__dict__})
    settings = TrainSettings(steps=6, batch_size=4, seq_len=48, warmup=2, lr=1e-2, max_minutes=0, log_every=1,
                             doc_limit=None, bias_gamma=0.01)  # fmt: skip
    summary = train(corpus, out, settings, shape, vocab_size=400, progress=False)
    assert summary["steps_done"] == 6
    log = [json.loads(line) for line in (out / "training_log.jsonl").read_text().splitlines()]
    assert log[-1]["loss"] < log[0]["loss"]
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out, local_files_only=True)
    bias = torch.stack([layer.mlp.gate.e_score_correction_bias for layer in model.model.layers[1:]])
    assert bias.abs().max() > 0  # the update ran; each entry is a multiple of gamma
    steps_in_gamma = bias / 0.01
    assert torch.allclose(steps_in_gamma, steps_in_gamma.round(), atol=1e-3)
    assert model.model.layers[1].mlp.gate.weight.dtype == torch.float32  # routers kept in fp32
    assert model.model.layers[1].mlp.experts.gate_up_proj.dtype == torch.bfloat16
