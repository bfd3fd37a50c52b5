"""Benchmark: where the browser's time goes between a click and its message leaving for the kernel.

``bench_browser_latency.py`` reports ``to_send`` (user event → the page's first websocket send); this
script splits it, on the same K2-shaped notebook (its ``make_stores`` and ``notebook``), for the
transcript pane's actions: ``step`` (the slider's ``change``), ``token`` (click a token), ``segment``
(click a segment header) and ``all`` (the All button). A listener on ``window`` (capture and bubble)
takes ``performance.now()`` at each event of the click (pointerdown, mousedown, focusout, focusin,
pointerup, mouseup, click, change) and the websocket send is hooked, so per action it reports:

- ``press_ms``: pointerdown → pointerup. Chromium handles the press and the release of one click in
  one task; the time between is the press's default action: moving the focus (a style recalc of
  whatever the focus change invalidates) and placing the text caret (Chromium's selection sync).
- ``handler_ms``: click (or change) → send: the page's listeners, the widget's handler included.
- ``to_send_ms``: the event → send; ``focus_moved``: the share of clicks whose press moved the focus.

With ``--trace DIR`` it also records a Chromium trace of one more round and writes, per action, the
main thread's time between the event and the send by trace event (``UpdateLayoutTree`` = style
recalc, with its element count; ``Editor::SyncSelection``; ``Layout``; ``EventDispatch``), the
evidence for the split above. Writes ``browser_presend[-TAG].json``:

    python benchmarks/bench_browser_presend.py --out DIR [--repeats 8] [--trace DIR] [--tag after]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from bench_browser_latency import make_stores, notebook
from browser_helpers import chromium, jupyter_lab, run_notebook

WAIT_MS = 600_000
EVENTS = ["pointerdown", "mousedown", "focusout", "focusin", "pointerup", "mouseup", "click", "change"]

# Before JupyterLab opens a socket: first time of each event (window capture) and of the first send after
# ``window.__ph = {}`` arms it; user-timing marks for the trace.
HOOK = """(() => {
  window.__ph = null;
  const stamp = (t) => {
    if (window.__ph && window.__ph[t] === undefined) {
      window.__ph[t] = performance.now();
      performance.mark('ph:' + t);
    }
  };
  for (const t of EVENTS) window.addEventListener(t, () => stamp(t), {capture: true});
  const send = window.WebSocket.prototype.send;
  window.WebSocket.prototype.send = function (data) {
    stamp('send');
    return send.call(this, data);
  };
})();""".replace("EVENTS", json.dumps(EVENTS))
TITLE = "(t) => Array.from(document.querySelectorAll('.gtitle')).some(x => x.textContent.includes(t))"
SLIDER = (
    "(v) => { const e = document.querySelector('.wb-transcript .wb-step-slider'); e.value = String(v);"
    " e.dispatchEvent(new Event('change', {bubbles: true})); }"
)
CATEGORIES = ["devtools.timeline", "blink.user_timing", "blink", "toplevel", "v8.execute"]
TRACED = ["UpdateLayoutTree", "Editor::SyncSelection", "Layout", "EventDispatch", "FunctionCall", "HitTest"]


def _stats(v: list[float]) -> dict[str, float]:
    a = np.asarray(v, dtype=float)
    if not a.size:
        return {"n": 0}
    return {"median_ms": float(np.median(a)), "p95_ms": float(np.percentile(a, 95)), "n": int(a.size)}


def _split(ph: dict[str, float]) -> dict[str, float]:
    t0 = ph.get("pointerdown", ph.get("change"))
    out = {"to_send_ms": ph["send"] - t0, "focus_moved": float("focusin" in ph or "focusout" in ph)}
    if "pointerup" in ph:
        out["press_ms"] = ph["pointerup"] - t0
    start = ph.get("click", ph.get("change"))
    if start is not None:
        out["handler_ms"] = ph["send"] - start
    return out


def summarize_trace(path: Path, names: list[str]) -> list[dict[str, Any]]:
    """Per traced action (in order, named by ``names``): main-thread ms by event name, event → send."""
    ev = json.loads(path.read_text())
    ev = ev["traceEvents"] if isinstance(ev, dict) else ev
    marks = sorted((e for e in ev if str(e.get("name", "")).startswith("ph:")), key=lambda e: e["ts"])
    if not marks:
        return []
    pid, tid = marks[0]["pid"], marks[0]["tid"]
    windows, t0 = [], None
    for m in marks:
        if m["name"] in ("ph:pointerdown", "ph:change") and t0 is None:
            t0 = m["ts"]
        elif m["name"] == "ph:send" and t0 is not None:
            windows.append((t0, m["ts"]))
            t0 = None
    xs = [e for e in ev if e.get("pid") == pid and e.get("tid") == tid and e.get("ph") == "X" and "dur" in e]
    out = []
    for name, (a, b) in zip(names, windows, strict=False):
        row: dict[str, Any] = {"action": name, "window_ms": (b - a) / 1000}
        for e in xs:
            if e["name"] in TRACED and e["ts"] < b and e["ts"] + e["dur"] > a:
                key = f"{e['name']}_ms"
                row[key] = row.get(key, 0.0) + (min(b, e["ts"] + e["dur"]) - max(a, e["ts"])) / 1000
                if e["name"] == "UpdateLayoutTree":
                    row["restyled_elements"] = row.get("restyled_elements", 0) + int(
                        e.get("args", {}).get("elementCount", 0)
                    )
        out.append(row)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="folder for browser_presend[-TAG].json")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=8, help="rounds of step, token, segment, All")
    ap.add_argument("--trace", type=Path, default=None, help="record a Chromium trace of one more round here")
    ap.add_argument("--tag", default="")
    ap.add_argument("--python", default=None, help="interpreter whose jupyter (and kernel) to run")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    raw: dict[str, list[dict[str, float]]] = {"step": [], "token": [], "segment": [], "all": []}
    traced: list[dict[str, Any]] = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
        root = Path(tmp)
        stores = make_stores("k2", root, args.steps)
        notebook(root / "k2.ipynb", stores["store"], stores["domains"])
        with jupyter_lab(root, python=args.python) as lab:
            browser = chromium(pw)
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            page.add_init_script(HOOK)
            page.set_default_timeout(WAIT_MS)
            run_notebook(page, lab, "k2.ipynb")
            page.wait_for_function(TITLE, arg="step 0 (")
            page.wait_for_selector(".jp-Notebook .jp-Cell:last-child .jp-InputArea-prompt:not(:has-text('*'))")
            page.set_default_timeout(120_000)
            rng = np.random.default_rng(1)

            def timed(kind: str, title: str, action: Any, names: list[str]) -> None:
                page.evaluate("() => { window.__ph = {}; }")
                action()
                page.wait_for_function(TITLE, arg=title)
                ph = page.evaluate("() => { const p = window.__ph; window.__ph = null; return p; }")
                if "send" in ph:
                    raw[kind].append(_split(ph))
                    names.append(kind)

            def round_(step: int, names: list[str]) -> None:
                timed("step", f"step {step} (", lambda: page.evaluate(SLIDER, step), names)
                toks = page.locator(".wb-transcript .wb-sel .wb-tok").filter(has_text=re.compile(r"\w"))
                tok = toks.nth(int(rng.integers(0, toks.count())))
                tok.scroll_into_view_if_needed()
                timed("token", f"token {tok.get_attribute('data-pos')} ", tok.click, names)
                heads = page.locator(".wb-transcript .wb-seg-head[data-span]")
                head = heads.nth(int(rng.integers(0, heads.count())))
                head.scroll_into_view_if_needed()
                timed("segment", "segment", head.click, names)
                timed("all", "whole transcript", page.locator(".wb-transcript .wb-all").click, names)

            for s in rng.permutation(args.steps)[: args.repeats].tolist():
                round_(s, [])
            if args.trace:
                args.trace.mkdir(parents=True, exist_ok=True)
                trace = args.trace / f"presend{'-' + args.tag if args.tag else ''}.json"
                names: list[str] = []
                browser.start_tracing(page=page, path=str(trace), categories=CATEGORIES)
                for s in rng.permutation(args.steps)[:2].tolist():
                    round_(s, names)
                browser.stop_tracing()
                traced = summarize_trace(trace, names)
            browser.close()
    result: dict[str, Any] = {
        "benchmark": "browser_presend",
        "code": args.tag or "current",
        "machine": {"cpus": os.cpu_count(), "load_before": load_before, "load_after": os.getloadavg()},
        "transcript_tokens": stores["tokens"],
        "actions": {
            kind: {
                part: _stats([r[part] for r in rows if part in r])
                for part in sorted({p for r in rows for p in r} - {"focus_moved"})
            }
            | {"focus_moved_share": float(np.mean([r["focus_moved"] for r in rows])) if rows else 0.0}
            for kind, rows in raw.items()
        },
        "trace": traced,
        "raw": raw,
    }
    out = args.out / (f"browser_presend-{args.tag}.json" if args.tag else "browser_presend.json")
    out.write_text(json.dumps(result, indent=2))
    for kind, parts in result["actions"].items():
        line = "  ".join(
            f"{p.removesuffix('_ms')} {v['median_ms']:.1f}" for p, v in parts.items() if isinstance(v, dict) and v["n"]
        )
        line += f"  focus moved {parts['focus_moved_share']:.0%}"
        print(f"  {kind:8s} {line}")
    for row in traced:
        print("  trace", {k: round(v, 1) if isinstance(v, float) else v for k, v in row.items()})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
