"""Benchmark: switching transcript in TranscriptGraphWidget, until the WHOLE view is redrawn in the browser.

``bench_browser_latency.py`` times a switch until the graph's title names the new transcript's step.
A switch redraws three panes, each from its own message: the graph, the transcript (its text, segment
blocks and selection) and the token path. This script times, per switch, from the dropdown's
``change`` event (a capture listener takes ``performance.now()``) to

- ``title``: the graph's title names the new transcript's first step (the other benchmark's criterion);
- ``transcript``: the transcript pane's last ``wb-rendered`` event (rebuilt for the new transcript);
- ``token_path``: the token-path pane's ``wb-rendered`` event (redrawn for the new transcript's token);
- ``whole``: the latest of the three, i.e. the view the user sees is complete (DOM updated; the paint
  follows within a frame).

``split``: for the graph and the token-path panes, when the new figure's message arrived (ms after the
event) and how long its ``Plotly.react`` took.

It first measures the kernel side of the same switches in this process (no browser): ms from the
picker's change to the transcript pane's message and to the graph's message leaving (handed to the
comm, state extracted, as ipywidgets sends it), and a switch made 1 s after the widget opened (while
its background jobs may still run; the widget reads the next transcript and counts *All* there).

Same stores and notebook as ``bench_browser_latency.py`` (K2 shape: 60 MoE layers × 384 experts, top-8,
two 300-step transcripts of ~38k tokens; mini K2: 6 × 64). As there, the same script measures older
code run with another checkout's interpreter:

    python benchmarks/bench_switch_view.py --out DIR --tag after [--shapes k2,mini_k2] [--switches 12]
    /path/to/main/.venv/bin/python benchmarks/bench_switch_view.py --out DIR --tag before

Writes ``switch_view[-TAG].json`` (median, p95, max of each mark, the machine's load average).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from bench_browser_latency import ARM, WAIT_MS, make_stores, notebook
from browser_helpers import chromium, jupyter_lab, run_notebook

ACTION_MS = 120_000
# Every wb-rendered event after the armed user event: which pane, when (relative to the event).
EVENTS = """() => {
  window.__wbEvents = [];
  document.addEventListener('wb-rendered', (ev) => {
    const w = window.__wb;
    if (!w || w.t0 === null) return;
    const el = ev.target;
    const pane = el.dataset && el.dataset.pane;
    const who = pane ? pane : (el.classList.contains('wb-transcript') ? 'transcript' : '');
    const e = {who, t: performance.now() - w.t0};
    if (pane && el.dataset.receivedAt) {  // a plot pane: its figure's arrival and Plotly.react time
      e.received = Number(el.dataset.receivedAt) - w.t0;
      e.draw = Number(el.dataset.drawMs);
    }
    window.__wbEvents.push(e);
  }, true);
}"""
DONE = """() => {
  const w = window.__wb, ev = window.__wbEvents || [];
  return w && w.t1 !== null && ev.some(e => e.who === 'transcript') && ev.some(e => e.who === 'token-path');
}"""
MARKS = ("title", "transcript", "token_path", "whole")
# Where a switch's time goes in the two plot panes: the figure's message arrived (ms after the event) and
# its Plotly.react took (ms).
SPLITS = ("graph_received", "graph_draw", "token_path_received", "token_path_draw")


def kernel_side(store: Path, switches: int) -> dict[str, Any]:
    """The kernel's part of a switch, timed here: see the module docstring."""
    import ipywidgets
    from workbench.viz.widgets import TranscriptGraphWidget, transcript_graph
    from workbench.viz.widgets.sequence_data import as_dataset

    sent: list[tuple[float, str]] = []
    send = ipywidgets.Widget._send

    def timed_send(self: Any, msg: dict[str, Any], buffers: Any = None) -> None:
        sent.append((time.perf_counter(), type(self).__name__))

    def idle() -> None:  # the widgets' background thread has nothing left to do
        transcript_graph._BACKGROUND.submit(lambda: None).result()

    ipywidgets.Widget._send = timed_send  # type: ignore[method-assign]
    try:
        ds = as_dataset(str(store))
        first = []
        for _ in range(2):
            w = TranscriptGraphWidget(ds)
            time.sleep(1.0)
            t = time.perf_counter()
            w.picker.value = "long2"
            first.append((time.perf_counter() - t) * 1000)
            idle()
        to_view, to_graph, total = [], [], []
        for i in range(switches):
            idle()
            sent.clear()
            t = time.perf_counter()
            w.picker.value = "long" if i % 2 == 0 else "long2"
            total.append((time.perf_counter() - t) * 1000)
            to_view.append((min(x for x, who in sent if who == "TranscriptView") - t) * 1000)
            to_graph.append((min(x for x, who in sent if who == "PlotPane") - t) * 1000)
    finally:
        ipywidgets.Widget._send = send  # type: ignore[method-assign]
    return {"first_switch_after_open": _stats(first), "to_transcript_message": _stats(to_view),
            "to_graph_message": _stats(to_graph), "switch_total": _stats(total)}  # fmt: skip


