"""Refresh viz/assets/plotly-cartesian.min.js.gz: plotly.js's official cartesian bundle, gzipped.

The HTML the workbench writes (the comparison report, graph exports) inlines plotly.js once. The full
bundle the Python ``plotly`` package ships is 4.8 MB; the cartesian partial bundle (bar, box, contour,
heatmap, histogram*, image, pie, scatter, scatterternary, violin: every trace type our report and graph
figures use) is 1.5 MB. ``workbench.viz.html_page`` uses it when its version equals the plotly.js
version of the installed ``plotly`` package, and falls back to the full bundle otherwise. After
upgrading ``plotly``, run

    python tools/vendor_plotly.py

It asks npm for ``plotly.js-cartesian-dist-min`` at the installed plotly.js version (``npm pack``),
and writes the bundle gzipped (deterministic: no name, mtime 0) with its MIT licence beside it.
"""

from __future__ import annotations

import gzip
import subprocess
import tarfile
import tempfile
from pathlib import Path

from plotly.offline import get_plotlyjs_version

ASSETS = Path(__file__).resolve().parents[1] / "viz" / "assets"
PACKAGE = "plotly.js-cartesian-dist-min"


def main() -> None:
    version = get_plotlyjs_version()
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["npm", "pack", f"{PACKAGE}@{version}"], cwd=tmp, check=True, capture_output=True)
        (tgz,) = Path(tmp).glob("*.tgz")
        with tarfile.open(tgz) as tar:
            js = tar.extractfile("package/plotly-cartesian.min.js").read()  # type: ignore[union-attr]
            licence = tar.extractfile("package/LICENSE").read()  # type: ignore[union-attr]
    ASSETS.mkdir(exist_ok=True)
    (ASSETS / "plotly-cartesian.min.js.gz").write_bytes(gzip.compress(js, compresslevel=9, mtime=0))
    (ASSETS / "plotly-LICENSE.txt").write_bytes(licence)
    print(f"wrote {ASSETS / 'plotly-cartesian.min.js.gz'} ({PACKAGE} {version}, {len(js):,} bytes unpacked)")


if __name__ == "__main__":
    main()
