"""Reasoning graphs as data files: GraphML, GEXF, node-link JSON, Cytoscape.js JSON, a circuit-tracer folder.

Every export keeps every node, edge and attribute. Attribute values are converted to what the
format holds: numpy scalars become Python scalars; lists and dicts in ``G.graph`` (``layers``,
``flow_totals``, ...) become JSON strings in GraphML/GEXF; NaN becomes ``null`` in JSON.
Files are written atomically: to a temporary file in the same folder, renamed when complete, so a
failed export never leaves a partial file behind.

Formats (``DATA_FORMATS``) and the names that select them:

==============  ======================================  ==========================================
format          file name                               opens in
==============  ======================================  ==========================================
graphml         ``*.graphml``                           Gephi, Cytoscape desktop, networkx, igraph
gexf            ``*.gexf`` (with viz positions/sizes)   Gephi
node-link       ``*.json``                              networkx ``node_link_graph``, d3
cytoscape       ``*.cyjs`` or ``*.cy.json``             Cytoscape.js / Cytoscape desktop
circuit-tracer  ``*.ct`` (a folder)                     circuit-tracer's frontend and local server
==============  ======================================  ==========================================

A circuit-tracer export is a folder (``workbench.graph.circuit_tracer_export``): the graph, the
frontend's ``graph-metadata.json`` and, given the store, a feature file per expert.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np

from workbench.errors import WorkbenchError
from workbench.graph.circuit_tracer_export import SUFFIX as CT_SUFFIX
from workbench.graph.circuit_tracer_export import write_circuit_tracer
from workbench.outputs import atomic_path  # the one atomic writer: checks the target, temp file + rename

DATA_FORMATS = ("graphml", "gexf", "node-link", "cytoscape", "circuit-tracer")
FIGURE_FORMATS = ("png", "svg", "pdf", "html")
SUFFIXES = {
    ".graphml": "graphml",
    ".gexf": "gexf",
    ".cyjs": "cytoscape",
    ".cy.json": "cytoscape",
    CT_SUFFIX: "circuit-tracer",
    ".json": "node-link",
    ".png": "png",
    ".svg": "svg",
    ".pdf": "pdf",
    ".html": "html",
}


class ExportError(WorkbenchError):
    """An export was asked for a format this workbench does not write, or could not be written."""


def export_format(path: str | Path, fmt: str | None = None) -> str:
    """The export format for ``path``: ``fmt`` if given, else from the file name (table in the module doc)."""
    name = Path(path).name.lower()
    if name.endswith(".ct.json") or (fmt == "circuit-tracer" and not name.endswith(CT_SUFFIX)):
        raise ExportError(
            f"cannot export {Path(path).name!r}: a circuit-tracer export is a folder; name it NAME{CT_SUFFIX}"
        )
    if fmt is not None:
        if fmt not in DATA_FORMATS + FIGURE_FORMATS:
            raise ExportError(f"unknown export format {fmt!r}; use one of {', '.join(DATA_FORMATS + FIGURE_FORMATS)}")
        return fmt
    for suffix in sorted(SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return SUFFIXES[suffix]
    shown = ", ".join(SUFFIXES)
    raise ExportError(f"cannot export {Path(path).name!r}: unsupported file type; use one of {shown}")


def _scalar(v: Any) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, bool | int | str):
        return v
    if isinstance(v, float):
        return v
    if v is None:
        return None
    return json.dumps(v, default=str)


def flat_copy(g: nx.DiGraph) -> nx.DiGraph:
    """A copy of ``g`` whose node, edge and graph attributes are all scalars (GraphML/GEXF-safe)."""
    h = nx.DiGraph()
    h.graph.update({k: _scalar(v) for k, v in g.graph.items() if v is not None})
    h.add_nodes_from((n, {k: _scalar(v) for k, v in d.items() if v is not None}) for n, d in g.nodes(data=True))
    h.add_edges_from((u, v, {k: _scalar(x) for k, x in d.items() if x is not None}) for u, v, d in g.edges(data=True))
    return h


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def node_link(g: nx.DiGraph) -> dict[str, Any]:
    """networkx node-link data (``edges`` key), JSON-safe; read back with ``nx.node_link_graph(d, edges="edges")``."""
    return _json_safe(nx.node_link_data(g, edges="edges"))


def cytoscape(g: nx.DiGraph) -> dict[str, Any]:
    """Cytoscape.js elements JSON (``nx.cytoscape_data``) with the layered positions of each node."""
    data = nx.cytoscape_data(g)
    data["data"] = dict(data["data"])  # networkx writes graph attributes as a list of pairs; Cytoscape wants an object
    for el in data["elements"]["nodes"]:
        d = g.nodes[el["data"]["id"]]
        if "x" in d and "y" in d:
            el["position"] = {"x": 100.0 * float(d["x"]), "y": -40.0 * float(d["y"])}
    return _json_safe(data)


def _with_gexf_viz(g: nx.DiGraph) -> nx.DiGraph:
    h = flat_copy(g)
    for _, d in h.nodes(data=True):
        if "x" in d and "y" in d:
            size = float(d.get("load", d.get("weight", 0.0)) or 0.0)
            d["viz"] = {"position": {"x": 100.0 * d["x"], "y": 40.0 * d["y"], "z": 0.0}, "size": 5.0 + 20.0 * size}
    return h


WRITERS: dict[str, Callable[[nx.DiGraph, Path], object]] = {
    "graphml": lambda g, p: nx.write_graphml(flat_copy(g), p),
    "gexf": lambda g, p: nx.write_gexf(_with_gexf_viz(g), p),
    "node-link": lambda g, p: p.write_text(json.dumps(node_link(g), ensure_ascii=False)),
    "cytoscape": lambda g, p: p.write_text(json.dumps(cytoscape(g), ensure_ascii=False)),
}


def write_graph_data(g: nx.DiGraph, path: str | Path, fmt: str | None = None) -> Path:
    """Write ``g`` to ``path`` in a data format (from the name, or ``fmt``), atomically. Returns the path."""
    kind = export_format(path, fmt)
    if kind not in DATA_FORMATS:
        raise ExportError(f"{kind!r} is a figure format; use workbench.viz.export_graph for figures")
    target = Path(path)
    if kind == "circuit-tracer":  # a folder; write_circuit_tracer(g, path, ds=..., selection=...) adds features
        return write_circuit_tracer(g, target)
    with atomic_path(target, flag="path") as tmp:
        WRITERS[kind](g, tmp)
    return target
