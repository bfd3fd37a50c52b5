"""``workbench lab``: JupyterLab on the bundled notebooks (the same as `make lab`)."""

from __future__ import annotations

import os
import shutil
from typing import Annotated

import typer

from workbench.errors import WorkbenchError
from workbench.paths import notebooks_dir


def lab(
    port: Annotated[int, typer.Option(help="Port to serve on (127.0.0.1).")] = 8888,
) -> None:
    """Start JupyterLab on notebooks/ (needs the lab extra).

    Example:

      workbench lab --port 8888
    """
    notebooks = notebooks_dir()
    jupyter = shutil.which("jupyter")
    if jupyter is None:
        raise WorkbenchError("JupyterLab is not installed: pip install 'k2-routing-workbench[lab]' (or run `make lab`)")
    os.execv(jupyter, [jupyter, "lab", f"--notebook-dir={notebooks}", f"--port={port}", "--ip=127.0.0.1"])


def register(app: typer.Typer) -> None:
    app.command(help=lab.__doc__)(lab)
