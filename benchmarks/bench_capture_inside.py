"""CPU time spent inside the recorder's own code per decode step, on the K2-shaped model of bench_capture.py.

On a shared CPU the whole-``generate`` ratios of ``bench_capture.py`` swing by more than the capture costs,
so this measures the capture directly: every hook the recorder registers (decoder begin/end, one per MoE
layer), and ``routing()`` (host copy, ranking, stitching), are wrapped with a process-CPU-time counter.
``1 + inside / none`` is the overhead ratio the recorder's code implies (torch's general module-call path
for hooked modules, under 1 µs per call, is not included). Fewest-of-``--repeats`` figures.

    python benchmarks/bench_capture_inside.py --out benchmarks/results [--new-tokens 64] [--batches 1,8]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from bench_capture import k2_shaped_config
from transformers import DeepseekV3ForCausalLM
from workbench.hooks import RoutingRecorder
from workbench.hooks import capture as C
from workbench.hooks import recorder as R

SPENT = [0.0]


def _timed(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*a: Any, **k: Any) -> Any:
        t = time.process_time()
        try:
            return fn(*a, **k)
        finally:
            SPENT[0] += time.process_time() - t

    return wrapper


def instrument() -> None:
    """Wrap the hook factories (their closures), the decoder hooks and ``routing()``."""
    for name in ("_gate_hook", "_remote_gate_hook", "_experts_pre_hook"):
        factory = getattr(C.CaptureHooks, name)
        setattr(C.CaptureHooks, name, (lambda f: lambda self, pos: _timed(f(self, pos)))(factory))
    for name in ("_begin_forward", "_end_forward"):
        setattr(C.CaptureHooks, name, _timed(getattr(C.CaptureHooks, name)))
    R.RoutingRecorder.routing = _timed(R.RoutingRecorder.routing)  # type: ignore[method-assign]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--experts-impl", default="batched_mm")
    args = ap.parse_args()
    torch.set_num_threads(1)
    instrument()
    torch.manual_seed(0)
    model = DeepseekV3ForCausalLM(k2_shaped_config(64)).eval()
    model.set_experts_implementation(args.experts_impl)
    runs = []
    for b in (int(x) for x in args.batches.split(",")):
        ids = torch.randint(10, 4000, (b, 32))
        kw = dict(
            input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=args.new_tokens,
            min_new_tokens=args.new_tokens, do_sample=False, pad_token_id=0,
        )  # fmt: skip
        for scores in (False, True):
            with torch.no_grad():
                model.generate(**kw)  # warm-up
                t = time.process_time()
                model.generate(**kw)
                none = time.process_time() - t
                inside = []
                for _ in range(args.repeats):
                    SPENT[0] = 0.0
                    with RoutingRecorder(model, scores=scores) as rec:
                        model.generate(**kw)
                    rec.routing()
                    inside.append(SPENT[0])
            ins = min(inside)
            runs.append(
                {"batch": b, "scores": scores, "generate_cpu_seconds": none, "inside_cpu_seconds": ins,
                 "inside_ms_per_step": 1000 * ins / args.new_tokens, "ratio_from_inside": 1 + ins / none}
            )  # fmt: skip
            print(json.dumps(runs[-1]))
    args.out.mkdir(parents=True, exist_ok=True)
    out = {
        "benchmark": "capture_inside",
        "model": "k2-shaped (60 MoE x 384, hidden 64)",
        "runs": runs,
        "new_tokens": args.new_tokens,
        "load_average": list(os.getloadavg()),
        "torch": torch.__version__,
    }
    (args.out / "bench_capture_inside.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
