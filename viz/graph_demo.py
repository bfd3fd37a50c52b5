"""The graphs ``workbench demo`` writes: one reasoning graph per domain and a math-minus-code difference.

It lives with the figures (``workbench.viz``), not in ``workbench.graph``: it draws, and the graph
layer never imports the views above it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import networkx as nx
import xarray as xr
from workbench.viz.export import export_graph, static_export_session

from workbench.graph.build import reasoning_graph
from workbench.graph.circuit_tracer_export import write_circuit_tracer
from workbench.graph.communities import set_communities
from workbench.graph.difference import difference_of_selections
from workbench.graph.export import ExportError
from workbench.graph.layout import layered_layout
from workbench.store import schema as S
from workbench.store.select import Selection

log = logging.getLogger(__name__)

DEMO_FORMATS = ("html", "svg", "graphml", "ct")  # "ct": a circuit-tracer data folder per graph


def _pick_pair(domains: list[str]) -> tuple[str, str] | None:
    if "math" in domains and "code" in domains:
        return "math", "code"
    return (domains[0], domains[1]) if len(domains) >= 2 else None


def graph_for_demo(
    ds: xr.Dataset,
    out_dir: str | Path,
    *,
    top_edges: int = 12,
    formats: tuple[str, ...] = DEMO_FORMATS,
) -> list[Path]:
    """Write ``graph-<domain>.<fmt>`` for every domain of ``ds`` and ``graph-<a>-minus-<b>.<fmt>``.

    The difference is math − code when the store has both domains, else the first two domains.
    Each graph keeps the ``top_edges`` heaviest edges per layer pair. Static figures (png/svg/pdf)
    need Chromium; without one they are skipped with a warning, and the other files are still
    written. Returns the paths written, in order.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    domains = sorted({str(d) for d in ds[S.SEQUENCE_DOMAIN].values})
    graphs = []
    for d in domains:
        sel = Selection(domains=(d,))
        graphs.append((f"graph-{d}", reasoning_graph(ds, sel, top_edges=top_edges), sel))
    pair = _pick_pair(domains)
    if pair is not None:
        a, b = pair
        diff = difference_of_selections(ds, Selection(domains=(a,)), Selection(domains=(b,)), top_edges=top_edges)
        graphs.append((f"graph-{a}-minus-{b}", diff, Selection(domains=(a, b))))
    written: list[Path] = []
    static = any(f in ("png", "svg", "pdf") for f in formats)
    with static_export_session() if static else contextlib.nullcontext():
        written += _write_all(ds, graphs, out, formats, functools.partial(_export, ds=ds))
    return written


def _export(g: nx.DiGraph, path: Path, *, ds: xr.Dataset, **extra: Any) -> Path:
    """``export_graph``, but a circuit-tracer folder gets the store: feature files for its node panel."""
    if path.name.endswith(".ct"):
        return write_circuit_tracer(g, path, ds=ds)
    return export_graph(g, path, **extra)


def _write_all(
    ds: xr.Dataset,
    graphs: list[tuple[str, nx.DiGraph, Selection]],
    out: Path,
    formats: tuple[str, ...],
    export_graph: Callable[..., Path],
) -> list[Path]:
    """Write each graph in each format; HTML pages get expert cards over the graph's own selection."""
    written: list[Path] = []
    for stem, g, sel in graphs:
        set_communities(g)
        layered_layout(g)
        for fmt in formats:
            path = out / f"{stem}.{fmt}"
            try:
                extra = {"store": ds, "selection": sel} if fmt == "html" else {}
                written.append(export_graph(g, path, **extra))
            except ExportError as err:
                if fmt in ("png", "svg", "pdf"):
                    log.warning("skipped %s: %s", path.name, err)
                    continue
                raise
    return written
