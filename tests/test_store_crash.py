"""A routing store survives what kills writers: SIGKILL mid-write, an uncommitted tail, a full disk."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from store_helpers import assert_sequence_equal, make_record, tiny_config, tiny_tokenizer

from workbench.errors import StoreError
from workbench.store import codecs
from workbench.store import schema as S
from workbench.store.io import StoreWriter, open_store
from workbench.store.lock import LOCK_NAME

HERE = Path(__file__).parent
# Wider than the tiny config so each commit rewrites a few MB of tail chunk: kills land mid-write.
WIDE = dict(layers=8, k=8, experts=64)
WIDE_CONFIG = dict(moe_layers=tuple(range(1, 9)), num_hidden_layers=9, n_routed_experts=64, top_k=8)


def wide_record(i: int):
    return make_record(i, n_tokens=300 + (i * 997) % 1700, **WIDE)


def plain_xarray_sizes(store: Path) -> dict[str, int]:
    code = f"import json, xarray as xr; print(json.dumps(dict(xr.open_zarr({str(store)!r}).sizes)))"
    return json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def files(store: Path) -> dict[str, bytes]:
    return {str(p.relative_to(store)): p.read_bytes() for p in store.rglob("*") if p.is_file() and p.name != LOCK_NAME}


CHILD = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {here!r})
    from store_helpers import tiny_config, tiny_tokenizer
    from test_store_crash import WIDE_CONFIG, wide_record
    from workbench.store.io import StoreWriter
    w = StoreWriter({store!r}, tiny_config(**WIDE_CONFIG), tiny_tokenizer(), max_queue=4)
    i = {start}
    while True:
        w.add(wide_record(i))
        i += 1
        if i % 4 == 0:
            w.flush()
            print("flushed", i, flush=True)
    """
)


@pytest.mark.slow
def test_sigkill_mid_run_keeps_every_committed_sequence_and_no_partial_one(tmp_path: Path) -> None:
    store = tmp_path / "killed.zarr"
    rnd = random.Random(7)
    committed, interrupted = 0, 0
    rounds = 0
    while rounds < 2 or (interrupted == 0 and rounds < 6):  # until at least one kill has landed mid-write
        rounds += 1
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD.format(here=str(HERE), store=str(store), start=committed)],
            stdout=subprocess.PIPE, text=True, cwd=HERE,
        )  # fmt: skip
        assert child.stdout is not None
        flushed = [int(child.stdout.readline().split()[1]) for _ in range(2)]  # two flushes: it is running
        time.sleep(rnd.uniform(0.0, 0.5))
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        flushed += [int(line.split()[1]) for line in child.stdout.read().splitlines() if line.startswith("flushed")]
        # a kill between growing the arrays and the commit leaves their own metadata ahead of the root
        root = json.loads((store / "zarr.json").read_text())
        n_committed = root["attributes"]["committed"]["tokens"]
        ahead = json.loads((store / "expert_ids" / "zarr.json").read_text())["shape"][0] > n_committed
        interrupted += ahead or any(store.rglob("*.partial"))

        ds = open_store(store).load()
        n = ds.sizes[S.SEQUENCE]
        assert n >= flushed[-1], "a sequence flushed before the kill is missing"
        assert [str(s) for s in ds[S.SEQUENCE].values] == [f"seq-{j}" for j in range(n)]
        assert ds.sizes[S.TOKEN] == int(ds[S.SEQUENCE_LENGTH].values.sum()) == n_committed
        for j in range(committed, n):  # the new sequences are whole and exact
            assert_sequence_equal(ds, wide_record(j))
        if rounds == 2:
            assert plain_xarray_sizes(store)[S.TOKEN] == ds.sizes[S.TOKEN]
        committed = n
    # after the kills a writer repairs the tail and appends; everything ever committed is still exact
    with StoreWriter(store, tiny_config(**WIDE_CONFIG), tiny_tokenizer()) as w:
        w.add(wide_record(committed))
    ds = open_store(store).load()
    assert ds.sizes[S.SEQUENCE] == committed + 1
    for j in range(committed + 1):
        assert_sequence_equal(ds, wide_record(j))
    assert not list(store.rglob("*.partial"))
    assert interrupted >= 1, "no kill landed between growing the arrays and the commit"


