"""The layer index (workbench/store/layer_index.py): pages from it equal pages from the store, it goes stale
on an append, a damaged chunk is refused in one line, and a killed build leaves the previous index."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from experts_helpers import PLANT, planted_config, planted_records, planted_store

from workbench.cli.info import summarize
from workbench.errors import StoreDamagedError
from workbench.experts import expert_page
from workbench.store import layer_index
from workbench.store.io import open_store
from workbench.store.layer_index import GROUP, build_index, open_index, verify_index
from workbench.store.location import resolve
from workbench.store.select import Selection
from workbench.store.writer import StoreWriter


def _same(a, b) -> None:
    """Two pages hold the same numbers (the page's own fields, arrays compared exactly)."""
    for name in ("n_selected", "n_routed", "contexts", "lift", "frequent", "domain_shares", "segment_shares",
                 "co_activated", "predecessors", "successors", "notes", "has_gate_weights"):  # fmt: skip
        assert getattr(a, name) == getattr(b, name), name
    for name in ("rank_hist", "weight_hist", "weight_edges"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    planted_store(tmp_path / "p.zarr")
    return tmp_path / "p.zarr"


@pytest.mark.parametrize("selection", [None, Selection(domains=("math",))])
def test_pages_from_the_index_equal_pages_from_the_store(store_path: Path, selection) -> None:
    plain = open_store(store_path)
    assert open_index(plain) is None
    before = [expert_page(plain, layer, PLANT, selection, n_boot=50) for layer in (1, 2, 3)]
    rec = build_index(store_path)
    assert rec["status"] == "built" and rec["tokens"] == plain.sizes["token"]
    ds = open_store(store_path)
    ix = open_index(ds)
    assert ix is not None
    # the index holds the store's routing, transposed, and the whole-store load per expert
    ids = np.asarray(ds["expert_ids"].values)
    np.testing.assert_array_equal(ix.layer_ids([0, 1, 2]), ids.transpose(1, 0, 2))
    np.testing.assert_array_equal(ix.load[1], np.bincount(ids[:, 1].reshape(-1), minlength=8))
    for layer, page in zip((1, 2, 3), before, strict=True):
        _same(page, expert_page(ds, layer, PLANT, selection, n_boot=50))
    assert build_index(store_path)["status"] == "fresh"  # up to date: kept as it is
    # a part of the Dataset (rows or layers selected) keeps xarray's encoding but is not what the index holds
    part = ds.isel(token=slice(0, 100))
    assert open_index(part) is None and open_index(ds.isel(layer=[0, 1])) is None
    sub_page = expert_page(part, 2, PLANT, n_boot=10)
    assert sub_page.n_selected == 100
    assert sub_page.n_routed == int((ids[:100, 1] == PLANT).any(-1).sum())


def test_an_append_makes_the_index_stale_until_rebuilt(store_path: Path) -> None:
    assert summarize(str(store_path))["layer_index"] == {"status": "missing", "built": None, "tokens": None}
    rec = build_index(store_path)
    info = summarize(str(store_path))["layer_index"]
    assert info == {"status": "fresh", "built": rec["built"], "tokens": rec["tokens"]}
    tokenizer = {"name": "planted", "vocab": open_store(store_path).attrs["tokenizer"]["vocab"], "special_tokens": {}}
    extra = planted_records(n_seq=3)
    for i, r in enumerate(extra):
        r.id = f"extra-{i}"
    with StoreWriter(store_path, planted_config(), tokenizer) as writer:
        for r in extra:
            writer.add(r)
    ds = open_store(store_path)
    assert open_index(ds) is None  # stale: readers fall back to the store
    page = expert_page(ds, 2, PLANT, n_boot=20)
    assert page.n_selected == ds.sizes["token"]
    loc = resolve(store_path, read_only=True)
    notes, problems = verify_index(loc.store, str(store_path), dict(ds.attrs))
    assert problems == [] and "stale" in notes[0]
    assert summarize(str(store_path))["layer_index"]["status"] == "stale"
    out = subprocess.run(
        [sys.executable, "-c", "from workbench.cli.app import main; main()", "info", str(store_path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"layer index stale (built {rec['built']}" in out and f"`workbench index {store_path}` rebuilds" in out
    assert build_index(store_path)["status"] == "built"
    assert summarize(str(store_path))["layer_index"]["status"] == "fresh"
    ds = open_store(store_path)
    assert open_index(ds) is not None
    _same(page, expert_page(ds, 2, PLANT, n_boot=20))


def test_a_damaged_index_chunk_is_refused_in_one_line(store_path: Path) -> None:
    rec = build_index(store_path)
    chunk = next((store_path / GROUP / rec["build"] / "expert_ids" / "c").rglob("*"))
    while chunk.is_dir():
        chunk = next(chunk.iterdir())
    chunk.write_bytes(chunk.read_bytes()[:-7])
    ds = open_store(store_path)
    with pytest.raises(StoreDamagedError, match=r"layer index .* is damaged .*workbench index .* --force"):
        expert_page(ds, 2, PLANT)
    loc = resolve(store_path, read_only=True)
    _, problems = verify_index(loc.store, str(store_path), dict(ds.attrs))
    assert len(problems) == 1 and "expert_ids" in problems[0]
    from workbench.store.verify import verify_store

    report = verify_store(store_path)
    assert not report.ok and any("layer index chunk" in p and "--force" in p for p in report.problems)
    build_index(store_path, force=True)
    expert_page(open_store(store_path), 2, PLANT, n_boot=10)


def test_a_build_killed_before_its_pointer_leaves_the_previous_index(store_path: Path, monkeypatch) -> None:
    first = build_index(store_path)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # as a kill between the arrays and the pointer

    monkeypatch.setattr(layer_index, "write_json", killed)
    with pytest.raises(KeyboardInterrupt):
        build_index(store_path, force=True)
    monkeypatch.undo()
    ds = open_store(store_path)
    ix = open_index(ds)
    assert ix is not None and ix.build == first["build"]
    assert len([p for p in (store_path / GROUP).iterdir() if p.is_dir()]) == 2  # the orphan build
    again = build_index(store_path, force=True)
    assert [p.name for p in (store_path / GROUP).iterdir() if p.is_dir()] == [again["build"]]  # orphans go
    # the store itself is untouched by index builds: plain xarray sees only its own arrays
    import xarray as xr

    assert GROUP not in xr.open_zarr(store_path).variables


def test_index_cli(store_path: Path, tmp_path: Path) -> None:
    wb = [str(Path(sys.executable).with_name("workbench"))]
    r = subprocess.run([*wb, "index", str(store_path)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "layer index built" in r.stdout, r.stderr
    r = subprocess.run([*wb, "index", str(store_path)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "up to date" in r.stdout
    missing = tmp_path / "nope.zarr"
    r = subprocess.run([*wb, "index", str(missing)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "does not exist" in r.stderr
    assert not missing.exists()
    shutil.rmtree(store_path / GROUP)
    assert open_index(open_store(store_path)) is None
