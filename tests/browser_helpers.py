"""JupyterLab on 127.0.0.1 for the browser test and the browser-latency benchmark.

``jupyter_lab(root)`` starts ``jupyter lab`` (random port, random token; config, runtime, workspace
and settings dirs under ``root``; every cell kept in the DOM, no news toast, no PyPI queries) with
``root`` as its folder, waits on the server's own status endpoint, and stops it on exit.
``run_notebook`` opens a notebook in a Playwright page and runs all its cells as a user would;
``chromium(pw)`` launches the system Chromium headless with the flags both use; ``require_browser()``
skips a test without them; ``widget_notebook`` writes a one-cell notebook showing a transcript widget.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = os.environ.get("BROWSER_PATH", "/usr/bin/chromium")
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
STARTUP_S = 300
# every wait of a browser test on a real event; lower it ($WORKBENCH_BROWSER_WAIT_MS) to see a failing test fail sooner
LONG_MS = int(os.environ.get("WORKBENCH_BROWSER_WAIT_MS", "600000"))


def require_browser() -> None:
    """Skip the calling test (or fixture) when there is no Chromium at ``CHROMIUM`` or no Playwright."""
    import pytest

    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (install Debian's chromium package: make chromium)")
    pytest.importorskip("playwright.sync_api")


def widget_notebook(path: Path, store: Path, more: tuple[str, ...] = ()) -> Path:
    """Write ``path``: a notebook whose first cell shows ``TranscriptGraphWidget`` over ``store`` (as ``w``),
    then a cell per source in ``more``."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "from workbench import open_store\n"
            "from workbench.viz.widgets import TranscriptGraphWidget\n"
            f"w = TranscriptGraphWidget(open_store({str(store)!r}))\nw"
        ),
        *(nbformat.v4.new_code_cell(src) for src in more),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def chromium(pw: Any) -> Any:
    """The system Chromium (``$BROWSER_PATH``), headless, launched by a Playwright instance ``pw``."""
    return pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def jupyter_lab(root: Path, python: str | None = None) -> Iterator[dict[str, str]]:
    """A running JupyterLab serving ``root``; yields ``{"url", "token", "root"}``.

    ``python``: the interpreter whose ``jupyter`` to run (default: this one); its kernel runs that
    environment's code.
    """
    import secrets

    settings = root / "settings"
    for plugin, values in {
        "notebook-extension/tracker": {"windowingMode": "none"},
        "apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    }.items():
        f = settings / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps(values))
    port, token = _free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(root / "cfg"),
        "JUPYTER_RUNTIME_DIR": str(root / "rt"),
        "JUPYTERLAB_WORKSPACES_DIR": str(root / "ws"),
        "JUPYTERLAB_SETTINGS_DIR": str(settings),
        "IPYTHONDIR": str(root / "ipy"),
    }
    cmd = [
        str(Path(python or sys.executable).parent / "jupyter"),
        "lab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--LabApp.expose_app_in_browser=True",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",  # no PyPI queries from the extension manager
    ]
    if os.geteuid() == 0:  # containers often run tests as root; Jupyter refuses that without the flag
        cmd.append("--allow-root")
    log = (root / "lab.log").open("w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=10) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"JupyterLab did not start: {(root / 'lab.log').read_text()[-2000:]}")
            time.sleep(0.5)  # poll the server's own readiness endpoint
        yield {"url": url, "token": token, "root": str(root)}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def run_notebook(page: Any, lab: dict[str, str], name: str) -> None:
    """Open ``name`` in JupyterLab, wait for its kernel, and run every cell as a user would (Run All)."""
    # reset: a fresh workspace, so notebooks opened by earlier tests are not open (hidden) in this page
    page.goto(f"{lab['url']}/lab/tree/{name}?reset&token={lab['token']}", timeout=LONG_MS)
    page.wait_for_function("window.jupyterapp && document.querySelector('.jp-Notebook')", timeout=LONG_MS)
    page.wait_for_selector(".jp-Notebook .jp-Cell")
    page.wait_for_function(
        "(() => { const w = window.jupyterapp.shell.currentWidget;"
        " return w && w.sessionContext && w.sessionContext.session"
        " && w.sessionContext.session.kernel && w.sessionContext.session.kernel.status === 'idle'; })()"
    )
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")


def artifacts_dir(tmp_path: Path) -> Path:
    """Where a browser test writes its screenshots: ``$WORKBENCH_ARTIFACTS``, else its temp folder (made)."""
    folder = Path(os.environ.get("WORKBENCH_ARTIFACTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextmanager
def lab_page(pw: Any, failure_shot: Path, *, console_errors: bool = False) -> Iterator[tuple[Any, list[str]]]:
    """A page of the system Chromium as the browser tests use it; yields ``(page, errors)``.

    The page is 1500 × 1100 CSS px and every wait on it may take up to ``LONG_MS`` (they all wait on real
    events, so a loaded machine only makes a test slower). ``errors`` collects the page's uncaught
    errors (and, with ``console_errors``, its ``console.error`` lines). If the block raises, a full-page
    screenshot goes to ``failure_shot`` and the errors are printed; the browser is closed on the way out.
    """
    browser = chromium(pw)
    try:
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        page.set_default_timeout(LONG_MS)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        if console_errors:
            page.on("console", lambda m: errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
        try:
            yield page, errors
        except Exception:
            try:
                page.screenshot(path=str(failure_shot), full_page=True)
            finally:
                print("page errors:", errors)
            raise
    finally:
        browser.close()
