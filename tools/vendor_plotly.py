"""Rebuild viz/assets/: the partial plotly.js bundles the workbench's HTML pages inline, gzipped.

Every HTML page the workbench writes (the comparison report, graph exports, the overview) inlines plotly.js
once, so it opens offline. The full bundle the Python ``plotly`` package ships is 4.8 MB; the workbench
draws only four trace types (scatter, bar, heatmap, sankey), so it vendors small bundles built from
plotly.js's own sources, each plotly.js's ``lib/core`` (which holds scatter) plus the traces in ``BUNDLES``
registered on it, the way plotly.js's ``npm run custom-bundle`` and its ``lib/index-*.js`` partial bundles
do. ``workbench.viz.html_page`` inlines the smallest one that has every trace type of a page, and the full
bundle otherwise. After upgrading ``plotly``, run

    python tools/vendor_plotly.py        # or: make plotly-bundles

It installs ``plotly.js`` at the plotly.js version of the installed ``plotly`` package (plus ``esbuild`` and
the ``buffer`` shim plotly.js's build uses) with npm into a temporary folder, bundles each entry with
esbuild (IIFE, global ``Plotly``, minified, ES2016 as plotly.js's own build; the maplibre CSS that
plotly.js's registry pulls in for map traces is left out, since no bundle here has a map trace), prepends
plotly.js's licence banner, and writes ``plotly-NAME.min.js.gz`` (gzip level 9, no name, mtime 0:
byte-identical on a rebuild), ``plotly-bundles.json`` (version, traces and sizes of each bundle) and
plotly.js's MIT licence.
"""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import tempfile
from pathlib import Path

from plotly.offline import get_plotlyjs_version

ASSETS = Path(__file__).resolve().parents[1] / "viz" / "assets"
ESBUILD = "esbuild@0.28.2"
BUFFER = "buffer@6.0.3"
# name -> trace types registered on plotly.js's core (which always has scatter)
BUNDLES: dict[str, tuple[str, ...]] = {
    "bar-heatmap": ("bar", "heatmap"),  # the report, graph pages
    "sankey": ("sankey",),  # the overview
}
MANIFEST = "plotly-bundles.json"


def _entry(traces: tuple[str, ...]) -> str:
    lines = ["var Plotly = require('plotly.js/lib/core');", "Plotly.register(["]
    lines += [f"  require('plotly.js/lib/{t}')," for t in traces]
    return "\n".join([*lines, "]);", "module.exports = Plotly;", ""])


def _banner(pkg: Path, name: str, version: str) -> str:
    """plotly.js's own licence banner (from its dist bundle, for the copyright years), named like its
    partial bundles: ``plotly.js (NAME - minified) vX``."""
    head = (pkg / "dist" / "plotly.min.js").read_text(encoding="utf-8")[:400]
    m = re.search(r"/\*\*.*?\*/", head, re.S)
    if m is None or f"v{version}" not in m.group(0):
        raise SystemExit(f"plotly.js {version}: no licence banner at the top of dist/plotly.min.js")
    return m.group(0).replace("* plotly.js", f"* plotly.js ({name} - minified)", 1) + "\n"


def main() -> None:
    version = get_plotlyjs_version()
    manifest: dict[str, object] = {"plotly_js": version, "bundles": {}}
    with tempfile.TemporaryDirectory(prefix="plotly-bundles-") as tmp:
        work = Path(tmp)
        (work / "package.json").write_text('{"private": true}\n')
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--ignore-scripts", f"plotly.js@{version}", ESBUILD, BUFFER],
            cwd=work, check=True, capture_output=True,
        )  # fmt: skip
        pkg = work / "node_modules" / "plotly.js"
        ASSETS.mkdir(exist_ok=True)
        for name, traces in BUNDLES.items():
            (work / f"{name}.js").write_text(_entry(traces))
            out = work / f"{name}.min.js"
            subprocess.run(
                ["npx", "--no-install", "esbuild", f"{name}.js", "--bundle", "--format=iife", "--global-name=Plotly",
                 "--minify", "--target=es2016", "--loader:.css=empty", "--define:global=window",
                 "--define:define.amd=false", "--define:process.env.NODE_DEBUG=false",
                 "--footer:js=window.Plotly = Plotly;", "--log-level=error", f"--outfile={out.name}"],
                cwd=work, check=True, capture_output=True,
            )  # fmt: skip
            js = (_banner(pkg, name, version) + out.read_text(encoding="utf-8")).encode("utf-8")
            packed = gzip.compress(js, compresslevel=9, mtime=0)
            (ASSETS / f"plotly-{name}.min.js.gz").write_bytes(packed)
            manifest["bundles"][name] = {  # type: ignore[index]
                "file": f"plotly-{name}.min.js.gz",
                "traces": sorted({"scatter", *traces}),
                "bytes": len(js),
                "gzip_bytes": len(packed),
            }
            listed = ", ".join(sorted({"scatter", *traces}))
            print(f"plotly-{name}: {listed}: {len(js):,} bytes, {len(packed):,} gzipped")
        (ASSETS / "plotly-LICENSE.txt").write_bytes((pkg / "LICENSE").read_bytes())
    (ASSETS / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {ASSETS} (plotly.js {version})")


if __name__ == "__main__":
    main()
