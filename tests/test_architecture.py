"""The checks behind `make test`'s architecture step (tools/import_contracts.py, docs/architecture.md).

The contracts themselves run as ``python -m tools.lint_imports`` in ``make test``; these tests show the
pieces can fail: grimp sees the package-dir subpackages, a planted cycle is found, TYPE_CHECKING
imports do not count, and a known cycle that has gone breaks the contract.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import grimp
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tools/ is a folder of the repository, not of the installed package

from tools.import_contracts import AcyclicModulesContract, mapped_subpackages, module_cycles  # noqa: E402


def _package(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


@pytest.fixture
def planted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> grimp.ImportGraph:
    """A package with one real cycle (a -> b -> c -> a) and one TYPE_CHECKING-only back import (d <-> e)."""
    _package(
        tmp_path,
        {
            "plant/__init__.py": "",
            "plant/a.py": "from plant import b\n",
            "plant/b.py": "def f():\n    from plant import c  # a function-level import still makes a cycle\n",
            "plant/c.py": "import plant.a\n",
            "plant/d.py": "from plant import e\n",
            "plant/e.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from plant import d\n",
        },
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return grimp.build_graph("plant", exclude_type_checking_imports=True, cache_dir=None)


def test_a_planted_cycle_is_found_and_type_checking_imports_do_not_count(planted: grimp.ImportGraph) -> None:
    assert module_cycles(planted, {"plant"}) == [["plant.a", "plant.b", "plant.c"]]


def test_the_contract_breaks_on_a_new_cycle_and_on_a_stale_known_one(planted: grimp.ImportGraph) -> None:
    def check(known: list[str]) -> dict:
        contract = AcyclicModulesContract(
            name="t", session_options={}, contract_options={"packages": ["plant"], "known_cycles": known}
        )
        result = contract.check(planted, verbose=False)
        return {"kept": result.kept, **result.metadata}

    assert check([]) == {"kept": False, "new": ["plant.a <-> plant.b <-> plant.c"], "gone": []}
    assert check(["plant.a <-> plant.b <-> plant.c"])["kept"]
    stale = check(["plant.a <-> plant.b <-> plant.c", "plant.d <-> plant.e"])
    assert not stale["kept"] and stale["gone"] == ["plant.d <-> plant.e"]


def test_grimp_sees_the_subpackages_that_live_outside_workbench() -> None:
    assert mapped_subpackages() == {"workbench.hooks", "workbench.viz"}
    graph = grimp.build_graph("workbench", *sorted(mapped_subpackages()), cache_dir=None)
    assert {"workbench.hooks.recorder", "workbench.viz.export", "workbench.accessor"} <= graph.modules
    assert "workbench.graph.build" in graph.find_modules_directly_imported_by("workbench.accessor")


@pytest.mark.slow
def test_lint_imports_passes_on_the_tree() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tools.lint_imports", "--no-cache"], cwd=REPO, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout[-3000:]
    assert "0 broken" in out.stdout


def test_nothing_cites_files_outside_the_repository() -> None:
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    hits = []
    for name in files:
        path = REPO / name
        if path.suffix in {".safetensors", ".png", ".whl"} or not path.is_file():
            continue
        text = path.read_text(errors="replace")
        hits += [f"{name}: {w}" for w in ("DESIGN" + ".md", "../" + "shared") if w in text]
    assert not hits, hits
