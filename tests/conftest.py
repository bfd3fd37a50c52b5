"""Shared fixtures: the repository root, the bundled mini K2, its routing store of the prompt suite, and a
small store of many chunks for the store's own tests."""

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


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """16 tokens and 4 sequences/spans per chunk, so a dozen short sequences span several chunks and a
    partly filled tail."""
    from workbench.store import codecs

    monkeypatch.setattr(codecs, "MAX_TOKEN_CHUNK", 16)
    monkeypatch.setattr(codecs, "TABLE_CHUNK", 4)


@pytest.fixture
def tiny_store(tmp_path: Path, small_chunks: None) -> Path:
    """A store of ``store_helpers.N_RECORDS`` short sequences of ``tiny_config()`` in small chunks."""
    from store_helpers import N_RECORDS, make_record, write_tiny

    return Path(write_tiny(tmp_path / "s.zarr", [make_record(i) for i in range(N_RECORDS)]))
