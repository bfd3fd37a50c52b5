"""Benchmark: PNG/SVG export of the graph pane's figure at K2's shape, in the browser and in the kernel.

Issue 16's goal: a PNG export from a widget ≤ 1 s. The graph pane (``GraphPane`` of a
``TranscriptGraphWidget`` on a synthetic K2-shaped store: 60 MoE layers × 384 experts, top-8, one
tool-loop step of 127 tokens ≈ 16k scattergl nodes) is plotted in headless Chromium by plotly.js as the
widget plots it (``tests/plot_image_helpers.py``), and each way of exporting it is timed ``--repeats``
times, interleaved, in the page (``performance.now()`` around the call, the bytes ready to send):

- ``toimage_png`` / ``toimage_svg``: ``Plotly.toImage`` at the shown size (the widget before: plotly
  plots the whole figure again off screen);
- ``live_png`` / ``live_svg``: ``plotImage`` of ``viz/widgets/plot_image.js`` (the widget now: composed
  from the layers already drawn);
- ``kaleido_png_cold``: ``GraphPane.export`` with no browser (kaleido starts its Chromium per call),
  ``kaleido_png_warm``: the same inside ``static_export_session()`` (one Chromium kept open); wall clock
  in this process.

Then the pictures are compared pixel by pixel in the page (both PNGs decoded onto canvases; both SVGs
rasterised the same way): ``differ_px`` = pixels whose largest channel difference exceeds ``--tolerance``
(of 255), ``mean_abs`` = mean absolute channel difference. The images and a diff image (differing
pixels in red) are written to ``--out`` to be looked at.

    python benchmarks/bench_image_export.py --out DIR [--shapes k2,mini_k2] [--repeats 10] [--scale 2]

Writes ``image_export[-TAG].json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from plot_image_helpers import compare, image, plot, plot_page
from widgets_helpers import open_test_store, synthetic_config, transcript_record, write_store

SHAPES = {"k2": (60, 384, 8), "mini_k2": (6, 64, 8)}
PANE_WIDTH = 619.438  # CSS px: the graph pane of a TranscriptGraphWidget in JupyterLab, 1500 px wide page


def _stats(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"median_ms": float(np.median(a)), "p95_ms": float(np.percentile(a, 95)), "max_ms": float(a.max()),
            "min_ms": float(a.min()), "n": int(a.size)}  # fmt: skip


def pane_figure(shape: str, root: Path) -> tuple[Any, Any]:
    """A TranscriptGraphWidget on a synthetic store of ``shape``, step 0 drawn: its graph pane and figure
    (with the unmeasured tick labels plot_pane.js gives the axes and colour bars it has)."""
    from workbench.viz.widgets import TranscriptGraphWidget

    n_layers, n_experts, k = SHAPES[shape]
    config = synthetic_config(n_layers, n_experts, k)
    rec = transcript_record("long", 8, rng=np.random.default_rng(0), config=config, think=64, call=20, result=40)
    w = TranscriptGraphWidget(open_test_store(write_store(root / f"{shape}.zarr", [rec], config)))
    fig = w.graph.figure
    for key in ("xaxis", "yaxis"):
        fig.layout[key].ticklabeloverflow = "allow"
    for tr in fig.data:
        if "colorbar" in tr.to_plotly_json().get("marker", {}):
            tr.marker.colorbar.ticklabeloverflow = "allow"
    return w.graph, fig


def kaleido_times(pane: Any, root: Path, repeats: int) -> dict[str, Any]:
    """``GraphPane.export`` to PNG with no browser: one-shot kaleido, then inside a warm export session."""
    from workbench.viz.export import static_export_session

    cold = []
    for i in range(min(repeats, 3)):
        t0 = time.perf_counter()
        pane.export(root / f"cold{i}.png")
        cold.append(1000 * (time.perf_counter() - t0))
    warm = []
    with static_export_session():
        pane.export(root / "warmup.png")
        for i in range(repeats):
            t0 = time.perf_counter()
            pane.export(root / f"warm{i}.png")
            warm.append(1000 * (time.perf_counter() - t0))
    return {"kaleido_png_cold": _stats(cold), "kaleido_png_warm": _stats(warm)}


def run_shape(pw: Any, shape: str, root: Path, args: argparse.Namespace) -> dict[str, Any]:
    pane, fig = pane_figure(shape, root)
    out: dict[str, Any] = {"nodes": int(np.asarray(fig.data[-1].x).size), "node_trace": fig.data[-1].type}
    browser, page = plot_page(pw, width=PANE_WIDTH)
    size = out["shown_px"] = list(plot(page, fig))
    times: dict[str, list[float]] = {}
    last: dict[str, bytes] = {}
    for _ in range(args.repeats):
        for way in ("toimage", "live"):  # interleaved: a change of the machine's load hits both alike
            for fmt in ("png", "svg"):
                r = image(page, way, fmt, scale=args.scale)
                if way == "live" and r["method"] != "live":
                    raise SystemExit(f"the live path fell back to toImage: {r['failed']}")
                times.setdefault(f"{way}_{fmt}", []).append(float(r["ms"]))
                last[f"{way}_{fmt}"] = r["data"]
    out["browser"] = {way: _stats(ms) for way, ms in times.items()}
    out["bytes"] = {way: len(b) for way, b in last.items()}
    tag = f"{shape}{'-' + args.tag if args.tag else ''}"
    w, h = int(size[0] * args.scale), int(size[1] * args.scale)  # whole pixels, cut as canvases cut them
    out["compare"] = {}
    for fmt in ("png", "svg"):
        a, b = last[f"toimage_{fmt}"], last[f"live_{fmt}"]
        (args.out / f"{tag}_toimage.{fmt}").write_bytes(a)
        (args.out / f"{tag}_live.{fmt}").write_bytes(b)
        cmp = compare(page, a, b, fmt, w, h, args.tolerance)
        (args.out / f"{tag}_diff_{fmt}.png").write_bytes(cmp.pop("diff_png"))
        out["compare"][fmt] = cmp
    browser.close()
    if not args.no_kaleido:
        out["kernel"] = kaleido_times(pane, root, args.repeats)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="folder for image_export[-TAG].json and the images")
    ap.add_argument("--shapes", default="k2,mini_k2")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--scale", type=float, default=2.0, help="image pixels per CSS pixel (the button's PNG: 2)")
    ap.add_argument("--tolerance", type=int, default=32, help="channel difference (of 255) that counts as differing")
    ap.add_argument("--no-kaleido", action="store_true", help="skip the kernel-side (kaleido) timings")
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    os.environ.setdefault("BROWSER_PATH", "/usr/bin/chromium")
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "benchmark": "image_export",
        "goal_ms": 1000.0,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "load_before": os.getloadavg()},
        "scale": args.scale,
        "tolerance": args.tolerance,
    }
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
        for shape in args.shapes.split(","):
            root = Path(tmp) / shape
            root.mkdir()
            print(f"{shape}: ...", flush=True)
            r = results[shape] = run_shape(pw, shape, root, args)
            print(f"  {r['nodes']} nodes ({r['node_trace']}), shown {r['shown_px']} px", flush=True)
            for way, st in {**r["browser"], **r.get("kernel", {})}.items():
                print(f"  {way:18s} median {st['median_ms']:8.1f} ms  p95 {st['p95_ms']:8.1f}  n={st['n']}", flush=True)
            for fmt, c in r["compare"].items():
                print(f"  {fmt}: {c['differ_px']} of {c['px']} px differ by > {args.tolerance}, "
                      f"mean |d| {c['mean_abs']:.3f}, max {c['max_abs']}", flush=True)  # fmt: skip
    results["machine"]["load_after"] = os.getloadavg()
    out = args.out / (f"image_export-{args.tag}.json" if args.tag else "image_export.json")
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
