"""dask's progress bar only where someone watches: a terminal or a notebook, never a log file or a pipe."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from analysis_helpers import SequenceRecord, config, random_topk, write_committed_store

from workbench.analysis.engine import interactive


def test_interactive_is_a_tty_or_a_kernel(tmp_path):
    r, w = os.pipe()
    with os.fdopen(w, "w") as pipe:
        assert not interactive(pipe)
    os.close(r)
    with (tmp_path / "log.txt").open("w") as log:
        assert not interactive(log)
    main, other = os.openpty()
    with os.fdopen(other, "w") as tty:
        assert interactive(tty)
    os.close(main)
    assert not interactive(object())


def test_compare_into_a_log_has_no_progress_bar(tmp_path):
    rng = np.random.default_rng(5)
    recs = [
        SequenceRecord(f"s{i}", ("math", "code")[i % 2], "t", rng.integers(0, 64, 50).astype(np.int32),
                       random_topk(rng, 50, 3, 8, 2), None)
        for i in range(8)
    ]  # fmt: skip
    write_committed_store(tmp_path / "s.zarr", recs, config(n_experts=8, top_k=2, n_layers=3), ids_only=True)
    code = "from workbench.cli.app import main; main()"
    res = subprocess.run(
        [sys.executable, "-c", code, "compare", str(tmp_path / "s.zarr"), "--out", str(tmp_path / "o"),
         "--n-boot", "10", "--n-perm", "10"],
        capture_output=True, text=True, timeout=600, cwd=Path(__file__).parent,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "Completed" not in res.stderr and "[####" not in res.stderr
