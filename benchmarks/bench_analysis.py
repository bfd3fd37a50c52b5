"""Benchmark: expert loads, co-activation and all layer-to-layer transition matrices on a K2-shaped store.

    .venv/bin/python benchmarks/bench_analysis.py --out benchmarks/results            # 1M x 60 x top-8 of 384
    .venv/bin/python benchmarks/bench_analysis.py --out /tmp/b --tokens 100000        # quicker

The store (``--store``, reused when it already has the asked shape) is written once through ``StoreWriter``
with a fast generator: per-layer Zipf-skewed first experts and k distinct experts per token. (The
realistic generator of workbench/store/synthetic.py samples ~500 tokens/s here, too slow for 1M tokens;
the counting cost does not depend on the routing law beyond cache behaviour, and uniform-ish ids are
the worst case for it.)

Two measurements, each in its own fresh process so peak memory (ru_maxrss) is its own:

- ``workbench``: ``open_store`` + one ``accumulate`` pass (dask tasks that each read a chunk-aligned run of
  rows straight from the store into a reused buffer and count it with the numba kernel, tree reduction)
  computing loads (L, E), co-activation (L, E, E) and the L-1 transition matrices (L-1, E, E);
- ``numpy``: the plain way, ``expert_ids`` loaded whole into memory and counted with ``np.bincount``
  per layer and per layer pair (same results, checked).

``--profile`` first times each stage of the pass alone (``run_profile``: open + prepare, read, Blosc alone,
count, the kernel alone, reduction), to say where the time goes and how far it is from the floor (the
kernel and the read); it runs this version only.

Writes ``bench_analysis.json`` to ``--out``. Goal: <= 5 s and <= 4 GB on 2 cores, identical numbers.
On a shared machine wall time mostly measures the other jobs: compare ``cpu_seconds`` (and read
``cpu_seconds / 2`` as the best an idle 2-core machine could do), with ``loadavg_before_after``.

Before/after: the same script runs an older checkout's engine with ``PYTHONPATH=/path/to/that/checkout``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import multiprocessing as mp
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

N_LAYERS, N_EXPERTS, TOP_K = 60, 384, 8
LOAD_AT_START = os.getloadavg()[0]


def _records(n_tokens: int, n_layers: int, n_experts: int, k: int, seed: int = 0):
    from workbench.store.dataset import SequenceRecord

    rng = np.random.default_rng(seed)
    ranks = np.arange(1, n_experts + 1, dtype=np.float64) ** -0.8  # Zipf-like popularity of first experts
    pop = ranks / ranks.sum()
    perms = np.stack([rng.permutation(n_experts) for _ in range(n_layers)])  # (L, E) popularity order per layer
    max_step = (n_experts - 1) // k
    domains = ("math", "code", "language", "agent")
    left, i = n_tokens, 0
    while left > 0:
        n = min(left, int(rng.integers(200, 1200)))
        first = perms[np.arange(n_layers)[None, :], rng.choice(n_experts, size=(n, n_layers), p=pop)]  # (T, L)
        steps = rng.integers(1, max_step + 1, size=(n, n_layers, k))
        steps[:, :, 0] = 0
        ids = ((first[:, :, None] + np.cumsum(steps, axis=2)) % n_experts).astype(np.int16)  # (T, L, k) distinct
        w = rng.random((n, n_layers, k)).astype(np.float32)
        w = np.sort(w, axis=2)[:, :, ::-1] / w.sum(axis=2, keepdims=True)
        yield SequenceRecord(
            id=f"bench-{i:06d}",
            domain=domains[i % 4],
            source="bench",
            token_ids=rng.integers(0, 32768, n).astype(np.int32),
            expert_ids=ids,
            gate_weights=w.astype(np.float32),
        )
        left -= n
        i += 1


def ensure_store(path: Path, n_tokens: int) -> None:
    from workbench.routing_config import RoutingConfig
    from workbench.store.io import open_store
    from workbench.store.writer import StoreWriter

    if path.exists():
        ds = open_store(str(path))
        if ds.sizes["token"] == n_tokens and ds.sizes["layer"] == N_LAYERS:
            return
        raise SystemExit(f"{path} exists with another shape; remove it or pass another --store")
    cfg = RoutingConfig(
        model_name="bench-k2", model_type="deepseek_v3", family="synthetic", num_hidden_layers=N_LAYERS + 1,
        moe_layers=tuple(range(1, N_LAYERS + 1)), n_routed_experts=N_EXPERTS, top_k=TOP_K, n_shared_experts=1,
        scoring_func="sigmoid", topk_method="noaux_tc", norm_topk_prob=True, routed_scaling_factor=2.827,
    )  # fmt: skip
    tok = {"name": "bench", "vocab": [f"t{i}" for i in range(32768)], "special_tokens": {}}
    from tqdm import tqdm

    t0 = time.perf_counter()
    with StoreWriter(str(path), cfg, tok, capture="synthetic") as w, tqdm(total=n_tokens, unit="tok") as bar:
        for rec in _records(n_tokens, N_LAYERS, N_EXPERTS, TOP_K):
            w.add(rec)
            bar.update(rec.n_tokens)
    print(f"wrote {path} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def _cpu_s() -> float:
    """CPU seconds of this process, all threads (user + system): on a shared machine, wall time can be
    several times the work done; cpu_seconds / 2 is what an idle 2-core machine would need at best."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _warm_up() -> dict[str, float]:
    """Compile (or load from numba's cache) the kernels and import what dask's first compute imports,
    outside the timed region: a long-lived session pays both once. Works on older checkouts too
    (``PYTHONPATH=/path/to/main`` for before/after figures)."""
    from workbench.analysis import kernels

    t0 = time.perf_counter()
    with contextlib.suppress(ImportError):
        import distributed  # noqa: F401  (dask's get_scheduler imports it on the first compute: ~1 s)
    t1 = time.perf_counter()
    g = np.zeros(4, np.int32)
    if hasattr(kernels, "routing_counts"):  # this version: token-major (T, L, k)
        tiny = np.zeros((4, 2, 8), np.int16)
        e2 = np.zeros((2, 64), np.int32)
        kernels.first_bad_row(tiny, 8)
        kernels.routing_counts(tiny, g, 8, np.zeros((1, 2, 8), np.int32), e2, False, e2[:1])
    else:  # before: layer-major (L, T, k) kernels
        tiny = np.zeros((2, 4, 8), np.int16)
        kernels.load_counts(tiny, g, 1, 8), kernels.coactivation_counts(tiny, g, 8, False)
        kernels.transition_counts(tiny, g, 8)
    return {"import_seconds": t1 - t0, "compile_or_cache_load_seconds": time.perf_counter() - t1}


