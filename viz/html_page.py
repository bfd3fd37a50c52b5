"""Self-contained HTML pages of plotly figures: plotly.js inlined once, the figures' data kept compact.

Every HTML file the workbench writes (the comparison report, graph exports) is one file that opens by
``file://`` with no network: plotly.js is inlined once per page, and every figure on the page uses that
copy. To keep pages small (issue 14's goal: a report or graph page ≤ 2 MB, drawn in ≤ 2 s):

- **the smallest bundle that draws the page**: plotly.js's official *cartesian* partial bundle (1.5 MB,
  ``viz/assets``, refreshed by ``tools/vendor_plotly.py``) when every trace is one of its types and its
  version is the installed ``plotly`` package's plotly.js version; otherwise the package's full bundle
  (4.8 MB; e.g. a Sankey figure);
- **compact data**: numpy arrays travel as base64 typed arrays (plotly's ``bdata``), float64 ones as
  float32 (7 significant digits, more than any figure shows); floats in plain lists (edge coordinates)
  are rounded to 6 significant digits; the layout template, identical on every figure, is sent once, and
  so is any large typed array that several traces share.
"""

from __future__ import annotations

import functools
import gzip
import html
import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs, get_plotlyjs_version

ASSETS = Path(__file__).resolve().parent / "assets"
CARTESIAN_BUNDLE = ASSETS / "plotly-cartesian.min.js.gz"
# The trace types of plotly.js's cartesian partial bundle (its README lists them).
CARTESIAN_TRACES = frozenset(
    {"bar", "box", "contour", "heatmap", "histogram", "histogram2d", "histogram2dcontour", "image", "pie",
     "scatter", "scatterternary", "violin"}
)  # fmt: skip
PLOT_CONFIG = {"responsive": True, "displaylogo": False}
SHARED_MIN_CHARS = 2048  # typed arrays at least this long (base64 characters) are sent once per page
_VERSION = re.compile(r"plotly\.js \(cartesian(?: - minified)?\) v(\d+\.\d+\.\d+)")


@functools.lru_cache(maxsize=1)
def _cartesian_js() -> str | None:
    """The vendored cartesian bundle's text, or None if it is missing or not the installed plotly.js version."""
    try:
        js = gzip.decompress(CARTESIAN_BUNDLE.read_bytes()).decode("utf-8")
    except OSError:
        return None
    m = _VERSION.search(js[:400])
    return js if m is not None and m.group(1) == get_plotlyjs_version() else None


def trace_types(figs: Iterable[go.Figure]) -> set[str]:
    """The trace types of ``figs`` (``"scatter"`` for traces that leave ``type`` at its default)."""
    return {str(t.type or "scatter") for fig in figs for t in fig.data}


def plotly_js(figs: Iterable[go.Figure]) -> tuple[str, str]:
    """The smallest plotly.js able to draw every figure in ``figs``: ``(bundle name, script text)``."""
    cartesian = _cartesian_js()
    if cartesian is not None and trace_types(figs) <= CARTESIAN_TRACES:
        return "cartesian", cartesian
    return "full", get_plotlyjs()


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
    """A complete self-contained HTML page: ``body`` (HTML with the figures' divs in it, see below), plotly.js
    once, the figures drawn, then ``script``.

    ``body`` places each figure with the marker ``{{figure:ID}}``; figures whose marker is missing are
    appended at the end of the body.
    """
    divs, draw = figure_divs(figs)
    for (div_id, _), div in zip(figs, divs, strict=True):
        marker = "{{figure:" + div_id + "}}"
        body = body.replace(marker, div) if marker in body else body + div
    _, js = plotly_js(f for _, f in figs)
    return "\n".join(
        [
            "<!DOCTYPE html><html><head><meta charset='utf-8'>",
            "<meta name='viewport' content='width=device-width, initial-scale=1'>",
            f"<title>{html.escape(title)}</title><style>{css}</style>",
            f"<script>{js}</script></head><body>",
            body,
            f"<script>{draw}{script}</script>",
            "</body></html>",
        ]
    )
