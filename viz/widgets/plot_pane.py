"""A plotly figure as an anywidget: binary arrays in, ``Plotly.react`` in the browser, clicks back out.

Why this instead of an ``Output`` holding plotly's mime bundle: a mime bundle is a whole new figure
per click (the page replaces the plot, re-lays it out and re-binds every handler) and it cannot send
a click back to the kernel. Here the figure is one synced trait; numpy arrays inside it travel as raw
binary buffers (ipywidgets takes ``bytes`` out of nested state), the browser turns them into typed
arrays and calls ``Plotly.react`` on the same div (plotly diffs and redraws in place), and a click on
a point comes back as a custom message ``{"type": "click", "trace": name, "point": index}``.
Clicks in quick succession each come back with the point under the mouse, and plotly's own double
click (any two clicks within 500 ms, which autoranged fixed axes) is off; a double click at one place
resets a zoom to the figure's axes (``plot_pane.js``, docs/widgets.md).

Why not plotly's ``FigureWidget``: with the pinned plotly 7.1 / anywidget 0.11 / JupyterLab 4.6 it
renders an empty default plot (docs/widgets.md).

plotly.js itself: the browser uses ``window.Plotly`` when JupyterLab's plotly extension has loaded it;
otherwise the widget asks the kernel once per page (``need-plotly``) and gets plotly.py's bundled
``plotly.min.js`` as one binary message, so nothing is fetched from a CDN.

Static images: ``request_image`` asks the browser for the figure as PNG or SVG and calls back with the
bytes, so an export from a live widget needs no second browser. At the size shown (the default) the
browser composes the image from the layers it has drawn (``plot_image.js``: plotly's SVG layers and
WebGL canvases, merged as plotly.js's own exporter merges them) instead of plotting the figure again
off screen with ``Plotly.toImage`` (what kaleido runs too), which it still uses for another size or when
composing fails: 0.1-0.2 s instead of 0.8-1.2 s at K2's shape (``benchmarks/bench_image_export.py``).
``live`` is True once a browser drew the pane; ``last_image`` says how the last image was made.

After each redraw the pane's element gets ``data-rev`` = the figure's revision and dispatches a
``wb-rendered`` DOM event (``detail.rev``); tests and ``benchmarks/bench_browser_latency.py`` wait on it.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable
from typing import Any

import anywidget
import numpy as np
import traitlets as t

_HERE = pathlib.Path(__file__).parent

ClickHandler = Callable[[str, tuple[int, ...]], None]  # (trace name, point index: (i,) or heatmap (row, col))


def encode_arrays(value: Any) -> Any:
    """Numpy arrays (at any depth) as ``{"dtype", "shape", "buffer": bytes}``; everything else as is.

    ``dtype`` is a JS typed-array name (``Float64Array``, ``Int32Array`` ...); 64-bit integers become
    int32 (plotly.js has no 64-bit typed arrays); string arrays become plain lists.
    """
    if isinstance(value, np.ndarray):
        arr = value
        if arr.dtype.kind in "USO":
            return arr.tolist()
        if arr.dtype == np.int64 or arr.dtype == np.uint64:
            arr = arr.astype(np.int32)
        if arr.dtype == np.float16 or arr.dtype == np.bool_:
            arr = arr.astype(np.float32 if arr.dtype == np.float16 else np.uint8)
        arr = np.ascontiguousarray(arr)
        names = {"f8": "Float64Array", "f4": "Float32Array", "i4": "Int32Array", "i2": "Int16Array",
                 "i1": "Int8Array", "u1": "Uint8Array", "u2": "Uint16Array", "u4": "Uint32Array"}  # fmt: skip
        return {"dtype": names[arr.dtype.str.lstrip("<|=")], "shape": list(arr.shape), "buffer": arr.tobytes()}
    if isinstance(value, dict):
        return {k: encode_arrays(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        if all(isinstance(v, str) for v in value):  # hover texts: thousands of strings, nothing to encode
            return list(value)
        return [encode_arrays(v) for v in value]
    return value


class PlotPane(anywidget.AnyWidget):
    """One plotly figure, redrawn in place; see the module docstring.

    Traits
    ------
    figure : dict
        ``{"data": [trace, ...], "layout": {...}, "rev": int}`` with numpy arrays as binary buffers.
    height : int
        Pixel height of the plot.
    pane : str
        A name for the pane (the element's ``data-pane``), e.g. ``graph``; tests and benchmarks find it by it.
    """

    # plot_image.js (the image exporter: plain functions) ahead of the module that uses them
    _esm = (_HERE / "plot_image.js").read_text(encoding="utf-8") + (_HERE / "plot_pane.js").read_text(encoding="utf-8")

    figure = t.Dict(default_value={}).tag(sync=True)
    height = t.Int(400).tag(sync=True)
    pane = t.Unicode("").tag(sync=True)

    def __init__(self, *, height: int = 400, pane: str = "") -> None:
        super().__init__(height=height, pane=pane)
        self._rev = 0
        self._click_handlers: list[ClickHandler] = []
        self._trace_names: list[str] = []
        self._image_requests: dict[int, Callable[[bytes | None, str], None]] = {}
        self._image_ids = 0
        self.live = False  # a browser has drawn this pane (it can answer image requests)
        # how the browser made the last image: {"method": "live" | "toImage", "width", "height" (CSS px),
        # "scale", "ms" (in the browser), "failed" (why composing failed, if it did)}
        self.last_image: dict[str, Any] = {}
        self.on_msg(self._on_message)

    def show(self, data: list[dict[str, Any]], layout: dict[str, Any]) -> None:
        """Replace the figure (one state message; arrays as binary buffers)."""
        self._rev += 1
        self._trace_names = [str(tr.get("name") or i) for i, tr in enumerate(data)]
        self.figure = {"data": encode_arrays(data), "layout": encode_arrays(layout), "rev": self._rev}

    @property
    def revision(self) -> int:
        """How many figures were shown (the browser's ``data-rev`` after it drew the last one)."""
        return self._rev

    def show_figure(self, fig: Any) -> None:
        """Replace the figure with a ``plotly.graph_objects.Figure`` (its arrays still travel as binary)."""
        d = fig.to_dict()
        self.show(d.get("data", []), d.get("layout", {}))

    def on_click(self, handler: ClickHandler) -> None:
        """Call ``handler(trace_name, point)`` when a point is clicked: ``point`` is ``(index,)`` for a
        scatter point and ``(row, col)`` for a heatmap cell."""
        self._click_handlers.append(handler)

    def click(self, trace: str, *point: int) -> None:
        """Act as if ``point`` of trace ``trace`` (its ``name``) was clicked in the browser."""
        for handler in self._click_handlers:
            handler(trace, tuple(int(i) for i in point))

    def request_image(
        self, fmt: str, width: int | None, height: int | None, done: Callable[[bytes | None, str], None],
        *, scale: float = 1.0,
    ) -> None:  # fmt: skip
        """Ask the browser for the figure as ``fmt`` (png or svg), ``width`` × ``height`` CSS pixels (None:
        the size shown, the fast path), ``scale`` image pixels per CSS pixel (PNG; an SVG's width and
        height attributes). ``done(data, error)`` is called with the file's bytes (or None and the
        browser's error) when the browser answers."""
        self._image_ids += 1
        self._image_requests[self._image_ids] = done
        size = {"width": None if width is None else int(width), "height": None if height is None else int(height)}
        self.send({"type": "image", "id": self._image_ids, "format": fmt, **size, "scale": float(scale)})

    def _on_message(self, _widget: Any, content: dict[str, Any], buffers: list[bytes]) -> None:
        kind = content.get("type")
        if kind == "rendered":
            self.live = True
        elif kind == "image":
            done = self._image_requests.pop(int(content.get("id", -1)), None)
            keys = ("method", "width", "height", "scale", "ms", "failed")
            self.last_image = {k: content[k] for k in keys if content.get(k) not in (None, "")}
            if done is not None:
                done(bytes(buffers[0]) if buffers else None, str(content.get("error", "")))
        elif kind == "need-plotly":
            from plotly.offline import get_plotlyjs

            self.send({"type": "plotly-js"}, buffers=[get_plotlyjs().encode("utf-8")])
        elif kind == "click":
            trace = content.get("trace")
            name = self._trace_names[trace] if isinstance(trace, int) and 0 <= trace < len(self._trace_names) else ""
            point = content.get("point", [])
            point = point if isinstance(point, list) else [point]
            if name and point and all(isinstance(i, int) for i in point):
                self.click(name, *point)
