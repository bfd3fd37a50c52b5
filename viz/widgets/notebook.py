"""Notebook helpers: open the store a notebook needs, run a ``workbench`` command with live output.

Both stop a notebook the way a user expects from "Run All": with a :class:`WorkbenchError` whose
one-line message says what is wrong and what to run first (IPython shows that line instead of a
traceback, see ``WorkbenchError._render_traceback_``), so the cells below need no guards.
"""

from __future__ import annotations

import codecs
import html
import subprocess
import sys
from pathlib import Path

import xarray as xr

from workbench.errors import StoreError, WorkbenchError


def explain(message: str, how: str | None = None) -> None:
    """Display a short boxed message in the current cell (HTML; plain text outside Jupyter)."""
    from IPython.display import HTML, display

    body = f"<b>{html.escape(message)}</b>"
    if how:
        body += f"<br>{html.escape(how)}"
    display(HTML(f"<div style='border-left:4px solid #d62728;padding:6px 10px;background:#fff5f5'>{body}</div>"))


def require_store(path: str | Path, how: str) -> xr.Dataset:
    """Open the routing store a notebook needs, or stop with one line saying what to run to get it.

    Parameters
    ----------
    path : str | Path
        Store path or fsspec URL.
    how : str
        What the user should do to get the store, e.g. "Run 01_quickstart.ipynb first, or
        `workbench record --model k2-mini --prompts data/prompts/suite.jsonl --out suite.zarr`".

    Raises
    ------
    StoreError
        The store is missing or unreadable; the message names the path and ends with ``how``.
    """
    if "://" not in str(path) and not Path(path).exists():
        raise StoreError(f"No routing store at {path}. {how}")
    from workbench import open_store

    try:
        return open_store(str(path))
    except WorkbenchError as err:
        raise StoreError(f"Cannot open the routing store at {path}: {err}. {how}") from err


def run_cli(*args: str, how: str | None = None) -> None:
    """Run a ``workbench`` command from a notebook, printing its output as it comes.

    The command runs in a separate process (the same environment as the kernel), exactly as in a
    terminal. Its stderr (progress bars, warnings) is merged into the printed output, which streams.

    Raises
    ------
    WorkbenchError
        The command failed; the message holds its last output line (its ``error: ...``) and ``how``.
    """
    exe = Path(sys.executable).parent / "workbench"
    cmd = [str(exe) if exe.exists() else "workbench", *args]
    print("$ workbench " + " ".join(args), flush=True)
    decode = codecs.getincrementaldecoder("utf-8")(errors="replace").decode
    tail = ""
    out, err, no_input = subprocess.PIPE, subprocess.STDOUT, subprocess.DEVNULL
    with subprocess.Popen(cmd, stdout=out, stderr=err, stdin=no_input, bufsize=0) as proc:
        assert proc.stdout is not None
        # unbuffered: each read returns what has come so far; Jupyter renders "\r" progress updates in place
        while chunk := proc.stdout.read(1 << 16):
            text = decode(chunk)
            sys.stdout.write(text)
            sys.stdout.flush()
            tail = (tail + text)[-4000:]
        code = proc.wait()
    if code != 0:
        lines = [ln.strip() for ln in tail.replace("\r", "\n").splitlines() if ln.strip()]
        last = lines[-1] if lines else f"exit code {code}"
        raise WorkbenchError(f"`workbench {args[0]}` failed: {last}" + (f". {how}" if how else ""))
