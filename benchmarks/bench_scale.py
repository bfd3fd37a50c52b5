"""Benchmark: routing-store compression against the entropy of the ids, and analysis throughput
in-process vs on a 2-worker dask cluster, on a K2-shaped store (1M tokens x 60 MoE layers x top-8 of 384).

    .venv/bin/python benchmarks/bench_scale.py --out benchmarks/results
    .venv/bin/python benchmarks/bench_scale.py --out /tmp/b --tokens 100000 --realistic-tokens 5000   # quicker
    .venv/bin/python benchmarks/bench_scale.py --out /tmp/b --extra-store runs/k2-mini.zarr   # + a recorded store

Part 1, compression (``compression`` in the JSON), per store: bits the stored ``expert_ids`` take per
token-layer (the k ids of one token in one layer), against empirical entropies of those ids:

- ``h_rank_marginal``: sum over ranks r of H(X_{l,r}), the entropy of the rank-r expert at layer l,
  averaged over layers: the limit of a memoryless per-(layer, rank) entropy coder;
- ``h_pooled``: k * H(X_l), one id distribution per layer regardless of rank (>= the above);
- ``h_first_given_prev_layer``: H(X_{l,0} | X_{l-1,0}), the first choice given the previous layer's
  first choice, vs ``h_first``: how much a coder with layer context could still gain (plug-in
  estimates; with E^2 = 147k cells per layer pair they are biased low for small stores).

Stores: the fast K2-shaped generator shared with bench_analysis.py (``--store``, Zipf first choices,
uniform-ish others), the realistic generator of workbench/store/synthetic.py (domain/vocabulary/layer
structure; slow to sample, hence ``--realistic-tokens``), and any ``--extra-store`` (e.g. one recorded
from the mini K2 or by an engine).

Part 2, throughput (``throughput``): wall seconds and tokens/s of each analysis function on the
``--store`` store, in-process (dask threads, 2) and with ``dask_client("local:2")`` (2 worker
processes x 1 thread). Numba kernels are compiled before timing in both modes (a warm-up on a small
store). Results are checked to be identical between the two modes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _entropy_bits(counts: np.ndarray) -> np.ndarray:
    """H = -sum p log2 p over the last axis; counts (..., E) -> (...)."""
    tot = counts.sum(axis=-1, keepdims=True)
    p = counts / np.maximum(tot, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.nansum(np.where(p > 0, p * np.log2(p), 0.0), axis=-1)


def compression(store: str, label: str) -> dict[str, Any]:
    """Stored bits of expert_ids per token-layer vs the empirical entropies above (one pass over chunks)."""
    import zarr

    grp = zarr.open_group(store, mode="r")
    ids = grp["expert_ids"]
    t, n_layers, k = ids.shape
    n_exp = int(grp.attrs["model"]["n_routed_experts"])
    rank = np.zeros((n_layers, k, n_exp), np.int64)  # counts of expert e at (layer, rank)
    pair = np.zeros((n_layers - 1, n_exp * n_exp), np.int64)  # first choice at l-1 -> first choice at l
    step = ids.chunks[0]
    for a in range(0, t, step):
        x = np.asarray(ids[a : a + step]).astype(np.int64)  # (T_c, L, k)
        for layer in range(n_layers):
            for r in range(k):
                rank[layer, r] += np.bincount(x[:, layer, r], minlength=n_exp)
        first = x[:, :, 0]  # (T_c, L)
        for layer in range(1, n_layers):
            pair[layer - 1] += np.bincount(first[:, layer - 1] * n_exp + first[:, layer], minlength=n_exp * n_exp)
    h_rank = _entropy_bits(rank).sum(axis=1)  # (L,)
    h_pooled = k * _entropy_bits(rank.sum(axis=1))  # (L,)
    h_first = _entropy_bits(rank[:, 0])  # (L,)
    joint = pair.reshape(n_layers - 1, n_exp, n_exp)
    h_joint = _entropy_bits(joint.reshape(n_layers - 1, -1))
    h_prev = _entropy_bits(joint.sum(axis=2))
    h_cond = h_joint - h_prev  # H(X_l | X_{l-1}) = H(X_{l-1}, X_l) - H(X_{l-1})
    id_bytes = _dir_bytes(Path(store) / "expert_ids")
    token_layers = t * n_layers
    stored_bits = 8 * id_bytes / token_layers
    return {
        "store": label,
        "path": store,
        "tokens": int(t),
        "layers": int(n_layers),
        "top_k": int(k),
        "experts": n_exp,
        "expert_ids_bytes": id_bytes,
        "store_bytes": _dir_bytes(Path(store)),
        "raw_int16_bits_per_token_layer": 16 * k,
        "stored_bits_per_token_layer": stored_bits,
        "stored_bytes_per_token_layer": id_bytes / token_layers,
        "store_bytes_per_token": _dir_bytes(Path(store)) / t,
        "h_rank_marginal_bits": float(h_rank.mean()),
        "h_pooled_bits": float(h_pooled.mean()),
        "h_uniform_bits": float(k * np.log2(n_exp)),
        "stored_over_h_rank_marginal": float(stored_bits / h_rank.mean()),
        "h_first_bits": float(h_first[1:].mean()),
        "h_first_given_prev_layer_bits": float(h_cond.mean()),
    }


def realistic_store(path: Path, n_tokens: int) -> str:
    from workbench.store.io import open_store
    from workbench.store.synthetic import synthetic_store

    if path.exists():
        if open_store(str(path)).sizes["token"] == n_tokens:
            return str(path)
        raise SystemExit(f"{path} exists with another size; remove it or pass another --realistic-store")
    t0 = time.perf_counter()
    synthetic_store(path, n_tokens, 60, 384, 8, seed=0)
    print(f"wrote {path} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return str(path)


def _functions() -> dict[str, Any]:
    from workbench import analysis as A
    from workbench.graph import reasoning_graph

    return {
        "expert_load(by=domain)": lambda ds: A.expert_load(ds, by="domain"),
        "routing_entropy(by=domain)": lambda ds: A.routing_entropy(ds, by="domain"),
        "coactivation": lambda ds: A.coactivation(ds),
        "transitions": lambda ds: A.transitions(ds),
        "consecutive_agreement": lambda ds: A.consecutive_agreement(ds),
        "domain_specialization": lambda ds: A.domain_specialization(ds),
        "reasoning_graph(top_edges=100)": lambda ds: reasoning_graph(ds, top_edges=100),
    }


def _fingerprint(obj: Any) -> float:
    """A number that changes if any count changes (for the in-process vs cluster check)."""
    import networkx as nx
    import xarray as xr

    if isinstance(obj, xr.Dataset):
        return float(sum(np.nansum(np.asarray(v.values, dtype=np.float64)) for v in obj.data_vars.values()))
    if isinstance(obj, nx.DiGraph):
        return float(sum(d.get("count", 0) for _, _, d in obj.edges(data=True)))
    return float("nan")


def throughput(store: str, warm_store: str, workers: int, only: list[str] | None = None) -> dict[str, Any]:
    import dask

    from workbench.distributed import cluster_summary, dask_client
    from workbench.store.io import open_store

    funcs = {n: f for n, f in _functions().items() if not only or any(n.startswith(o) for o in only)}
    n_tokens = int(open_store(store).sizes["token"])
    out: dict[str, Any] = {"tokens": n_tokens, "modes": {}}
    modes: list[tuple[str, str | None]] = [
        ("in_process_threads", None),
        (f"local_cluster_{workers}x1", f"local:{workers}"),
    ]
    for mode, address in modes:
        with contextlib.ExitStack() as stack:
            client = stack.enter_context(dask_client(address))
            if client is None:
                stack.enter_context(dask.config.set(scheduler="threads", num_workers=workers))
            for fn in funcs.values():  # compile numba kernels (in each worker) before timing
                fn(open_store(warm_store))
            rows = {}
            for name, fn in funcs.items():
                t0 = time.perf_counter()
                res = fn(open_store(store))
                sec = time.perf_counter() - t0
                rows[name] = {"seconds": sec, "tokens_per_second": n_tokens / sec, "fingerprint": _fingerprint(res)}
                print(f"{mode:24s} {name:28s} {sec:7.2f} s", file=sys.stderr)
            out["modes"][mode] = {"cluster": cluster_summary(client), "functions": rows}
    a, b = (out["modes"][m]["functions"] for m, _ in modes)
    out["identical"] = all(a[n]["fingerprint"] == b[n]["fingerprint"] for n in funcs)
    out["speedup_cluster_over_in_process"] = {n: a[n]["seconds"] / b[n]["seconds"] for n in funcs}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--tokens", type=int, default=1_000_000)
    ap.add_argument("--store", type=Path, default=Path("/tmp/bench_scale_k2.zarr"))
    ap.add_argument("--realistic-tokens", type=int, default=20_000)
    ap.add_argument("--realistic-store", type=Path, default=Path("/tmp/bench_scale_realistic.zarr"))
    ap.add_argument("--extra-store", action="append", default=[], help="another store to measure (repeatable)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--skip-compression", action="store_true")
    ap.add_argument("--functions", nargs="*", help="time only these analysis functions (name prefixes)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    from bench_analysis import ensure_store  # the fast K2-shaped generator, shared with bench_analysis.py

    ensure_store(args.store, args.tokens)
    realistic = realistic_store(args.realistic_store, args.realistic_tokens)
    result: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
    }
    if not args.skip_compression:
        result["compression"] = [
            compression(str(args.store), "fast-k2-shaped"),
            compression(realistic, "realistic-synthetic"),
            *[compression(s, Path(s).name) for s in args.extra_store],
        ]
    if not args.skip_throughput:
        result["throughput"] = throughput(str(args.store), realistic, args.workers, args.functions)
    (args.out / "bench_scale.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
