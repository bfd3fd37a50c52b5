"""A real browser: JupyterLab on 127.0.0.1 with a token, the tool-loop notebook run in headless Chromium.

Starts ``jupyter lab`` (random port, random token, config/runtime/workspace dirs in a temp folder),
opens notebooks/04_tool_loops.ipynb with its parameters set (papermill-style injected cell) to a
synthetic 12-step transcript store, runs all cells,
checks that the transcript + graph widget renders, clicks a segment header and waits until the
graph shows that segment. Saves a screenshot before and after the click (and the click-to-redraw
latency as JSON) in $WORKBENCH_ARTIFACTS or the test's temp folder.

Chromium is the system one (/usr/bin/chromium or $BROWSER_PATH); nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from notebook_harness import inject_parameters
from widgets_helpers import transcript_store

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "04_tool_loops.ipynb"
CHROMIUM = os.environ.get("BROWSER_PATH", "/usr/bin/chromium")
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

# true once some plotly title in the page contains the text passed as arg
TITLE_MATCHES = (
    "(s) => Array.from(document.querySelectorAll('.js-plotly-plot .gtitle')).some(t => t.textContent.includes(s))"
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# Waits are on real events (a server answering, a DOM node appearing, a kernel status); their limits are
# generous so a loaded machine only makes the test slower, never failing it.
STARTUP_S = 300
LONG_MS = 600_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (install Debian's chromium package: make chromium)")
    pytest.importorskip("playwright.sync_api")
    root = tmp_path_factory.mktemp("lab")
    store = transcript_store(root / "tools.zarr", n_steps=12, n_transcripts=2)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # the notebook uses this store instead of replaying; the live agent needs the mini K2, this test is about the widget
    params = {"TOOLS_STORE": str(store), "EXPORTS": str(root / "exports"), "STORES": str(root / "stores")}
    inject_parameters(nb, {**params, "RUN_AGENT": False})
    nbformat.write(nb, root / "tools.ipynb")
    # every cell stays in the DOM (JupyterLab 4 otherwise virtualises cells scrolled out of view) and no news toast
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
        str(Path(sys.executable).parent / "jupyter"),
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


def test_transcript_graph_widget_in_jupyterlab(lab: dict[str, str], tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    artifacts = Path(os.environ.get("WORKBENCH_ARTIFACTS", tmp_path))
    artifacts.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            page.set_default_timeout(LONG_MS)  # every wait below is on an event; none has a short implicit limit
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
            page.goto(f"{lab['url']}/lab/tree/tools.ipynb?token={lab['token']}", timeout=LONG_MS)
            page.wait_for_function("window.jupyterapp && document.querySelector('.jp-Notebook')", timeout=LONG_MS)
            # wait for the kernel, then run every cell as a user would (Run > Run All Cells)
            page.wait_for_selector(".jp-Notebook .jp-Cell")
            page.wait_for_function(
                "(() => { const w = window.jupyterapp.shell.currentWidget;"
                " return w && w.sessionContext && w.sessionContext.session"
                " && w.sessionContext.session.kernel && w.sessionContext.session.kernel.status === 'idle'; })()"
            )
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
            heads = page.locator(".wb-transcript .wb-seg-head[data-span]")
            heads.first.wait_for()
            page.wait_for_selector(".jp-Notebook .jp-Cell:last-child .jp-InputArea-prompt:not(:has-text('*'))")
            heads.first.scroll_into_view_if_needed()
            graph = page.locator(".js-plotly-plot").first  # the widget's graph pane comes first in the page
            title = graph.locator(".gtitle")
            nodes = graph.locator(".scatterlayer .trace:last-child .point")
            page.wait_for_function(TITLE_MATCHES, arg="step 1 (")  # set by a later cell
            before = title.text_content() or ""
            n_points_before = nodes.count()
            page.screenshot(path=str(artifacts / "browser_widget_before.png"), full_page=True)

            # click the header of the third tool_result segment: the graph must switch to it
            target = page.locator(".wb-kind-tool_result .wb-seg-head[data-span]").nth(2)
            target.scroll_into_view_if_needed()
            t0 = time.perf_counter()
            target.click()
            page.wait_for_function(TITLE_MATCHES, arg="tool_result segment")
            latency_ms = (time.perf_counter() - t0) * 1000
            after = title.text_content() or ""
            n_points_after = nodes.count()
            assert page.locator(".wb-seg.wb-sel").count() == 1
            page.screenshot(path=str(artifacts / "browser_widget_after.png"), full_page=True)
            assert before != after and "step 2" in after, (before, after)
            assert n_points_before > 0 and n_points_after > 0
            (artifacts / "browser_widget.json").write_text(
                json.dumps(
                    {
                        "click_to_graph_ms": latency_ms,
                        "title_before": before,
                        "title_after": after,
                        "nodes_before": n_points_before,
                        "nodes_after": n_points_after,
                    },
                    indent=2,
                )
            )
            assert not [e for e in errors if "wb-" in e or "anywidget" in e or "plotly" in e.lower()], errors
        except Exception:
            page.screenshot(path=str(artifacts / "browser_widget_failure.png"), full_page=True)
            titles = page.evaluate("Array.from(document.querySelectorAll('.gtitle')).map(t => t.textContent)")
            outputs = page.evaluate(
                "Array.from(document.querySelectorAll('.jp-OutputArea-output')).map(o => o.innerText.slice(0, 300))"
            )
            print("plot titles:", titles, "\noutputs:", outputs, "\npage errors:", errors)
            raise
        finally:
            browser.close()