def run_workbench(store: str, q: Any) -> None:
    import dask

    from workbench.analysis.engine import Want, accumulate
    from workbench.analysis.inputs import prepare
    from workbench.store.io import open_store

    warm = _warm_up()
    base_gb = _peak_gb()
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t0, c0 = time.perf_counter(), _cpu_s()
    with dask.config.set(scheduler="threads", num_workers=os.cpu_count()):
        ds = open_store(store)
        inputs = prepare(ds, None)
        part = accumulate(inputs, Want(load=True, coactivation="all", transitions=True))
    seconds = time.perf_counter() - t0
    assert part.load is not None and part.coact is not None and part.trans is not None
    q.put(
        {
            "seconds": seconds,
            "cpu_seconds": _cpu_s() - c0,
            "page_faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0,
            **warm,
            "peak_rss_gb": _peak_gb(),
            "rss_before_gb": base_gb,
            "token_chunks": len(inputs.token_chunks),
            "tokens_per_chunk": int(max(inputs.token_chunks)),
            "check": [int(part.load.sum()), int(part.coact.sum()), int(part.trans.sum()), int(part.trans[-1, 5].sum())],
            "loadavg_before_after": [LOAD_AT_START, os.getloadavg()[0]],
        }
    )


def _timed(fn: Any) -> tuple[Any, float, float]:
    t0, c0 = time.perf_counter(), _cpu_s()
    out = fn()
    return out, time.perf_counter() - t0, _cpu_s() - c0


