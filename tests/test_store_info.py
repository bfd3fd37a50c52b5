"""`workbench info`: what a store holds, and one clear line for what is not a store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from store_helpers import make_record, tiny_config, tiny_tokenizer

from workbench.cli.app import main
from workbench.cli.info import summarize
from workbench.store.io import StoreWriter

CLI = [sys.executable, "-c", "from workbench.cli.app import main; main()"]


def make_store(path: Path) -> list:
    recs = [make_record(i) for i in range(5)]
    with StoreWriter(path, tiny_config(), tiny_tokenizer()) as w:
        for r in recs:
            w.add(r)
    return recs


def test_info_reports_model_tokens_domains_and_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "runs.zarr"
    recs = make_store(store)
    s = summarize(str(store))
    assert s["model"] == "tiny-moe" and s["moe_layers"] == [1, 2, 3] and s["n_routed_experts"] == 16
    assert s["top_k"] == 2 and s["tokens"] == sum(r.n_tokens for r in recs) and s["sequences"] == 5
    by_domain: dict[str, list[int]] = {}
    for r in recs:
        by_domain.setdefault(r.domain, []).append(r.n_tokens)
    assert s["domains"] == {d: {"sequences": len(v), "tokens": sum(v)} for d, v in sorted(by_domain.items())}
    assert s["generated_tokens"] == sum(int(r.generated.sum()) for r in recs)
    on_disk = sum(p.stat().st_size for p in store.rglob("*") if p.is_file())
    assert s["size_bytes"] == on_disk

    out = subprocess.run([*CLI, "info", str(store)], capture_output=True, text=True, check=True).stdout
    assert "tiny-moe" in out and "3 MoE layers (1..3) of 4" in out and "top-2" in out
    assert f"tokens      {s['tokens']:,}" in out
    for d, row in s["domains"].items():
        assert any(line.split()[:2] == [d, str(row["sequences"])] for line in out.splitlines()), (d, out)
    assert json.loads(run_main(["info", str(store), "--json"], capsys)[1])["tokens"] == s["tokens"]


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """The `workbench` entry point in this process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    old = sys.argv
    sys.argv = ["workbench", *argv]
    try:
        main()
        code = 0
    except SystemExit as stop:
        code = int(stop.code or 0)
    finally:
        sys.argv = old
    out = capsys.readouterr()
    return code, out.out, out.err


def test_info_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "v.zarr"
    make_store(store)
    root = json.loads((store / "zarr.json").read_text())
    root["attributes"]["schema_version"] = 7
    (store / "zarr.json").write_text(json.dumps(root))
    cases = [(tmp_path / "missing.zarr", "does not exist"), (store, "schema version 7"), (tmp_path, "not a routing")]
    for target, message in cases:
        code, _, err = run_main(["info", str(target)], capsys)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
