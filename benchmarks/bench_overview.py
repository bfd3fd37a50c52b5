"""Benchmark: the supernode overview of a K2-shaped store (60 MoE layers × 384 experts, top-8).

Builds ``workbench.graph.supernodes`` of all tokens of the store (one pass over the routing: node and
per-domain counts and every layer pair's E × E transitions, then Ward grouping per layer), the
alluvial figure, and the self-contained HTML page, each timed ``--repeat`` times (median reported).
The goal is a few seconds for 1M tokens on the benchmark machine; the machine's load is recorded
beside the times, since a shared machine slows every number.

The store (created unless ``--store`` already holds one) is K2-shaped synthetic routing with *planted*
structure, so the overview has something to find: ``workbench.store.synthetic.SyntheticRouter`` with 8
latent token clusters that persist across layers (``stay`` 0.97) and strongly prefer their own experts
(``cluster_spread`` 3), and each domain's tokens drawn from the vocabulary of two of the clusters. The
default synthetic store (16 weak clusters) has much less structure.

    python benchmarks/bench_overview.py --out benchmarks/results [--tokens 1000000] [--store PATH]
        [--figure docs/img/k2-overview.png]

Writes ``bench_overview.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from workbench.store.dataset import SequenceRecord, SpanRecord
from workbench.store.io import open_store
from workbench.store.synthetic import SyntheticRouter, synthetic_config, synthetic_tokenizer
from workbench.store.writer import StoreWriter

DOMAINS = ("math", "code", "language", "agent")
N_CLUSTERS, SPREAD, STAY = 8, 3.0, 0.97
VOCAB = 32768


def planted_records(n_tokens: int, seed: int = 0, mean_length: int = 600) -> Iterator[SequenceRecord]:
    """K2-shaped sequences whose routing follows 8 persistent token clusters, two per domain (module docstring)."""
    router = SyntheticRouter(60, 384, 8, domains=DOMAINS, n_clusters=N_CLUSTERS, cluster_spread=SPREAD, stay=STAY,
                             seed=seed)  # fmt: skip
    rng = np.random.default_rng(seed + 2)
    vocab = np.arange(2, VOCAB)
    cluster_of = (vocab * 2654435761 % 2**32) % N_CLUSTERS  # the router's first-layer cluster of a token id
    per_domain = [rng.permutation(vocab[(cluster_of // 2) == d]) for d in range(len(DOMAINS))]
    left, i = n_tokens, 0
    while left > 0:
        n = int(np.clip(rng.lognormal(np.log(mean_length), 0.6), 16, 8 * mean_length))
        n = left if left - n < 16 else n
        d = i % len(DOMAINS)
        words = per_domain[d]
        token_ids = words[np.minimum(rng.zipf(1.2, n), words.size) - 1]
        ids, weights = router.route(token_ids, DOMAINS[d])
        cut = max(1, n // 5)
        yield SequenceRecord(
            id=f"planted-{i:06d}", domain=DOMAINS[d], source="synthetic-planted", token_ids=token_ids,
            expert_ids=ids, gate_weights=weights, generated=np.arange(n) >= cut,
            spans=[SpanRecord("user", 0, cut), SpanRecord("answer", cut, n)],
        )  # fmt: skip
        left -= n
        i += 1


def planted_store(path: Path, n_tokens: int, seed: int = 0) -> Path:
    """Write the planted-structure K2-shaped store at ``path`` (see ``planted_records``)."""
    cfg = synthetic_config(60, 384, 8, model_name="synthetic-k2-planted")
    with StoreWriter(path, cfg, synthetic_tokenizer(VOCAB), capture="synthetic") as writer:
        for rec in planted_records(n_tokens, seed):
            writer.add(rec)
    return path


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, list[float], Any, float]:
    """Median wall time, all wall times, the last result, and the median CPU time (all threads of the process).

    On a shared machine the CPU time is the steadier number: wall time there includes waiting for a core."""
    times, cpu, out = [], [], None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(times), times, out, statistics.median(cpu)


def main() -> None:
    from workbench.viz.overview import overview_figure
    from workbench.viz.overview_page import write_overview_html

    from workbench.graph.supernodes import supernodes

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for bench_overview.json")
    ap.add_argument("--tokens", type=int, default=1_000_000, help="tokens in the planted store")
    ap.add_argument("--store", type=Path, default=None, help="reuse/create the store here (default: temp dir)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--figure", type=Path, default=None, help="also export the overview figure here (png/svg/pdf)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.TemporaryDirectory()
    store = args.store or Path(tmp.name) / "planted.zarr"
    t0 = time.perf_counter()
    if not (store / "zarr.json").exists():
        planted_store(store, args.tokens)
    write_s = time.perf_counter() - t0
    ds = open_store(store)
    supernodes(ds)  # warm-up: numba kernels from their cache
    load_before = os.getloadavg()
    build, build_all, sn, build_cpu = timed(lambda: supernodes(ds), args.repeat)
    fig_s, _, fig, _ = timed(lambda: overview_figure(sn), args.repeat)
    html = Path(tmp.name) / "overview.html"
    html_s, _, _, _ = timed(lambda: write_overview_html(sn, html), args.repeat)
    result = {
        "tokens": sn.n_tokens, "layers": int(sn.layers.size), "experts": sn.n_experts, "top_k": sn.top_k,
        "supernodes": int(sn.n_groups.sum()), "store_write_s": round(write_s, 2),
        "supernodes_s": round(build, 3), "supernodes_runs_s": [round(t, 3) for t in build_all],
        "supernodes_cpu_s": round(build_cpu, 3),
        "figure_s": round(fig_s, 3), "html_s": round(html_s, 3), "html_bytes": html.stat().st_size,
        "goal": "supernodes of 1M K2-shaped tokens in a few seconds",
        "machine": {"cpus": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
                    "python": platform.python_version()},
    }  # fmt: skip
    if args.figure is not None:
        from workbench.viz.export import export_figure

        export_figure(fig, args.figure, scale=1.0)
        result["figure"] = str(args.figure)
    (args.out / "bench_overview.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
