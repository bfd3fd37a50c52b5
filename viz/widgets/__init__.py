"""Jupyter widgets of the workbench (ipywidgets 8 / anywidget; plotly figures in Output widgets).

- ``TranscriptGraphWidget``: a tool-loop transcript next to the reasoning graph of the selected step,
  segment or token, with export.
- ``DomainComparisonWidget``: expert usage by domain, divergence per layer with intervals, most
  domain-specific experts.
- ``TokenPathWidget``: one token's experts and gate weights across all MoE layers.
- ``require_store``: open the store a notebook needs, or stop with one line saying what to run first.
"""

from __future__ import annotations

from .domains import DomainComparisonWidget
from .notebook import require_store
from .token_path import TokenPathWidget
from .transcript_graph import TranscriptGraphWidget
from .transcript_view import TranscriptView

__all__ = ["DomainComparisonWidget", "TokenPathWidget", "TranscriptGraphWidget", "TranscriptView", "require_store"]
