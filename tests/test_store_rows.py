"""Reading token rows straight from a store's chunks (workbench.store.rows): the values zarr gives, the
store's checks on every chunk, and only for a Dataset that is still the store's own."""

from __future__ import annotations

from pathlib import Path

import fsspec
import numpy as np
import pytest
import xarray as xr
from store_helpers import N_RECORDS, make_record, write_tiny

from workbench import analysis as A
from workbench.analysis.inputs import prepare
from workbench.errors import StoreDamagedError
from workbench.store import schema as S
from workbench.store.io import open_store
from workbench.store.rows import borrow, token_rows
from workbench.store.select import parse_where


def ranges(n: int) -> list[tuple[int, int]]:
    """Whole chunks, parts of one, ranges across several, the committed tail, empty and everything."""
    return [(0, 16), (3, 9), (5, 40), (16, 48), (n - 7, n), (n // 2, n // 2), (0, n), (15, 17)]


def test_rows_are_the_values_zarr_gives(tiny_store: Path) -> None:
    ds = open_store(tiny_store)
    n = ds.sizes[S.TOKEN]
    assert n % 16, "the store ends in a partly filled chunk"
    ids, w = ds[S.EXPERT_IDS].values, ds[S.GATE_WEIGHTS].values
    r_ids, r_w = token_rows(ds, S.EXPERT_IDS), token_rows(ds, S.GATE_WEIGHTS)
    assert r_ids is not None and r_w is not None
    for a, b in ranges(n):
        out = np.full((b - a, *ids.shape[1:]), 99, ids.dtype)
        np.testing.assert_array_equal(r_ids.read_into(a, b, out), ids[a:b])
        with r_w.rows(a, b) as got:
            np.testing.assert_array_equal(got, w[a:b])
    picked = token_rows(ds, S.EXPERT_IDS, layers=np.array([2, 0]))
    assert picked is not None
    with picked.rows(4, 37) as got:
        np.testing.assert_array_equal(got, ids[4:37][:, [2, 0]])
    with pytest.raises(IndexError):
        r_ids.read_into(0, n + 1, np.empty((n + 1, *ids.shape[1:]), ids.dtype))


def test_only_the_stores_own_arrays_are_read_from_chunks(tiny_store: Path) -> None:
    ds = open_store(tiny_store)
    assert token_rows(ds, S.EXPERT_IDS) is not None and token_rows(ds.copy(), S.EXPERT_IDS) is not None
    not_own = {
        "rows selected": ds.isel({S.TOKEN: slice(0, 20)}),
        "rechunked": ds.chunk({S.TOKEN: 7}),
        "in memory": ds.compute(),
        "replaced": ds.assign({S.EXPERT_IDS: ds[S.EXPERT_IDS] + 0}),
        "plain xarray": xr.open_zarr(tiny_store, consolidated=True, zarr_format=3),
    }
    for why, other in not_own.items():
        assert token_rows(other, S.EXPERT_IDS) is None, why
    assert token_rows(ds, "no_such_variable") is None


def test_the_rows_of_the_last_commit_while_a_writer_appends(tiny_store: Path) -> None:
    ds = open_store(tiny_store)
    n = ds.sizes[S.TOKEN]
    before = ds[S.EXPERT_IDS].values.copy()
    write_tiny(tiny_store, [make_record(100 + i) for i in range(3)])  # rewrites the tail chunk with more rows
    reader = token_rows(ds, S.EXPERT_IDS)
    assert reader is not None
    with reader.rows(0, n) as got:
        np.testing.assert_array_equal(got, before)
    assert open_store(tiny_store).sizes[S.TOKEN] > n


def test_object_store_urls_read_through_the_checked_store(small_chunks: None, request: pytest.FixtureRequest) -> None:
    url = f"memory://wb-{request.node.name}/routing.zarr"
    try:
        write_tiny(url, [make_record(i) for i in range(N_RECORDS)])
        ds = open_store(url)
        reader = token_rows(ds, S.EXPERT_IDS)
        assert reader is not None
        with reader.rows(3, 50) as got:
            np.testing.assert_array_equal(got, ds[S.EXPERT_IDS].values[3:50])
    finally:
        fsspec.filesystem("memory").rm(url.removeprefix("memory://").split("/")[0], recursive=True)


@pytest.mark.parametrize("damage", ["missing", "truncate", "flip"])
def test_a_damaged_chunk_is_refused_by_rows_and_by_the_analysis(tiny_store: Path, damage: str) -> None:
    chunk = tiny_store / "expert_ids/c/1/0/0"
    blob = chunk.read_bytes()
    if damage == "missing":
        chunk.unlink()
    elif damage == "truncate":
        chunk.write_bytes(blob[: len(blob) // 2])
    else:
        chunk.write_bytes(blob[:20] + bytes([blob[20] ^ 0xFF]) + blob[21:])
    ds = open_store(tiny_store)
    reader = token_rows(ds, S.EXPERT_IDS)
    assert reader is not None
    out = np.empty((10, *reader.row_shape), np.int16)
    with pytest.raises(StoreDamagedError, match=r"chunk expert_ids/c/1/0/0 \(token rows 16:32 of expert_ids\)"):
        reader.read_into(10, 20, out)
    with reader.rows(0, 16) as got:  # chunks around it still read
        assert got.shape[0] == 16
    with pytest.raises(StoreDamagedError, match="workbench verify"):
        A.expert_load(ds)


def test_analysis_reads_from_chunks_with_the_same_results_as_through_dask(tiny_store: Path) -> None:
    ds = open_store(tiny_store)
    assert prepare(ds).ids_rows is not None
    # the same values in memory, cut into the same dask blocks (float sums add up block by block)
    mem = ds.compute().chunk({S.TOKEN: ds.chunks[S.TOKEN]})
    assert prepare(mem).ids_rows is None
    for fn in (
        lambda d: A.expert_load(d, by="domain", weighted=True),
        lambda d: A.coactivation(d),
        lambda d: A.transitions(d),
        lambda d: A.consecutive_agreement(d, by="domain"),
        lambda d: A.routing_entropy(d, by="segment", kind="gate"),
    ):
        xr.testing.assert_identical(fn(ds), fn(mem))
    layers = parse_where("layers=2:3")  # a layer selection: the rows are read whole, then the layers taken
    assert prepare(ds, layers).ids_rows is not None
    xr.testing.assert_identical(A.transitions(ds, layers), A.transitions(mem, layers))
    xr.testing.assert_identical(A.coactivation(ds, layers), A.coactivation(mem, layers))


def test_borrowed_buffers_are_reused() -> None:
    shape = (12_345_679,)  # a size no other borrower here asks for
    with borrow(shape, np.uint8) as a:
        where = a.__array_interface__["data"][0]
    with borrow(shape, np.uint8) as b:  # the idle buffer
        assert b.__array_interface__["data"][0] == where
        with borrow(shape, np.uint8) as c:  # the first is lent out: another
            assert c.__array_interface__["data"][0] != where


def test_version_1_stores_read_with_their_fill_values_and_checks(
    tmp_path: Path, small_chunks: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from test_store_integrity import _as_version_1

    with monkeypatch.context() as m:
        _as_version_1(m)
        # 40 tokens, the last 20 generated: chunk 0 of ``generated`` (rows 0:16) holds only False, left unwritten
        path = Path(write_tiny(tmp_path / "v1.zarr", [make_record(0, 40)]))
    assert not (path / "generated/c/0").exists()
    ds = open_store(path)
    reader = token_rows(ds, S.GENERATED)
    assert reader is not None and not reader.layout.checksum
    with reader.rows(0, ds.sizes[S.TOKEN]) as got:
        np.testing.assert_array_equal(got, ds[S.GENERATED].values)
        assert not got[:16].any() and got[20:].all()
    (path / "expert_ids/c/0/0/0").unlink()  # k = 2 distinct ids per row: never an all-fill chunk
    with pytest.raises(StoreDamagedError, match="is missing"):
        A.expert_load(open_store(path))
