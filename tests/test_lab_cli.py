"""``workbench lab`` finds JupyterLab in its own environment (venv not activated) and passes arguments through.

``--version`` is one of Jupyter's own flags: passed through, Jupyter prints its version and exits, so the
real command runs end to end without serving anything.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("jupyterlab")


def _lab(*args: str) -> subprocess.CompletedProcess:
    workbench = Path(sys.executable).parent / "workbench"
    env = {"HOME": os.environ.get("HOME", "/tmp"), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}  # not activated
    return subprocess.run([str(workbench), "lab", *args], capture_output=True, text=True, timeout=300, env=env)


def test_lab_runs_its_own_jupyter_with_arguments_passed_through():
    r = _lab("--port", "8899", "--version")
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(r"\d+\.\d+\.\S+", r.stdout.strip())
    assert "not installed" not in r.stderr
    if os.geteuid() == 0:
        assert "running as root: added --allow-root" in r.stderr
    else:
        assert "--allow-root" not in r.stderr


def test_lab_does_not_add_allow_root_twice():
    r = _lab("--allow-root", "--version")
    assert r.returncode == 0, r.stderr
    assert "added --allow-root" not in r.stderr
