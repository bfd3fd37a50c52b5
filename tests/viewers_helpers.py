"""Opening our exports in the viewers people use, in headless Chromium, offline.

The JavaScript those viewers load from CDNs comes from the npm registry instead, installed by
``make viewer-js`` (pinned versions, into ``$VIEWER_JS``, default ``.cache/viewer-js``) and handed to the
page by Playwright's ``page.route``; every other request that leaves 127.0.0.1 is refused and recorded,
so a test sees it if a viewer needs something we do not serve.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("BROWSER_PATH", "/usr/bin/chromium")
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
WAIT_MS = 300_000  # generous: a loaded machine makes the test slower, never failing


def node_modules() -> Path:
    """The npm packages ``make viewer-js`` installed; skips the test when they are missing."""
    root = Path(os.environ.get("VIEWER_JS", REPO / ".cache" / "viewer-js")) / "node_modules"
    if not (root / "d3" / "package.json").is_file():
        pytest.skip(f"no npm packages at {root}: run `make viewer-js`")
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def chromium_page(routes: dict[str, Callable[[], tuple[str, bytes]]]) -> Iterator[tuple[Any, list[str]]]:
    """A Playwright page in the system Chromium; ``routes`` maps exact URLs to (content type, body).

    Yields ``(page, refused)``: ``refused`` collects every other non-local URL the page asked for.
    """
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (install Debian's chromium package: make chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    refused: list[str] = []

    def handle(route: Any) -> None:
        url = route.request.url
        if url in routes:
            ctype, body = routes[url]()
            route.fulfill(status=200, content_type=ctype, body=body)
        elif url.startswith(("http://127.0.0.1", "http://localhost")):
            route.continue_()
        else:
            refused.append(url)
            route.abort()

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(WAIT_MS)
            page.route("**/*", handle)
            yield page, refused
        finally:
            browser.close()


def js_file(*paths: Path, extra: str = "") -> Callable[[], tuple[str, bytes]]:
    """A route answering with the concatenation of JavaScript files (and ``extra`` code after them)."""

    def body() -> tuple[str, bytes]:
        text = "\n;\n".join(p.read_text(encoding="utf-8") for p in paths) + "\n;\n" + extra
        return "application/javascript", text.encode()

    return body


CDN = "https://transformer-circuits.pub/2025/attribution-graphs/static_js/lib/"
# npm's d3-jetpack 2.1.0 has d3.drawAxis(c) but not the c.drawAxis(sel) that transformer-circuits' own
# jetpack build adds to d3.conventions' result and the frontend calls: the same few lines, added here.
DRAW_AXIS_SHIM = """
(function () {
  var conventions = d3.conventions;
  d3.conventions = function (c) {
    c = conventions(c);
    c.drawAxis = function (sel) {
      sel = sel || c.svg;
      var x = sel.append('g').attr('class', 'x axis').attr('transform', 'translate(0,' + c.height + ')').call(c.xAxis);
      var y = sel.append('g').attr('class', 'y axis').call(c.yAxis);
      return {xAxisSel: x, yAxisSel: y};
    };
    return c;
  };
})();
"""


def circuit_tracer_routes(nm: Path) -> dict[str, Callable[[], tuple[str, bytes]]]:
    """What circuit-tracer's index.html loads from CDNs, answered from the npm packages in ``nm``."""
    return {
        CDN + "hotserver-client-ws.js": lambda: ("application/javascript", b""),  # live reload for its authors
        CDN + "d3.js": js_file(nm / "d3" / "dist" / "d3.js"),
        CDN + "jetpack_2024-07-20.js": js_file(
            nm / "d3-collection" / "dist" / "d3-collection.js",
            nm / "d3-jetpack" / "build" / "d3-jetpack.js",
            extra=DRAW_AXIS_SHIM,
        ),
        CDN + "npy_v0.js": lambda: ("application/javascript", b"window.npyjs = {};"),  # .npy files: never asked
        "https://unpkg.com/dagre@0.8.5/dist/dagre.min.js": js_file(nm / "dagre" / "dist" / "dagre.min.js"),
        "https://unpkg.com/pako@2.1.0/dist/pako.min.js": js_file(nm / "pako" / "dist" / "pako.min.js"),
    }
