"""What the store's integrity checks cost: checked reads against plain zarr reads, and ``workbench verify``.

    python benchmarks/bench_store_integrity.py --store k2-1m.zarr --out benchmarks/results   # made if missing

The store is K2-shaped synthetic routing (``workbench.store.synthetic``, 60 layers, top-8 of 384), written
first when ``--store`` does not exist (``--tokens``, default 1M). Writes ``bench_store_integrity.json``:

- ``check_ms_per_expert_ids_chunk``: ``integrity.check_bytes`` (crc32c + Blosc header) on one chunk, mean of 20;
- ``read_cpu_s``: CPU seconds of all threads (``time.process_time``) to read ``--read-chunks`` token chunks of
  ``expert_ids`` through ``open_store`` (checked) and through plain ``xarray.open_zarr`` on the same store
  (zarr's own crc32c decode only), min of ``--repeat`` runs, the two alternating. CPU time rather than wall
  time, so that other jobs on a shared machine disturb it less;
- ``open_select_read_s``: wall seconds of ``open_store``, ``select(domain=math)`` and reading the selection's
  ``expert_ids`` and ``gate_weights``;
- ``verify_s``: wall seconds of ``verify_store`` (every chunk read once, checked and decoded).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import xarray as xr
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import LocalStore

from workbench.store import schema as S
from workbench.store.integrity import check_bytes, layouts
from workbench.store.io import open_store
from workbench.store.synthetic import synthetic_store
from workbench.store.verify import verify_store


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tokens", type=int, default=1_000_000)
    ap.add_argument("--read-chunks", type=int, default=40)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    res: dict[str, object] = {"cpus": os.cpu_count(), "load_avg": os.getloadavg(), "python": platform.python_version()}
    if not (args.store / "zarr.json").exists():
        t = time.perf_counter()
        synthetic_store(args.store, args.tokens, progress=False)
        res["write_s"] = time.perf_counter() - t
    root = json.loads((args.store / "zarr.json").read_text())
    lay = layouts(root)[S.EXPERT_IDS]
    raw = sync(LocalStore(args.store, read_only=True).get(lay.key((0, 0, 0)), default_buffer_prototype()))
    assert raw is not None
    t = time.perf_counter()
    for _ in range(20):
        check_bytes(lay, raw.as_numpy_array())
    res["check_ms_per_expert_ids_chunk"] = (time.perf_counter() - t) / 20 * 1e3
    res["expert_ids_chunks"] = lay.grid()[0]

    n = min(args.read_chunks * lay.chunks[0], lay.shape[0])
    chunks = {S.TOKEN: "auto", S.SEQUENCE: -1, S.SPAN: -1}
    makers = {
        "open_store": lambda: open_store(args.store),
        "plain_xarray": lambda: xr.open_zarr(LocalStore(args.store, read_only=True), chunks=chunks, consolidated=True),
    }
    best = {k: float("inf") for k in makers}
    for _ in range(args.repeat):
        for name, make in makers.items():
            ds = make()
            c = time.process_time()
            np.asarray(ds[S.EXPERT_IDS][:n].values)
            best[name] = min(best[name], time.process_time() - c)
    res["read_tokens"] = n
    res["read_cpu_s"] = best

    t = time.perf_counter()
    ds = open_store(args.store)
    t_open = time.perf_counter() - t
    sel = ds.routing.select(where="domain=math")
    t_sel = time.perf_counter() - t - t_open
    sel[S.EXPERT_IDS].values, sel[S.GATE_WEIGHTS].values
    res["open_select_read_s"] = {"open": t_open, "select": t_sel, "read": time.perf_counter() - t - t_open - t_sel}
    t = time.perf_counter()
    rep = verify_store(args.store)
    res["verify_s"], res["verify_ok"], res["verify_chunks"] = time.perf_counter() - t, rep.ok, rep.chunks
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_store_integrity.json").write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
