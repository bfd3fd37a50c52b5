"""Write the model card ``data/models/k2-mini/README.md`` from the files the pipeline leaves behind.

Inputs: ``config.json``, ``training_summary.json`` and ``eval.json`` in the model directory and the
corpus ``manifest.json``. Every figure in the card is read from those files, never typed in.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def _fmt(x: float) -> str:
    return f"{x:.3f}"


def render_card(model_dir: Path, manifest: dict[str, Any]) -> str:
    cfg = _read(model_dir / "config.json")
    summary = _read(model_dir / "training_summary.json")
    ev = _read(model_dir / "eval.json")
    size_mb = (
        (model_dir / "model.safetensors").stat().st_size / 1e6 if (model_dir / "model.safetensors").exists() else 0
    )
    lines = [
        "---",
        "license: apache-2.0",
        "library_name: transformers",
        "tags: [mixture-of-experts, deepseek_v3, kimi-k2, interpretability, tiny]",
        "---",
        "# k2-mini: a trained miniature of Kimi K2 for the K2 routing workbench",
        "",
        "A `DeepseekV3ForCausalLM` with Kimi K2's routing kept exactly and everything else scaled down, trained",
        "from scratch on a 2-core CPU on an offline corpus of math, Python code, English prose and K2-format",
        "tool-loop episodes. It exists so every workbench command, notebook and test has a real, trained MoE",
        "whose routing has structure. It is not a useful assistant.",
        "",
        "## Architecture (config.json)",
        "",
        "| field | k2-mini | Kimi K2 |",
        "|---|---|---|",
    ]
    k2 = {"num_hidden_layers": 61, "hidden_size": 7168, "n_routed_experts": 384, "num_experts_per_tok": 8,
          "n_shared_experts": 1, "first_k_dense_replace": 1, "scoring_func": "sigmoid", "topk_method": "noaux_tc",
          "n_group": 1, "topk_group": 1, "norm_topk_prob": True, "routed_scaling_factor": 2.827,
          "moe_intermediate_size": 2048, "kv_lora_rank": 512, "q_lora_rank": 1536, "vocab_size": 163840}  # fmt: skip
    for key, ref in k2.items():
        lines.append(f"| `{key}` | {cfg.get(key)} | {ref} |")
    lines += [
        "",
        f"Parameters: {summary.get('parameters', 0):,}; `model.safetensors` {size_mb:.1f} MB (bf16; the routers'",
        "`gate.weight` and `e_score_correction_bias` in fp32).",
        "",
        "Tokenizer: byte-level BPE (8192 entries, digits split one per token) with K2's special tokens as single",
        "tokens and a chat template with K2 Thinking's turn structure (`chat_template.jinja`; see docs/mini-k2.md).",
        "",
        "## Corpus (rebuilt by `workbench mini-k2 corpus`)",
        "",
        "| split | domain | documents | characters |",
        "|---|---|---|---|",
    ]
    for split, domains in manifest.get("splits", {}).items():
        for domain, row in domains.items():
            lines.append(f"| {split} | {domain} | {row['documents']:,} | {row['chars']:,} |")
    lines += [
        "",
        "math: generated arithmetic, fractions, linear equations and systems, quadratics, percentages and word",
        "problems with computed worked solutions; code: the Python 3.11 standard library (no tests); language:",
        "Debian `fortunes`/`fortunes-min` and GCIDE (`dict-gcide`) entries; tools: episodes with calculator,",
        "python and dictionary-search calls whose results were produced by running the tools.",
        f"Recipe: `{json.dumps(manifest.get('recipe', {}))}`.",
        "",
        "## Training",
        "",
        f"Settings: `{json.dumps(summary.get('settings', {}))}`.",
        *([f"Domain mixture of the batches: `{json.dumps(summary['mixture'])}`."] if summary.get("mixture") else []),
        f"Steps: {summary.get('steps_done')}, tokens seen: {summary.get('tokens_seen', 0):,}, training time:",
        f"{summary.get('train_minutes')} min ({summary.get('total_minutes')} min including tokenizer and "
        f"tokenisation) on {summary.get('threads')} CPU threads.",
    ]
    settings = summary.get("settings", {})
    if settings.get("max_minutes") and summary.get("steps_done", 0) < settings.get("steps", 0):
        lines += [
            "",
            f"The {settings['max_minutes']:g}-minute cap ended the run at step {summary['steps_done']} of the "
            f"{settings['steps']}-step schedule, and the learning rate followed the wall time "
            "(cosine over the minutes). Bit-identical weights therefore need a machine of the same speed; "
            "`--max-minutes 0` makes a run depend on the step count only.",
        ]
    stage1 = _read(model_dir / "training_summary_stage1.json")
    if summary.get("init_from") and stage1:
        lines += [
            "",
            f"This is a second stage continued from a first one (`training_summary_stage1.json`, "
            f"`training_log_stage1.jsonl`): {stage1.get('steps_done')} steps, {stage1.get('tokens_seen', 0):,} "
            f"tokens, {stage1.get('train_minutes')} min. Total: "
            f"{stage1.get('steps_done', 0) + summary.get('steps_done', 0)} steps, "
            f"{stage1.get('tokens_seen', 0) + summary.get('tokens_seen', 0):,} tokens, "
            f"{round(stage1.get('train_minutes', 0) + summary.get('train_minutes', 0), 1)} min.",
        ]
    lines += [
        "",
        "Balancing: DeepSeek-V3's auxiliary-loss-free bias update after every step plus the sequence-wise",
        "balance loss (arXiv:2412.19437 §2.1.2); the log is `training_log.jsonl`.",
        "",
        "## Quality (`workbench mini-k2 eval`, figures from `eval.json`)",
        "",
    ]
    if ev:
        lines += [
            "| domain | held-out loss (nats) | unigram entropy (nats) | ratio (bar <= 0.70) |",
            "|---|---|---|---|",
        ]
        for domain, row in ev["loss"].items():
            lines.append(
                f"| {domain} | {_fmt(row['loss_nats'])} | {_fmt(row['unigram_entropy_nats'])} | {row['ratio']:.4f} |"
            )
        bal = ev["balance"]
        spec = ev["specialisation"]
        tool = ev["tool_use"]
        lines += [
            "",
            f"Balance (bar: every expert 0.25x-4x the layer mean, held-out text): min load ratio per layer "
            f"{bal['min_load_ratio_per_layer']}, max {bal['max_load_ratio_per_layer']}.",
            "",
            "Specialisation (JSD of math/code/language expert usage, trained vs initialisation, same tokens; "
            "bar: ratio >= 3 in at least half the MoE layers):",
            "",
            "| MoE layer | JSD trained | JSD init | ratio |",
            "|---|---|---|---|",
        ]
        for i, (a, b, r) in enumerate(zip(spec["jsd_trained"], spec["jsd_init"], spec["ratio"], strict=True)):
            lines.append(f"| {i + 1} | {a:.4f} | {b:.4f} | {r:.1f} |")
        lines += [
            "",
            f"Tool use (bar >= 80 %): {tool['well_formed']} of {tool['tasks']} sampled completions "
            f"(temperature 0.7) held a well-formed K2 tool call ({100 * tool['rate']:.0f} %).",
            "",
            f"Bars met: `{json.dumps(ev['bars'])}`.",
        ]
        missed = [name for name, ok in ev["bars"].items() if not ok]
        tokens = summary.get("tokens_seen", 0) + (stage1.get("tokens_seen", 0) if summary.get("init_from") else 0)
        minutes = round(
            summary.get("train_minutes", 0) + (stage1.get("train_minutes", 0) if summary.get("init_from") else 0), 1
        )
        if missed:
            lines += [
                "",
                f"**Not met: {', '.join(missed)}.** This model saw {tokens:,} training tokens "
                f"({minutes} min on a 2-core CPU); the bars that depend "
                "on how much text the model has seen (loss on code and prose, argument quality of sampled tool "
                "calls) need a longer run (`--max-minutes`). Routing structure (balance, specialisation) is "
                "already in place.",
            ]
    else:
        lines.append("Not evaluated yet: run `workbench mini-k2 eval`.")
    lines += [
        "",
        "## Reproduce",
        "",
        "```",
        "workbench mini-k2 corpus --out build/minik2/corpus",
        *(
            ["nice workbench mini-k2 train --corpus build/minik2/corpus --out STAGE1_DIR"]
            if summary.get("init_from")
            else ["nice workbench mini-k2 train --corpus build/minik2/corpus --out data/models/k2-mini"]
        ),
        *(
            [
                "# second stage (the shipped weights)",
                "nice workbench mini-k2 train --corpus build/minik2/corpus --init-from STAGE1_DIR"
                " --out data/models/k2-mini"
                f" --seed {summary['settings']['seed']} --lr {summary['settings']['lr']}"
                f" --warmup {summary['settings']['warmup']} --max-minutes {summary['settings']['max_minutes']}",
            ]
            if summary.get("init_from")
            else []
        ),
        "workbench mini-k2 eval --model data/models/k2-mini --corpus build/minik2/corpus",
        "```",
        "",
    ]
    return "\n".join(lines)


def write_card(model_dir: Path, corpus: Path) -> Path:
    manifest = _read(corpus / "manifest.json")
    path = model_dir / "README.md"
    path.write_text(render_card(model_dir, manifest))
    return path
