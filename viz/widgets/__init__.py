"""Jupyter widgets of the workbench (ipywidgets 8 / anywidget; plotly figures in Output widgets).

- ``TranscriptGraphWidget``: a tool-loop transcript next to the reasoning graph of the selected step,
  segment or token, with export.
- ``DomainComparisonWidget``: expert usage by domain, divergence per layer with intervals, most
  domain-specific experts.
- ``TokenPathWidget``: one token's experts and gate weights across all MoE layers.
- ``open_or_explain``: open a store in a notebook, or show what to run first instead of a traceback.
"""

from __future__ import annotations

from .domains import DomainComparisonWidget
from .notebook import open_or_explain
from .token_path import TokenPathWidget
from .transcript_graph import TranscriptGraphWidget
from .transcript_view import TranscriptView

__all__ = ["DomainComparisonWidget", "TokenPathWidget", "TranscriptGraphWidget", "TranscriptView", "open_or_explain"]