def _stats(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"median_ms": float(np.median(a)), "p95_ms": float(np.percentile(a, 95)), "max_ms": float(a.max()),
            "n": int(a.size)}  # fmt: skip


def run_shape(pw: Any, shape: str, root: Path, args: argparse.Namespace) -> dict[str, Any]:
    stores = make_stores(shape, root, args.steps)
    nb_path = root / f"{shape}.ipynb"
    notebook(nb_path, stores["store"], stores["domains"])
    kernel = kernel_side(stores["store"], args.switches)
    for name, st in kernel.items():
        print(f"  kernel {name:24s} median {st['median_ms']:7.1f} ms  max {st['max_ms']:7.1f} ms", flush=True)
    marks: dict[str, list[float]] = {m: [] for m in MARKS}
    split: dict[str, list[float]] = {m: [] for m in SPLITS}
    failures: list[str] = []
    with jupyter_lab(root, python=args.python) as lab:
        browser = chromium(pw)
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        page.set_default_timeout(WAIT_MS)
        run_notebook(page, lab, nb_path.name)
        page.wait_for_function(
            "() => Array.from(document.querySelectorAll('.gtitle')).some(t => t.textContent.includes('step 0 ('))"
        )
        page.wait_for_selector(".jp-Notebook .jp-Cell:last-child .jp-InputArea-prompt:not(:has-text('*'))")
        page.evaluate(EVENTS)
        picker = page.locator(".widget-dropdown select").first  # the transcript picker comes first
        for i in range(args.switches):
            name = "long2" if i % 2 == 0 else "long"
            page.evaluate(ARM, {"title": f"{name}: step 0 ("})
            page.evaluate("() => { window.__wbEvents = []; }")
            try:
                picker.select_option(name)
                page.wait_for_function(DONE, timeout=ACTION_MS)
            except Exception as err:
                failures.append(f"{type(err).__name__}: {str(err)[:200]}")
                continue
            time.sleep(args.settle)  # later events of the same switch (the last transcript signal) and quiet
            r = page.evaluate("() => ({title: window.__wb.t1 - window.__wb.t0, ev: window.__wbEvents})")
            got = {
                "title": float(r["title"]),
                "transcript": max(e["t"] for e in r["ev"] if e["who"] == "transcript"),
                "token_path": max(e["t"] for e in r["ev"] if e["who"] == "token-path"),
            }
            got["whole"] = max(got.values())
            for m in MARKS:
                marks[m].append(got[m])
            for pane, key in (("graph", "graph"), ("token-path", "token_path")):
                last = [e for e in r["ev"] if e["who"] == pane and "received" in e]
                if last:
                    split[f"{key}_received"].append(float(last[-1]["received"]))
                    split[f"{key}_draw"].append(float(last[-1]["draw"]))
            print(f"    {name}: " + "  ".join(f"{m} {v:.0f}" for m, v in got.items()), flush=True)
        browser.close()
    return {
        "transcript_tokens": stores["tokens"],
        "kernel": kernel,
        "marks": {m: _stats(v) for m, v in marks.items() if v},
        "split": {m: _stats(v) for m, v in split.items() if v},
        "raw_ms": marks,
        "failures": failures,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="folder for switch_view[-TAG].json")
    ap.add_argument("--shapes", default="k2,mini_k2")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--switches", type=int, default=12, help="transcript switches per shape (alternating)")
    ap.add_argument("--settle", type=float, default=1.5, help="seconds between switches")
    ap.add_argument("--tag", default="", help="suffix of the JSON file, e.g. before / after")
    ap.add_argument("--python", default=None, help="interpreter whose jupyter (and kernel) to run; default this one")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop JupyterLab and Chromium on the way out
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "benchmark": "switch_view",
        "goal": {"median_ms": 200.0, "p95_ms": 400.0},
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "load_before": os.getloadavg()},
        "code": args.tag or "current",
    }
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
        for shape in args.shapes.split(","):
            print(f"{shape}: writing stores, starting JupyterLab, switching ...", flush=True)
            root = Path(tmp) / shape
            root.mkdir()
            res = results[shape] = run_shape(pw, shape, root, args)
            for m, st in {**res["marks"], **res["split"]}.items():
                med, p95 = st["median_ms"], st["p95_ms"]
                print(f"  {m:11s} median {med:7.1f} ms  p95 {p95:7.1f} ms  n={st['n']}", flush=True)
            if res["failures"]:
                print("  failures:", res["failures"], flush=True)
    results["machine"]["load_after"] = os.getloadavg()
    out = args.out / (f"switch_view-{args.tag}.json" if args.tag else "switch_view.json")
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
