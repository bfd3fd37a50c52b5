"""A plain page with plotly.js and ``viz/widgets/plot_image.js`` for the image-export test and benchmark.

``plot_page(pw)`` opens headless Chromium on a page holding the plotly.js the widgets load (plotly.py's
bundle) and the widget's image exporter; ``plot(page, fig)`` draws a figure there the way the graph pane
does (``Plotly.newPlot`` into a div of a fixed width, responsive); ``image(page, way, ...)`` makes one
image (``live``: the widget's ``plotImage`` at the shown size, ``toimage``: plotly.js's ``toImage``) and
``compare(page, a, b, ...)`` compares two images pixel by pixel in the page (no imaging library needed).
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from browser_helpers import chromium

PLOT_IMAGE_JS = Path(__file__).resolve().parents[1] / "viz" / "widgets" / "plot_image.js"

# One image of the div #plot; returns {ms, b64, method, width, height}.
IMAGE = """async ([way, format, width, height, scale]) => {
  const gd = document.getElementById('plot');
  const fl = gd._fullLayout;
  const t0 = performance.now();
  let r;
  if (way === 'live') {
    r = await plotImage(Plotly, gd, {format, width, height, scale});
  } else {
    const url = await Plotly.toImage(gd, {format, width: width || fl.width, height: height || fl.height, scale});
    r = {bytes: wbDataUrlBytes(url), method: 'toImage', width: width || fl.width, height: height || fl.height};
  }
  const ms = performance.now() - t0;
  let s = '';
  const n = 0x8000;
  for (let i = 0; i < r.bytes.length; i += n) s += String.fromCharCode.apply(null, r.bytes.subarray(i, i + n));
  return {ms, b64: btoa(s), method: r.method, width: r.width, height: r.height, failed: r.failed || ''};
}"""

# Two images (base64 PNG or SVG) drawn on white at w × h and compared: pixels whose largest channel
# difference exceeds tol, mean and max absolute channel difference, and a diff PNG (red = differs).
COMPARE = """async ([a, b, mime, w, h, tol]) => {
  const load = async (b64) => {
    const img = new Image();
    img.src = 'data:' + mime + ';base64,' + b64;
    await img.decode();
    const c = document.createElement('canvas'); c.width = w; c.height = h;
    const ctx = c.getContext('2d');
    ctx.fillStyle = '#fff'; ctx.fillRect(0, 0, w, h);
    ctx.drawImage(img, 0, 0, w, h);
    return ctx.getImageData(0, 0, w, h);
  };
  const [A, B] = [await load(a), await load(b)];
  const out = new ImageData(w, h);
  let differ = 0, sum = 0, max = 0;
  for (let i = 0; i < A.data.length; i += 4) {
    let m = 0;
    for (let k = 0; k < 3; k++) { const d = Math.abs(A.data[i + k] - B.data[i + k]); sum += d; if (d > m) m = d; }
    if (m > max) max = m;
    const bad = m > tol;
    if (bad) differ++;
    const g = 128 + (A.data[i] + A.data[i + 1] + A.data[i + 2]) / 6;
    out.data[i] = bad ? 255 : g; out.data[i + 1] = bad ? 0 : g; out.data[i + 2] = bad ? 0 : g; out.data[i + 3] = 255;
  }
  const c = document.createElement('canvas'); c.width = w; c.height = h;
  c.getContext('2d').putImageData(out, 0, 0);
  return {differ_px: differ, px: w * h, mean_abs: sum / (w * h * 3), max_abs: max,
          diff_png: c.toDataURL('image/png').split(',')[1]};
}"""


def plot_page(pw: Any, *, width: float = 820, base_href: str | None = None) -> tuple[Any, Any]:
    """(browser, page): plotly.js and plot_image.js loaded, an empty ``#plot`` div ``width`` px wide.

    ``base_href``: a ``<base href>`` in the page's head (as some notebook front ends have), under which
    plotly writes its clip paths as ``url('PAGE#id')``.
    """
    from plotly.offline import get_plotlyjs

    browser = chromium(pw)
    page = browser.new_page(viewport={"width": 1500, "height": 1100})
    base = f"<base href='{base_href}'>" if base_href else ""
    page.set_content(
        f"<html><head>{base}</head><body style='margin:0'><div id='plot' style='width:{width}px'></div></body></html>"
    )
    page.add_script_tag(content=get_plotlyjs())
    page.add_script_tag(content=PLOT_IMAGE_JS.read_text(encoding="utf-8"))
    return browser, page


def plot(page: Any, fig: Any) -> tuple[float, float]:
    """Draw the plotly figure ``fig`` in ``#plot`` as the graph pane does; its (width, height) in CSS px."""
    import plotly.io as pio

    return tuple(
        page.evaluate(
            "async (fig) => { fig = JSON.parse(fig); const gd = document.getElementById('plot');"
            " await Plotly.react(gd, fig.data, fig.layout, {displaylogo: false, responsive: true});"
            " return [gd._fullLayout.width, gd._fullLayout.height]; }",
            pio.to_json(fig),
        )
    )


def image(
    page: Any, way: str, fmt: str, *, width: int | None = None, height: int | None = None, scale: float = 1.0
) -> dict[str, Any]:
    """One image of ``#plot``: ``{"data": bytes, "ms", "method", "width", "height", "failed"}``."""
    r = page.evaluate(IMAGE, [way, fmt, width, height, scale])
    r["data"] = base64.b64decode(r.pop("b64"))
    return r


def compare(page: Any, a: bytes, b: bytes, fmt: str, width: int, height: int, tol: int = 32) -> dict[str, Any]:
    """Pixel comparison of two images of format ``fmt`` drawn at ``width`` × ``height``; see ``COMPARE``.
    ``diff_png`` holds the diff image's bytes."""
    mime = "image/png" if fmt == "png" else "image/svg+xml"
    r = page.evaluate(COMPARE, [base64.b64encode(a).decode(), base64.b64encode(b).decode(), mime, width, height, tol])
    r["diff_png"] = base64.b64decode(r["diff_png"])
    return r


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:8]
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
