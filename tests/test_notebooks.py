"""The notebooks run headless (nbclient, a real ipykernel) with no error.

- each has one cell tagged ``parameters`` (papermill's convention) that the tests override, and one
  import cell right below it; outputs are stripped in git;
- on the bundled mini K2, in order (01 records the suite that 02 and 03 read; 04 replays a
  transcript and runs the live agent; 05 analyses a small K2-shaped store): slow, skipped with the
  reason when the mini K2 is not built;
- on synthetic stores (02, 03, 04);
- without their store or model: each stops at the one cell that needs it, with one line saying what
  to run first, not a traceback.

Cells are run by ``notebook_harness.run_notebook``: no wall-clock limit per cell, but a stall
watchdog (no output and no kernel CPU progress for ``WORKBENCH_NB_STALL_S`` seconds) that fails with
the cell, its last output, the kernel's message log and every kernel thread's stack.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient.exceptions import CellExecutionError
from notebook_harness import run_notebook
from widgets_helpers import domain_store, transcript_store

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
NAMES = [
    "01_quickstart.ipynb",
    "02_reasoning_graphs.ipynb",
    "03_comparing_domains.ipynb",
    "04_tool_loops.ipynb",
    "05_scaling_out_to_k2.ipynb",
]
MINI_K2 = REPO / "data" / "models" / "k2-mini"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def declared(name: str) -> set[str]:
    """Names assigned in the notebook's ``parameters`` cell."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    return set(re.findall(r"^([A-Z_][A-Z0-9_]*) =", cell.source, flags=re.M))


def run(name: str, parameters: dict[str, Any]) -> nbformat.NotebookNode:
    """Execute a notebook from notebooks/ with those of ``parameters`` it declares; raises on any cell error."""
    own = {k: v for k, v in parameters.items() if k in declared(name)}
    return run_notebook(NOTEBOOKS / name, own)


def outputs(nb: nbformat.NotebookNode) -> tuple[str, set[str]]:
    """All text of the outputs and the set of mime types shown."""
    text, mimes = [], set()
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            assert out.get("output_type") != "error", out
            text.append(out.get("text", ""))
            for mime, value in out.get("data", {}).items():
                mimes.add(mime)
                text.append(value if isinstance(value, str) else json.dumps(value))
    return "\n".join(text), mimes


def test_notebooks_are_stripped_with_one_parameters_cell_and_one_import_cell() -> None:
    for name in NAMES:
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        for cell in code:
            assert cell.outputs == [] and cell.execution_count is None, f"{name} has outputs"
        tagged = [i for i, c in enumerate(code) if "parameters" in c.metadata.get("tags", [])]
        assert tagged == [0], f"{name}: the first code cell, and only it, is tagged 'parameters'"
        assert declared(name), name
        for i, cell in enumerate(code):
            assert "os.environ" not in cell.source, f"{name}: parameters, not environment variables"
            assert "is not None:" not in cell.source, f"{name}: a guard; let the cell that needs it stop instead"
            top_imports = re.findall(r"^(?:import|from \S+ import) ", cell.source, flags=re.M)
            assert not top_imports or i == 1, f"{name}: imports belong in the one import cell (code cell 1)"


@pytest.mark.slow
def test_graph_domain_and_tool_loop_notebooks_on_synthetic_stores(tmp_path: Path) -> None:
    params = {
        "STORES": str(tmp_path / "stores"),
        "EXPORTS": str(tmp_path / "exports"),
        "SUITE_STORE": str(domain_store(tmp_path / "suite.zarr")),
        "TOOLS_STORE": str(transcript_store(tmp_path / "tools.zarr", n_steps=3, n_transcripts=1)),
        "RUN_AGENT": False,
    }
    text, mimes = outputs(run("02_reasoning_graphs.ipynb", params))
    assert "application/vnd.plotly.v1+json" in mimes and WIDGET_VIEW in mimes
    assert (tmp_path / "exports" / "math_graph.graphml").exists()
    assert "candidate circuits" in text

    text, mimes = outputs(run("03_comparing_domains.ipynb", params))
    assert WIDGET_VIEW in mimes and "ci_low" in text

    text, mimes = outputs(run("04_tool_loops.ipynb", params))
    assert WIDGET_VIEW in mimes
    assert "step 1" in text and (tmp_path / "exports" / "tool_step.graphml").exists()
    assert not (tmp_path / "stores").exists(), "nothing recorded or replayed when the stores are given"


def stops_with(name: str, parameters: dict[str, Any]) -> str:
    """Run a notebook that must stop at one cell; return nbclient's report (cell source and error)."""
    with pytest.raises(CellExecutionError) as info:
        run(name, parameters)
    report = re.sub(r"\x1b\[[0-9;]*m", "", str(info.value))  # without the error's colour codes
    assert "Traceback (most recent call last)" not in report and "File " not in report, report
    return report


@pytest.mark.slow
def test_notebooks_without_their_store_stop_at_one_cell_saying_what_to_run(tmp_path: Path) -> None:
    params = {"REPO": str(tmp_path), "STORES": str(tmp_path / "empty"), "MODEL": str(tmp_path / "no-model")}
    for name in ("02_reasoning_graphs.ipynb", "03_comparing_domains.ipynb"):
        report = stops_with(name, params)
        assert "StoreError: No routing store at" in report and "Run 01_quickstart.ipynb first" in report, report
        assert "require_store(" in report, report  # the one cell that needs the store
    report = stops_with("04_tool_loops.ipynb", params)  # no transcripts under REPO, nothing to replay
    assert "WorkbenchError: No transcripts in" in report, report
    report = stops_with("01_quickstart.ipynb", params)
    assert "load_model(MODEL)" in report and "no such directory" in report, report


@pytest.mark.slow
def test_all_notebooks_on_the_mini_k2(tmp_path: Path) -> None:
    if not (MINI_K2 / "config.json").exists():
        pytest.skip("the mini K2 is not built (data/models/k2-mini): run `workbench mini-k2 train`")
    params = {
        "STORES": str(tmp_path / "stores"),
        "EXPORTS": str(tmp_path / "exports"),
        "PER_DOMAIN": 3,
        "MAX_NEW_TOKENS": 4,
        "MAX_TRANSCRIPTS": 1,
        "N_TOKENS": 3000,
    }
    text, mimes = outputs(run("01_quickstart.ipynb", params))
    assert "expert_ids (" in text and "prompts per domain" in text
    # recorded in the kernel by workbench.record (not a subprocess), with tqdm's notebook progress bar
    assert "recorded 9 sequences" in text and WIDGET_VIEW in mimes, text[-2000:]
    assert (tmp_path / "stores" / "suite.zarr").exists(), text[-2000:]
    for name in NAMES[1:]:
        outputs(run(name, params))
    assert (tmp_path / "stores" / "tools.zarr").exists() and (tmp_path / "stores" / "agent.zarr").exists()
