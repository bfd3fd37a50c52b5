"""Tiny random MoE models of every supported family, for fast hooks/record tests (seconds on 2 CPUs)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    DeepseekV3Config,
    DeepseekV3ForCausalLM,
    MixtralConfig,
    MixtralForCausalLM,
    OlmoeConfig,
    OlmoeForCausalLM,
    PreTrainedTokenizerFast,
    Qwen3MoeConfig,
    Qwen3MoeForCausalLM,
)

VOCAB = 320  # fits the tiny byte-level BPE of tiny_tokenizer()
PAD, EOS, BOS = 0, 1, 2


def tiny_deepseek_config(**overrides: object) -> DeepseekV3Config:
    """A 4-layer DeepSeek-V3 (layer 0 dense, 1..3 MoE): 8 routed experts, top-2, 1 shared, sigmoid + bias."""
    kw: dict[str, object] = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        moe_intermediate_size=16,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        n_routed_experts=8,
        num_experts_per_tok=2,
        n_shared_experts=1,
        first_k_dense_replace=1,
        q_lora_rank=16,
        kv_lora_rank=8,
        qk_rope_head_dim=4,
        qk_nope_head_dim=4,
        v_head_dim=8,
        n_group=1,
        topk_group=1,
        norm_topk_prob=True,
        routed_scaling_factor=2.5,
        max_position_embeddings=128,
        pad_token_id=PAD,
        eos_token_id=EOS,
        bos_token_id=BOS,
        tie_word_embeddings=False,
    )
    kw.update(overrides)
    return DeepseekV3Config(**kw)


def randomize_bias(model: torch.nn.Module, scale: float = 0.1, seed: int = 0) -> None:
    """Give every selection bias non-zero values, so ranking by score+bias differs from score alone."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            bias = getattr(module, "e_score_correction_bias", None)
            if isinstance(bias, torch.Tensor):
                bias.copy_(torch.randn(bias.shape, generator=gen) * scale)


def tiny_deepseek(seed: int = 0, **overrides: object) -> DeepseekV3ForCausalLM:
    torch.manual_seed(seed)
    model = DeepseekV3ForCausalLM(tiny_deepseek_config(**overrides)).eval()
    randomize_bias(model, seed=seed)
    return model


def tiny_softmax_model(family: str, seed: int = 0) -> torch.nn.Module:
    """Tiny Mixtral / Qwen3-MoE / OLMoE with 3 MoE layers, 8 experts, top-2."""
    torch.manual_seed(seed)
    common = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_experts_per_tok=2,
        max_position_embeddings=128,
        pad_token_id=PAD,
        eos_token_id=EOS,
        bos_token_id=BOS,
    )
    if family == "mixtral":
        return MixtralForCausalLM(MixtralConfig(num_local_experts=8, **common)).eval()
    if family == "qwen3_moe":
        cfg = Qwen3MoeConfig(num_experts=8, moe_intermediate_size=16, norm_topk_prob=True, head_dim=8, **common)
        return Qwen3MoeForCausalLM(cfg).eval()
    if family == "olmoe":
        return OlmoeForCausalLM(OlmoeConfig(num_experts=8, **common)).eval()
    raise ValueError(family)


