"""A damaged routing store never answers wrong: checksums, fill values, refused reads, refused appends, verify."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import zarr
from store_helpers import N_RECORDS, make_record, tiny_config, tiny_tokenizer, write_tiny

import workbench.accessor  # noqa: F401  (registers ds.routing, used below)
from workbench.errors import StoreDamagedError
from workbench.store import codecs
from workbench.store import schema as S
from workbench.store.io import StoreWriter, check_appendable, open_store
from workbench.store.prepare import STRING_VARS
from workbench.store.verify import verify_store


def rows_of(path: Path) -> dict[str, tuple[int, int]]:
    ds = open_store(path).load()
    return {
        str(s): (int(a), int(a + n))
        for s, a, n in zip(
            ds[S.SEQUENCE].values, ds[S.SEQUENCE_START].values, ds[S.SEQUENCE_LENGTH].values, strict=True
        )
    }


def snapshot(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_every_array_has_crc32c_and_a_fill_value_that_cannot_pass_for_data(tiny_store: Path) -> None:
    root = json.loads((tiny_store / "zarr.json").read_text())
    assert root["attributes"]["schema_version"] == S.SCHEMA_VERSION == 2
    docs = root["consolidated_metadata"]["metadata"]
    assert set(docs) == set(S.DIMS) - {S.ROUTER_SCORES}
    for name, doc in docs.items():
        assert doc["codecs"][-1] == {"name": "crc32c"}, name
        fill = doc["fill_value"]
        want = S.FILL[name]
        assert (fill == "-Infinity") if want == float("-inf") else fill == want, (name, fill)
    # every chunk is written, even one holding only fill-like values (all tokens not generated)
    rec = make_record(99, 5)
    rec.generated = np.zeros(5, dtype=bool)
    solo = write_tiny(tiny_store.parent / "solo.zarr", [rec])
    assert (solo / S.GENERATED / "c" / "0").is_file()


def test_missing_expert_ids_chunk_is_refused_by_every_read(tiny_store: Path) -> None:
    (tiny_store / "expert_ids/c/1/0/0").unlink()
    ds = open_store(tiny_store)  # opening reads only the coordinates
    with pytest.raises(
        StoreDamagedError, match=r"chunk expert_ids/c/1/0/0 \(token rows 16:32 of expert_ids\) is missing"
    ):
        ds[S.EXPERT_IDS].values  # noqa: B018  (a lazy dask read)
    with pytest.raises(StoreDamagedError, match="workbench verify"):
        ds.routing.select(tokens=(20, 24))[S.EXPERT_IDS].load()
    np.testing.assert_array_equal(ds[S.EXPERT_IDS][:16].values, open_store(tiny_store)[S.EXPERT_IDS][:16].values)
    with pytest.raises(StoreDamagedError):
        open_store(tiny_store, chunks=None)[S.EXPERT_IDS].values  # noqa: B018  (numpy-backed lazy read)
    # plain xarray, without workbench, sees -1: a value no expert id can take
    code = f"import xarray as xr; print(int(xr.open_zarr({str(tiny_store)!r})['expert_ids'][16:32].values.min()))"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "-1"
    )


def test_missing_sequence_table_chunk_fails_at_open(tiny_store: Path) -> None:
    (tiny_store / "sequence/c/0").unlink()
    with pytest.raises(StoreDamagedError, match=r"sequence/c/0 \(sequence rows 0:4 of sequence\) is missing"):
        open_store(tiny_store)


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty"])
def test_truncated_or_altered_chunk_gives_one_error(tiny_store: Path, damage: str) -> None:
    chunk = tiny_store / "gate_weights/c/0/0/0"
    blob = chunk.read_bytes()
    if damage == "truncate":
        chunk.write_bytes(blob[: len(blob) // 2])
    elif damage == "flip":
        chunk.write_bytes(blob[:20] + bytes([blob[20] ^ 0xFF]) + blob[21:])
    else:
        chunk.write_bytes(b"")
    with pytest.raises(StoreDamagedError, match=r"gate_weights/c/0/0/0 .* (fails its crc32c|is truncated)"):
        open_store(tiny_store)[S.GATE_WEIGHTS].values  # noqa: B018


def test_appending_to_a_damaged_store_is_refused_and_changes_nothing(tiny_store: Path) -> None:
    (tiny_store / "expert_ids/c/0/0/0").unlink()
    before = snapshot(tiny_store)
    for call in (
        lambda: check_appendable(tiny_store, tiny_config()),
        lambda: StoreWriter(tiny_store, tiny_config(), tiny_tokenizer()),
    ):
        with pytest.raises(StoreDamagedError, match="appending to it is refused"):
            call()
    assert snapshot(tiny_store) == before


def test_appending_to_a_store_with_a_corrupt_tail_chunk_is_refused(tiny_store: Path) -> None:
    tail = max((tiny_store / "token_id/c").iterdir(), key=lambda p: int(p.name))
    blob = tail.read_bytes()
    tail.write_bytes(blob[:-5] + bytes([blob[-5] ^ 1]) + blob[-4:])
    with pytest.raises(StoreDamagedError, match=rf"token_id/c/{tail.name} .*crc32c.*appending to it is refused"):
        check_appendable(tiny_store, tiny_config())


def test_verify_clean_store(tiny_store: Path) -> None:
    rep = verify_store(tiny_store)
    assert rep.ok and not rep.damage and not rep.problems and rep.checksums == "every array"
    assert len(rep.intact_sequences) == N_RECORDS and rep.intact_tokens == rep.committed["tokens"]
    assert rep.chunks == sum(
        1 for p in tiny_store.rglob("*") if p.is_file() and p.relative_to(tiny_store).parts[1:2] == ("c",)
    )


def test_verify_names_the_damage_and_what_can_be_salvaged(tiny_store: Path) -> None:
    rows = rows_of(tiny_store)
    (tiny_store / "expert_ids/c/1/0/0").unlink()  # token rows 16:32
    chunk = tiny_store / "sequence_domain/c/2"  # sequence rows 8:12
    chunk.write_bytes(chunk.read_bytes()[:-3])
    rep = verify_store(tiny_store)
    assert not rep.ok
    by_key = {d.key: d for d in rep.damage}
    assert set(by_key) == {"expert_ids/c/1/0/0", "sequence_domain/c/2"}
    assert by_key["expert_ids/c/1/0/0"].rows == (16, 32) and by_key["expert_ids/c/1/0/0"].problem == "is missing"
    assert by_key["sequence_domain/c/2"].dim == S.SEQUENCE and "crc32c" in by_key["sequence_domain/c/2"].problem
    ids = list(rows)
    hit = {s for s, (a, b) in rows.items() if a < 32 and b > 16} | set(ids[8:12])
    assert set(rep.damaged_sequences) == {f"row {i}" for i in range(8, 12)} | (hit - set(ids[8:12]))
    assert set(rep.intact_sequences) == set(ids) - hit
    assert rep.intact_tokens == sum(b - a for s, (a, b) in rows.items() if s not in hit)
    assert "expert_ids" in rep.summary() and f"{len(rep.intact_sequences)} intact" in rep.summary()


def test_verify_finds_tables_that_disagree(tiny_store: Path) -> None:
    arr = zarr.open_array(tiny_store, path=S.SEQUENCE_START)  # a valid chunk (checksum and all) with wrong values
    arr[3] = arr[3] + 1
    seg = zarr.open_array(tiny_store, path=S.SEGMENT)
    seg[0] = S.SEGMENT_CODE["tool_result"]
    rep = verify_store(tiny_store)
    assert not rep.damage and not rep.ok
    text = "\n".join(rep.problems)
    assert "sequence rows 3" in text and "tile" in text
    assert "segment of 1 token rows (first 0) disagrees with their span" in text
    assert "seq-0" in rep.damaged_sequences and "seq-3" in rep.damaged_sequences


def test_fill_values_inside_committed_rows_are_damage(tiny_store: Path) -> None:
    arr = zarr.open_array(tiny_store, path=S.EXPERT_IDS)
    arr[5, 1, 0] = -1  # what an old writer's append on top of a missing chunk would have committed
    rep = verify_store(tiny_store)
    assert [d.key for d in rep.damage] == ["expert_ids/c/0/0/0"]
    assert "fill value -1 in 1 committed rows" in rep.damage[0].problem


def _as_version_1(monkeypatch: pytest.MonkeyPatch) -> None:
    """Write stores as schema version 1 did: no crc32c, fill 0 / NaN / "", all-fill chunks skipped."""
    monkeypatch.setattr(codecs, "compressors", lambda name, dtype: [codecs._compressor(name, dtype)])

    def old_fill(name: str) -> object:
        if name in STRING_VARS:
            return ""
        return float("nan") if S.DTYPES.get(name) == "float16" else 0

    monkeypatch.setattr(codecs, "fill_value", old_fill)
    monkeypatch.setattr(codecs, "ARRAY_CONFIG", {"write_empty_chunks": False})
    monkeypatch.setattr(S, "SCHEMA_VERSION", 1)


def test_version_1_stores_still_open_append_and_verify(tmp_path: Path, small_chunks: None, monkeypatch) -> None:
    with monkeypatch.context() as m:
        _as_version_1(m)
        store = write_tiny(tmp_path / "v1.zarr", [make_record(i) for i in range(6)])
    root = json.loads((store / "zarr.json").read_text())
    assert root["attributes"]["schema_version"] == 1
    assert all(d["codecs"][-1]["name"] != "crc32c" for d in root["consolidated_metadata"]["metadata"].values())
    write_tiny(store, [make_record(i) for i in range(6, 9)])  # appends keep the version 1 format
    assert open_store(store).sizes[S.SEQUENCE] == 9
    rep = verify_store(store)
    assert rep.ok and rep.checksums == "none" and any("without crc32c" in n for n in rep.notes)
    blob = (store / "expert_ids/c/0/0/0").read_bytes()
    (store / "expert_ids/c/0/0/0").write_bytes(blob[:-7])  # the blosc header still catches truncation
    with pytest.raises(StoreDamagedError, match="is truncated"):
        open_store(store)[S.EXPERT_IDS].values  # noqa: B018
    (store / "expert_ids/c/0/0/0").unlink()  # k = 2 distinct ids per row: never an all-fill chunk
    with pytest.raises(StoreDamagedError, match="is missing"):
        open_store(store)[S.EXPERT_IDS].values  # noqa: B018


def test_plain_xarray_still_opens_a_version_2_store(tiny_store: Path) -> None:
    code = textwrap.dedent(
        f"""
        import sys, xarray as xr
        ds = xr.open_zarr({str(tiny_store)!r})
        assert "workbench" not in sys.modules
        print(ds.sizes["sequence"], str(ds.expert_ids.dtype), int(ds.expert_ids.min()))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == [str(N_RECORDS), "int16", "0"]
