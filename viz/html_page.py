"""Self-contained HTML pages of plotly figures: plotly.js inlined once, everything large sent gzipped.

Every HTML file the workbench writes (the comparison report, graph exports, the overview) is one file that
opens by ``file://`` with no network: plotly.js is inlined once per page, and every figure on the page uses
that copy. To keep pages small and quick to open (the goal: a K2-shaped report, graph or overview page
≤ 2 MB, drawn in ≤ 2 s):

- **the smallest bundle that draws the page**: partial plotly.js bundles built from plotly.js's own
  sources at the installed ``plotly`` package's plotly.js version (``viz/assets``, listed in
  ``plotly-bundles.json`` with their trace types, rebuilt by ``tools/vendor_plotly.py``): ``bar-heatmap``
  (scatter, bar, heatmap: 1.18 MB) for the report and graph pages, ``sankey`` (scatter, sankey: 1.28 MB)
  for the overview; the package's full bundle (4.8 MB) for any other trace type or another version;
- **packed scripts** (``packed_scripts``): the bundle and the figures' data travel gzipped and base64
  encoded in ``<script type="text/x-gzip-base64">`` blocks (plotly.js: 1.18 MB → 0.54 MB); a small loader
  decompresses them with the browser's native ``DecompressionStream`` and runs them in order, then the
  page's own script. Nothing is lost: ``unpack`` gives back the page with every script inline;
- **compact data**: numpy arrays travel as base64 typed arrays (plotly's ``bdata``), float64 ones as
  float32 (7 significant digits, more than any figure shows); floats in plain lists (edge coordinates)
  are rounded to 6 significant digits; the layout template, identical on every figure, is sent once, and
  so is any large typed array that several traces share.
"""

from __future__ import annotations

import base64
import functools
import gzip
import html
import json
import re
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs, get_plotlyjs_version

ASSETS = Path(__file__).resolve().parent / "assets"
MANIFEST = ASSETS / "plotly-bundles.json"
PLOT_CONFIG = {"responsive": True, "displaylogo": False}
SHARED_MIN_CHARS = 2048  # typed arrays at least this long (base64 characters) are sent once per page
PLAIN_SCRIPT_MAX = 32_768  # a page's own script up to this many characters stays plain (readable); longer is packed
PACKED_TYPE = "text/x-gzip-base64"
_BANNER = re.compile(r"/\*\*.*?\*/", re.S)


@dataclass(frozen=True)
class Bundle:
    """A plotly.js bundle: its name, the trace types it draws (None: all) and its text gzipped."""

    name: str
    traces: frozenset[str] | None
    gzipped: bytes

    @property
    def js(self) -> str:
        return gzip.decompress(self.gzipped).decode("utf-8")

    def notice(self) -> str:
        """plotly.js's licence banner (MIT: it travels with every copy), in plain text for the page."""
        head = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(self.gzipped, 600)  # the first 600 bytes
        m = _BANNER.search(head.decode("utf-8", "replace"))
        banner = m.group(0) if m else f"/**\n* plotly.js v{get_plotlyjs_version()}\n*/"
        traces = ", ".join(sorted(self.traces or ()))
        what = "full bundle" if self.traces is None else f"partial bundle {self.name!r}: {traces}"
        lines = banner.splitlines()
        first = f"* plotly.js v{get_plotlyjs_version()} ({what}), inlined below gzipped and base64-encoded"
        return "\n".join([lines[0], first, *lines[2:]])


@functools.lru_cache(maxsize=1)
def vendored_bundles() -> tuple[Bundle, ...]:
    """The partial bundles of ``viz/assets`` built for the installed plotly.js version, smallest first
    (none when the manifest is missing or names another version)."""
    try:
        manifest = json.loads(MANIFEST.read_text())
    except (OSError, ValueError):
        return ()
    if manifest.get("plotly_js") != get_plotlyjs_version():
        return ()
    found = []
    for name, info in manifest.get("bundles", {}).items():
        try:
            found.append(Bundle(name, frozenset(info["traces"]), (ASSETS / info["file"]).read_bytes()))
        except (OSError, KeyError):
            continue
    return tuple(sorted(found, key=lambda b: len(b.gzipped)))


@functools.lru_cache(maxsize=1)
def full_bundle() -> Bundle:
    """The ``plotly`` package's full plotly.js, gzipped once per process."""
    return Bundle("full", None, gzip.compress(get_plotlyjs().encode("utf-8"), compresslevel=9, mtime=0))


def trace_types(figs: Iterable[go.Figure]) -> set[str]:
    """The trace types of ``figs`` (``"scatter"`` for traces that leave ``type`` at its default)."""
    return {str(t.type or "scatter") for fig in figs for t in fig.data}


