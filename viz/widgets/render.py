"""Show a plotly figure inside a widget: an ``ipywidgets.Output`` holding plotly's JSON mime bundle.

Why not ``plotly.graph_objects.FigureWidget``: with plotly 7.1, anywidget 0.11 and JupyterLab 4.6
(the versions this project pins) a FigureWidget renders as an empty default plot in the browser,
neither its initial data nor its layout applied (found by tests/test_browser.py; plain plotly
figures render fine). Widgets therefore keep a ``go.Figure`` they update in place and re-show it
here after each change. plotly >= 6 encodes numpy arrays in that JSON as base64 typed arrays
(``{"dtype": "f8", "bdata": ...}``), so large arrays still travel as binary, not as number lists.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go
import plotly.io as pio

PLOTLY_MIME = "application/vnd.plotly.v1+json"


def figure_bundle(fig: go.Figure) -> dict[str, Any]:
    """The mime bundle JupyterLab's plotly renderer draws (what ``fig.show()`` sends)."""
    return {PLOTLY_MIME: json.loads(pio.to_json(fig, validate=False)), "text/plain": "<plotly figure>"}


def _in_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover
        return False
    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel")


def render_into(output: widgets.Output, fig: go.Figure) -> dict[str, Any]:
    """Replace what ``output`` shows with ``fig``; returns the bundle (built outside a kernel too)."""
    bundle = figure_bundle(fig)
    if _in_kernel():
        from IPython.display import display

        with output:
            output.clear_output(wait=True)
            display(bundle, raw=True)
    return bundle


def _encode(value: Any) -> Any:
    """Numpy arrays as plotly.js typed-array specs ``{"dtype", "bdata"[, "shape"]}``, recursively."""
    if isinstance(value, np.ndarray):
        arr = np.ascontiguousarray(value)
        if arr.dtype == np.int64:  # plotly.js typed arrays have no 64-bit integers
            arr = arr.astype(np.int32)
        spec: dict[str, Any] = {"dtype": arr.dtype.str.lstrip("<|="), "bdata": base64.b64encode(arr.tobytes()).decode()}
        if arr.ndim > 1:
            spec["shape"] = str(arr.shape)[1:-1]  # "rows, cols", as plotly.py writes it
        return spec
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    return value


def render_dict_into(output: widgets.Output, data: list[dict[str, Any]], layout: dict[str, Any]) -> dict[str, Any]:
    """Like ``render_into`` for a figure held as plain dicts with numpy arrays (no plotly validation)."""
    bundle = {PLOTLY_MIME: {"data": _encode(data), "layout": _encode(layout)}, "text/plain": "<plotly figure>"}
    if _in_kernel():
        from IPython.display import display

        with output:
            output.clear_output(wait=True)
            display(bundle, raw=True)
    return bundle
