"""Benchmark: click → redrawn view in the real browser (JupyterLab + headless Chromium), every widget action.

Goal (issue 16): median ≤ 200 ms, p95 ≤ 400 ms per action on a K2-shaped store (60 MoE layers × 384
experts, top-8; a 300-step transcript of ≥ 30k tokens) and on the mini K2 shape (6 × 64, top-8).

What is timed, end to end in the page: from the user's event (``pointerdown`` of a click, ``change``
of the slider or a dropdown, ``keydown`` of Enter; a capture listener on the document takes
``performance.now()``) to the moment the page shows the result (a ``MutationObserver`` on the
notebook sees the graph's title name the new selection, or the widget's
``wb-rendered`` event says the highlight / search hits are drawn). So it includes the comm round
trip, the kernel's work, the message to the browser and plotly.js drawing, on whatever load the
machine has (reported). The title criterion works with any version of the widgets, so the same
script measures the code before and after a change:

    python benchmarks/bench_browser_latency.py --out benchmarks/results [--shapes k2,mini_k2] [--repeats 12]
    /path/to/other/.venv/bin/python benchmarks/bench_browser_latency.py --out DIR --tag before --basic

(``--basic``: only the actions older widgets have: step, token, segment, All, switch transcript,
domain switch, PNG export.) Writes ``browser_latency[-TAG].json``.

Actions: ``step`` (slider), ``token`` (click a token), ``segment`` (click a segment header),
``all_first`` / ``all`` (the All button the first time, then again: the widget keeps the counts of
its last selections), ``switch`` (the transcript dropdown), ``node`` / ``edge`` (click a graph
node / edge: card + highlighted tokens; the mouse first rests on the point until plotly's hover picks
it, a node or an edge as asked and not the one whose card is shown, so each click changes the page;
timed from the click's ``pointerdown`` as the rest), ``search`` (type + Enter: hits highlighted), ``domain``
(the heatmap's domain dropdown of DomainComparisonWidget), ``export_png`` (the export button, PNG,
until the widget says "wrote"). ``load``: Run All → first graph drawn (store read included).

Where a graph action's time goes (``split``, from the graph pane's own ``performance.now()`` marks,
widgets that have them): ``to_message`` = user event → the new figure arrived in the browser (comm round
trip, kernel work, serialisation, transfer) and ``draw`` = ``Plotly.react`` of it. Of ``to_message``,
``to_send`` = user event → the page's first websocket send after it (the widget's state change leaving
for the kernel: the browser's own work before it, e.g. JupyterLab's handling of a pointerdown in a
cell). The kernel side alone is ``benchmarks/bench_widgets.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from browser_helpers import chromium, jupyter_lab, run_notebook, widget_notebook
from widgets_helpers import domain_store, synthetic_config, transcript_record, write_store

SHAPES = {"k2": (60, 384, 8), "mini_k2": (6, 64, 8)}
WAIT_MS = 600_000  # page loads and kernel start
ACTION_MS = int(os.environ.get("WORKBENCH_BENCH_ACTION_MS", "120000"))  # one action's result; else a failure

# Arm a measurement: t0 at the next user event, t1 when ``done`` holds (checked on DOM mutations of the
# output area and on wb-rendered events). done = {"title": text} (a plotly title contains text),
# {"signal": what} (a widget's wb-rendered event with detail.what), {"text": [selector, text]}.
ARM = """(done) => {
  const area = document.querySelector('.jp-Notebook') || document.body;
  const st = {t0: null, t1: null, sent: null};
  window.__wb = st;
  const start = () => { if (st.t0 === null) st.t0 = performance.now(); };
  const types = ['pointerdown', 'change', 'keydown'];
  for (const t of types) document.addEventListener(t, start, {capture: true});
  let obs = null;
  const finish = () => {
    if (st.t0 === null || st.t1 !== null) return;
    st.t1 = performance.now();
    for (const t of types) document.removeEventListener(t, start, {capture: true});
    if (obs) obs.disconnect();
    document.removeEventListener('wb-rendered', onSignal, true);
  };
  const check = () => {
    if (done.title !== undefined) {
      const ok = Array.from(area.querySelectorAll('.gtitle')).some(t => t.textContent.includes(done.title));
      if (ok) finish();
    } else if (done.text !== undefined) {
      const ok = Array.from(area.querySelectorAll(done.text[0])).some(t => t.textContent.includes(done.text[1]));
      if (ok) finish();
    }
  };
  const onSignal = (ev) => {
    if (done.signal !== undefined && ev.detail && ev.detail.what === done.signal) finish();
    else check();
  };
  document.addEventListener('wb-rendered', onSignal, true);
  if (done.signal === undefined) {
    obs = new MutationObserver(check);
    obs.observe(area, {subtree: true, childList: true, characterData: true});
  }
}"""


# When the page first sent something on a websocket after the armed user event (the widget's state change
# leaving for the kernel); installed before JupyterLab opens any socket.
WS_HOOK = """(() => {
  const send = window.WebSocket.prototype.send;
  window.WebSocket.prototype.send = function (data) {
    const w = window.__wb;
    if (w && w.t0 !== null && w.sent === null) w.sent = performance.now();
    return send.call(this, data);
  };
})();"""


# Page coordinates of a point of the graph's trace ``name`` (a fraction picks which), from plotly's own
# axes: works for SVG and WebGL (scattergl) traces alike, and for a heatmap (a non-empty cell: row = y,
# column = x). Plotly then picks the nearest point (the cell under the mouse; an edge's hover marker when
# the mouse is on one, which ends the same way: tokens highlighted).
POINT_XY = """([name, frac]) => {
  const gd = document.querySelector('.wb-plot-pane[data-pane=graph] .js-plotly-plot');
  const tr = gd && gd._fullData.find(t => t.name === name);
  if (!tr || !tr.x || !tr.x.length) return null;
  let x, y;
  const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
  if (tr.type === 'heatmap') {
    const cells = [];
    const z = tr.z, ok = (r, c) => r >= 0 && r < z.length && Number.isFinite(z[r][c]);
    // away from the edges' markers (they win the hover on themselves), so the click is on the cell
    const em = gd._fullData.find(t => t.name === 'edges') || {x: [], y: []};
    const far = (x, y) => em.x.every((ex, i) => Math.hypot(xa.l2p(ex) - xa.l2p(x), ya.l2p(em.y[i]) - ya.l2p(y)) > 12);
    // a cell whose neighbours above and below are drawn too: a cell is ~1 px tall at K2's 384 experts
    z.forEach((row, r) => row.forEach((v, c) => {
      if (ok(r, c) && ok(r - 1, c) && ok(r + 1, c) && far(tr.x[c], r)) cells.push([r, c]);
    }));
    if (!cells.length) return null;
    const [r, c] = cells[Math.min(cells.length - 1, Math.floor(frac * cells.length))];
    x = tr.x[c];
    y = tr.y ? tr.y[r] : r;
  } else {
    const i = Math.min(tr.x.length - 1, Math.floor(frac * tr.x.length));
    x = tr.x[i];
    y = tr.y[i];
  }
  gd.scrollIntoView({block: 'center'});
  const r = gd.getBoundingClientRect();
  return [r.left + xa._offset + xa.l2p(x), r.top + ya._offset + ya.l2p(y)];
}"""


# The point plotly's hover has picked under the mouse (null when none): its trace's name and the card title
# a click on it shows (an expert's or an edge's).
HOVERED = """() => {
  const gd = document.querySelector('.wb-plot-pane[data-pane=graph] .js-plotly-plot');
  const p = gd && gd._hoverdata && gd._hoverdata[0];
  if (!p) return null;
  const card = p.data.name === 'experts' ? `Expert L${p.x}:E${p.y}` : `Edge ${(p.data.text || [])[p.pointNumber]}`;
  return {name: p.data.name, card};
}"""
CARD = "() => { const t = document.querySelector('.wb-card-title'); return t ? t.textContent : ''; }"
HOVER_MS = 10_000  # plotly hovers within 50 ms of the mouse coming to rest


# The graph pane's marks of its last redraw (plot_pane.js), relative to the armed user event; null when
# the pane has none (older widgets) or its last redraw came before the event.
SPLIT = """() => {
  const e = document.querySelector('.wb-plot-pane[data-pane=graph]');
  const w = window.__wb;
  if (!e || !e.dataset.receivedAt || !w || w.t0 === null) return null;
  const at = Number(e.dataset.receivedAt) - w.t0;
  if (at < 0) return null;
  const out = {to_message_ms: at, draw_ms: Number(e.dataset.drawMs)};
  if (w.sent !== null && w.sent <= Number(e.dataset.receivedAt)) out.to_send_ms = w.sent - w.t0;
  return out;
}"""


def _stats(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    if a.size == 0:
        return {"n": 0}
    return {"median_ms": float(np.median(a)), "p95_ms": float(np.percentile(a, 95)), "max_ms": float(a.max()),
            "min_ms": float(a.min()), "n": int(a.size)}  # fmt: skip


def graph_target(page: Any, trace: str, rng: np.random.Generator, tries: int = 8) -> list[float] | None:
    """Page coordinates of a point of the graph's trace ``trace`` (``experts`` or ``edges``) with the mouse
    resting on it: plotly's hover there picks a point of that trace (the one a click will send) whose card
    is not the one shown, so the click changes what the page shows. None if ``tries`` random points fail.
    Resting first also keeps a click from landing while the hover is still at the last point."""
    for _ in range(tries):
        xy = page.evaluate(POINT_XY, [trace, float(rng.random())])
        if not xy:
            return None
        page.mouse.move(5, 5)  # off the plot: its hover is cleared
        page.mouse.move(*xy)
        try:
            hovered = page.wait_for_function(HOVERED, timeout=HOVER_MS).json_value()
        except Exception:
            continue  # nothing under the mouse after all
        if hovered["name"] == trace and hovered["card"] not in page.evaluate(CARD):
            return [float(v) for v in xy]
    return None


def make_stores(shape: str, root: Path, n_steps: int) -> dict[str, Any]:
    n_layers, n_experts, k = SHAPES[shape]
    config = synthetic_config(n_layers, n_experts, k)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    recs = [
        transcript_record(name, n_steps, rng=rng, config=config, think=64, call=20, result=40)
        for name in ("long", "long2")
    ]
    path = write_store(root / f"{shape}.zarr", recs, config)
    dom = domain_store(root / f"{shape}-domains.zarr", config=config)
    tokens = [int(r.token_ids.size) for r in recs]
    return {"store": path, "domains": dom, "tokens": tokens, "write_s": time.perf_counter() - t0}


def notebook(path: Path, store: Path, domains: Path) -> None:
    domain_cell = (
        "from workbench.viz.widgets import DomainComparisonWidget\n"
        f"d = DomainComparisonWidget(open_store({str(domains)!r}), n_boot=20, n_perm=20)\nd"
    )
    widget_notebook(path, store, (domain_cell,))


class Timer:
    def __init__(self, page: Any, only: frozenset[str] = frozenset()) -> None:
        self.page = page
        self.only = only  # actions to time (and do); empty: all
        self.results: dict[str, list[float]] = {}
        self.split: dict[str, dict[str, list[float]]] = {}
        self.failures: dict[str, str] = {}
        self.verbose = bool(os.environ.get("WORKBENCH_BENCH_VERBOSE"))

    def measure(self, name: str, done: dict[str, Any], action: Any) -> None:
        if self.only and name not in self.only:
            return
        page = self.page
        page.evaluate(ARM, done)
        try:
            action()
            page.wait_for_function("() => window.__wb && window.__wb.t1 !== null", timeout=ACTION_MS)
        except Exception as err:
            self.failures[name] = f"{type(err).__name__}: {str(err)[:300]}"
            print(f"    {name}: failed ({self.failures[name][:200]})", flush=True)
            return
        ms = page.evaluate("window.__wb.t1 - window.__wb.t0")
        split = page.evaluate(SPLIT) if "title" in done else None
        if split:
            for part, v in split.items():
                self.split.setdefault(name, {}).setdefault(part, []).append(float(v))
        if self.verbose:
            print(f"    {name}: {ms:.0f} ms {split or ''}", flush=True)
        self.results.setdefault(name, []).append(float(ms))


def run_shape(pw: Any, shape: str, root: Path, args: argparse.Namespace) -> dict[str, Any]:
    stores = make_stores(shape, root, args.steps)
    nb_path = root / f"{shape}.ipynb"
    notebook(nb_path, stores["store"], stores["domains"])
    rng = np.random.default_rng(1)
    out: dict[str, Any] = {"shape": dict(zip(("moe_layers", "experts", "top_k"), SHAPES[shape], strict=True)),
                           "transcript_tokens": stores["tokens"], "store_write_s": stores["write_s"]}  # fmt: skip
    with jupyter_lab(root, python=args.python) as lab:
        browser = chromium(pw)
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        page.add_init_script(WS_HOOK)
        page.set_default_timeout(WAIT_MS)
        t0 = time.perf_counter()
        run_notebook(page, lab, nb_path.name)
        page.wait_for_function(
            "() => Array.from(document.querySelectorAll('.gtitle')).some(t => t.textContent.includes('step 0 ('))",
            timeout=WAIT_MS,
        )
        out["load_s"] = time.perf_counter() - t0
        print(f"  loaded in {out['load_s']:.1f} s", flush=True)
        page.wait_for_selector(".jp-Notebook .jp-Cell:last-child .jp-InputArea-prompt:not(:has-text('*'))")
        out["load_all_cells_s"] = time.perf_counter() - t0
        page.set_default_timeout(ACTION_MS)  # from here on every wait is for one action
        timer = Timer(page, frozenset(a for a in args.only.split(",") if a))
        slider = ".wb-transcript .wb-step-slider"
        steps = rng.permutation(args.steps)[: args.repeats].tolist()
        for i, s in enumerate(steps):
            timer.measure("step", {"title": f"step {s} ("}, lambda s=s: page.evaluate(
                "([sel, v]) => { const e = document.querySelector(sel); e.value = String(v);"
                " e.dispatchEvent(new Event('change', {bubbles: true})); }", [slider, s]))  # fmt: skip
            if not args.basic:
                for trace, name in (("experts", "node"), ("edges", "edge")):
                    if timer.only and name not in timer.only:
                        continue
                    xy = graph_target(page, trace, rng)
                    if xy:
                        timer.measure(name, {"signal": "highlight"}, lambda xy=xy: page.mouse.click(*xy))
                    else:
                        timer.failures[f"{name}_target"] = f"no {trace} point found under the mouse"
            # a token with a visible glyph: a newline or space token may have no box to click
            toks = page.locator(".wb-transcript .wb-sel .wb-tok").filter(has_text=re.compile(r"\w"))
            if toks.count():
                tok = toks.nth(int(rng.integers(0, toks.count())))
                tok.scroll_into_view_if_needed()
                pos = tok.get_attribute("data-pos")
                timer.measure("token", {"title": f"token {pos} "}, lambda tok=tok: tok.click())
            heads = page.locator(".wb-transcript .wb-seg-head[data-span]")
            head = heads.nth(int(rng.integers(0, heads.count())))
            head.scroll_into_view_if_needed()
            timer.measure("segment", {"title": "segment"}, lambda head=head: head.click())
            if i < args.repeats_slow:
                timer.measure(
                    "all_first" if i == 0 else "all",
                    {"title": "whole transcript"},
                    lambda: page.locator(".wb-transcript .wb-all").click(),
                )
        if not args.basic:
            q = page.locator(".wb-transcript .wb-search")
            for word in ["sum", "print", "return", "cat", "def", "search"][: args.repeats_slow + 1]:
                q.fill(word)
                timer.measure("search", {"signal": "hits"}, lambda: q.press("Enter"))
        picker = page.locator(".widget-dropdown select").first  # the transcript picker comes first
        for i in range(args.repeats_slow):
            name = "long2" if i % 2 == 0 else "long"
            timer.measure("switch", {"title": f"{name}: step 0 ("}, lambda name=name: picker.select_option(name))
        dom_select = page.locator(".widget-dropdown select").last  # the heatmap's domain (the last widget)
        for i in range(args.repeats):
            name = ["language", "math", "code"][i % 3]  # the heatmap starts on the first, "code"
            timer.measure(
                "domain", {"title": f"{name}: relative load"}, lambda name=name: dom_select.select_option(name)
            )
        path_box = page.locator(".widget-text input").first
        button = page.locator("button", has_text="Export graph").first
        for i in range(args.repeats_slow):
            fname = f"bench_{shape}_{i}"
            path_box.fill(str(root / fname))
            path_box.press("Tab")
            timer.measure("export_png", {"text": [".widget-html", f"{fname}.png"]}, lambda: button.click())
        page.screenshot(path=str(args.out / f"browser_latency_{shape}{'-' + args.tag if args.tag else ''}.png"))
        browser.close()
    out["actions"] = {name: _stats(ms) for name, ms in timer.results.items()}
    out["split"] = {name: {part: _stats(v) for part, v in parts.items()} for name, parts in timer.split.items()}
    out["raw_ms"] = timer.results
    out["failures"] = timer.failures
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="folder for browser_latency[-TAG].json")
    ap.add_argument("--shapes", default="k2,mini_k2")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=12, help="step / token / segment / node / edge / domain clicks")
    ap.add_argument("--repeats-slow", type=int, default=4, help="All, transcript switches, PNG exports, searches")
    ap.add_argument("--basic", action="store_true", help="only the actions older widgets have")
    ap.add_argument("--tag", default="", help="suffix of the JSON file, e.g. before / after")
    ap.add_argument("--only", default="", help="time (and do) only these actions, comma-separated, e.g. export_png")
    ap.add_argument("--python", default=None, help="interpreter whose jupyter (and kernel) to run; default this one")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop JupyterLab and Chromium on the way out

    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "benchmark": "browser_latency",
        "goal": {"median_ms": 200.0, "p95_ms": 400.0},
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "load_before": os.getloadavg()},
        "code": args.tag or "current",
    }
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
        for shape in args.shapes.split(","):
            print(f"{shape}: writing stores, starting JupyterLab, clicking ...", flush=True)
            root = Path(tmp) / shape
            root.mkdir()
            results[shape] = run_shape(pw, shape, root, args)
            for name, st in results[shape]["actions"].items():
                med, p95 = st.get("median_ms", float("nan")), st.get("p95_ms", float("nan"))
                sp = results[shape]["split"].get(name, {})
                parts = "  ".join(f"{k.removesuffix('_ms')} {v['median_ms']:.0f}" for k, v in sp.items() if v.get("n"))
                print(f"  {name:10s} median {med:8.1f} ms  p95 {p95:8.1f} ms  n={st['n']}  {parts}", flush=True)
            if results[shape]["failures"]:
                print("  failures:", results[shape]["failures"], flush=True)
    results["machine"]["load_after"] = os.getloadavg()
    out = args.out / (f"browser_latency-{args.tag}.json" if args.tag else "browser_latency.json")
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
