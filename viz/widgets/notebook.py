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


def run_cli(*args: str, how: str | None = None) -> bool:
    """Run a ``workbench`` command from a notebook, streaming its output; on failure show its error line.

    Returns True when the command succeeded. The command runs in a separate process (the same
    environment as the kernel), exactly as it would in a terminal.
    """
    import subprocess
    import sys

    exe = Path(sys.executable).parent / "workbench"
    cmd = [str(exe) if exe.exists() else "workbench", *args]
    print("$ workbench " + " ".join(args), flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.stdout.strip():
        print(proc.stdout.rstrip())
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        explain(f"`workbench {args[0]}` failed: {lines[-1] if lines else f'exit code {proc.returncode}'}", how)
        return False
    return True
