"""Benchmark: the kernel side of every TranscriptGraphWidget action on a 300-step tool-loop transcript.

Goal (issue 16): click → redrawn view ≤ 200 ms in the browser; this script measures the Python part
of it, which is less noisy than the browser: everything the kernel does for one action (the trait
change a click sends, the pathway count of the selected tokens with pruning, the edges' top tokens,
the figure arrays, the card or highlight), on a synthetic transcript in a real zarr store, for the K2
shape (60 MoE layers, 384 experts, top-8) and the mini K2 shape. For steps it also splits the time
(count + prune, edge top tokens, figure arrays) and measures the graph message (serialising its state
as ipywidgets does, bytes on the wire). The end-to-end time in JupyterLab + Chromium is
``benchmarks/bench_browser_latency.py``.

    python benchmarks/bench_widgets.py --out benchmarks/results [--steps 300] [--repeats 60]

``all_first`` is the first *All*, clicked after the step, segment and token clicks (as a user reaches
it: the widget may have counted it in the background meanwhile); ``all`` is *All* again; ``switch``
loads the other transcript and back.
Run with another checkout's interpreter (``--tag before``) it measures that checkout's widgets.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from widgets_helpers import open_test_store, synthetic_config, transcript_record, write_store
from workbench.viz.widgets import TranscriptGraphWidget, linking, pathways

SHAPES = {"k2": (60, 384, 8), "mini_k2": (6, 64, 8)}


def _stats(seconds: list[float]) -> dict[str, float]:
    a = np.asarray(seconds) * 1000.0
    return {
        "median_ms": float(np.median(a)),
        "p95_ms": float(np.percentile(a, 95)),
        "max_ms": float(a.max()),
        "n": len(seconds),
    }


def _timed(fn: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _message(w: TranscriptGraphWidget) -> tuple[float, int]:
    """Seconds to serialise the graph pane's state as ipywidgets does before sending it, and its bytes."""
    from ipywidgets.widgets.widget import _remove_buffers

    t0 = time.perf_counter()
    state, _, buffers = _remove_buffers(w.graph.plot.get_state())
    body = json.dumps(state, default=str)
    return time.perf_counter() - t0, len(body) + sum(len(b) for b in buffers)


def step_split(w: TranscriptGraphWidget, steps: list[int]) -> dict[str, dict[str, float]]:
    """Where a step's kernel time goes: count + prune, edge top tokens, figure arrays, message."""
    d = w.data
    parts: dict[str, list[float]] = {"count_prune": [], "edge_top_tokens": [], "figure": [], "serialise": []}
    size = []
    for s in steps:
        rows = np.nonzero(d.step == s)[0]
        p, t = _timed(lambda rows=rows: pathways.pathway_counts(d, rows, w._vocab, top_edges=w.graph.top_edges))
        parts["count_prune"].append(t)
        e = p.edges
        tops, t = _timed(lambda rows=rows, e=e: linking.edge_top_tokens(d, rows, e.pair, e.src, e.dst, w._texts))
        parts["edge_top_tokens"].append(t)
        _, t = _timed(lambda p=p, tops=tops, s=s: w.graph.show(p, title=f"step {s}", edge_tokens=lambda *_: tops))
        parts["figure"].append(t)
        t, n = _message(w)
        parts["serialise"].append(t)
        size.append(n)
    out = {k: _stats(v) for k, v in parts.items()}
    out["message_bytes"] = {"median": float(np.median(size)), "max": float(max(size))}
    return out


def bench_shape(name: str, n_steps: int, repeats: int, workdir: Path, seed: int = 0) -> dict[str, object]:
    n_layers, n_experts, k = SHAPES[name]
    config = synthetic_config(n_layers, n_experts, k)
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    recs = [
        transcript_record(n, n_steps, rng=rng, config=config, think=64, call=20, result=40) for n in ("long", "long2")
    ]
    path = write_store(workdir / f"{name}.zarr", recs, config)
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
    # All after the clicks above, as a user would reach it (the browser benchmark clicks it there too)
    _, all_first = _timed(lambda: setattr(w.view, "selection", {"kind": "all", "index": -1}))
    w.view.selection = {"kind": "step", "index": int(w.data.steps[0])}
    _, all_again = _timed(lambda: setattr(w.view, "selection", {"kind": "all", "index": -1}))
    node_times, edge_times = [], []
    for s in steps.tolist()[:repeats]:
        w.view.selection = {"kind": "step", "index": s}
        li, ei = w.graph._node_at
        i = int(rng.integers(0, li.size))
        node = int(li[i]), int(ei[i])
        node_times.append(_timed(lambda node=node: w.show_expert(*node))[1])
        e = w.graph.pathways.edges  # type: ignore[union-attr]
        j = int(rng.integers(0, len(e)))
        edge_times.append(_timed(lambda j=j, e=e: w.show_edge(int(e.pair[j]), int(e.src[j]), int(e.dst[j])))[1])
    search_times = [_timed(lambda q=q: w.search(q))[1] for q in ("sum", "print", "return", "cat", "def", "search")]
    split = step_split(w, steps.tolist()[:repeats])  # before switching: a new transcript's All counts in the background
    switch_times = []
    for other in ("long2", "long", "long2", "long"):
        switch_times.append(_timed(lambda other=other: setattr(w.picker, "value", other))[1])

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
        "select_all_first_ms": all_first * 1000.0,
        "select_all_again_ms": all_again * 1000.0,
        "node_click": _stats(node_times),
        "edge_click": _stats(edge_times),
        "search": _stats(search_times),
        "switch_transcript": _stats(switch_times),
        "step_split": split,
        "goal_ms": 200.0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="folder for widgets.json")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=60)
    ap.add_argument("--shapes", default="k2,mini_k2")
    ap.add_argument("--tag", default="", help="suffix of the JSON file, e.g. before / after")
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
            print(f"  {r['transcript']['tokens']} tokens (median / p95 ms)", flush=True)  # type: ignore[index]
            for key in ("select_step", "select_segment", "select_token", "node_click", "edge_click", "search",
                        "switch_transcript"):  # fmt: skip
                st = r[key]  # type: ignore[index]
                print(f"  {key:18s} {st['median_ms']:8.1f} {st['p95_ms']:8.1f}", flush=True)
            print(f"  all first / again  {r['select_all_first_ms']:8.1f} {r['select_all_again_ms']:8.1f}", flush=True)
            sp = r["step_split"]  # type: ignore[index]
            parts = ", ".join(f"{k} {v['median_ms']:.1f}" for k, v in sp.items() if "median_ms" in v)
            print(f"  step split (median ms): {parts}, {sp['message_bytes']['median']:.0f} B", flush=True)
    out = args.out / (f"widgets-{args.tag}.json" if args.tag else "widgets.json")
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
