"""Capture overhead of the RoutingRecorder, prefill and decode, against no hooks (and against nnsight).

Two models: the bundled mini K2 (data/models/k2-mini, loaded by ``workbench.models.load_model`` as
``workbench record`` loads it) and a K2-shaped random model built from Kimi K2's real config.json with
only the sizes shrunk (60 MoE layers x 384 experts, top-8, one shared expert, sigmoid + bias,
``noaux_tc``; hidden 64), so the per-layer and per-step costs of capture are K2's.

- prefill: one forward of ``--prefill-batch`` x ``--prefill-len`` tokens, ``use_cache=False``.
- decode: ``generate`` of exactly ``--new-tokens`` tokens (greedy, ``min_new_tokens`` = max) after a
  ``--prompt-len`` prompt, for each batch size in ``--batches``.

Conditions: ``none`` (no hooks), ``recorder`` (``RoutingRecorder``, including ``routing()`` assembling
the rows), ``scores`` (``RoutingRecorder(scores=True)``), and ``nnsight`` (saving every MoE gate's top-k
ids and weights, on its own copy of the model; skipped with the reason in the JSON when nnsight is
missing or cannot trace the call).

How, so that a loaded shared machine still gives a usable figure: one torch thread on a CPU; every run
timed on three clocks (wall, process CPU, this thread's CPU: ``measure``); ``--repeats`` repeats in
ABBA order (A B C D, then D C B A, ...); per repeat the ratio of each arm to the ``none`` run beside
it, and the median of those ratios with a bootstrap 95% interval (``paired_ratio``); the load average
at every repeat. The goal is read on ``--clock`` (thread CPU on a CPU, wall on a GPU). Goals (issue
17): decode recorder / none <= 1.05; prefill <= 1.02 (within noise).

    python benchmarks/bench_capture.py --out benchmarks/results                      # both models, CPU
    python benchmarks/bench_capture.py --out benchmarks/results --tag gpu --device cuda --dtype bf16 \
        --hidden 1024 --batches 1,8,32 --new-tokens 128 --prefill-batch 8 --prefill-len 2048   # one GPU run

On a GPU the wall clock is the figure (CUDA work is asynchronous, so CPU time is not the work).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
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
        # nnsight instruments every module of the model it wraps, permanently (inert outside a trace): it gets
        # its own copy, so the other arms run the model as it was
        arm = nnsight_arm(copy.deepcopy(model), mode, run_kwargs)
        if isinstance(arm, str):
            skipped["nnsight"] = arm
        else:
            conds["nnsight"] = arm
    return conds, skipped


CLOCKS = ("wall", "process_cpu", "thread_cpu")


def measure(conds: dict[str, Callable[[], None]], args: argparse.Namespace) -> dict[str, Any]:
    """Seconds of every run per clock and condition, in ABBA order, and the load average at each repeat.

    Clocks: ``wall`` (``time.perf_counter``), ``process_cpu`` (``time.process_time``: every thread of this
    process) and ``thread_cpu`` (``time.thread_time``: the calling thread only; with ``--threads 1`` torch
    runs every CPU op on it, so it is this run's work and barely moves with other processes' load, unlike
    the wall clock). Repeat r runs the conditions in order (A B C ...) when r is even and reversed when r
    is odd (ABBA), so a drift in load during a pair hits both arms alike.
    """
    times: dict[str, dict[str, list[float]]] = {c: {k: [] for k in conds} for c in CLOCKS}
    load: list[float] = []
    names = list(conds)
    with torch.no_grad():
        for _ in range(args.warmup):
            for fn in conds.values():
                fn()
        for rep in range(args.repeats):
            load.append(os.getloadavg()[0])
            for key in names if rep % 2 == 0 else names[::-1]:
                _sync(args.device)
                t0, c0, h0 = time.perf_counter(), time.process_time(), time.thread_time()
                conds[key]()
                _sync(args.device)
                h1, c1, t1 = time.thread_time(), time.process_time(), time.perf_counter()
                times["wall"][key].append(t1 - t0)
                times["process_cpu"][key].append(c1 - c0)
                times["thread_cpu"][key].append(h1 - h0)
    return {"seconds": times, "load_average_per_repeat": load}


def paired_ratio(arm: list[float], base: list[float], *, resamples: int = 2000, seed: int = 0) -> dict[str, float]:
    """Median of the per-repeat ratios ``arm[r] / base[r]`` and its bootstrap 95% interval.

    Pairing each run with the baseline run next to it (same repeat, ABBA order) cancels slow drifts in
    the machine's load; the median resists the odd run another process disturbed. The interval is the
    2.5 and 97.5 percentiles of the median over ``resamples`` resamples of the repeats with replacement
    (the percentile bootstrap; Efron & Tibshirani 1993, "An Introduction to the Bootstrap", ch. 13).
    """
    ratios = np.asarray(arm) / np.asarray(base)
    rng = np.random.default_rng(seed)
    boot = np.median(rng.choice(ratios, size=(resamples, len(ratios)), replace=True), axis=1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return {"median": float(np.median(ratios)), "ci95_low": float(lo), "ci95_high": float(hi), "n": len(ratios)}


def summarize(measured: dict[str, Any], goal: float, steps: int | None, clock: str) -> dict[str, Any]:
    """Medians per clock, paired ratios against ``none`` with intervals, and the goal read on ``clock``."""
    times = measured["seconds"]
    out: dict[str, Any] = {"load_average_per_repeat": measured["load_average_per_repeat"]}
    for c in CLOCKS:
        med = {k: statistics.median(v) for k, v in times[c].items()}
        out[c] = {
            "median_seconds": med,
            "all_seconds": times[c],
            "paired_ratio_vs_none": {k: paired_ratio(v, times[c]["none"]) for k, v in times[c].items() if k != "none"},
        }
        if steps:
            out[c]["median_ms_per_step"] = {k: 1000 * v / steps for k, v in med.items()}
    ratio = out[clock]["paired_ratio_vs_none"]["recorder"]
    out |= {"goal_ratio": goal, "goal_clock": clock, "meets_goal": ratio["median"] <= goal}
    out["meets_goal_with_95pct_confidence"] = ratio["ci95_high"] <= goal
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
        result["runs"].append(run | summarize(times, GOALS["prefill"], None, args.clock))
        print(name, line(result["runs"][-1], args.clock), flush=True)
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
            result["runs"].append(
                run | {"skipped": skipped} | summarize(times, GOALS["decode"], args.new_tokens, args.clock)
            )
            print(name, line(result["runs"][-1], args.clock), flush=True)
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
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: 1 on a CPU, else torch's)")
    ap.add_argument(
        "--clock",
        choices=CLOCKS,
        default=None,
        help="the goal's clock (default: thread_cpu on a CPU, else wall)",
    )
    ap.add_argument("--tag", default="", help="suffix of the JSON file name (bench_capture[-TAG].json)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)  # nnsight's "step never reached" at a loop's end
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    args.batches = [int(b) for b in args.batches.split(",")]
    args.modes = set(args.modes.split(","))
    cpu = not args.device.startswith("cuda")
    args.threads = args.threads or (1 if cpu else None)
    args.clock = args.clock or ("thread_cpu" if cpu else "wall")
    if args.threads:
        torch.set_num_threads(args.threads)
    started, code = time.time(), code_version()  # the checkout as it was when the run began
    results = [bench_model(name, args) for name in args.models.split(",")]
    write(args, results, started, code)


def line(run: dict[str, Any], clock: str) -> str:
    """One run's paired ratios on ``clock``, e.g. ``decode batch 8: recorder x1.012 [1.004, 1.020], ...``."""
    ratios = ", ".join(
        f"{k} x{r['median']:.3f} [{r['ci95_low']:.3f}, {r['ci95_high']:.3f}]"
        for k, r in run[clock]["paired_ratio_vs_none"].items()
    )
    none = run[clock]["median_seconds"]["none"]
    load = run["load_average_per_repeat"]
    return (
        f"{run['mode']} batch {run['batch']}: none {none:.3f}s ({clock}); {ratios}; goal <= {run['goal_ratio']}:"
        f" {run['meets_goal']} (load {min(load):.1f}-{max(load):.1f})"
    )


def write(args: argparse.Namespace, results: list[dict[str, Any]], started: float, code: dict[str, str]) -> None:
    """bench_capture[-TAG].json, and one line per run on stdout."""
    out = {
        "benchmark": "capture_overhead",
        "argv": vars(args) | {"modes": sorted(args.modes), "out": str(args.out)},
        "code": code,
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
    print(f"wrote {path}")


def code_version() -> dict[str, str]:
    """Where the recorder measured was imported from, and that checkout's commit (before/after runs)."""
    import subprocess

    import workbench.hooks

    where = Path(workbench.hooks.__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = ""
    return {"hooks": str(where), "commit": commit}


if __name__ == "__main__":
    main()
