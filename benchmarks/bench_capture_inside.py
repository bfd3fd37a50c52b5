"""Time spent inside the recorder's own code per decode step, on the mini K2 and the K2-shaped model.

On a shared CPU the whole-``generate`` ratios of ``bench_capture.py`` swing by more than the capture
costs, so this measures the capture directly: the recorder's per-forward and per-layer entry points
(whichever of these names the code under test has: the decoder's begin/end of forward, each MoE layer's
capture, and ``routing()`` with its host copy, ranking, scores and stitching) are wrapped with a timer
whose sum over one recorded ``generate`` is the recorder's work. ``1 + inside / none`` (``none``: this
thread's CPU time of the same ``generate`` without the recorder) is the overhead ratio it implies.

Not included: the cost of the call into the capture itself (a registered hook's general
``Module._call_impl`` path, or the one extra Python frame of a wrapped instance forward), about 1 µs
per MoE layer and step with hooks and 0.2-1 µs with wrapped forwards (``nn.Linear(8, 8)`` calls, thread
CPU time: 4.5 µs plain, 5.8-6.7 µs with a no-op forward hook, 4.7-5.7 µs with a wrapped forward). The
timer is ``--timer``: ``thread`` (``time.thread_time``, the default: other processes' load does not
enter it, but each read costs about 1 µs, counted once per timed call, so code with a timed call per
layer, the older hooks, would be overstated by about 1 µs per layer and step: the timer's own share per
call is measured on an empty function and subtracted, ``calibrate``) or ``wall``
(``time.perf_counter``: 0.1 µs a read, but every preemption by another process lands in it: only on
a quiet machine). Fewest of ``--repeats`` for ``inside``, median for ``none``; one torch thread. The
same command measures main's code when run with its checkout's Python (the JSON names the ``hooks``
directory measured and its commit).

    python benchmarks/bench_capture_inside.py --out benchmarks/results [--models k2-mini,k2-shaped] \
        [--new-tokens 64] [--batches 1,8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from bench_capture import build_model, code_version
from workbench.hooks import RoutingRecorder
from workbench.hooks import capture as C
from workbench.hooks import recorder as R

SPENT = [0.0]
CALLS = [0]
CLOCK = [time.thread_time]
# per-forward and per-layer entry points of the capture; older code's names are kept so that the same
# script measures before/after (hooks: the factories' closures are timed; wrapped forwards: what they call)
METHODS = ("_begin_forward", "_end_forward", "_keep", "_first_router_call")
HOOK_FACTORIES = ("_gate_hook", "_remote_gate_hook", "_experts_pre_hook")


def _timed(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*a: Any, **k: Any) -> Any:
        clock = CLOCK[0]
        CALLS[0] += 1
        t = clock()
        try:
            return fn(*a, **k)
        finally:
            SPENT[0] += clock() - t

    return wrapper


def calibrate(n: int = 20000) -> float:
    """Seconds the timer itself adds to ``SPENT`` per timed call (an empty function, timed ``n`` times)."""
    empty = _timed(lambda: None)
    SPENT[0], CALLS[0] = 0.0, 0
    for _ in range(n):
        empty()
    per_call = SPENT[0] / n
    SPENT[0], CALLS[0] = 0.0, 0
    return per_call


def instrument() -> list[str]:
    """Wrap the capture's entry points present in the code under test and ``routing()``; their names."""
    done = []
    for name in HOOK_FACTORIES:
        if hasattr(C.CaptureHooks, name):
            factory = getattr(C.CaptureHooks, name)
            setattr(C.CaptureHooks, name, (lambda f: lambda self, pos: _timed(f(self, pos)))(factory))
            done.append(name)
    for name in METHODS:
        if hasattr(C.CaptureHooks, name):
            setattr(C.CaptureHooks, name, _timed(getattr(C.CaptureHooks, name)))
            done.append(name)
    R.RoutingRecorder.routing = _timed(R.RoutingRecorder.routing)  # type: ignore[method-assign]
    return [*done, "routing"]


def bench(model: torch.nn.Module, args: argparse.Namespace, timer_cost: float) -> list[dict[str, Any]]:
    runs = []
    for b in args.batches:
        ids = torch.randint(10, min(4000, model.config.vocab_size), (b, 32), generator=torch.Generator().manual_seed(0))
        kw = dict(
            input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=args.new_tokens,
            min_new_tokens=args.new_tokens, do_sample=False, pad_token_id=0,
        )  # fmt: skip
        for scores in (False, True):
            none, inside = [], []
            with torch.no_grad():
                model.generate(**kw)  # warm-up
                for _ in range(args.repeats):
                    t = time.thread_time()
                    model.generate(**kw)
                    none.append(time.thread_time() - t)
                    SPENT[0], CALLS[0] = 0.0, 0
                    with RoutingRecorder(model, scores=scores) as rec:
                        model.generate(**kw)
                    rec.routing()
                    inside.append(SPENT[0] - CALLS[0] * timer_cost)
            ins, base = min(inside), statistics.median(none)
            runs.append(
                {"batch": b, "scores": scores, "generate_thread_cpu_seconds": base, "inside_seconds": ins,
                 "inside_ms_per_step": 1000 * ins / args.new_tokens, "ratio_from_inside": 1 + ins / base,
                 "load_average": os.getloadavg()[0]}
            )  # fmt: skip
            print(json.dumps({"model": model.name_or_path or "k2-shaped"} | runs[-1]), flush=True)
    return runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--models", default="k2-mini,k2-shaped")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--experts-impl", default="batched_mm")
    ap.add_argument("--timer", choices=["thread", "wall"], default="thread", help="see the module docstring")
    ap.add_argument("--tag", default="", help="suffix of the JSON file name (bench_capture_inside[-TAG].json)")
    args = ap.parse_args()
    args.batches = [int(x) for x in args.batches.split(",")]
    args.device, args.dtype, args.hidden = "cpu", "fp32", 64  # what bench_capture.build_model reads
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.set_num_threads(1)
    CLOCK[0] = time.thread_time if args.timer == "thread" else time.perf_counter
    code = code_version()  # the checkout as it was when the run began
    timed = instrument()
    timer_cost = calibrate()
    models = []
    for name in args.models.split(","):
        model, about = build_model(name, args)
        models.append(about | {"runs": bench(model, args, timer_cost)})
    args.out.mkdir(parents=True, exist_ok=True)
    out = {
        "benchmark": "capture_inside",
        "code": code,
        "timed": timed,
        "timer": args.timer,
        "timer_seconds_per_call_subtracted": timer_cost,
        "models": models,
        "new_tokens": args.new_tokens,
        "torch_threads": 1,
        "torch": torch.__version__,
    }
    path = args.out / f"bench_capture_inside{'-' + args.tag if args.tag else ''}.json"
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
