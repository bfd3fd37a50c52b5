"""``workbench lab``: JupyterLab on the bundled notebooks (the same as `make lab`).

JupyterLab is looked for in the workbench's own environment first (``python -m jupyterlab`` with this
interpreter, so an un-activated virtual environment works), then on ``PATH``. Arguments the command does
not know go to Jupyter as they are. Jupyter refuses to start as root without ``--allow-root``; as root it
is added, and said.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path
from typing import Annotated

import typer

from workbench.errors import WorkbenchError
from workbench.paths import notebooks_dir

EXAMPLE = """
Examples:

  workbench lab --port 8888

  workbench lab --no-browser --ServerApp.token=secret   # anything else goes to Jupyter as it is
"""


def jupyter_lab_command() -> list[str]:
    """How to start JupyterLab: this interpreter's ``-m jupyterlab``, its ``bin/jupyter-lab``, or ``PATH``'s."""
    if importlib.util.find_spec("jupyterlab") is not None:
        return [sys.executable, "-m", "jupyterlab"]
    here = Path(sys.executable).parent / "jupyter-lab"
    if here.is_file() and os.access(here, os.X_OK):
        return [str(here)]
    found = shutil.which("jupyter-lab")
    if found:
        return [found]
    found = shutil.which("jupyter")
    if found:
        return [found, "lab"]
    raise WorkbenchError(
        f"JupyterLab is not installed in this environment ({sys.executable}) or on PATH: "
        "pip install 'k2-routing-workbench[lab]' (or run `make lab`)"
    )


def lab(
    ctx: typer.Context,
    port: Annotated[int, typer.Option(help="Port to serve on (127.0.0.1).")] = 8888,
) -> None:
    """Start JupyterLab on notebooks/ (needs the lab extra); other arguments go to Jupyter."""
    extra = list(ctx.args)
    cmd = [*jupyter_lab_command(), f"--notebook-dir={notebooks_dir()}", f"--port={port}", "--ip=127.0.0.1", *extra]
    if hasattr(os, "geteuid") and os.geteuid() == 0 and "--allow-root" not in extra:
        cmd.append("--allow-root")
        typer.echo("running as root: added --allow-root (Jupyter refuses root without it)", err=True)
    sys.stderr.flush()
    sys.stdout.flush()
    os.execv(cmd[0], cmd)


def register(app: typer.Typer) -> None:
    app.command(
        help=(lab.__doc__ or "") + "\n" + EXAMPLE,
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )(lab)
