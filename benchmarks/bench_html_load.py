"""Benchmark: file size and load time in headless Chromium of the workbench's HTML pages.

Goal: the report (``compare/report.html``), a graph HTML export and the overview page are each at most
2 MB and load in at most 2 s, for the demo and for a K2-shaped store (60 MoE layers × 384 experts, top-8,
four domains). Load time is measured in the page:
``performance.now()`` (milliseconds since navigation start) at the first animation frame in which every
plotly div on the page has been drawn (it has plotly's ``_fullLayout`` and its ``svg.main-svg``), for
``--repeats`` fresh loads of the file by ``file://`` in a new tab each time (median and max reported).
Also written: the file size, the number of copies of plotly.js inlined (the licence banners in the file's
text: one per copy, packed or not) and the number of plots.

    python benchmarks/bench_html_load.py --out benchmarks/results [--demo demo-out] [FILE.html ...]
    python benchmarks/bench_html_load.py --out benchmarks/results --k2 20000 [--keep DIR]

With no FILE, the report and graph HTML of ``--demo`` (the folder ``workbench demo --out`` wrote) are
measured; when that folder has none, a report and a graph are first written from a synthetic store of
the mini K2's shape (three domains) into a temporary folder, and the JSON says so (``source``). With
``--k2 N``, a report, the math graph and the overview are written from an N-token K2-shaped synthetic
store (``workbench.store.synthetic``: 60 × 384, top-8, four domains; the pages' sizes depend on the
shape, not on N) and measured; ``--keep DIR`` keeps them there. Chromium: ``$BROWSER_PATH`` or
/usr/bin/chromium.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# A plotly.js bundle starts with this banner comment (full and partial bundles alike).
_PLOTLY_BANNER = re.compile(rb"\* plotly\.js(?: \(\w+(?: - minified)?\))? v\d+\.\d+\.\d+")

_RENDERED = """() => {
  const divs = [...document.querySelectorAll('.plotly-graph-div, .js-plotly-plot')];
  const unique = [...new Set(divs)];
  if (document.readyState !== 'complete' || unique.length === 0) return false;
  const done = unique.every(d => d._fullLayout && d.querySelector('svg.main-svg'));
  return done ? {ms: performance.now(), plots: unique.length} : false;
}"""


def measure(path: Path, repeats: int, browser: str, timeout_s: float = 60.0) -> dict[str, object]:
    """Load ``path`` ``repeats`` times in fresh tabs; the load times (ms) and what the file holds."""
    from playwright.sync_api import sync_playwright

    raw = path.read_bytes()
    times: list[float] = []
    plots = 0
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=browser, headless=True, args=["--no-sandbox"])
        try:
            context = chromium.new_context(viewport={"width": 1280, "height": 900})
            for _ in range(repeats + 1):  # the first load warms the browser process (not counted)
                page = context.new_page()
                page.goto(path.resolve().as_uri(), wait_until="commit", timeout=timeout_s * 1000)
                handle = page.wait_for_function(_RENDERED, polling="raf", timeout=timeout_s * 1000)
                result = handle.json_value()
                times.append(float(result["ms"]))
                plots = int(result["plots"])
                page.close()
        finally:
            chromium.close()
    ms = np.asarray(times[1:])
    return {
        "file": str(path),
        "bytes": len(raw),
        "megabytes": round(len(raw) / 1e6, 3),
        "plotly_js_copies": len(_PLOTLY_BANNER.findall(raw)),
        "plots": plots,
        "load_median_ms": float(np.median(ms)),
        "load_max_ms": float(ms.max()),
        "load_ms": [round(float(t), 1) for t in ms],
        "goal": {"megabytes": 2.0, "load_ms": 2000.0},
        "meets_goal": bool(len(raw) <= 2_000_000 and float(np.median(ms)) <= 2000.0),
    }


def _synthetic_outputs(folder: Path) -> list[Path]:
    """A report and a graph HTML from a synthetic three-domain store of the mini K2's shape."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from widgets_helpers import domain_store, open_test_store
    from workbench.viz import export_graph, write_report

    from workbench.analysis.compare import compare
    from workbench.graph.build import reasoning_graph
    from workbench.store.select import Selection

    ds = open_test_store(domain_store(folder / "synthetic.zarr", per_domain=12, n_tokens=120))
    cmp = compare(ds, by="domain", n_boot=50, n_perm=50)
    report = write_report(cmp, folder / "compare")["report.html"]
    sel = Selection(domains=("math",))
    (folder / "graphs").mkdir()
    graph = export_graph(
        reasoning_graph(ds, sel, top_edges=12), folder / "graphs" / "graph-math.html", store=ds, selection=sel
    )
    return [report, graph]


