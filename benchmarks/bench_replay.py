"""Benchmark transcript rendering and replay: a synthetic 300-step tool loop (K2 Thinking's scale).

Measures (median of ``--repeats``):
- render: ``render_transcript`` and ``render_as_generated`` (exact spans) wall time and tokens;
- replay: teacher-forced routing throughput (tokens/s) of a ``--replay-steps`` loop through the bundled
  mini K2 (data/models/k2-mini) when present, else a random DeepSeek-V3 of the mini K2's shape,
  at ``--chunk-tokens`` per cached forward; and the peak RSS growth.

    python benchmarks/bench_replay.py --out benchmarks/results [--steps 300] [--replay-steps 60] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def _median_time(fn, repeats):  # type: ignore[no-untyped-def]
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--replay-steps", type=int, default=60, help="steps of the transcript routed (CPU time)")
    ap.add_argument("--chunk-tokens", type=int, default=2048)
    args = ap.parse_args()

    import torch
    from transcripts_helpers import k2_test_tokenizer, tool_loop_transcript
    from transformers import AutoModelForCausalLM, AutoTokenizer, DeepseekV3Config, DeepseekV3ForCausalLM

    from workbench.transcripts import render_as_generated, render_transcript, transcript_from_dict
    from workbench.transcripts.replay import route_sequence

    torch.set_num_threads(2)
    mini = ROOT / "data" / "models" / "k2-mini"
    if (mini / "config.json").exists():
        tok = AutoTokenizer.from_pretrained(mini)
        model = AutoModelForCausalLM.from_pretrained(mini, dtype=torch.float32).eval()
        model_name = "k2-mini"
    else:
        tok = k2_test_tokenizer()
        cfg = DeepseekV3Config(
            vocab_size=len(tok), hidden_size=128, intermediate_size=384, moe_intermediate_size=64,
            num_hidden_layers=7, num_attention_heads=4, num_key_value_heads=4, n_routed_experts=64,
            num_experts_per_tok=8, n_shared_experts=1, first_k_dense_replace=1, q_lora_rank=64, kv_lora_rank=32,
            qk_rope_head_dim=16, qk_nope_head_dim=16, v_head_dim=32, n_group=1, topk_group=1,
            norm_topk_prob=True, routed_scaling_factor=2.827, max_position_embeddings=65536,
        )  # fmt: skip
        torch.manual_seed(0)
        model = DeepseekV3ForCausalLM(cfg).eval()
        model_name = "random DeepSeek-V3, mini K2 shape (mini K2 not present)"
    t = transcript_from_dict(tool_loop_transcript(args.steps))
    t_plain, plain = _median_time(lambda: render_transcript(tok, t), args.repeats)
    t_gen, gen = _median_time(lambda: render_as_generated(tok, t), args.repeats)
    replayed = render_as_generated(tok, transcript_from_dict(tool_loop_transcript(args.replay_steps)))
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t_replay, routed = _median_time(
        lambda: route_sequence(model, replayed.token_ids, chunk_tokens=args.chunk_tokens), max(1, args.repeats - 2)
    )
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = {
        "benchmark": "replay",
        "model": model_name,
        "steps": args.steps,
        "render_transcript_s": round(t_plain, 4),
        "render_transcript_tokens": len(plain.token_ids),
        "render_as_generated_s": round(t_gen, 4),
        "tokens": len(gen.token_ids),
        "segments": len(gen.segments),
        "replay_steps": args.replay_steps,
        "replay_tokens": len(replayed.token_ids),
        "replay_s": round(t_replay, 3),
        "replay_tokens_per_s": round(len(replayed.token_ids) / t_replay, 1),
        "chunk_tokens": args.chunk_tokens,
        "forwards": routed.forwards,
        "peak_rss_growth_mb": round((rss1 - rss0) / 1024, 1),
        "torch_threads": torch.get_num_threads(),
        "machine": platform.platform(),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_replay.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