def run_profile(store: str, q: Any) -> None:
    """Where the time of one pass goes: each stage alone, on the pass's own runs of rows (this version only).

    - ``open_prepare``: ``open_store`` + ``prepare`` (selection, group codes);
    - ``read``: reading and decompressing every run of ``expert_ids`` into reused buffers, as the pass's
      tasks do (``workbench.store.rows``), on a pool of as many threads as cores, nothing else; and
      ``decompress_only``: Blosc alone on the encoded chunks already in memory, one thread, into one buffer;
    - ``count``: the counting tasks (``range_counts`` in the engine's ``n_chains()`` chains: accumulators, id
      check, fused kernel) over runs already in memory, on a pool of as many threads as cores, and ``kernel_only``
      the fused kernel alone (into count arrays whose pages are already mapped);
    - ``reduce``: the fixed tree of ``merge`` over the partials and the final int64 conversion.
    """
    from concurrent.futures import ThreadPoolExecutor

    import dask
    import numcodecs.blosc

    from workbench.analysis import kernels as K
    from workbench.analysis.engine import Want, n_chains, range_counts, row_runs
    from workbench.analysis.inputs import prepare
    from workbench.analysis.partial import merge, widen
    from workbench.store.io import open_store
    from workbench.store.rows import _fetch, borrow
    from workbench.tree_reduce import tree_reduce

    warm = _warm_up()
    want = Want(load=True, coactivation="all", transitions=True)
    threads = os.cpu_count() or 1
    out: dict[str, Any] = dict(warm)
    inputs, out["open_prepare_s"], out["open_prepare_cpu_s"] = _timed(lambda: prepare(open_store(store), None))
    reader = inputs.ids_rows
    assert reader is not None, "the store's own Dataset reads through workbench.store.rows"
    bounds = np.concatenate([[0], np.cumsum(inputs.token_chunks)])
    _, n_layers, k = inputs.ids.shape
    step = reader.layout.chunks[0]
    runs = [
        (int(a) + lo, int(a) + hi)
        for a, b in itertools.pairwise(bounds)
        for lo, hi in row_runs(int(b - a), n_layers, k, want, row0=int(a), align=step)
    ]

    def read(run: tuple[int, int]) -> None:
        with borrow((run[1] - run[0], n_layers, k), np.int16) as buf:
            reader.read_into(run[0], run[1], buf)

    with ThreadPoolExecutor(threads) as pool:
        _, out["read_s"], out["read_cpu_s"] = _timed(lambda: list(pool.map(read, runs)))
    encoded = [
        b.as_numpy_array()[:-4]
        for b in _fetch(reader.store, [(c, 0, 0) for c in range(reader.layout.grid()[0])], reader.layout)
    ]
    chunk = np.empty((step, n_layers, k), np.int16)
    numcodecs.blosc.decompress(encoded[0], chunk)
    _, out["decompress_only_s"], out["decompress_only_cpu_s"] = _timed(
        lambda: [numcodecs.blosc.decompress(e, chunk) for e in encoded]
    )
    encoded.clear()
    arrays = [reader.read_into(a, b, np.empty((b - a, n_layers, k), np.int16)) for a, b in runs]  # not timed
    jobs = list(zip(runs, arrays, strict=True))

    chains = n_chains()

    def chain(c: int) -> Any:  # the engine's chains: run j adds into accumulator j % chains
        acc = None
        for (a, b), arr in jobs[c::chains]:
            g = np.ascontiguousarray(inputs.group[a:b])
            acc = range_counts(acc, a, arr, 0, b - a, g, inputs.n_groups, inputs.n_experts, want, {})
        return acc

    with ThreadPoolExecutor(threads) as pool:
        parts, out["count_s"], out["count_cpu_s"] = _timed(lambda: [p for p in pool.map(chain, range(chains)) if p])

    def kernel_only(job: tuple[tuple[int, int], np.ndarray]) -> float:
        (a, b), arr = job
        ee = inputs.n_experts**2
        load = np.zeros((1, n_layers, inputs.n_experts), np.int32)
        co, tr = np.ones((n_layers, ee), np.int32), np.ones((n_layers - 1, ee), np.int32)  # pages touched
        g = np.ascontiguousarray(inputs.group[a:b])
        t0 = time.thread_time()
        K.routing_counts(arr, g, inputs.n_experts, load, co, False, tr)
        return time.thread_time() - t0

    with ThreadPoolExecutor(threads) as pool:
        per_job, out["kernel_only_s"], _ = _timed(lambda: list(pool.map(kernel_only, jobs)))
    out["kernel_only_cpu_s"] = float(sum(per_job))
    with dask.config.set(scheduler="threads", num_workers=threads):
        root = tree_reduce([dask.delayed(p) for p in parts], merge, split_every=8)
        _, out["reduce_s"], out["reduce_cpu_s"] = _timed(lambda: widen(dask.compute(root)[0]))
    out["runs"] = len(jobs)
    out["rows_per_run"] = [min(b - a for a, b in runs), max(b - a for a, b in runs)]
    out["threads"] = threads
    out["loadavg_before_after"] = [LOAD_AT_START, os.getloadavg()[0]]
    q.put(out)