def _k2_outputs(folder: Path, n_tokens: int) -> list[Path]:
    """The report, the math graph and the overview page of an ``n_tokens`` K2-shaped synthetic store."""
    from workbench.viz import export_graph, write_report
    from workbench.viz.overview_page import write_overview_html

    from workbench.analysis.compare import compare
    from workbench.cli.graph import DEFAULT_TOP_EDGES
    from workbench.graph.build import reasoning_graph
    from workbench.graph.supernodes import supernodes
    from workbench.store.io import open_store
    from workbench.store.select import Selection
    from workbench.store.synthetic import synthetic_store

    store = folder / "k2.zarr"
    if not store.exists():
        synthetic_store(store, n_tokens=n_tokens, progress=False)
    ds = open_store(store)
    report = write_report(compare(ds, by="domain", n_boot=50, n_perm=50), folder / "compare")["report.html"]
    sel = Selection(domains=("math",))
    graph = export_graph(  # pruned as `workbench graph` prunes by default
        reasoning_graph(ds, sel, top_edges=DEFAULT_TOP_EDGES), folder / "graph-math.html", store=ds, selection=sel
    )
    overview = write_overview_html(supernodes(ds), folder / "overview.html")
    return [report, graph, overview]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", type=Path, help="HTML files to measure (default: the demo's)")
    parser.add_argument("--demo", type=Path, default=Path("demo-out"), help="folder `workbench demo` wrote")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--label", default="", help="a name for this run in the JSON (e.g. before, after)")
    parser.add_argument("--k2", type=int, default=0, metavar="N", help="measure pages of an N-token K2-shaped store")
    parser.add_argument("--keep", type=Path, default=None, help="with --k2: write the store and pages here")
    args = parser.parse_args()
    browser = os.environ.get("BROWSER_PATH") or "/usr/bin/chromium"

    source = "files"
    files = list(args.files)
    tmp: tempfile.TemporaryDirectory[str] | None = None
    if args.k2:
        if args.keep is None:
            tmp = tempfile.TemporaryDirectory(prefix="bench-html-")
            folder = Path(tmp.name)
        else:
            folder = args.keep
        folder.mkdir(parents=True, exist_ok=True)
        files, source = _k2_outputs(folder, args.k2), f"K2-shaped synthetic store, {args.k2:,} tokens"
    elif not files:
        demo = [args.demo / "compare" / "report.html", args.demo / "graphs" / "graph-math.html"]
        if all(f.exists() for f in demo):
            files, source = demo, f"workbench demo output in {args.demo}"
        else:
            tmp = tempfile.TemporaryDirectory(prefix="bench-html-")
            files, source = _synthetic_outputs(Path(tmp.name)), "synthetic mini-K2-shaped store (no demo output)"
    try:
        results = [measure(f, args.repeats, browser) for f in files]
    finally:
        if tmp is not None:
            tmp.cleanup()
    out = {
        "benchmark": "html_load",
        "label": args.label,
        "source": source,
        "browser": browser,
        "repeats": args.repeats,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "load": os.getloadavg()},
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "results": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"html_load{'_' + args.label if args.label else ''}.json"
    (args.out / name).write_text(json.dumps(out, indent=2))
    for r in results:
        shown = Path(str(r["file"])).name
        print(
            f"{shown}: {r['megabytes']} MB, plotly.js x{r['plotly_js_copies']}, {r['plots']} plots, "
            f"load median {r['load_median_ms']:.0f} ms (max {r['load_max_ms']:.0f} ms)"
        )
    print(f"wrote {args.out / name}")


if __name__ == "__main__":
    main()
