"""Shared fixtures: the repository root, the bundled mini K2, and its routing store of the prompt suite."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def mini_k2_path() -> Path:
    """The bundled, trained mini K2 (data/models/k2-mini); every integration test runs on it."""
    path = REPO / "data" / "models" / "k2-mini"
    assert (path / "config.json").exists(), "data/models/k2-mini is missing: run `workbench mini-k2 train`"
    return path


@pytest.fixture(scope="session")
def suite_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """data/prompts/suite.jsonl recorded with the mini K2 by `workbench record`, once per test session.

    Read-only for the tests that share it (graphs, expert pages, the overview): nothing may write into it.
    """
    from typer.testing import CliRunner

    from workbench.cli.app import app

    out = tmp_path_factory.mktemp("suite") / "suite.zarr"
    suite = REPO / "data" / "prompts" / "suite.jsonl"
    result = CliRunner().invoke(app, ["record", "--model", "k2-mini", "--prompts", str(suite), "--out", str(out)])
    assert result.exception is None and result.exit_code == 0, result.output
    return out
