"""Where the bundled data lives: <repo>/data (the mini K2, the prompt suite, the transcripts)."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = REPO_ROOT / "data"
