"""The mini K2 architecture: Kimi K2's DeepSeek-V3 layout and routing, scaled down to ~10M parameters.

Kept exactly as K2 (config.json of moonshotai/Kimi-K2-Instruct): sigmoid router scores, ``noaux_tc``
top-k with the ``e_score_correction_bias``, ``n_group`` 1 / ``topk_group`` 1, ``norm_topk_prob`` true,
``routed_scaling_factor`` 2.827, one shared expert, ``first_k_dense_replace`` 1 (layer 0 dense), MLA
attention (low-rank q and kv with a decoupled RoPE part), 8 routed experts per token, untied embeddings.
Scaled: 64 routed experts, 7 layers (6 MoE), hidden 128.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from transformers import DeepseekV3Config

from workbench.minik2.chat_template import SPECIAL_TOKENS


@dataclass(frozen=True)
class MiniK2Shape:
    """Sizes. K2's values in comments; ratios kept where they matter for routing."""

    vocab_size: int = 8192  # K2: 163840 (tiktoken BPE); ours is a byte-level BPE trained on the corpus
    hidden_size: int = 128  # K2: 7168
    num_hidden_layers: int = 7  # K2: 61 -> layer 0 dense + 6 MoE layers
    intermediate_size: int = 384  # dense MLP of layer 0 (K2: 18432 = 2.57x hidden; here 3x)
    moe_intermediate_size: int = 48  # per expert (K2: 2048 = 0.29x hidden; here 0.375x)
    n_routed_experts: int = 64  # K2: 384
    num_experts_per_tok: int = 8  # K2: 8
    num_attention_heads: int = 4  # K2: 64
    q_lora_rank: int = 64  # K2: 1536
    kv_lora_rank: int = 32  # K2: 512
    qk_nope_head_dim: int = 32  # K2: 128
    qk_rope_head_dim: int = 16  # K2: 64
    v_head_dim: int = 32  # K2: 128
    max_position_embeddings: int = 4096


# K2's routing, verbatim.
K2_ROUTING: dict[str, Any] = {
    "scoring_func": "sigmoid",
    "topk_method": "noaux_tc",
    "n_group": 1,
    "topk_group": 1,
    "norm_topk_prob": True,
    "routed_scaling_factor": 2.827,
    "n_shared_experts": 1,
    "first_k_dense_replace": 1,
}


def mini_k2_config(shape: MiniK2Shape | None = None, **overrides: Any) -> DeepseekV3Config:
    """A ``DeepseekV3Config`` with K2's routing and the mini shape (``overrides`` for tiny test configs)."""
    fields = {**asdict(shape or MiniK2Shape()), **K2_ROUTING, **overrides}
    ids = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    return DeepseekV3Config(
        **fields,
        num_key_value_heads=fields["num_attention_heads"],
        hidden_act="silu",
        tie_word_embeddings=False,
        rope_interleave=True,
        initializer_range=0.02,
        bos_token_id=ids["[BOS]"],
        eos_token_id=[ids["<|im_end|>"], ids["[EOS]"]],
        pad_token_id=ids["[PAD]"],
        num_mtp_layers=0,
    )