def plotly_bundle(figs: Iterable[go.Figure]) -> Bundle:
    """The smallest plotly.js bundle able to draw every figure in ``figs``."""
    needed = trace_types(figs)
    for bundle in vendored_bundles():
        if bundle.traces is not None and needed <= bundle.traces:
            return bundle
    return full_bundle()


def plotly_js(figs: Iterable[go.Figure]) -> tuple[str, str]:
    """``(bundle name, script text)`` of ``plotly_bundle(figs)``."""
    bundle = plotly_bundle(figs)
    return bundle.name, bundle.js


# Runs every packed block in document order (decompressed in parallel), then resolves
# window.workbenchReady; a browser without DecompressionStream gets one line saying so.
_LOADER = (
    """(() => {
  const blocks = [...document.querySelectorAll('script[type="PACKED_TYPE"]')];
  if (!('DecompressionStream' in window)) {
    document.body.insertAdjacentHTML('afterbegin', '<p style="color:#b00">This page needs a browser with ' +
      'DecompressionStream (Chrome/Edge 80+, Firefox 113+, Safari 16.4+) to draw its figures.</p>');
    window.workbenchReady = Promise.reject(new Error('no DecompressionStream'));
    return;
  }
  const unpack = el => {
    const bin = atob(el.textContent.trim());
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return new Response(new Blob([bytes]).stream().pipeThrough(new DecompressionStream('gzip'))).text();
  };
  const texts = blocks.map(unpack);
  window.workbenchReady = (async () => {
    for (const text of texts) {
      const s = document.createElement('script');
      s.textContent = await text;
      document.body.appendChild(s);
    }
  })();
})();"""
).replace("PACKED_TYPE", PACKED_TYPE)


def packed_scripts(bundle: Bundle, scripts: Sequence[str], after: str = "") -> str:
    """HTML that runs ``bundle`` then each of ``scripts`` (JavaScript source) in order, all sent gzipped,
    then ``after`` (plain, inside ``workbenchReady.then``: a page's own small script).

    Goes at the end of ``<body>``. The scripts run as classic scripts in global scope, exactly as inline
    ``<script>`` elements would, after the document is parsed.
    """
    blocks = [bundle.gzipped, *(gzip.compress(s.encode("utf-8"), compresslevel=9, mtime=0) for s in scripts)]
    parts = [f'<script type="{PACKED_TYPE}">{base64.b64encode(b).decode("ascii")}</script>' for b in blocks]
    tail = f"\nwindow.workbenchReady.then(() => {{\n{after}\n}});" if after else ""
    return "\n".join([*parts, f"<script>\n{bundle.notice()}\n{_LOADER}{tail}</script>"])


_PACKED = re.compile(rf'<script type="{re.escape(PACKED_TYPE)}">([^<]*)</script>')


def unpack(page_html: str) -> str:
    """``page_html`` with each packed block replaced by its script, inline (``</`` escaped): readable and
    searchable (what a test or a reader checks); its loader then finds nothing left to unpack."""

    def inline(m: re.Match[str]) -> str:
        text = gzip.decompress(base64.b64decode(m.group(1))).decode("utf-8")
        return "<script>" + text.replace("</", "<\\/") + "</script>"

    return _PACKED.sub(inline, page_html)


def _round_list(values: list[Any]) -> list[Any]:
    return [float(f"{v:.6g}") if isinstance(v, float) else v for v in values]


def compact(obj: Any) -> Any:
    """``obj`` (a figure's plotly JSON tree) with float64 arrays as float32 and floats in lists rounded.

    Integer and float32 arrays are kept as they are; arrays of objects (strings) become lists.
    """
    if isinstance(obj, dict):
        return {k: compact(v) for k, v in obj.items()}
    if isinstance(obj, tuple | list):
        items = [compact(v) for v in obj]
        return _round_list(items) if any(isinstance(v, float) for v in items) else items
    if isinstance(obj, np.ndarray):
        if obj.dtype == np.float64:
            return obj.astype(np.float32)
        if obj.dtype.kind in "OUS":
            return compact(obj.tolist())
    return obj


