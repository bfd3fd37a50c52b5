"""Notebook helpers: open a store, or say in the cell what to run first (never a traceback)."""

from __future__ import annotations

import html
from pathlib import Path

import xarray as xr

from workbench.errors import WorkbenchError


def explain(message: str, how: str | None = None) -> None:
    """Display a short boxed message in the current cell (HTML; plain text outside Jupyter)."""
    from IPython.display import HTML, display

    body = f"<b>{html.escape(message)}</b>"
    if how:
        body += f"<br>{html.escape(how)}"
    display(HTML(f"<div style='border-left:4px solid #d62728;padding:6px 10px;background:#fff5f5'>{body}</div>"))


def open_or_explain(path: str | Path | None, how: str) -> xr.Dataset | None:
    """Open the routing store at ``path``; when it is missing or unreadable, show why and return None.

    Parameters
    ----------
    path : str | Path | None
        Store path or URL (None: no store chosen).
    how : str
        What the user should do to get one, e.g. "run 01_quickstart.ipynb first, or
        `workbench record --model k2-mini --prompts data/prompts/suite.jsonl --out suite.zarr`".
    """
    if path is None or (("://" not in str(path)) and not Path(path).exists()):
        explain(f"No routing store at {path}.", how)
        return None
    try:
        from workbench import open_store

        return open_store(str(path))
    except WorkbenchError as err:
        explain(f"Cannot open the routing store at {path}: {err}", how)
        return None
