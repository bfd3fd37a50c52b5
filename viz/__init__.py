"""Figures, widgets and exports of the workbench (imported as ``workbench.viz``).

``graph_figure`` is imported eagerly: the function shares its name with its module
(viz/graph_figure.py), and a lazy import would leave the module, not the function, under that name.
"""

from __future__ import annotations

from workbench.viz.export import EXPORT_FORMATS, export_figure, export_graph
from workbench.viz.graph_figure import graph_figure
from workbench.viz.report import render_html, write_report

__all__ = ["EXPORT_FORMATS", "export_figure", "export_graph", "graph_figure", "render_html", "write_report"]
