"""Shared fixtures: the repository root and the bundled mini K2."""

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