def figure_json(fig: go.Figure) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(figure without its template, template)``: the figure (data, layout, frames if any) as compact plotly
    JSON, its template apart."""
    tree = fig.to_plotly_json()
    layout = dict(tree.get("layout", {}))
    template = layout.pop("template", {})
    body = {"data": compact(tree.get("data", [])), "layout": compact(layout)}
    if tree.get("frames"):
        body["frames"] = compact(tree["frames"])
    return body, template


def _js(obj: Any) -> str:
    """JSON for inside a <script>: numpy arrays as plotly typed arrays; '</' cannot close the script."""
    from plotly.io.json import to_json_plotly

    return to_json_plotly(obj).replace("</", "<\\/")


_BDATA = re.compile(rf'"bdata":"([^"]{{{SHARED_MIN_CHARS},}})"')


def _shared_arrays(texts: list[str]) -> tuple[list[str], list[str]]:
    """Typed arrays (base64 ``bdata`` strings of at least ``SHARED_MIN_CHARS``) that occur more than once in
    the figures' JSON, sent once: returns ``(shared, texts)`` with ``shared`` the JS string literals and each
    repeat in ``texts`` replaced by ``B[i]`` (a string, which plotly cannot alter). E.g. the expert ids of the
    report's heatmap cells, the same in every group's panel."""
    counts: dict[str, int] = {}
    for text in texts:
        for m in _BDATA.finditer(text):
            counts[m.group(1)] = counts.get(m.group(1), 0) + 1
    repeated = [b for b, n in counts.items() if n > 1]
    index = {b: i for i, b in enumerate(repeated)}
    if not repeated:
        return [], texts

    def ref(m: re.Match[str]) -> str:
        i = index.get(m.group(1))
        return m.group(0) if i is None else f'"bdata":B[{i}]'

    return [f'"{b}"' for b in repeated], [_BDATA.sub(ref, text) for text in texts]


def figure_divs(
    figs: Sequence[tuple[str, go.Figure]], *, config: dict[str, Any] | None = None
) -> tuple[list[str], str]:
    """``(divs, script)`` for figures given as ``(div id, figure)``: one div each, one script that draws them.

    The script defines ``window.workbenchFigures`` (``{div id: Plotly.newPlot promise}``) so a page's own
    code (and a test) can wait for every figure. Each template is sent once and shared by the figures, and
    so is each large typed array that occurs more than once (``_shared_arrays``).
    """
    templates: list[str] = []
    bodies = []
    for div_id, fig in figs:
        body, template = figure_json(fig)
        t = _js(template)
        if t not in templates:
            templates.append(t)
        bodies.append((div_id, _js(body), templates.index(t)))
    shared, texts = _shared_arrays([b for _, b, _ in bodies])
    calls = [
        f"{json.dumps(div_id)}: draw({json.dumps(div_id)}, {text}, T[{t}])"
        for (div_id, _, t), text in zip(bodies, texts, strict=True)
    ]
    divs = [
        f'<div id="{html.escape(div_id)}" class="plotly-graph-div" style="width:100%;'
        f'height:{int(fig.layout.height or 450)}px"></div>'
        for div_id, fig in figs
    ]
    script = (
        f"const T = [{', '.join(templates)}];\n"
        f"const B = [{', '.join(shared)}];\n"
        f"const CONFIG = {json.dumps(config or PLOT_CONFIG)};\n"
        "function draw(id, fig, template) {\n"
        "  fig.layout.template = template;\n"
        "  return Plotly.newPlot(id, {data: fig.data, layout: fig.layout, frames: fig.frames || [], config: CONFIG});\n"
        "}\n"
        f"window.workbenchFigures = {{{', '.join(calls)}}};\n"
    )
    return divs, script


def page(title: str, body: str, figs: Sequence[tuple[str, go.Figure]], *, css: str = "", script: str = "") -> str:
    """A complete self-contained HTML page: ``body`` (HTML with the figures' divs in it, see below), then
    plotly.js and the figures' data (packed, ``packed_scripts``), drawn once the page is parsed, then
    ``script`` (after the figures' ``Plotly.newPlot`` calls have started: ``window.workbenchFigures``;
    plain when it is at most ``PLAIN_SCRIPT_MAX`` characters, packed as well when longer).

    ``body`` places each figure with the marker ``{{figure:ID}}``; figures whose marker is missing are
    appended at the end of the body.
    """
    divs, draw = figure_divs(figs)
    for (div_id, _), div in zip(figs, divs, strict=True):
        marker = "{{figure:" + div_id + "}}"
        body = body.replace(marker, div) if marker in body else body + div
    bundle = plotly_bundle(f for _, f in figs)
    big = len(script) > PLAIN_SCRIPT_MAX  # e.g. a large graph's expert cards: packed, run right after the figures
    return "\n".join(
        [
            "<!DOCTYPE html><html><head><meta charset='utf-8'>",
            "<meta name='viewport' content='width=device-width, initial-scale=1'>",
            f"<title>{html.escape(title)}</title><style>{css}</style></head><body>",
            body,
            packed_scripts(bundle, [draw, script] if big else [draw], after="" if big else script),
            "</body></html>",
        ]
    )
