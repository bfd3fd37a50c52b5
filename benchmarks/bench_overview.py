"""Benchmark: the supernode overview of a K2-shaped store (60 MoE layers × 384 experts, top-8).

Builds ``workbench.graph.supernodes`` of all tokens of the store (one pass over the routing: node and
per-domain counts and every layer pair's E × E transitions, then Ward grouping per layer), the
alluvial figure, and the self-contained HTML page, each timed ``--repeat`` times (median reported).
The goal is a few seconds for 1M tokens on the benchmark machine; the machine's load is recorded
beside the times, since a shared machine slows every number.

The store (created unless ``--store`` already holds one) is K2-shaped synthetic routing with *planted*
structure, so the overview has something to find: ``k2_store(..., planted=True)`` of ``bench_graph.py``
(8 latent token clusters that persist across layers and strongly prefer their own experts, two per
domain). The default synthetic store (16 weak clusters) has much less structure.

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
from pathlib import Path

from bench_graph import k2_store, timed

from workbench.store.io import open_store


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
        k2_store(store, args.tokens, planted=True)
    write_s = time.perf_counter() - t0
    ds = open_store(store)
    supernodes(ds)  # warm-up: numba kernels from their cache
    load_before = os.getloadavg()
    build, build_all, build_cpu, sn = timed(lambda: supernodes(ds), args.repeat)  # cpu: all threads of the process
    fig_s, _, _, fig = timed(lambda: overview_figure(sn), args.repeat)
    html = Path(tmp.name) / "overview.html"
    html_s, _, _, _ = timed(lambda: write_overview_html(sn, html), args.repeat)
    result = {
        "tokens": sn.n_tokens, "layers": int(sn.layers.size), "experts": sn.n_experts, "top_k": sn.top_k,
        "supernodes": int(sn.n_groups.sum()), "store_write_s": round(write_s, 2),
        "supernodes_s": round(build, 3), "supernodes_runs_s": [round(t, 3) for t in build_all],
        "supernodes_cpu_s": round(statistics.median(build_cpu), 3),
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
