"""Routing store I/O: round trips, appends, plain-xarray compatibility, fsspec URLs, refusals."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from store_helpers import N_EXPERTS, assert_sequence_equal, make_record, tiny_config, tiny_tokenizer

from workbench.errors import StoreError
from workbench.store import schema as S
from workbench.store.io import StoreWriter, check_appendable, open_store, read_attrs


def write(path, records, **kw) -> None:
    with StoreWriter(path, kw.pop("config", tiny_config()), tiny_tokenizer(), **kw) as w:
        for r in records:
            w.add(r)


def test_round_trip_and_append_keep_every_sequence(tmp_path: Path) -> None:
    store = tmp_path / "runs.zarr"
    first = [make_record(i) for i in range(5)]
    second = [make_record(i) for i in range(5, 9)]
    write(store, first)
    write(store, second)  # a later run appends
    ds = open_store(store)
    assert ds[S.EXPERT_IDS].chunks is not None  # lazy, dask-backed
    ds = ds.load()
    assert ds.sizes[S.SEQUENCE] == 9
    assert ds.sizes[S.TOKEN] == sum(r.n_tokens for r in first + second)
    assert ds.sizes[S.SPAN] == 18
    for r in first + second:
        assert_sequence_equal(ds, r)
    assert ds.attrs["committed"] == {"tokens": ds.sizes[S.TOKEN], "sequences": 9, "spans": 18}
    assert list(ds[S.LAYER].values) == [1, 2, 3]
    assert ds.routing.config == tiny_config()
    assert ds.routing.decode([3, 99]) == ["w3", "<99>"]
    # segments and generated flags per token follow the spans
    row0 = first[0]
    cut = row0.spans[1].start
    kinds = ds.attrs["segment_kinds"]
    seg = ds[S.SEGMENT].values[: row0.n_tokens]
    assert [kinds[c] for c in seg] == ["user"] * cut + ["answer"] * (row0.n_tokens - cut)
    assert ds[S.GENERATED].values[: row0.n_tokens].tolist() == row0.generated.tolist()


def test_plain_xarray_opens_without_workbench(tmp_path: Path) -> None:
    store = tmp_path / "plain.zarr"
    write(store, [make_record(i) for i in range(3)])
    code = textwrap.dedent(
        f"""
        import json, sys
        import xarray as xr
        ds = xr.open_zarr({str(store)!r})
        out = {{name: list(ds[name].dims) for name in ds.variables}}
        out["_sizes"] = dict(ds.sizes)
        out["_ids"] = [str(s) for s in ds["sequence"].values]
        out["_workbench_imported"] = any(m.startswith("workbench") for m in sys.modules)
        out["_schema_version"] = ds.attrs["schema_version"]
        print(json.dumps(out))
        """
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    out = json.loads(res.stdout)
    assert not out["_workbench_imported"]
    assert out["expert_ids"] == ["token", "layer", "k"]
    assert out["gate_weights"] == ["token", "layer", "k"]
    assert out["token_id"] == ["token"]
    assert out["sequence_domain"] == ["sequence"]
    assert out["span_start"] == ["span"]
    assert out["_ids"] == ["seq-0", "seq-1", "seq-2"]
    assert out["_schema_version"] == S.SCHEMA_VERSION


def test_router_scores_and_ids_only_capture(tmp_path: Path) -> None:
    store = tmp_path / "scores.zarr"
    recs = [make_record(i, scores=True) for i in range(3)]
    write(store, recs, with_scores=True)
    ds = open_store(store).load()
    assert ds[S.ROUTER_SCORES].dims == (S.TOKEN, S.LAYER, S.EXPERT)
    assert ds.sizes[S.EXPERT] == N_EXPERTS and ds.attrs["has_router_scores"]
    for r in recs:
        assert_sequence_equal(ds, r)
    # an append without scores keeps the variable, with NaN rows for its tokens
    write(store, [make_record(7)])
    ds = open_store(store)
    assert np.isnan(ds[S.ROUTER_SCORES].values[-1]).all()
    # an engine capture gives ids only: gate weights are NaN and the store says so
    ids_only = tmp_path / "ids.zarr"
    write(ids_only, [make_record(1, weights=False)], has_gate_weights=False, capture="vllm")
    ds = open_store(ids_only)
    assert np.isnan(ds[S.GATE_WEIGHTS].values).all()
    assert ds.attrs["has_gate_weights"] is False and ds.attrs["capture"] == "vllm"


@pytest.mark.parametrize("scheme", ["file", "memory"])
def test_fsspec_urls(tmp_path: Path, scheme: str) -> None:
    url = f"file://{tmp_path}/f.zarr" if scheme == "file" else f"memory://stores/{tmp_path.name}.zarr"
    recs = [make_record(i) for i in range(4)]
    write(url, recs[:2])
    write(url, recs[2:])
    ds = open_store(url).load()
    for r in recs:
        assert_sequence_equal(ds, r)
    assert read_attrs(url)["committed"]["sequences"] == 4
    with StoreWriter(url, tiny_config(), tiny_tokenizer()), pytest.raises(StoreError, match="another writer"):
        StoreWriter(url, tiny_config(), tiny_tokenizer())  # one writer at a time on URLs too
    if scheme == "file":  # the same store through a plain path, and no temporaries left behind
        assert open_store(tmp_path / "f.zarr").sizes[S.SEQUENCE] == 4
        assert not list((tmp_path / "f.zarr").rglob("*.partial"))


def test_another_model_or_config_is_refused_before_writing(tmp_path: Path) -> None:
    store = tmp_path / "a.zarr"
    write(store, [make_record(0)])
    before = {p: p.read_bytes() for p in store.rglob("*") if p.is_file() and p.name != ".workbench-writer.lock"}
    other = tiny_config(routed_scaling_factor=1.0)
    with pytest.raises(StoreError, match=r"another model or routing config \(routed_scaling_factor: 2.5 vs 1.0"):
        StoreWriter(store, other, tiny_tokenizer())
    with pytest.raises(StoreError, match="model_name: 'tiny-moe' vs 'other'"):
        check_appendable(store, tiny_config(model_name="other"))
    with pytest.raises(StoreError, match="another tokenizer"):
        StoreWriter(store, tiny_config(), tiny_tokenizer(vocab=41))
    with pytest.raises(StoreError, match="captured by 'hooks'"):
        StoreWriter(store, tiny_config(), tiny_tokenizer(), capture="vllm")
    with pytest.raises(StoreError, match="without router scores"):
        StoreWriter(store, tiny_config(), tiny_tokenizer(), with_scores=True)
    after = {p: p.read_bytes() for p in store.rglob("*") if p.is_file() and p.name != ".workbench-writer.lock"}
    assert after == before
    check_appendable(store, tiny_config())  # the right model may append
    check_appendable(tmp_path / "new.zarr", tiny_config())  # a new path is fine
    assert not (tmp_path / "new.zarr").exists()


def test_unknown_schema_version_and_not_a_store(tmp_path: Path) -> None:
    store = tmp_path / "v.zarr"
    write(store, [make_record(0)])
    root = json.loads((store / "zarr.json").read_text())
    root["attributes"]["schema_version"] = 99
    (store / "zarr.json").write_text(json.dumps(root))
    for call in (lambda: open_store(store), lambda: StoreWriter(store, tiny_config(), tiny_tokenizer())):
        with pytest.raises(StoreError, match="schema version 99; this workbench reads versions 1, 2"):
            call()
    with pytest.raises(StoreError, match="does not exist"):
        open_store(tmp_path / "missing.zarr")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    with pytest.raises(StoreError, match="not a routing store"):
        open_store(tmp_path / "notes")
    with pytest.raises(StoreError, match="exists and is not a routing store"):
        StoreWriter(tmp_path / "notes", tiny_config(), tiny_tokenizer())
    assert sorted(p.name for p in (tmp_path / "notes").iterdir()) == ["todo.txt"]
    (tmp_path / "file.zarr").write_text("x")
    with pytest.raises(StoreError, match="is a file"):
        open_store(tmp_path / "file.zarr")
    with pytest.raises(StoreError, match="not a directory"):
        StoreWriter(tmp_path / "file.zarr", tiny_config(), tiny_tokenizer())


def test_bad_records_are_refused_at_add(tmp_path: Path) -> None:
    with StoreWriter(tmp_path / "b.zarr", tiny_config(), tiny_tokenizer()) as w:
        w.add(make_record(0))
        with pytest.raises(StoreError, match="already in"):
            w.add(make_record(0))
        with pytest.raises(StoreError, match="does not match the store's model"):
            w.add(make_record(1, layers=4))
        with pytest.raises(StoreError, match="has no tokens"):
            w.add(make_record(2, n_tokens=0))
        with pytest.raises(StoreError, match="has no gate_weights"):
            w.add(make_record(3, weights=False))
    with pytest.raises(StoreError, match="already in"):  # ids are unique across runs too
        write(tmp_path / "b.zarr", [make_record(0)])
    assert open_store(tmp_path / "b.zarr").sizes[S.SEQUENCE] == 1


def test_second_writer_is_refused_and_lock_dies_with_its_process(tmp_path: Path) -> None:
    store = tmp_path / "l.zarr"
    w = StoreWriter(store, tiny_config(), tiny_tokenizer())
    with pytest.raises(StoreError, match=r"another writer \(pid \d+ on .*\) is writing"):
        StoreWriter(store, tiny_config(), tiny_tokenizer())
    with pytest.raises(StoreError, match="another writer"):
        check_appendable(store, tiny_config())
    w.add(make_record(0))
    w.close()
    # a writer in another process holds the lock until it is killed; then the OS releases it
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            sys.path.insert(0, {str(Path(__file__).parent)!r})
            from store_helpers import tiny_config, tiny_tokenizer
            from workbench.store.io import StoreWriter
            w = StoreWriter({str(store)!r}, tiny_config(), tiny_tokenizer())
            print("locked", flush=True)
            time.sleep(60)
        """)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(StoreError, match=f"pid {holder.pid}"):
            StoreWriter(store, tiny_config(), tiny_tokenizer())
    finally:
        holder.kill()
        holder.wait()
    write(store, [make_record(1)])
    assert open_store(store).sizes[S.SEQUENCE] == 2


def test_writer_exit_after_caller_error_commits_whole_sequences(tmp_path: Path) -> None:
    store = tmp_path / "e.zarr"
    with pytest.raises(RuntimeError, match="model crashed"), StoreWriter(store, tiny_config(), tiny_tokenizer()) as w:
        w.add(make_record(0))
        w.add(make_record(1))
        raise RuntimeError("model crashed")
    ds = open_store(store)
    assert [str(s) for s in ds[S.SEQUENCE].values] == ["seq-0", "seq-1"]


def test_a_reader_keeps_its_snapshot_while_a_writer_appends(tmp_path: Path) -> None:
    store = tmp_path / "live.zarr"
    recs = [make_record(i, n_tokens=50) for i in range(6)]
    write(store, recs[:3])
    snapshot = open_store(store)  # lazy: nothing read yet
    write(store, recs[3:])  # rewrites the tail chunk that the snapshot's rows live in
    snapshot = snapshot.load()
    assert snapshot.sizes[S.TOKEN] == 150
    for r in recs[:3]:
        assert_sequence_equal(snapshot, r)
    assert open_store(store).sizes[S.TOKEN] == 300
