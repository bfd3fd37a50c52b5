"""Benchmark: selecting a step of a 300-step tool-loop transcript in the transcript + graph widget.

Goal (issue 5): a step selection updates the view in ≤ 300 ms. Measured here is everything Python
does for one selection: the trait change a click sends, the pathway aggregation of the step's
tokens, the graph figure restyle and the token-path restyle, on a synthetic 300-step transcript in
a real zarr store, for the K2 shape (60 MoE layers, 384 experts, top-8) and the mini K2 shape. The
browser's redraw is measured by tests/test_browser.py on the real page.

    python benchmarks/bench_widgets.py --out benchmarks/results [--steps 300] [--repeats 60]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from widgets_helpers import open_test_store, synthetic_config, transcript_record, write_store
from workbench.viz.widgets import TranscriptGraphWidget

SHAPES = {"k2": (60, 384, 8), "mini_k2": (6, 64, 8)}


def _stats(seconds: list[float]) -> dict[str, float]:
    a = np.asarray(seconds) * 1000.0
    return {
        "median_ms": float(np.median(a)),
        "p95_ms": float(np.percentile(a, 95)),
        "max_ms": float(a.max()),
        "n": len(seconds),
    }


def bench_shape(name: str, n_steps: int, repeats: int, workdir: Path, seed: int = 0) -> dict[str, object]:
    n_layers, n_experts, k = SHAPES[name]
    config = synthetic_config(n_layers, n_experts, k)
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    rec = transcript_record("long", n_steps, rng=rng, config=config, think=64, call=20, result=40)
    path = write_store(workdir / f"{name}.zarr", [rec], config)
    write_s = time.perf_counter() - t0

    ds = open_test_store(path)
    t0 = time.perf_counter()
    w = TranscriptGraphWidget(ds)
    build_s = time.perf_counter() - t0

    steps = rng.choice(w.data.steps, size=min(repeats, w.data.steps.size), replace=False)
    step_times = []
    for s in steps.tolist():
        t0 = time.perf_counter()
        w.view.selection = {"kind": "step", "index": s}  # exactly what a slider move or click sends
        step_times.append(time.perf_counter() - t0)
        assert w.graph.pathways is not None and w.graph.pathways.n_tokens > 0
    spans = rng.choice(w.data.span_start.size, size=min(repeats, w.data.span_start.size), replace=False)
    seg_times = []
    for i in spans.tolist():
        t0 = time.perf_counter()
        w.view.selection = {"kind": "segment", "index": i}
        seg_times.append(time.perf_counter() - t0)
    tok_times = []
    for pos in rng.integers(0, w.data.n_tokens, size=repeats).tolist():
        t0 = time.perf_counter()
        w.view.selection = {"kind": "token", "index": pos}
        tok_times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    w.view.selection = {"kind": "all", "index": -1}
    all_s = time.perf_counter() - t0

    tokens_per_step = np.bincount(w.data.step[w.data.step >= 0])
    step = _stats(step_times)
    return {
        "shape": {"moe_layers": n_layers, "experts": n_experts, "top_k": k},
        "transcript": {
            "steps": int(w.data.steps.size),
            "tokens": w.data.n_tokens,
            "tokens_per_step_mean": float(tokens_per_step.mean()),
            "spans": int(w.data.span_start.size),
        },
        "store_write_s": write_s,
        "widget_build_s": build_s,
        "wire_bytes_transcript": sum(
            len(getattr(w.view, n)) for n in w.view.trait_names(sync=True) if isinstance(getattr(w.view, n), bytes)
        ),
        "select_step": step,
        "select_segment": _stats(seg_times),
        "select_token": _stats(tok_times),
        "select_whole_transcript_ms": all_s * 1000.0,
        "goal_ms": 300.0,
        "meets_goal": step["max_ms"] <= 300.0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="folder for widgets.json")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=60)
    ap.add_argument("--shapes", default="k2,mini_k2")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, object] = {
        "benchmark": "widgets",
        "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine()},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.shapes.split(","):
            print(f"{name}: writing a {args.steps}-step transcript store and selecting steps ...", flush=True)
            results[name] = bench_shape(name, args.steps, args.repeats, Path(tmp))
            r = results[name]
            print(
                f"  {r['transcript']['tokens']} tokens; step select median {r['select_step']['median_ms']:.1f} ms, "  # type: ignore[index]
                f"max {r['select_step']['max_ms']:.1f} ms (goal 300 ms)",  # type: ignore[index]
                flush=True,
            )
    out = args.out / "widgets.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
