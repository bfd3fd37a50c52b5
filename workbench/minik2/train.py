"""Train the mini K2 from scratch: corpus -> tokenizer -> DeepseekV3ForCausalLM with K2 routing balance.

One call of :func:`train` rebuilds everything in ``out`` with a fixed seed: the tokenizer (trained on
the corpus), a freshly initialised model, ``steps`` AdamW steps of next-token loss plus DeepSeek-V3's
sequence-wise balance loss, and after every step the auxiliary-loss-free bias update (see
:mod:`balance`). The weights are saved in bf16 except the routers (``gate.weight`` and
``e_score_correction_bias`` stay fp32, as transformers keeps them for DeepSeek-V3). Progress is a tqdm
bar; every ``log_every`` steps a JSON line goes to ``out/training_log.jsonl``.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm
from transformers import AutoTokenizer, DeepseekV3ForCausalLM, GenerationConfig

from workbench.minik2 import fast_experts
from workbench.minik2.balance import RouterTap, expert_loads, sequence_balance_loss, update_correction_bias
from workbench.minik2.config import MiniK2Shape, mini_k2_config
from workbench.minik2.data import BatchSampler, load_streams
from workbench.minik2.tokenizer import VOCAB_SIZE, build_tokenizer

# Sampling share per domain. Math is easy (regular, generated) and reaches the loss bar with few tokens;
# prose and code are the hard ones, so they get most of the budget.
MIXTURE = {"math": 0.08, "code": 0.35, "language": 0.39, "tools": 0.18}


@dataclass(frozen=True)
class TrainSettings:
    """Optimisation settings; the defaults are the ones that produced the shipped model."""

    seed: int = 0
    steps: int = 4400  # the lr schedule's length: ~56 min at ~0.76 s/step on 2 free cores
    batch_size: int = 6
    seq_len: int = 256
    lr: float = 4e-3  # peak AdamW learning rate (tiny hidden size tolerates a high rate)
    min_lr_ratio: float = 0.1  # cosine decay floor
    warmup: int = 20
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    bias_gamma: float = 5e-3  # γ of the bias update; DeepSeek-V3 uses 1e-3 over ~100x more steps
    balance_alpha: float = 1e-4  # α of the sequence-wise balance loss (DeepSeek-V3 §2.1.2)
    max_minutes: float = 57.0  # >0: a safety cap; on a slower machine it ends the run (the lr decay too)
    threads: int = 2
    log_every: int = 10
    doc_limit: int | None = None  # documents per domain tokenised (seeded sample); None: all


def lr_at(progress: float, s: TrainSettings, step: int) -> float:
    if step < s.warmup:
        return s.lr * (step + 1) / s.warmup
    cos = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return s.lr * (s.min_lr_ratio + (1 - s.min_lr_ratio) * cos)


def save_model(model: DeepseekV3ForCausalLM, out: Path, eos_ids: list[Any], pad_id: Any) -> None:
    """Save in bf16 with the routers in fp32, plus a generation config that stops at ``<|im_end|>``."""
    model.config._experts_implementation = None  # back to transformers' default for everyone else
    for name, param in model.named_parameters():
        if not name.endswith("gate.weight"):
            param.data = param.data.to(torch.bfloat16)
    model.config.dtype = "bfloat16"
    model.save_pretrained(out)
    GenerationConfig(eos_token_id=eos_ids, pad_token_id=pad_id, bos_token_id=model.config.bos_token_id).save_pretrained(
        out
    )


def train(
    corpus: Path,
    out: Path,
    settings: TrainSettings | None = None,
    shape: MiniK2Shape | None = None,
    *,
    vocab_size: int = VOCAB_SIZE,
    progress: bool = True,
    init_from: Path | None = None,
) -> dict[str, Any]:
    """Rebuild tokenizer and model in ``out`` from ``corpus``; return a summary (also in the log).

    ``init_from``: continue from a model directory this function wrote (its tokenizer, weights and
    correction biases) instead of starting from scratch: a second stage with a fresh lr schedule.
    """
    s = settings or TrainSettings()
    torch.set_num_threads(s.threads)
    random.seed(s.seed)
    np.random.seed(s.seed)
    torch.manual_seed(s.seed)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    tokenizer: Any
    if init_from is None:
        tokenizer = build_tokenizer(corpus, out, vocab_size)
    else:
        tokenizer = AutoTokenizer.from_pretrained(init_from, local_files_only=True)
        tokenizer.save_pretrained(out)
    streams = load_streams(corpus, "train", tokenizer, tuple(MIXTURE), s.doc_limit, s.seed)
    sampler = BatchSampler(streams, MIXTURE, s.seq_len, s.seed)
    shape = replace(shape or MiniK2Shape(), vocab_size=len(tokenizer))
    config = mini_k2_config(shape)
    model = DeepseekV3ForCausalLM(config)
    if init_from is not None:
        stage1 = DeepseekV3ForCausalLM.from_pretrained(init_from, dtype=torch.float32, local_files_only=True)
        model.load_state_dict(stage1.state_dict())  # weights and e_score_correction_bias buffers
        del stage1
    model.config._experts_implementation = fast_experts.register()
    model.train()
    top_k = int(config.num_experts_per_tok or 8)

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "gate.weight" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 or "gate.weight" in n]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": s.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=s.lr,
        betas=(0.9, 0.95),
    )
    log_path = out / "training_log.jsonl"
    log = log_path.open("w")
    tokens_seen = 0
    done = 0  # optimizer steps taken
    t_train = time.time()
    with RouterTap(model) as tap, tqdm(total=s.steps, desc="train mini K2", disable=not progress) as bar:
        for step in range(s.steps):
            elapsed = (time.time() - t_train) / 60
            frac = step / s.steps
            if s.max_minutes > 0:
                frac = max(frac, elapsed / s.max_minutes)
                if frac >= 1.0:
                    break
            for group in opt.param_groups:
                group["lr"] = lr_at(frac, s, step)
            batch, _ = sampler.sample(s.batch_size)
            tap.clear()
            outputs = model(input_ids=batch[:, :-1], labels=batch[:, :-1])
            lm_loss = outputs.loss
            bal = sequence_balance_loss(tap.records, s.batch_size, top_k, s.balance_alpha)
            (lm_loss + bal).backward()
            gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            loads = expert_loads(tap.records, config.n_routed_experts)
            ratio = update_correction_bias(tap.gates, loads, s.bias_gamma)
            tokens_seen += batch[:, :-1].numel()
            done += 1
            bar.update()
            bar.set_postfix(loss=f"{lm_loss.item():.3f}", maxload=f"{ratio.max().item():.2f}")
            if step % s.log_every == 0 or step == s.steps - 1:
                row = {
                    "step": step,
                    "loss": round(lm_loss.item(), 4),
                    "balance_loss": round(bal.item(), 6),
                    "lr": opt.param_groups[0]["lr"],
                    "grad_norm": round(float(gnorm), 3),
                    "max_over_mean_load": [round(x, 2) for x in ratio.tolist()],
                    "tokens": tokens_seen,
                    "minutes": round((time.time() - t0) / 60, 2),
                }
                log.write(json.dumps(row) + "\n")
                log.flush()
    log.close()

    im_end, eos, pad = (tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "[EOS]", "[PAD]"))
    save_model(model, out, [im_end, eos], pad)
    summary = {
        "settings": asdict(s),
        "mixture": MIXTURE,
        "steps_done": done,
        "tokens_seen": tokens_seen,
        "train_minutes": round((time.time() - t_train) / 60, 2),
        "total_minutes": round((time.time() - t0) / 60, 2),
        "parameters": sum(p.numel() for p in model.parameters()),
        "threads": s.threads,
        "init_from": str(init_from) if init_from else None,
    }
    (out / "training_summary.json").write_text(json.dumps(summary, indent=2))
    return summary
