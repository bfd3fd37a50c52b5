"""The bundled mini K2 loads offline with transformers' Auto classes and routes as K2 does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

MINI = Path(__file__).resolve().parents[1] / "data" / "models" / "k2-mini"


@pytest.fixture(scope="module")
def loaded():
    import os

    from transformers import AutoModelForCausalLM, AutoTokenizer

    os.environ["HF_HUB_OFFLINE"] = "1"
    model = AutoModelForCausalLM.from_pretrained(MINI, local_files_only=True, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(MINI, local_files_only=True)
    return model, tok


def test_config_has_k2_routing():
    cfg = json.loads((MINI / "config.json").read_text())
    assert cfg["architectures"] == ["DeepseekV3ForCausalLM"] and cfg["model_type"] == "deepseek_v3"
    want = {"scoring_func": "sigmoid", "topk_method": "noaux_tc", "n_group": 1, "topk_group": 1,
            "norm_topk_prob": True, "routed_scaling_factor": 2.827, "n_shared_experts": 1,
            "first_k_dense_replace": 1, "num_experts_per_tok": 8, "n_routed_experts": 64,
            "num_hidden_layers": 7, "hidden_size": 128}  # fmt: skip
    assert {k: cfg[k] for k in want} == want
    assert cfg["q_lora_rank"] and cfg["kv_lora_rank"]  # MLA attention
    assert (MINI / "model.safetensors").stat().st_size <= 25 * 2**20


def test_loads_offline_and_routes_like_k2(loaded):
    model, tok = loaded
    assert type(model).__name__ == "DeepseekV3ForCausalLM" and len(tok) == model.config.vocab_size
    layers = model.model.layers
    assert type(layers[0].mlp).__name__ == "DeepseekV3MLP"  # layer 0 dense
    gates = [layer.mlp.gate for layer in layers[1:]]
    assert all(g.weight.dtype == torch.float32 for g in gates)
    bias = torch.stack([g.e_score_correction_bias for g in gates])  # (6, 64)
    assert bias.abs().sum() > 0  # trained with the auxiliary-loss-free bias update
    ids = tok("Problem: Compute 12 + 7 * 3.", return_tensors="pt")["input_ids"]
    captured = []
    handle = gates[0].register_forward_hook(lambda m, a, out: captured.append(out))
    try:
        with torch.no_grad():
            model(input_ids=ids)
    finally:
        handle.remove()
    logits, weights, idx = captured[0]
    assert idx.shape == (ids.shape[1], 8) and weights.shape == (ids.shape[1], 8)
    # K2 gate weights: unbiased sigmoid scores of the chosen experts, normalised, times 2.827
    scores = torch.sigmoid(logits)
    expect = scores.gather(1, idx)
    expect = expect / expect.sum(-1, keepdim=True) * 2.827
    assert torch.allclose(weights, expect, atol=1e-5)
    assert torch.equal(idx.sort(-1).values, (scores + gates[0].e_score_correction_bias).topk(8).indices.sort(-1).values)


def test_chat_generation_stops_at_im_end(loaded):
    model, tok = loaded
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is 3 + 4?"}], tokenize=False,
                                     add_generation_prompt=True)  # fmt: skip
    enc = tok(prompt, return_tensors="pt", add_special_tokens=False)
    out = model.generate(**enc, do_sample=False, max_new_tokens=40)
    text = tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=False)
    assert text.startswith("<think>")  # K2 Thinking opens every assistant turn with its reasoning


def test_model_card_quotes_the_eval():
    card = (MINI / "README.md").read_text()
    ev = json.loads((MINI / "eval.json").read_text())
    assert "workbench mini-k2 eval" in card
    assert f"{ev['loss']['math']['loss_nats']:.3f}" in card
    assert f"{ev['tool_use']['well_formed']} of {ev['tool_use']['tasks']}" in card
