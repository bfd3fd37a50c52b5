"""`workbench verify`, and every CLI reader of a damaged store: one line on stderr, exit 2, store unchanged."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from graph_helpers import write_store

from workbench.cli.app import main
from workbench.models import planned_routing_config
from workbench.store.dataset import SequenceRecord
from workbench.store.io import StoreWriter

WORKBENCH = str(Path(sys.executable).with_name("workbench"))
MINI = str(Path(__file__).resolve().parents[1] / "data" / "models" / "k2-mini")


@pytest.fixture(scope="module")
def intact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_store(tmp_path_factory.mktemp("verify") / "hand.zarr")


def damage(src: Path, dst: Path, how: str, key: str = "expert_ids/c/0/0/0") -> Path:
    shutil.copytree(src, dst)
    chunk = dst / key
    blob = chunk.read_bytes()
    if how == "missing":
        chunk.unlink()
    elif how == "truncate":
        chunk.write_bytes(blob[: len(blob) // 2])
    else:  # flip one byte in the middle
        mid = len(blob) // 2
        chunk.write_bytes(blob[:mid] + bytes([blob[mid] ^ 0x55]) + blob[mid + 1 :])
    return dst


def run_main(
    argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> tuple[int, str, str]:
    """``workbench.cli.app.main`` in-process, exactly as the entry point calls it: (exit code, stdout, stderr)."""
    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["workbench", *argv])
    code = 0
    try:
        main()
    except SystemExit as stop:
        code = int(stop.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line_damage(err: str, store: Path) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    assert f"{store} is damaged" in lines[0] and f"workbench verify {store}" in lines[0], err


def test_verify_clean_then_damaged(intact: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    code, out, err = run_main(["verify", str(intact)], capsys, monkeypatch)
    assert code == 0 and "result      intact" in out and "checksums: every array" in out and not err
    store = damage(intact, tmp_path / "d.zarr", "missing")
    code, out, err = run_main(["verify", str(store)], capsys, monkeypatch)
    assert code == 2
    assert "DAMAGED     expert_ids/c/0/0/0  (token rows 0:5 of expert_ids) is missing" in out
    assert "affected    2 sequences: m0, c0" in out and "salvage     0 of 2 sequences" in out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {store} is damaged: 1 damaged chunk(s) in expert_ids")
    code, out, err = run_main(["verify", str(store), "--json"], capsys, monkeypatch)
    rep = json.loads(out)
    assert code == 2 and rep["ok"] is False and rep["damage"][0]["key"] == "expert_ids/c/0/0/0"
    assert rep["damage"][0]["rows"] == [0, 5] and rep["damaged_sequences"] == ["m0", "c0"]
    code, _, err = run_main(["verify", str(tmp_path / "nope.zarr")], capsys, monkeypatch)
    assert code == 2 and "does not exist" in err


@pytest.mark.parametrize("how", ["missing", "truncate", "flip"])
@pytest.mark.parametrize("command", ["graph", "compare"])
def test_lazy_readers_give_one_line(intact: Path, tmp_path: Path, how: str, command: str, capsys, monkeypatch) -> None:
    store = damage(intact, tmp_path / "d.zarr", how)
    before = {p: p.read_bytes() for p in store.rglob("*") if p.is_file()}
    if command == "graph":
        argv = ["graph", str(store), "--export", str(tmp_path / "g.graphml")]
    else:
        argv = ["compare", str(store), "--out", str(tmp_path / "cmp"), "--n-boot", "10", "--n-perm", "10"]
    code, _, err = run_main(argv, capsys, monkeypatch)
    assert code == 2
    one_line_damage(err, store)
    assert {p: p.read_bytes() for p in store.rglob("*") if p.is_file()} == before


def test_missing_sequence_ids_chunk_stops_info(intact: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    store = damage(intact, tmp_path / "d.zarr", "missing", key="sequence/c/0")
    code, out, err = run_main(["info", str(store)], capsys, monkeypatch)
    assert code == 2 and not out
    one_line_damage(err, store)


def test_record_refuses_to_append_to_a_damaged_store(tmp_path: Path, capsys, monkeypatch) -> None:
    """`workbench record` refuses before it loads the model (the mini K2's routing config, no forward pass)."""
    cfg = planned_routing_config(MINI)
    rng = np.random.default_rng(0)
    ids = np.argsort(rng.random((7, len(cfg.moe_layers), cfg.n_routed_experts)), axis=-1)[..., : cfg.top_k]
    store = tmp_path / "mini.zarr"
    with StoreWriter(store, cfg, {"name": "x", "vocab": [], "special_tokens": {}}, has_gate_weights=False) as w:
        w.add(SequenceRecord("old", "math", "test", np.arange(7), ids.astype(np.int16)))
    (store / "expert_ids/c/0/0/0").unlink()
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"id": "new", "domain": "math", "text": "2 + 2 ="}) + "\n")
    argv = ["record", "--model", MINI, "--prompts", str(prompts), "--out", str(store)]
    code, _, err = run_main(argv, capsys, monkeypatch)
    assert code == 2 and "appending to it is refused" in err
    one_line_damage(err, store)
    assert not (store / "expert_ids/c/0/0/0").exists()


def test_installed_entry_point_on_a_truncated_chunk(intact: Path, tmp_path: Path) -> None:
    store = damage(intact, tmp_path / "d.zarr", "truncate")
    r = subprocess.run(
        [WORKBENCH, "graph", str(store), "--export", str(tmp_path / "g.html")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 2
    one_line_damage(r.stderr, store)
    r = subprocess.run([WORKBENCH, "verify", str(store)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and "crc32c" in r.stdout and len(r.stderr.strip().splitlines()) == 1
