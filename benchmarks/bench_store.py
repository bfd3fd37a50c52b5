"""Routing-store benchmark: write throughput, bytes per token-layer, and how close that is to the entropy limit.

    python benchmarks/bench_store.py --out benchmarks/results            # K2 shape: 60 layers x 8 of 384, 100k tokens
    python benchmarks/bench_store.py --out benchmarks/results --zipf 0 --name bench_store_balanced

Writes ``bench_store.json`` into ``--out``. The routing is the K2-shaped synthetic routing of
``workbench.store.synthetic`` (generated before the clock starts). Figures:

- ``write_tokens_per_s``: tokens / wall time from the first ``StoreWriter.add`` to the end of ``close()``
  (compression, chunk writes and commits included; ``with_gate_weights`` as a hooks capture records them).
- ``add_ms_p50`` / ``add_ms_max``: how long ``add`` blocks the caller (the forward pass) per sequence.
- ``commit_ms_single_sequence_median``: add one ~600-token sequence to an idle writer and wait for its commit
  (appended after the main run, so it includes re-encoding the partly filled tail chunk).
- ``expert_ids_bytes_per_token_layer``: bytes on disk of ``expert_ids`` / (tokens x MoE layers), against the
  raw ``2 * k`` bytes (int16) and the entropy limit ``k * H / 8`` where ``H`` is the mean over layers of the
  empirical entropy of the layer's marginal expert distribution, ``H_l = -sum_e p_l(e) log2 p_l(e)`` (bits
  per id). Coding each id with its layer's marginal law cannot beat ``H``; a coder that exploits the
  dependence between layers or ranks could, so ``H`` is a reference, not a hard floor.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from workbench.store import codecs
from workbench.store import schema as S
from workbench.store.io import StoreWriter, open_store, store_size
from workbench.store.synthetic import synthetic_config, synthetic_records, synthetic_tokenizer


def marginal_entropy_bits(ids: np.ndarray, n_experts: int) -> np.ndarray:
    """Empirical entropy (bits per id) of each layer's marginal expert distribution. ids (T, L, k) -> (L,)."""
    out = np.empty(ids.shape[1])
    for layer in range(ids.shape[1]):
        p = np.bincount(ids[:, layer].ravel(), minlength=n_experts) / ids[:, layer].size
        p = p[p > 0]
        out[layer] = -(p * np.log2(p)).sum()
    return out


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path, help="directory for bench_store.json")
    ap.add_argument("--tokens", type=int, default=100_000)
    ap.add_argument("--layers", type=int, default=60)
    ap.add_argument("--experts", type=int, default=384)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--mean-length", type=int, default=600, help="mean sequence length (tokens)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--zipf", type=float, default=0.9, help="skew of per-layer expert loads (0: balanced)")
    ap.add_argument("--name", default="bench_store", help="JSON file name (without .json)")
    ap.add_argument("--store", type=Path, default=None, help="where to write the store (default: a temp dir)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    records = list(
        synthetic_records(
            args.tokens, args.layers, args.experts, args.k, seed=args.seed, mean_length=args.mean_length, zipf=args.zipf
        )
    )
    gen_s = time.perf_counter() - t0
    ids = np.concatenate([r.expert_ids for r in records])  # (T, L, k)
    h = marginal_entropy_bits(ids, args.experts)

    tmp = Path(tempfile.mkdtemp(prefix="bench-store-"))
    store = args.store or tmp / "bench.zarr"
    if store.exists():
        shutil.rmtree(store)
    config = synthetic_config(args.layers, args.experts, args.k)
    add_s: list[float] = []
    t0 = time.perf_counter()
    with StoreWriter(store, config, synthetic_tokenizer(), capture="synthetic") as writer:
        for rec in records:
            a = time.perf_counter()
            writer.add(rec)
            add_s.append(time.perf_counter() - a)
    write_s = time.perf_counter() - t0

    # latency of one commit when the writer is idle: add one sequence, wait until it is committed
    extra = list(synthetic_records(5 * 600, args.layers, args.experts, args.k, seed=args.seed + 100, mean_length=600))
    commit_s: list[float] = []
    with StoreWriter(store, config, synthetic_tokenizer(), capture="synthetic") as writer:
        for rec in extra:
            a = time.perf_counter()
            writer.add(rec)
            writer.flush()
            commit_s.append(time.perf_counter() - a)

    t0 = time.perf_counter()
    ds = open_store(store)
    loaded = ds[S.EXPERT_IDS].values
    read_s = time.perf_counter() - t0
    assert np.array_equal(loaded[: len(ids)], ids), "the store does not read back what was written"

    token_layers = len(loaded) * args.layers  # sizes cover every token in the store (main run + commit probe)
    ids_b = dir_bytes(store / S.EXPERT_IDS)
    w_b = dir_bytes(store / S.GATE_WEIGHTS)
    total_b = store_size(store)
    limit = args.k * float(h.mean()) / 8
    result = {
        "benchmark": "store",
        "shape": {"tokens": args.tokens, "moe_layers": args.layers, "experts": args.experts, "k": args.k},
        "synthetic": {"zipf": args.zipf, "seed": args.seed, "mean_length": args.mean_length},
        "sequences": len(records),
        "token_chunk": codecs.token_chunk(args.layers, args.k),
        "generate_s": round(gen_s, 3),
        "write_s": round(write_s, 3),
        "write_tokens_per_s": round(args.tokens / write_s, 1),
        "write_token_layers_per_s": round(args.tokens * args.layers / write_s, 1),
        "add_ms_p50": round(1000 * float(np.median(add_s)), 3),
        "add_ms_max": round(1000 * float(np.max(add_s)), 3),
        "commit_ms_single_sequence_median": round(1000 * float(np.median(commit_s)), 1),
        "commit_tokens_single_sequence_median": int(np.median([r.n_tokens for r in extra])),
        "read_expert_ids_s": round(read_s, 3),
        "read_tokens_per_s": round(len(loaded) / read_s, 1),
        "expert_ids_bytes_per_token_layer": round(ids_b / token_layers, 3),
        "expert_ids_raw_bytes_per_token_layer": 2 * args.k,
        "expert_ids_compression_ratio": round(2 * args.k * token_layers / ids_b, 3),
        "entropy_bits_per_id_mean": round(float(h.mean()), 4),
        "entropy_bits_per_id_min": round(float(h.min()), 4),
        "entropy_bits_per_id_max": round(float(h.max()), 4),
        "entropy_limit_bytes_per_token_layer": round(limit, 3),
        "expert_ids_over_entropy_limit": round(ids_b / token_layers / limit, 3),
        "gate_weights_bytes_per_token_layer": round(w_b / token_layers, 3),
        "gate_weights_raw_bytes_per_token_layer": 2 * args.k,
        "store_bytes": total_b,
        "store_tokens": len(loaded),
        "store_bytes_per_token": round(total_b / len(loaded), 1),
        "machine": {"cpus": os.cpu_count(), "load_avg_1m": os.getloadavg()[0], "python": platform.python_version()},
    }
    shutil.rmtree(tmp, ignore_errors=True)
    out = args.out / f"{args.name}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
