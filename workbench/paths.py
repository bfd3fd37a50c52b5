"""Where the bundled data lives: the mini K2, the prompt suite, the transcripts (and the notebooks).

The data is found in the first of these places that exists:

1. ``$WORKBENCH_DATA``, a folder laid out as the repository's ``data/`` (``models/k2-mini``,
   ``prompts/``, ``transcripts/``): data kept elsewhere, e.g. on a shared disk;
2. ``workbench/data`` inside the installed package: a non-editable install (``pip install .`` or a
   wheel) copies the repository's ``data/`` there (``package-dir`` in pyproject.toml);
3. ``data/`` of the source checkout this module is imported from (``pip install -e .``, ``make``).

When none holds a file asked for, ``bundled`` raises one ``WorkbenchError`` line that says where to
put the data. The notebooks ship with the repository only (``notebooks_dir``).
"""

from __future__ import annotations

import os
from pathlib import Path

from workbench.errors import WorkbenchError

DATA_ENV = "WORKBENCH_DATA"
PACKAGE_DATA = Path(__file__).resolve().parent / "data"
# The source checkout: the folder above the package, when it is this project's (holds pyproject.toml).
CHECKOUT = Path(__file__).resolve().parents[1]
# Bundled model names -> their folder under the data directory.
BUNDLED_MODELS = {"k2-mini": "models/k2-mini"}


def _is_checkout(root: Path) -> bool:
    return (root / "pyproject.toml").is_file() and (root / "workbench" / "paths.py").is_file()


def data_dir() -> Path:
    """The data directory by the rules of the module docstring (it may be missing: see ``bundled``)."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    if PACKAGE_DATA.is_dir():
        return PACKAGE_DATA
    return CHECKOUT / "data"


def bundled(relative: str) -> Path:
    """``data_dir() / relative`` (``"prompts/suite.jsonl"``, ``"models/k2-mini"``), which must exist.

    Raises
    ------
    WorkbenchError
        One line naming the path looked at and the two ways to provide the data.
    """
    root = data_dir()
    path = root / relative
    if not path.exists():
        where = f"${DATA_ENV}={root}" if os.environ.get(DATA_ENV) else str(root)
        raise WorkbenchError(
            f"the bundled {relative} is not in {where}: install the workbench from its repository "
            f"(pip install . or pip install -e .), or set {DATA_ENV} to a copy of the repository's data/ folder"
        )
    return path


def bundled_model(name: str) -> Path | None:
    """The folder of a bundled model (``"k2-mini"``), or None when ``name`` is not a bundled model's name."""
    relative = BUNDLED_MODELS.get(name)
    return None if relative is None else data_dir() / relative


def notebooks_dir() -> Path:
    """The bundled notebooks (source checkout only: they are not installed with the package)."""
    if not _is_checkout(CHECKOUT) or not (CHECKOUT / "notebooks").is_dir():
        raise WorkbenchError(
            "the notebooks ship with the source repository, not the installed package: clone the repository "
            "and run `workbench lab` (or `make lab`) there"
        )
    return CHECKOUT / "notebooks"
