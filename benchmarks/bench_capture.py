"""Capture overhead of the RoutingRecorder, prefill and decode, against no hooks (and against nnsight).

Two models: the bundled mini K2 (data/models/k2-mini, loaded by ``workbench.models.load_model`` as
``workbench record`` loads it) and a K2-shaped random model built from Kimi K2's real config.json with
only the sizes shrunk (60 MoE layers x 384 experts, top-8, one shared expert, sigmoid + bias,
``noaux_tc``; hidden 64), so the per-layer and per-step costs of capture are K2's.

- prefill: one forward of ``--prefill-batch`` x ``--prefill-len`` tokens, ``use_cache=False``.
- decode: ``generate`` of exactly ``--new-tokens`` tokens (greedy, ``min_new_tokens`` = max) after a
  ``--prompt-len`` prompt, for each batch size in ``--batches``.

Conditions, run interleaved (the order rotates every repeat, so load drifts hit all alike): ``none``
(no hooks), ``recorder`` (``RoutingRecorder``, including ``routing()`` assembling the rows),
``scores`` (``RoutingRecorder(scores=True)``), and ``nnsight`` (saving every MoE gate's top-k ids and
weights; skipped with the reason in the JSON when nnsight is missing or cannot trace the call). Each
figure is the median over ``--repeats``; the machine's load average is recorded before and after each
model. Goals (issue 17): decode recorder / none <= 1.05; prefill <= 1.02 (within noise).

    python benchmarks/bench_capture.py --out benchmarks/results                      # both models, CPU
    python benchmarks/bench_capture.py --out benchmarks/results --tag gpu --device cuda --dtype bf16 \
        --hidden 1024 --batches 1,8,32 --new-tokens 128 --prefill-batch 8 --prefill-len 2048   # one GPU run

On a GPU the wall clock is the figure (CUDA work is asynchronous, so process CPU time is not the work);
on a shared CPU run with ``--threads 1`` and read the CPU-time ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from workbench.hooks import RoutingRecorder

GOALS = {"decode": 1.05, "prefill": 1.02}
# Kimi K2's config.json (moonshotai/Kimi-K2-Instruct): routing and layer layout, kept verbatim.
K2_CONFIG: dict[str, Any] = dict(
    vocab_size=163840, hidden_size=7168, intermediate_size=18432, moe_intermediate_size=2048, num_hidden_layers=61,
    num_attention_heads=64, num_key_value_heads=64, n_routed_experts=384, num_experts_per_tok=8,
    n_shared_experts=1, first_k_dense_replace=1, q_lora_rank=1536, kv_lora_rank=512, qk_rope_head_dim=64,
    qk_nope_head_dim=128, v_head_dim=128, n_group=1, topk_group=1, norm_topk_prob=True,
    routed_scaling_factor=2.827, scoring_func="sigmoid", topk_method="noaux_tc", max_position_embeddings=131072,
)  # fmt: skip


def k2_shaped_config(hidden: int) -> Any:
    """K2's config with the sizes shrunk (``hidden`` wide); 61 layers, 384 experts, k = 8 unchanged."""
    from transformers import DeepseekV3Config

    small = dict(
        vocab_size=4096, hidden_size=hidden, intermediate_size=2 * hidden, moe_intermediate_size=max(hidden // 4, 8),
        num_attention_heads=2, num_key_value_heads=2, q_lora_rank=hidden // 2, kv_lora_rank=hidden // 4,
        qk_rope_head_dim=8, qk_nope_head_dim=16, v_head_dim=16, max_position_embeddings=8192,
        pad_token_id=0, eos_token_id=1, bos_token_id=2, tie_word_embeddings=False,
    )  # fmt: skip
    return DeepseekV3Config(**(K2_CONFIG | small))


def build_model(name: str, args: argparse.Namespace) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The model on ``args.device`` in eval mode, and what to say about it in the JSON."""
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    if name == "k2-mini":
        from workbench.models import load_model

        model, _ = load_model("k2-mini", dtype=args.dtype, experts_impl=args.experts_impl)
    else:
        from transformers import DeepseekV3ForCausalLM

        torch.manual_seed(0)
        default = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:  # built where it runs: a GPU-sized model (--hidden 1024: 18e9 parameters) never sits in host RAM
            with torch.device(args.device):
                model = DeepseekV3ForCausalLM(k2_shaped_config(args.hidden)).eval()
        finally:
            torch.set_default_dtype(default)
        with torch.no_grad():  # a trained model's bias is not zero: rank by score + bias as K2 does
            for m in model.modules():
                if isinstance(getattr(m, "e_score_correction_bias", None), torch.Tensor):
                    m.e_score_correction_bias.normal_(0.0, 0.05)
    model = model.to(args.device).eval()
    if name != "k2-mini":  # load_model chose the mini K2's
        from workbench.experts_kernel import choose

        choose(model, args.experts_impl)  # pinned, or the fastest on this device (measured once, cached)
    cfg = model.config
    about = {
        "model": name,
        "moe_layers": sum(1 for layer in model.model.layers if hasattr(layer.mlp, "gate")),
        "n_routed_experts": cfg.n_routed_experts,
        "top_k": cfg.num_experts_per_tok,
        "hidden_size": cfg.hidden_size,
        "parameters": sum(p.numel() for p in model.parameters()),
        "experts_implementation": getattr(cfg, "_experts_implementation", None),
    }
    return model, about


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def nnsight_arm(model: torch.nn.Module, mode: str, run_kwargs: dict[str, Any]) -> Callable[[], None] | str:
    """A callable saving every MoE gate's (weights, ids) through nnsight, or why there is none."""
    try:
        from nnsight import NNsight
    except ImportError:
        return "nnsight is not installed"
    layers = [i for i, layer in enumerate(model.model.layers) if hasattr(layer.mlp, "gate")]
    traced = NNsight(model)

    def save_gates() -> list[Any]:
        saved = []
        for i in layers:
            out = traced.model.layers[i].mlp.gate.output
            saved.append((out[1].save(), out[2].save()))  # (N, k) weights, (N, k) ids
        return saved

    if mode == "prefill":

        def prefill() -> None:
            with traced.trace(**run_kwargs):
                save_gates()

        fn: Callable[[], None] = prefill
    else:
        try:  # generate is traced by nnsight's transformers wrapper, which wants a tokenizer (ids go in as-is)
            from nnsight.modeling.transformers import TransformersModel

            from workbench.models import load_tokenizer

            traced = TransformersModel(model, tokenizer=load_tokenizer("k2-mini"))
        except Exception as err:
            return f"nnsight cannot wrap generate: {type(err).__name__}: {str(err).splitlines()[0][:200]}"

        def decode() -> None:
            with traced.generate(**run_kwargs) as tracer:
                for _ in tracer.all():  # every step; min_new_tokens holds the loop to its count
                    save_gates()

        fn = decode
    try:
        with torch.no_grad():
            fn()
    except Exception as err:  # nnsight's tracing varies by release: skip the arm, say why
        return f"nnsight could not trace {mode}: {type(err).__name__}: {str(err).splitlines()[0][:200]}"
    return fn


def conditions(model: torch.nn.Module, mode: str, run: Callable[[], Any], run_kwargs: dict[str, Any], args: Any):  # type: ignore[no-untyped-def]
    def recorder(scores: bool) -> Callable[[], None]:
        def fn() -> None:
            with RoutingRecorder(model, scores=scores) as rec:
                run()
            rec.routing()

        return fn

    conds: dict[str, Callable[[], None]] = {"none": run, "recorder": recorder(False), "scores": recorder(True)}
    skipped: dict[str, str] = {}
    if args.nnsight:
        arm = nnsight_arm(model, mode, run_kwargs)
        if isinstance(arm, str):
            skipped["nnsight"] = arm
        else:
            conds["nnsight"] = arm
    return conds, skipped


def measure(
    conds: dict[str, Callable[[], None]], args: argparse.Namespace
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall seconds and process CPU seconds of every run, per condition.

    On a shared CPU the wall clock mostly measures the neighbours; with ``--threads 1`` the process's
    CPU time (``time.process_time``) is the work this run did, so its ratios are the steadier figure.
    """
    times: dict[str, list[float]] = {k: [] for k in conds}
    cpu: dict[str, list[float]] = {k: [] for k in conds}
    names = list(conds)
    with torch.no_grad():
        for _ in range(args.warmup):
            for fn in conds.values():
                fn()
        for rep in range(args.repeats):
            for key in names[rep % len(names) :] + names[: rep % len(names)]:  # rotate the order
                _sync(args.device)
                t0, c0 = time.perf_counter(), time.process_time()
                conds[key]()
                _sync(args.device)
                times[key].append(time.perf_counter() - t0)
                cpu[key].append(time.process_time() - c0)
    return times, cpu


def summarize(
    measured: tuple[dict[str, list[float]], dict[str, list[float]]], goal: float, steps: int | None
) -> dict[str, Any]:
    times, cpu = measured
    med = {k: statistics.median(v) for k, v in times.items()}
    cpu_med = {k: statistics.median(v) for k, v in cpu.items()}
    out: dict[str, Any] = {
        "median_seconds": med,
        "all_seconds": times,
        "ratios_vs_none": {k: v / med["none"] for k, v in med.items() if k != "none"},
        "median_cpu_seconds": cpu_med,
        "all_cpu_seconds": cpu,
        "cpu_ratios_vs_none": {k: v / cpu_med["none"] for k, v in cpu_med.items() if k != "none"},
        "goal_ratio": goal,
        "meets_goal": med["recorder"] / med["none"] <= goal,
        "meets_goal_by_cpu_time": cpu_med["recorder"] / cpu_med["none"] <= goal,
    }
    if steps:
        out["median_ms_per_step"] = {k: 1000 * v / steps for k, v in med.items()}
    return out


def bench_model(name: str, args: argparse.Namespace) -> dict[str, Any]:
    model, about = build_model(name, args)
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(0)
    result: dict[str, Any] = {**about, "load_average_before": list(os.getloadavg()), "runs": []}
    if "prefill" in args.modes:
        ids = torch.randint(10, vocab, (args.prefill_batch, args.prefill_len), generator=gen).to(args.device)
        kw = {"input_ids": ids, "use_cache": False}
        conds, skipped = conditions(model, "prefill", lambda: model(**kw), kw, args)
        times = measure(conds, args)
        run = {"mode": "prefill", "batch": args.prefill_batch, "tokens": args.prefill_len, "skipped": skipped}
        result["runs"].append(run | summarize(times, GOALS["prefill"], None))
        print(name, json.dumps({k: run[k] for k in ("mode", "batch")} | result["runs"][-1]["cpu_ratios_vs_none"]))
    if "decode" in args.modes:
        for batch in args.batches:
            ids = torch.randint(10, vocab, (batch, args.prompt_len), generator=gen).to(args.device)
            pad = model.config.pad_token_id if model.config.pad_token_id is not None else 0
            kw = dict(
                input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=args.new_tokens,
                min_new_tokens=args.new_tokens, do_sample=False, pad_token_id=pad,
            )  # fmt: skip
            conds, skipped = conditions(model, "decode", lambda kw=kw: model.generate(**kw), kw, args)  # type: ignore[misc]
            times = measure(conds, args)
            run = {"mode": "decode", "batch": batch, "prompt_len": args.prompt_len, "new_tokens": args.new_tokens}
            result["runs"].append(run | {"skipped": skipped} | summarize(times, GOALS["decode"], args.new_tokens))
            print(name, json.dumps({"mode": "decode", "batch": batch} | result["runs"][-1]["cpu_ratios_vs_none"]))
    result["load_average_after"] = list(os.getloadavg())
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="directory for bench_capture.json")
    ap.add_argument("--models", default="k2-mini,k2-shaped", help="comma list of k2-mini, k2-shaped")
    ap.add_argument("--modes", default="prefill,decode", help="comma list of prefill, decode")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--batches", default="1,8", help="decode batch sizes, comma list")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--prefill-batch", type=int, default=8)
    ap.add_argument("--prefill-len", type=int, default=512)
    ap.add_argument("--hidden", type=int, default=64, help="hidden size of the K2-shaped model")
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument(
        "--experts-impl", default=None, help="pin the experts implementation (eager, ...); default: fastest here"
    )
    ap.add_argument("--no-nnsight", dest="nnsight", action="store_false", help="skip the nnsight arm")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--tag", default="", help="suffix of the JSON file name (bench_capture[-TAG].json)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)  # nnsight's "step never reached" at a loop's end
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    args.batches = [int(b) for b in args.batches.split(",")]
    args.modes = set(args.modes.split(","))
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.time()
    results = [bench_model(name, args) for name in args.models.split(",")]
    write(args, results, started)


def write(args: argparse.Namespace, results: list[dict[str, Any]], started: float) -> None:
    """bench_capture[-TAG].json, and one line per run on stdout."""
    out = {
        "benchmark": "capture_overhead",
        "argv": vars(args) | {"modes": sorted(args.modes), "out": str(args.out)},
        "models": results,
        "device": args.device,
        "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "seconds": time.time() - started,
        "machine": platform.platform(),
        "torch": torch.__version__,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"bench_capture{'-' + args.tag if args.tag else ''}.json"
    path.write_text(json.dumps(out, indent=2))
    for m in results:
        for r in m["runs"]:
            ratios = ", ".join(f"{k} x{v:.3f}" for k, v in r["ratios_vs_none"].items())
            cpu = ", ".join(f"{k} x{v:.3f}" for k, v in r["cpu_ratios_vs_none"].items())
            print(
                f"{m['model']} {r['mode']} batch {r['batch']}: none {r['median_seconds']['none']:.3f}s; wall {ratios};"
                f" cpu {cpu}; "
                f"goal <= {r['goal_ratio']}: {r['meets_goal']} (load {m['load_average_before'][0]:.1f}"
                f" -> {m['load_average_after'][0]:.1f})"
            )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