def run_numpy(store: str, n_tokens: int, q: Any) -> None:
    import zarr

    t0, c0 = time.perf_counter(), _cpu_s()
    ids = np.asarray(zarr.open_group(store, mode="r")["expert_ids"][:n_tokens]).astype(np.int32)  # (T, L, k)
    read_s = time.perf_counter() - t0
    n_layers, k, e = ids.shape[1], ids.shape[2], N_EXPERTS
    load = np.stack([np.bincount(ids[:, layer].ravel(), minlength=e) for layer in range(n_layers)])
    iu = np.triu_indices(k, 1)
    coact = np.empty((n_layers, e, e), np.int64)
    for layer in range(n_layers):
        x = ids[:, layer]  # (T, k)
        idx = (x[:, iu[0]] * e + x[:, iu[1]]).ravel()  # rank-ordered pairs (T * k(k-1)/2,)
        coact[layer] = np.bincount(idx, minlength=e * e).reshape(e, e)
    trans = np.empty((n_layers - 1, e, e), np.int64)
    for layer in range(n_layers - 1):
        idx = (ids[:, layer, :, None] * e + ids[:, layer + 1, None, :]).ravel()  # (T * k * k,)
        trans[layer] = np.bincount(idx, minlength=e * e).reshape(e, e)
    q.put(
        {
            "seconds": time.perf_counter() - t0,
            "cpu_seconds": _cpu_s() - c0,
            "read_seconds": read_s,
            "peak_rss_gb": _peak_gb(),
            "tokens": int(ids.shape[0]),
            "check": [int(load.sum()), int(coact.sum()), int(trans.sum()), int(trans[-1, 5].sum())],
        }
    )


def _child(target: Any, *args: Any) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=target, args=(*args, q))
    p.start()
    out = q.get()
    p.join()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--tokens", type=int, default=1_000_000)
    ap.add_argument("--store", type=Path, default=Path("/tmp/bench_analysis_k2.zarr"))
    ap.add_argument("--baseline-tokens", type=int, default=None, help="numpy baseline on the first N tokens only")
    ap.add_argument("--repeat", type=int, default=1, help="workbench runs (best and all times are reported)")
    ap.add_argument("--store-only", action="store_true", help="write the store and stop")
    ap.add_argument("--profile", action="store_true", help="also time each stage alone (read, count, reduce)")
    args = ap.parse_args()
    ensure_store(args.store, args.tokens)
    if args.store_only:
        return
    profile = _child(run_profile, str(args.store)) if args.profile else None
    if profile is not None:
        print(f"profile: {json.dumps(profile)}", file=sys.stderr, flush=True)
    runs = []
    for _ in range(args.repeat):
        runs.append(_child(run_workbench, str(args.store)))
        print(f"workbench: {json.dumps(runs[-1])}", file=sys.stderr, flush=True)
    best = min(runs, key=lambda r: r["seconds"])
    n_base = min(args.baseline_tokens or args.tokens, args.tokens)
    base = _child(run_numpy, str(args.store), n_base)
    print(f"numpy: {json.dumps(base)}", file=sys.stderr, flush=True)
    increments = args.tokens * (N_LAYERS * TOP_K * (TOP_K - 1) // 2 + (N_LAYERS - 1) * TOP_K * TOP_K)
    result = {
        "benchmark": "analysis: loads + co-activation + all layer-to-layer transitions",
        "store": {"tokens": args.tokens, "layers": N_LAYERS, "top_k": TOP_K, "experts": N_EXPERTS},
        "pair_increments": increments,
        "workbench": best | {"all_seconds": [r["seconds"] for r in runs]},
        "numpy_baseline": base,
        "profile": profile,
        "same_results": best["check"] == base["check"] if n_base == args.tokens else None,
        "numpy_baseline_tokens": n_base,
        "numpy_seconds_scaled_to_all_tokens": base["seconds"] * args.tokens / n_base,
        "speedup_vs_numpy": (base["seconds"] * args.tokens / n_base) / best["seconds"],
        "cpu_speedup_vs_numpy": (base["cpu_seconds"] * args.tokens / n_base) / best["cpu_seconds"],
        "goal": {"seconds": 5, "peak_gb": 4},
        "goal_met": best["seconds"] <= 5 and best["peak_rss_gb"] <= 4,
        "ideal_two_core_seconds": best["cpu_seconds"] / 2,
        "machine": {
            "cpus": os.cpu_count(),
            "loadavg_at_end": os.getloadavg(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_analysis.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