def test_uncommitted_tail_is_invisible_then_repaired(tmp_path: Path) -> None:
    """Exactly the state a kill between 'grow arrays + write chunks' and 'commit root' leaves."""
    store = tmp_path / "tail.zarr"
    recs = [make_record(i) for i in range(5)]
    with StoreWriter(store, tiny_config(), tiny_tokenizer()) as w:
        for r in recs[:3]:
            w.add(r)
    before = files(store)
    n = sum(r.n_tokens for r in recs[:3])
    chunk = codecs.token_chunk(3, 2)
    zs = zarr.storage.LocalStore(store)
    ids = zarr.open_array(zs, path=S.EXPERT_IDS)
    ids.resize((chunk + 10, 3, 2))  # grows into a second chunk, as a large uncommitted batch would
    ids[n:] = 7
    tok = zarr.open_array(zs, path=S.TOKEN_ID)
    tok.resize((n + 4,))
    tok[n:] = 3
    (store / S.EXPERT_IDS / "c" / "0" / "0" / "0.5f3a.partial").write_bytes(b"half a chunk")
    assert (store / S.EXPERT_IDS / "c" / "1").exists()

    ds = open_store(store)
    assert ds.sizes[S.TOKEN] == n and ds[S.EXPERT_IDS].shape == (n, 3, 2)
    for r in recs[:3]:
        assert_sequence_equal(ds, r)
    assert plain_xarray_sizes(store)[S.TOKEN] == n

    with StoreWriter(store, tiny_config(), tiny_tokenizer()) as w:  # repairs, then appends
        for r in recs[3:]:
            w.add(r)
    ds = open_store(store).load()
    for r in recs:
        assert_sequence_equal(ds, r)
    meta = json.loads((store / S.EXPERT_IDS / "zarr.json").read_text())
    assert meta["shape"][0] == ds.sizes[S.TOKEN] == sum(r.n_tokens for r in recs)
    assert not [p for p in (store / S.EXPERT_IDS / "c" / "1").rglob("*") if p.is_file()]
    assert not list(store.rglob("*.partial"))
    assert set(before) <= set(files(store))


DISK_FULL_CHILD = textwrap.dedent(
    """
    import resource, signal, sys
    sys.path.insert(0, {here!r})
    from store_helpers import make_record, tiny_config, tiny_tokenizer
    from workbench.errors import WorkbenchError
    from workbench.store.io import StoreWriter
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG, as on a full disk
    resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
    try:
        with StoreWriter({store!r}, tiny_config(), tiny_tokenizer()) as w:
            w.add(make_record(10, n_tokens=300_000))
            w.add(make_record(11))
    except WorkbenchError as err:
        print(f"error: {{err}}", file=sys.stderr)
        sys.exit(2)
    """
)


def test_full_disk_gives_one_line_and_leaves_the_store_untouched(tmp_path: Path) -> None:
    store = tmp_path / "full.zarr"
    recs = [make_record(i) for i in range(2)]
    with StoreWriter(store, tiny_config(), tiny_tokenizer()) as w:
        for r in recs:
            w.add(r)
    before = files(store)
    child = subprocess.run(
        [sys.executable, "-c", DISK_FULL_CHILD.format(here=str(HERE), store=str(store), limit=256 * 1024)],
        capture_output=True, text=True, cwd=HERE,
    )  # fmt: skip
    assert child.returncode == 2, child.stderr
    lines = child.stderr.strip().splitlines()
    assert len(lines) == 1, child.stderr
    assert "disk is full or a file-size limit was reached" in lines[0]
    assert "keeps the 2 sequences committed before" in lines[0]
    after = files(store)
    assert set(after) == set(before), "chunks past the last commit were left behind"
    changed = sorted(key for key in before if after[key] != before[key])
    # metadata and the root are byte-identical; only tail chunks (committed rows + invisible new rows) may differ
    assert all(re.fullmatch(r"[a-z_]+/c/0(/0)*", key) for key in changed), changed
    ds = open_store(store).load()
    assert ds.sizes[S.SEQUENCE] == 2
    for r in recs:  # every committed row reads back exactly
        assert_sequence_equal(ds, r)
    assert np.all(ds[S.SEQUENCE_LENGTH].values == [r.n_tokens for r in recs])


def test_interrupted_creation_is_not_a_store_until_a_writer_recreates_it(tmp_path: Path) -> None:
    """A kill while the first arrays were being created, before the first commit."""
    store = tmp_path / "new.zarr"
    zs = zarr.storage.LocalStore(store)
    zarr.create_array(zs, name=S.EXPERT_IDS, shape=(0, 3, 2), chunks=(1024, 3, 2), dtype="int16")
    (store / LOCK_NAME).write_text("")
    with pytest.raises(StoreError, match="is a zarr group but not a routing store"):
        open_store(store)
    recs = [make_record(i) for i in range(2)]
    with StoreWriter(store, tiny_config(), tiny_tokenizer()) as w:
        for r in recs:
            w.add(r)
    ds = open_store(store)
    for r in recs:
        assert_sequence_equal(ds, r)