def padded_batch(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ids and mask (B, max(lengths)); ids avoid PAD/EOS/BOS."""
    gen = torch.Generator().manual_seed(seed)
    t = max(lengths)
    ids = torch.full((len(lengths), t), PAD, dtype=torch.long)
    mask = torch.zeros((len(lengths), t), dtype=torch.long)
    for b, n in enumerate(lengths):
        ids[b, t - n :] = torch.randint(3, VOCAB, (n,), generator=gen)
        mask[b, t - n :] = 1
    return ids, mask


CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_CORPUS = [
    "The derivative of x squared is two x, and the integral of two x is x squared plus a constant.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))",
    "Once upon a time a small fox crossed the river to find the old oak tree.",
    "Solve 12 * 7 = 84; 84 / 4 = 21; the answer is 21.",
] * 4


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE with 300 entries: [PAD]=0, [EOS]=1, [BOS]=2, chat markers, a chat template."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["[PAD]", "[EOS]", "[BOS]", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(_CORPUS, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", eos_token="[EOS]", bos_token="[BOS]", padding_side="left"
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def save_tiny_checkpoint(path: Path, family: str = "deepseek", seed: int = 0, **overrides: object) -> Path:
    """Save a tiny random model of ``family`` plus ``tiny_tokenizer()`` as a local checkpoint directory."""
    model = tiny_deepseek(seed, **overrides) if family == "deepseek" else tiny_softmax_model(family, seed)
    model.generation_config.eos_token_id = EOS
    model.generation_config.pad_token_id = PAD
    model.save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


def write_prompts(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


PROMPTS = [
    {"id": "m1", "domain": "math", "text": "Solve 12 * 7 = ?"},
    {"id": "c1", "domain": "code", "text": "def add(a, b):\n    return a + b"},
    {"id": "l1", "domain": "language", "text": "Once upon a time a small fox"},
    {"id": "m2", "domain": "math", "text": "The derivative of x squared"},
    {"id": "chat1", "domain": "language", "messages": [{"role": "user", "content": "Tell me about the fox."}]},
]


REMOTE_CODE = Path(__file__).parent / "hooks_remote_k2"


def save_remote_checkpoint(path: Path, seed: int = 0) -> Path:
    """A checkpoint whose config.json points at K2-style remote code (auto_map), loadable only with
    ``trust_remote_code=True``; the code is the stand-in in tests/hooks_remote_k2."""
    from hooks_remote_k2.configuration_deepseek import DeepseekV3Config as RemoteConfig
    from hooks_remote_k2.modeling_deepseek import DeepseekV3ForCausalLM as RemoteForCausalLM

    torch.manual_seed(seed)
    model = RemoteForCausalLM(RemoteConfig())
    model.save_pretrained(path)
    for name in ("configuration_deepseek.py", "modeling_deepseek.py"):
        (path / name).write_text((REMOTE_CODE / name).read_text())
    cfg = json.loads((path / "config.json").read_text())
    cfg["auto_map"] = {
        "AutoConfig": "configuration_deepseek.DeepseekV3Config",
        "AutoModel": "modeling_deepseek.DeepseekV3Model",
        "AutoModelForCausalLM": "modeling_deepseek.DeepseekV3ForCausalLM",
    }
    cfg["architectures"] = ["DeepseekV3ForCausalLM"]
    (path / "config.json").write_text(json.dumps(cfg, indent=2))
    tiny_tokenizer().save_pretrained(path)
    return path


@torch.no_grad()
def _reference(gate: torch.nn.Module, hidden: torch.Tensor, cfg, bias: torch.Tensor | None):  # type: ignore[no-untyped-def]
    """The router's decision recomputed from scratch: ids in rank order (sorted top-k), weights, scores."""
    h = hidden.reshape(-1, hidden.shape[-1]).float()  # (N, H)
    logits = h @ gate.weight.float().T  # (N, E)
    if cfg.scoring_func == "sigmoid":
        scores = logits.sigmoid()
        choice = scores + (bias.float() if bias is not None else 0.0)
        ids = choice.topk(cfg.top_k, dim=-1, sorted=True).indices  # (N, k) rank order
    else:
        scores = logits.softmax(-1)
        ids = scores.topk(cfg.top_k, dim=-1, sorted=True).indices
    w = scores.gather(1, ids)
    if cfg.norm_topk_prob:
        w = w / (w.sum(-1, keepdim=True) + 1e-20)
    return ids.numpy(), (w * cfg.routed_scaling_factor).numpy(), scores.numpy()


def check_against_truth(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> None:
    """Record a padded batch and compare every MoE layer with ``_reference`` for the hidden states that
    reached its router (captured by a test-side pre-hook): ids exactly, weights and scores to 1e-5."""
    import numpy as np
    from workbench.hooks import RoutingRecorder
    from workbench.hooks.batch import positions

    rec = RoutingRecorder(model, scores=True)
    inputs: dict[int, torch.Tensor] = {}
    handles = [
        site.gate.register_forward_pre_hook(lambda m, a, pos=pos: inputs.__setitem__(pos, a[0].detach()))
        for pos, site in enumerate(rec.sites)
    ]
    try:
        with rec, torch.no_grad():
            model(input_ids=ids, attention_mask=mask, position_ids=positions(mask))
    finally:
        for h in handles:
            h.remove()
    routes = rec.routing()
    keep = mask.bool().reshape(-1).numpy()  # (B*T,) real tokens in row-major order
    got_ids = np.concatenate([r.expert_ids for r in routes])  # (N_real, L, k)
    got_w = np.concatenate([r.gate_weights for r in routes])
    got_s = np.concatenate([r.router_scores for r in routes if r.router_scores is not None])
    for pos, site in enumerate(rec.sites):
        ref_ids, ref_w, ref_s = _reference(site.gate, inputs[pos], rec.config, site.selection_bias())
        assert np.array_equal(got_ids[:, pos], ref_ids[keep]), f"layer {site.layer}: expert ids differ"
        np.testing.assert_allclose(got_w[:, pos], ref_w[keep], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got_s[:, pos], ref_s[keep], rtol=1e-5, atol=1e-6)
