"""Per-layer GPU placement: byte model checked against a real transformers DeepSeek-V3 built on the meta
device, the map accepted by accelerate, and K2 Thinking's figures (INT4 fits 8 x H200, BF16 does not)."""

from __future__ import annotations

import pytest

from workbench.engines.client import EngineError
from workbench.engines.placement import attention_params, kv_cache_bytes_per_token, layer_bytes, layer_device_map

TINY = dict(
    model_type="deepseek_v3", vocab_size=512, hidden_size=64, intermediate_size=128, moe_intermediate_size=32,
    num_hidden_layers=5, num_attention_heads=4, num_key_value_heads=4, n_routed_experts=12, n_shared_experts=1,
    num_experts_per_tok=2, first_k_dense_replace=1, moe_layer_freq=1, q_lora_rank=24, kv_lora_rank=16,
    qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=8, n_group=1, topk_group=1, tie_word_embeddings=False,
)  # fmt: skip

K2_THINKING = dict(
    model_type="kimi_k2", vocab_size=163840, hidden_size=7168, intermediate_size=18432, moe_intermediate_size=2048,
    num_hidden_layers=61, num_attention_heads=64, num_key_value_heads=64, n_routed_experts=384, n_shared_experts=1,
    num_experts_per_tok=8, first_k_dense_replace=1, moe_layer_freq=1, q_lora_rank=1536, kv_lora_rank=512,
    qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128, attention_bias=False,
    quantization_config={
        "quant_method": "compressed-tensors", "format": "pack-quantized",
        "config_groups": {"group_0": {"weights": {"num_bits": 4, "group_size": 32, "type": "int"}}},
    },
)  # fmt: skip


@pytest.fixture(scope="module")
def meta_model():
    import torch
    from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

    with torch.device("meta"):
        return DeepseekV3ForCausalLM(DeepseekV3Config(**TINY))


def _numel(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_formulas_match_the_transformers_model(meta_model):
    layers = meta_model.model.layers
    for i, layer in enumerate(layers):
        att = _numel(layer.self_attn) + _numel(layer.input_layernorm) + _numel(layer.post_attention_layernorm)
        assert att == attention_params(TINY), i
        est = layer_bytes(TINY, i, dtype_bytes=1.0)
        if i < TINY["first_k_dense_replace"]:
            assert _numel(layer.mlp) == est["mlp"]
        else:
            assert _numel(layer.mlp.experts) == est["routed_experts"]
            e, h = TINY["n_routed_experts"], TINY["hidden_size"]
            router_bytes = e * h * 4 + e * 4  # fp32 weight + bias buffer
            assert _numel(layer.mlp.shared_experts) == est["mlp"] - router_bytes
            assert _numel(layer.mlp.gate) == e * h


def test_device_map_covers_the_model_for_accelerate(meta_model):
    from accelerate.utils.modeling import check_device_map

    device_map, _ = layer_device_map(TINY, 2, gpu_gb=1.0, reserve_gb=0.0, extra_modules=("model.rotary_emb",))
    check_device_map(meta_model, device_map)  # raises if a parameter has no device
    layer_gpus = [device_map[f"model.layers.{i}"] for i in range(TINY["num_hidden_layers"])]
    assert layer_gpus == sorted(layer_gpus) and set(layer_gpus) == {0, 1}  # contiguous, both used
    assert device_map["model.embed_tokens"] == 0 and device_map["lm_head"] == device_map["model.norm"] == 1


def test_k2_thinking_int4_fits_eight_h200_and_bf16_does_not():
    moe = layer_bytes(K2_THINKING, 1)
    assert 9.4e9 < moe["routed_experts"] < 9.6e9  # 384 x 3 x 7168 x 2048 weights at 0.5625 B
    device_map, gb = layer_device_map(K2_THINKING, 8)
    assert 585 < sum(gb) < 600  # the published INT4 checkpoint is ~594 GB
    assert max(gb) < 141 - 12
    assert sorted(set(device_map.values())) == list(range(8))
    assert kv_cache_bytes_per_token(K2_THINKING) * 61 == pytest.approx(2.5e6, rel=0.01)  # transformers caches K and V
    bf16 = {k: v for k, v in K2_THINKING.items() if k != "quantization_config"}
    with pytest.raises(EngineError, match=r"needs about 2,05\d GB"):
        layer_device_map(bf16, 8)
    with pytest.raises(EngineError, match="KV cache"):
        layer_device_map(K2_THINKING, 8, tokens_in_flight=300_000)
