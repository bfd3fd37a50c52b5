"""The notebooks run headless (nbclient, a real ipykernel) with no error.

- on the bundled mini K2, in order (01 records the suite that 02 and 03 read; 04 replays a
  transcript and runs the live agent; 05 analyses a small K2-shaped store): slow, skipped with the
  reason when the mini K2 is not built;
- on synthetic stores (02, 03, 04): fast, always;
- without any store: each shows a clear message in the cell, not a traceback;
- outputs are stripped in git.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
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


def run(name: str, monkeypatch: pytest.MonkeyPatch, **env: str) -> nbformat.NotebookNode:
    """Execute a notebook from notebooks/ with WORKBENCH_* variables set; raises on any cell error."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    return nb


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


def test_notebooks_are_stripped_in_git() -> None:
    for name in NAMES:
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        nbformat.validate(nb)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{name} has outputs"


@pytest.mark.slow
def test_graph_domain_and_tool_loop_notebooks_on_synthetic_stores(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    suite = domain_store(tmp_path / "suite.zarr")
    tools = transcript_store(tmp_path / "tools.zarr", n_steps=3, n_transcripts=1)
    env = {
        "WORKBENCH_STORES": str(tmp_path / "stores"),
        "WORKBENCH_EXPORT_DIR": str(tmp_path / "exports"),
        "WORKBENCH_SUITE_STORE": str(suite),
        "WORKBENCH_TOOLS_STORE": str(tools),
        "WORKBENCH_RUN_AGENT": "0",
    }
    text, mimes = outputs(run("02_reasoning_graphs.ipynb", monkeypatch, **env))
    assert "application/vnd.plotly.v1+json" in mimes and WIDGET_VIEW in mimes
    assert (tmp_path / "exports" / "math_graph.graphml").exists()
    assert "candidate circuits" in text

    text, mimes = outputs(run("03_comparing_domains.ipynb", monkeypatch, **env))
    assert WIDGET_VIEW in mimes and "ci_low" in text

    text, mimes = outputs(run("04_tool_loops.ipynb", monkeypatch, **env))
    assert WIDGET_VIEW in mimes
    assert "step 1" in text and (tmp_path / "exports" / "tool_step.graphml").exists()


@pytest.mark.slow
def test_notebooks_without_a_store_explain_instead_of_failing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env = {
        "WORKBENCH_STORES": str(tmp_path / "empty"),
        "WORKBENCH_REPO": str(tmp_path),  # no data/ here: nothing to record or replay
        "WORKBENCH_MODEL": str(tmp_path / "no-model"),
        "WORKBENCH_RUN_AGENT": "0",
    }
    for name in ("02_reasoning_graphs.ipynb", "03_comparing_domains.ipynb", "04_tool_loops.ipynb"):
        text, mimes = outputs(run(name, monkeypatch, **env))
        assert "No routing store at" in text, name
        assert WIDGET_VIEW not in mimes
    text, _ = outputs(run("01_quickstart.ipynb", monkeypatch, **env))
    assert "Cannot load the model" in text and "No routing store at" in text


@pytest.mark.slow
def test_all_notebooks_on_the_mini_k2(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env = {
        "WORKBENCH_STORES": str(tmp_path / "stores"),
        "WORKBENCH_EXPORT_DIR": str(tmp_path / "exports"),
        "WORKBENCH_PER_DOMAIN": "3",
        "WORKBENCH_MAX_NEW_TOKENS": "4",
        "WORKBENCH_MAX_TRANSCRIPTS": "1",
        "WORKBENCH_K2_TOKENS": "3000",
    }
    text, _ = outputs(run("01_quickstart.ipynb", monkeypatch, **env))
    assert "expert_ids (" in text and "prompts per domain" in text
    assert (tmp_path / "stores" / "suite.zarr").exists(), text[-2000:]
    for name in NAMES[1:]:
        text, _ = outputs(run(name, monkeypatch, **env))
        assert "No routing store at" not in text and "failed:" not in text, (name, text[-3000:])
    assert (tmp_path / "stores" / "tools.zarr").exists()
