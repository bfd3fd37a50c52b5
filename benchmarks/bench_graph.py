"""Benchmark: build + prune the reasoning graph of a 10k-token selection of a K2-shaped store (goal ≤ 1 s).

The store is synthetic (60 MoE layers, 384 experts, top-8) and written to disk through StoreWriter by
``k2_store``, which ``bench_overview.py`` uses too: by default ``workbench.store.synthetic`` (skewed,
layer-correlated routing with 16 weak latent clusters), with ``planted=True`` routing with *planted*
structure (8 latent token clusters that persist across layers and strongly prefer their own experts,
two per domain), so an overview has something to find. The timing starts from the opened store, so it
includes reading the selected routing from zarr. Each case is timed ``--repeat`` times; the median
wall time and the CPU time of each run are reported with the machine's load (on a shared machine the
CPU time is the steadier number). Every pruning mode is timed, and the difference of two halves.

    python benchmarks/bench_graph.py --out benchmarks/results [--tokens 40000] [--store PATH] [--planted]

Writes ``bench_graph.json``. ``--whole --store PATH`` instead times the graph of the WHOLE store
(``reasoning_graph(ds, top_edges=100)``, by blocks: ``workbench/graph/chunked.py``; and its counting
alone, ``count_routing``), in-process or on ``--scheduler local:N`` / ``tcp://…``, with the process's
peak memory per case (VmHWM, reset before each), CPU time, the load average and a fingerprint of every
node, edge and graph attribute (floats exactly), so two checkouts' graphs can be compared; writes
``bench_graph_whole.json``. It uses only the public graph API, so the same script measures an older
checkout too (``PYTHONPATH=/path/to/checkout python benchmarks/bench_graph.py ...``).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
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

from workbench.graph import (
    count_routing,
    difference_of_selections,
    expert_circuits,
    heaviest_paths,
    layered_layout,
    reasoning_graph,
)
from workbench.store.dataset import SequenceRecord, SpanRecord
from workbench.store.io import open_store
from workbench.store.select import Selection
from workbench.store.synthetic import SyntheticRouter, synthetic_config, synthetic_store, synthetic_tokenizer
from workbench.store.writer import StoreWriter

GOAL_S = 1.0
DOMAINS = ("math", "code", "language", "agent")
N_CLUSTERS, SPREAD, STAY = 8, 3.0, 0.97  # the planted structure
VOCAB = 32768


def planted_records(n_tokens: int, seed: int = 0, mean_length: int = 600) -> Iterator[SequenceRecord]:
    """K2-shaped sequences whose routing follows 8 persistent token clusters, two per domain.

    ``workbench.store.synthetic.SyntheticRouter`` with 8 latent clusters that persist across layers
    (``stay`` 0.97) and strongly prefer their own experts (``cluster_spread`` 3); each domain's tokens are
    drawn from the vocabulary of two of the clusters (a token id's first-layer cluster is the router's hash).
    """
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


def k2_store(path: Path, n_tokens: int, *, planted: bool = False, seed: int = 0) -> Path:
    """Write a K2-shaped synthetic store (60 MoE layers × 384 experts, top-8) of ``n_tokens`` at ``path``.

    ``planted=False``: ``workbench.store.synthetic.synthetic_store`` (16 weak latent clusters);
    ``planted=True``: ``planted_records`` (8 strong persistent clusters, two per domain).
    """
    if not planted:
        synthetic_store(path, n_tokens=n_tokens, seed=seed)
        return path
    cfg = synthetic_config(60, 384, 8, model_name="synthetic-k2-planted")
    with StoreWriter(path, cfg, synthetic_tokenizer(VOCAB), capture="synthetic") as writer:
        for rec in planted_records(n_tokens, seed):
            writer.add(rec)
    return path


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, list[float], list[float], Any]:
    times, cpu, out = [], [], None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(times), times, cpu, out


def graph_fingerprint(g: Any) -> str:
    """sha256 over every graph, node and edge attribute, floats written exactly (``float.hex``)."""

    def norm(x: Any) -> Any:
        if isinstance(x, float):
            return x.hex()
        if isinstance(x, dict):
            return {str(k): norm(v) for k, v in sorted(x.items(), key=lambda kv: str(kv[0]))}
        if isinstance(x, (list, tuple)):
            return [norm(v) for v in x]
        return x

    doc = [norm(dict(g.graph)), sorted((n, norm(d)) for n, d in g.nodes(data=True))]
    doc.append(sorted((u, v, norm(d)) for u, v, d in g.edges(data=True)))
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _peak_rss_reset() -> None:
    """Reset the process's peak resident memory (Linux: ``clear_refs`` 5), so VmHWM measures what follows."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def whole_store(args: argparse.Namespace) -> None:
    """``--whole``: the graph of the whole ``--store`` (module docstring)."""
    from contextlib import ExitStack

    import dask

    from workbench.distributed import cluster_summary, dask_client

    if args.store is None or not Path(args.store).exists():
        raise SystemExit("--whole needs --store PATH of an existing store")
    with ExitStack() as stack:
        client = stack.enter_context(dask_client(args.scheduler)) if args.scheduler else None
        if client is None:
            stack.enter_context(dask.config.set(scheduler="threads"))
        ds = open_store(args.store)
        reasoning_graph(ds, Selection(tokens=(0, 2000)), top_edges=5, chunked=True)  # load the compiled kernels
        cases: dict[str, dict[str, Any]] = {}
        load_before = [round(x, 2) for x in os.getloadavg()]
        graph = None
        for name, fn in (
            ("count_routing(top_edges=100)", lambda: count_routing(ds, top_edges=100)),
            ("reasoning_graph(top_edges=100)", lambda: reasoning_graph(ds, top_edges=100)),
        ):
            runs, cpu, peaks = [], [], []
            for _ in range(args.repeat):
                _peak_rss_reset()
                t0, c0 = time.perf_counter(), time.process_time()
                out = fn()
                runs.append(round(time.perf_counter() - t0, 3))
                cpu.append(round(time.process_time() - c0, 3))
                peaks.append(_peak_rss_mb())
            graph = out
            cases[name] = {"median_s": statistics.median(runs), "runs_s": runs, "cpu_s": cpu, "peak_rss_mb": peaks,
                           "load_avg_after": [round(x, 2) for x in os.getloadavg()]}  # fmt: skip
            print(f"{name:<34} {statistics.median(runs):8.2f} s wall (cpu {statistics.median(cpu):.2f} s, "
                  f"peak rss {max(peaks):.0f} MB, load {os.getloadavg()[0]:.2f})")  # fmt: skip
        result = {
            "benchmark": "reasoning graph of a whole store, by blocks",
            "store": {"path": str(args.store), "tokens": int(ds.sizes["token"]), "top_k": int(ds.sizes["k"])},
            "scheduler": args.scheduler or "threads (in-process)",
            "cluster": cluster_summary(client) if client is not None else None,
            "nodes": graph.number_of_nodes(),
            "edges": graph.number_of_edges(),
            "fingerprint": graph_fingerprint(graph),
            "cases": cases,
            "note": "cpu_s and peak_rss_mb are this process's (with a cluster the work and memory are the workers')",
            "machine": {"cpus": os.cpu_count(), "load_avg_before": load_before, "python": platform.python_version()},
        }
    out = args.out / "bench_graph_whole.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"fingerprint {result['fingerprint'][:16]} -> {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for bench_graph.json")
    ap.add_argument("--tokens", type=int, default=40_000, help="tokens in the synthetic store")
    ap.add_argument("--select", type=int, default=10_000, help="tokens in the benchmarked selection")
    ap.add_argument("--store", type=Path, default=None, help="reuse/create the store here (default: temp dir)")
    ap.add_argument("--planted", action="store_true", help="create the store with planted structure")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--whole", action="store_true", help="time the graph of the whole --store (by blocks)")
    ap.add_argument("--scheduler", default=None, help="with --whole: local:N or tcp://HOST:PORT (default threads)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.whole:
        whole_store(args)
        return

    with tempfile.TemporaryDirectory() as tmp:
        path = args.store or Path(tmp) / "k2-synthetic.zarr"
        if not Path(path).exists():
            k2_store(Path(path), args.tokens, planted=args.planted)
        ds = open_store(path)
        n = ds.sizes["token"]
        sel = Selection(tokens=(0, min(args.select, n)))
        t0 = time.perf_counter()
        counts = count_routing(ds, sel)  # first call: also loads the compiled counting kernel
        first_call_s = time.perf_counter() - t0
        cases: dict[str, dict[str, Any]] = {}
        load_before = [round(x, 2) for x in os.getloadavg()]

        def case(name: str, fn: Callable[[], Any]) -> Any:
            med, times, cpu, out = timed(fn, args.repeat)
            cases[name] = {
                "median_s": round(med, 4),
                "runs_s": [round(t, 4) for t in times],
                "cpu_s": [round(t, 4) for t in cpu],
            }
            print(f"{name:<40} {med:8.3f} s wall (cpu {statistics.median(cpu):.3f} s)")
            return out

        case("count_unpruned_arrays", lambda: count_routing(ds, sel))
        case("count_flow_0.5_arrays", lambda: count_routing(ds, sel, flow=0.5))
        g20 = case("build_prune_top_edges_20", lambda: reasoning_graph(ds, sel, top_edges=20))
        case("build_prune_min_count_100", lambda: reasoning_graph(ds, sel, min_count=100))
        gf = case("build_prune_flow_0.5_top_edges_100", lambda: reasoning_graph(ds, sel, flow=0.5, top_edges=100))
        case("heaviest_paths_5_on_top20", lambda: heaviest_paths(g20, 5))
        case("louvain_circuits_on_top20", lambda: expert_circuits(g20))
        case("layered_layout_on_top20", lambda: layered_layout(g20))
        half = min(args.select, n) // 2
        sel_a, sel_b = Selection(tokens=(0, half)), Selection(tokens=(half, 2 * half))
        case("difference_top_edges_20", lambda: difference_of_selections(ds, sel_a, sel_b, top_edges=20))
        case(
            "difference_flow_0.5_top_edges_100",
            lambda: difference_of_selections(ds, sel_a, sel_b, flow=0.5, top_edges=100),
        )
        goal_cases = [k for k in cases if k.startswith(("build_prune", "difference"))]
        worst = max(cases[k]["median_s"] for k in goal_cases)
        result = {
            "benchmark": "reasoning graph build + prune",
            "goal": f"build + prune (every mode, difference included) of a {args.select}-token selection "
            f"of a K2-shaped store <= {GOAL_S} s",
            "store": {
                "tokens": int(n),
                "layers": int(ds.sizes["layer"]),
                "experts": int(counts.n_experts),
                "top_k": int(counts.top_k),
                "synthetic": True,
                "planted": bool(args.planted),
            },
            "selection_tokens": int(counts.n_tokens),
            "unpruned_edges": len(counts.edges),
            "token_edge_incidences": int(counts.count_totals.sum()),
            "edges_top_edges_20": g20.number_of_edges(),
            "nodes_top_edges_20": g20.number_of_nodes(),
            "edges_flow_0.5_top_edges_100": gf.number_of_edges(),
            "edges_flow_0.5_alone": len(count_routing(ds, sel, flow=0.5).edges),
            "first_call_count_s": round(first_call_s, 4),
            "cases": cases,
            "goal_cases": goal_cases,
            "worst_goal_case_median_s": worst,
            "worst_goal_case_median_cpu_s": round(max(statistics.median(cases[k]["cpu_s"]) for k in goal_cases), 4),
            "meets_goal": worst <= GOAL_S,
            "note": "wall times depend on machine load (load_avg_1m); cpu_s is the process CPU time of each run",
            "machine": {
                "cpus": os.cpu_count(),
                "load_avg_1m": round(os.getloadavg()[0], 2),
                "load_avg_before": load_before,
                "python": platform.python_version(),
                "platform": platform.platform(),
            },
        }
    out = args.out / "bench_graph.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"worst build+prune/difference median {worst:.3f} s (goal {GOAL_S} s) -> {out}")


if __name__ == "__main__":
    main()
