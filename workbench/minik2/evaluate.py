"""`workbench mini-k2 eval`: the quality bars of the mini K2, measured on held-out data.

1. Loss: held-out next-token loss per domain (nats) vs that domain's held-out unigram entropy in the
   same tokenizer; bar ``loss <= 0.70 * H_unigram``.
2. Balance: on held-out text of all domains, every expert of every MoE layer gets between 0.25x and
   4x the layer's mean load.
3. Specialisation: per MoE layer, JSD between the math, code and language expert-usage distributions,
   trained vs the same architecture at initialisation (same seed, same tokens); bar: ratio >= 3 in at
   least half the MoE layers.
4. Tool use: sampled completions (temperature 0.7) for held-out tool tasks; bar: >= 80 % contain a
   well-formed K2 tool call (``parse_tool_calls`` accepts it and names a declared tool).

Definitions of every statistic: :mod:`workbench.minik2.routing_stats` and docs/mini-k2.md.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, DeepseekV3ForCausalLM

from workbench.minik2 import fast_experts
from workbench.minik2.corpus import read_documents
from workbench.minik2.data import TEXT_DOMAINS, load_streams
from workbench.minik2.routing_stats import (
    chunks,
    expert_usage,
    layer_jsd,
    load_ratio,
    mean_token_loss,
    unigram_entropy,
)
from workbench.transcripts.k2_toolcalls import ToolCallParseError, parse_tool_calls

BARS = {"loss_ratio": 0.70, "load_min": 0.25, "load_max": 4.0, "jsd_ratio": 3.0, "tool_call_rate": 0.80}


def tool_use(
    model: Any, tokenizer: Any, episodes: list[dict[str, Any]], *, temperature: float = 0.7, max_new_tokens: int = 80,
    batch: int = 16, seed: int = 0,
) -> dict[str, Any]:  # fmt: skip
    """Sample one completion per held-out tool task; count those with a well-formed declared tool call."""
    torch.manual_seed(seed)
    tokenizer.padding_side = "left"
    ok = 0
    examples: list[dict[str, Any]] = []
    for i in tqdm(range(0, len(episodes), batch), desc="tool use", unit="batch"):
        group = episodes[i : i + batch]
        prompts = [
            tokenizer.apply_chat_template(
                ep["messages"][:1], tools=ep["tools"], tokenize=False, add_generation_prompt=True
            )
            for ep in group
        ]
        enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        out = model.generate(
            **enc, do_sample=True, temperature=temperature, top_p=1.0, top_k=0, max_new_tokens=max_new_tokens
        )
        for ep, row in zip(group, out[:, enc["input_ids"].shape[1] :], strict=True):
            text = tokenizer.decode(row, skip_special_tokens=False).replace("[PAD]", "")
            declared = {t["function"]["name"] for t in ep["tools"]}
            try:
                calls = parse_tool_calls(text.split("<|im_end|>")[0])
                good = bool(calls) and all(c.name in declared for c in calls)
            except ToolCallParseError:
                good = False
            ok += good
            if len(examples) < 3:
                examples.append({"task": ep["messages"][0]["content"], "completion": text[:400], "ok": good})
    return {"tasks": len(episodes), "well_formed": ok, "rate": ok / max(1, len(episodes)), "examples": examples}


def evaluate(
    model_dir: Path, corpus: Path, *, seq_len: int = 256, loss_tokens: int = 30_000, routing_windows: int = 32,
    tool_tasks: int = 100, seed: int = 0,
) -> dict[str, Any]:  # fmt: skip
    """Run all four measurements; return the report (``bars`` holds each pass/fail)."""
    t0 = time.time()
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    config = model.config
    # identical routing and function (tests/test_minik2_train.py); only the expert matmuls are batched
    impl = fast_experts.register()
    model.config._experts_implementation = impl
    streams = load_streams(corpus, "heldout", tokenizer, (*TEXT_DOMAINS, "tools"))

    report: dict[str, Any] = {"model": str(model_dir), "seq_len": seq_len, "loss": {}, "bars": {}}
    for domain in (*TEXT_DOMAINS, "tools"):
        toks = streams[domain].tokens[: loss_tokens + 1]
        loss = mean_token_loss(model, toks, seq_len)
        h = unigram_entropy(toks)
        report["loss"][domain] = {"tokens": int(len(toks) - 1), "loss_nats": loss, "unigram_entropy_nats": h,
                                  "ratio": loss / h}  # fmt: skip
    report["bars"]["loss"] = all(report["loss"][d]["ratio"] <= BARS["loss_ratio"] for d in TEXT_DOMAINS)

    torch.manual_seed(config.to_dict().get("seed", seed))
    init = DeepseekV3ForCausalLM(config).eval()  # same architecture at initialisation (bias 0)
    usage, usage0 = {}, {}
    for domain in TEXT_DOMAINS:
        windows = chunks(streams[domain].tokens, seq_len, routing_windows)
        usage[domain] = expert_usage(model, windows, config.n_routed_experts)
        usage0[domain] = expert_usage(init, windows, config.n_routed_experts)
    tool_windows = chunks(streams["tools"].tokens, seq_len, routing_windows)
    all_usage = sum(usage.values()) + expert_usage(model, tool_windows, config.n_routed_experts)
    ratios = load_ratio(all_usage)
    report["balance"] = {
        "min_load_ratio_per_layer": ratios.min(axis=1).round(3).tolist(),
        "max_load_ratio_per_layer": ratios.max(axis=1).round(3).tolist(),
    }
    report["bars"]["balance"] = bool(ratios.min() >= BARS["load_min"] and ratios.max() <= BARS["load_max"])
    jsd, jsd0 = layer_jsd(usage), layer_jsd(usage0)
    jr = [a / b if b > 0 else float("inf") for a, b in zip(jsd, jsd0, strict=True)]
    report["specialisation"] = {"jsd_trained": jsd, "jsd_init": jsd0, "ratio": jr}
    report["bars"]["specialisation"] = sum(r >= BARS["jsd_ratio"] for r in jr) >= len(jr) / 2

    episodes = read_documents(corpus, "heldout", "tools")[:tool_tasks]
    report["tool_use"] = tool_use(model, tokenizer, episodes, seed=seed)
    report["bars"]["tool_use"] = report["tool_use"]["rate"] >= BARS["tool_call_rate"]
    report["all_bars_met"] = all(report["bars"].values())
    report["eval_minutes"] = round((time.time() - t0) / 60, 2)
    return report


def write_report(report: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(report, indent=2, default=lambda o: o.tolist() if isinstance(o, np.ndarray) else str(o)))
