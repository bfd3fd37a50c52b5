"""Screenshot a circuit-tracer export folder in circuit-tracer's own frontend (docs/img/circuit-tracer.png).

    python tools/circuit_tracer_screenshot.py FOLDER.ct SLUG OUT.png

Serves FOLDER with ``circuit_tracer.frontend.local_server.serve`` and opens it in the system Chromium,
offline, with the JavaScript the test uses (``make viewer-js``; tests/viewers_helpers.py), waits until the
clicked expert's top contexts are shown, and saves a 1400 × 1000 screenshot.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from viewers_helpers import chromium_page, circuit_tracer_routes, free_port, node_modules


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("slug")
    ap.add_argument("out", type=Path)
    args = ap.parse_args()
    from circuit_tracer.frontend.local_server import serve

    port = free_port()
    server = serve(data_dir=str(args.folder), port=port)
    try:
        with chromium_page(circuit_tracer_routes(node_modules())) as (page, refused):
            page.goto(f"http://127.0.0.1:{port}/index.html?slug={args.slug}")
            page.wait_for_function("() => document.querySelectorAll('.feature-detail .ctx-container').length > 0")
            page.screenshot(path=str(args.out))
        if refused:
            raise SystemExit(f"the page asked for outside URLs: {refused}")
    finally:
        server.stop()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
