"""``export_graph``: write a reasoning graph to any supported file, choosing the format by extension.

Figures: ``.html`` (interactive plotly, self-contained: works offline, plotly.js inlined once and the data
kept compact by ``workbench.viz.html_page``; a graph's page adds an expert card per node, opened by a
click: ``workbench.viz.graph_html``), ``.png``/``.svg``/``.pdf``
(static, rendered by kaleido 1.x in a headless Chromium). Data: ``.graphml``, ``.gexf``, ``.json``
(node-link), ``.cyjs``/``.cy.json`` (Cytoscape.js), ``NAME.ct`` (a circuit-tracer folder); see
``workbench.graph.export``. Every file is written to a temporary name in the same folder and
renamed when complete, so a failed export leaves nothing behind; a target that cannot or must not be
written (read-only, under /proc, inside a routing store) is refused first (``workbench.outputs``).

Kaleido finds its browser through choreographer, which honours the ``BROWSER_PATH`` environment
variable and otherwise searches ``PATH`` for chrome/chromium. If ``BROWSER_PATH`` is unset we point
it at the system Chromium (``/usr/bin/chromium``, as the Makefile's ``chromium`` target installs);
nothing is ever downloaded.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import networkx as nx
import plotly.graph_objects as go
import xarray as xr
from workbench.viz.file_meta import set_pdf_info, set_svg_title
from workbench.viz.graph_figure import graph_figure
from workbench.viz.graph_html import expert_cards, graph_page
from workbench.viz.html_page import page
from workbench.viz.text import figure_title

from workbench.graph.export import (
    DATA_FORMATS,
    FIGURE_FORMATS,
    ExportError,
    export_format,
    write_graph_data,
)
from workbench.outputs import atomic_path
from workbench.store.select import Selection

EXPORT_FORMATS = FIGURE_FORMATS + DATA_FORMATS
SYSTEM_CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")


def system_browser() -> str | None:
    """The browser kaleido will use: ``$BROWSER_PATH``, else a system Chromium/Chrome, else None."""
    if os.environ.get("BROWSER_PATH"):
        return os.environ["BROWSER_PATH"]
    for p in SYSTEM_CHROMIUM:
        if os.access(p, os.X_OK):
            return p
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@contextlib.contextmanager
def static_export_session() -> Iterator[None]:
    """Keep one headless Chromium open (kaleido's sync server) for all static exports in the block.

    Without it every PNG/SVG/PDF starts and stops its own browser (seconds each); the CLI and the demo
    wrap their exports in this. A missing browser is reported by the export itself, not here.
    """
    import kaleido

    browser = system_browser()
    if browser is None:
        yield
        return
    if not os.environ.get("BROWSER_PATH"):
        os.environ["BROWSER_PATH"] = browser
    try:
        kaleido.start_sync_server(silence_warnings=True)
    except Exception:  # no usable browser: exports fall back to one-shot runs and report their own error
        yield
        return
    try:
        yield
    finally:
        kaleido.stop_sync_server(silence_warnings=True)


def export_figure(
    fig: go.Figure, path: str | Path, fmt: str | None = None, *, scale: float = 2.0,
    width: int | None = None, height: int | None = None,
) -> Path:  # fmt: skip
    """Write a plotly figure as html/png/svg/pdf (format from the name, or ``fmt``), atomically.

    Static images are ``width`` × ``height`` CSS pixels (None: the figure's layout size, else plotly's
    default 700 × 500) and, for PNG, ``scale`` image pixels per CSS pixel."""
    kind = export_format(path, fmt)
    if kind not in FIGURE_FORMATS:
        raise ExportError(
            f"{Path(path).name!r}: {kind!r} is not a figure format; use one of {', '.join(FIGURE_FORMATS)}"
        )
    target = Path(path)
    with atomic_path(target, flag="path") as tmp:
        if kind == "html":
            tmp.write_text(page(figure_title(fig)[0], "", [("figure", fig)]), encoding="utf-8")
            return target
        browser = system_browser()
        if browser is None:
            raise ExportError(
                "static export needs Chromium: install it (`make chromium`, or apt-get install chromium) "
                "or set BROWSER_PATH to a Chrome/Chromium binary"
            )
        if not os.environ.get("BROWSER_PATH"):
            os.environ["BROWSER_PATH"] = browser
        _write_image(fig, tmp, kind, scale, target.name, width, height)
        _write_metadata(fig, tmp, kind, target.name)
    return target


def _write_metadata(fig: go.Figure, tmp: Path, kind: str, name: str) -> None:
    """The figure's title (not kaleido's page title, "Kaleido-fier") in the PDF info / SVG ``<title>``."""
    title, description = figure_title(fig)
    try:
        if kind == "pdf":
            set_pdf_info(tmp, title, description)
        elif kind == "svg":
            set_svg_title(tmp, title, description)
    except ValueError as err:  # a file layout kaleido has not written so far: say so, write nothing
        raise ExportError(f"static export to {name}: could not set its title metadata ({err})") from err


def export_graph(
    g: nx.DiGraph,
    path: str | Path,
    *,
    fmt: str | None = None,
    title: str | None = None,
    store: xr.Dataset | None = None,
    selection: Selection | None = None,
) -> Path:
    """Write ``g`` to ``path``: a figure (html/png/svg/pdf) or a data file, chosen by extension or ``fmt``.

    An HTML page shows an expert card when a node is clicked (``workbench.viz.graph_html``); given the
    routing ``store`` the graph came from (and the ``selection`` it was built on), each card also lists
    the tokens special to the expert by lift and its top contexts. Other formats ignore both.

    Examples
    --------
    >>> export_graph(g, "math.svg"); export_graph(g, "math.graphml"); export_graph(g, "math.ct")  # doctest: +SKIP
    >>> export_graph(g, "math.html", store=ds, selection=parse_where("domain=math"))  # doctest: +SKIP
    """
    kind = export_format(path, fmt)
    if kind in DATA_FORMATS:
        return write_graph_data(g, path, kind)
    fig = graph_figure(g, title=title)
    if kind != "html":
        return export_figure(fig, path, kind)
    cards = expert_cards(g, store, selection)
    target = Path(path)
    with atomic_path(target, flag="path") as tmp:
        tmp.write_text(graph_page(fig, cards), encoding="utf-8")
    return target


# kaleido 1.x asks for the page's JavaScript context right after navigating its tab; on a loaded machine it
# can get the blank page's context first, and the render then fails with "kaleido_scopes is not defined"
# although nothing is wrong with the figure (seen once in a full `make test` beside three CPU burners). A
# fresh browser does not repeat it, so that one failure is retried, a bounded number of times, after
# restarting an open export session's browser; every other error is reported at once.
_PAGE_NOT_READY = "kaleido_scopes is not defined"
_ATTEMPTS = 3


def _write_image(
    fig: go.Figure, tmp: Path, kind: str, scale: float, name: str, width: int | None = None, height: int | None = None
) -> None:
    import kaleido

    for attempt in range(1, _ATTEMPTS + 1):
        try:
            with warnings.catch_warnings():  # with a session open, kaleido says it ignores per-call options
                warnings.filterwarnings("ignore", message="The kopts argument is ignored")
                fig.write_image(tmp, format=kind, scale=scale if kind == "png" else 1.0, width=width, height=height)
            return
        except Exception as err:  # kaleido/choreographer raise many types; report one line
            if _PAGE_NOT_READY in str(err) and attempt < _ATTEMPTS:
                _restart_open_session(kaleido)
                continue
            raise ExportError(f"static export to {name} failed in kaleido ({type(err).__name__}: {err})") from err


def _restart_open_session(kaleido: Any) -> None:
    """A new browser for ``static_export_session``'s server, if one is open (else each export starts its own)."""
    server = kaleido._global_server  # kaleido's sync-server singleton; it has no public "is it running?"
    if server.is_running():
        with contextlib.suppress(Exception):
            kaleido.stop_sync_server(silence_warnings=True)
            kaleido.start_sync_server(silence_warnings=True)
