"""Benchmark: an expert page and a text search on a 1M-token K2-shaped synthetic store (60 layers x 384 experts).

Writes the store once (``workbench.store.synthetic.synthetic_store``, kept at --store for reruns) and its layer
index (``workbench index``), then times ``expert_page`` for a few experts twice, in alternation: "before",
reading the store's token-major chunks (the index hidden), and "after", reading the layer index (cold: first
page after opening the store; warm: the rest); then ``find`` for a literal text and a regular expression
(the first one builds the decoded text). Wall and CPU seconds are both written as JSON. Goals (issue 13):
page <= 1 s, search <= 1 s. The machine's load average is recorded next to the timings, since a shared
machine skews wall times (CPU seconds much less).

    .venv/bin/python benchmarks/bench_expert_page.py --out benchmarks/results/expert_page.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path


def _median(xs: list[float]) -> float | None:
    return sorted(xs)[len(xs) // 2] if xs else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", type=Path, default=Path("/tmp/bench_expert_page_k2.zarr"))
    ap.add_argument("--tokens", type=int, default=1_000_000)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/expert_page.json"))
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    from workbench.experts import expert_page, find
    from workbench.store.io import open_store
    from workbench.store.layer_index import build_index
    from workbench.store.synthetic import synthetic_store

    t0 = time.perf_counter()
    if not args.store.exists():
        synthetic_store(args.store, n_tokens=args.tokens)
        print(f"wrote {args.store} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    t, c = time.perf_counter(), time.process_time()
    index = build_index(args.store)
    index_build = {
        "status": index["status"],
        "seconds": time.perf_counter() - t,
        "cpu_seconds": time.process_time() - c,
    }
    ds = open_store(args.store)
    hidden = ds.copy()
    hidden.encoding = {}  # the same store without the layer index: the token-major read path
    assert ds.sizes["token"] == args.tokens, f"{args.store} holds {ds.sizes['token']} tokens; remove it"
    load_before = os.getloadavg()
    pages = []
    for i, (layer, expert) in enumerate([(30, 0), (1, 17), (60, 383), (30, 200)][: args.repeat + 1]):
        for path, data in (("index", ds), ("store", hidden)):
            t, c = time.perf_counter(), time.process_time()
            page = expert_page(data, layer, expert)
            took, cpu = time.perf_counter() - t, time.process_time() - c
            pages.append({"layer": layer, "expert": expert, "read": path, "seconds": took, "cpu_seconds": cpu,
                          "routed_tokens": page.n_routed, "cold": i == 0})  # fmt: skip
            print(f"page L{layer}:E{expert} from the {path}: {pages[-1]['seconds']:.2f} s", file=sys.stderr)
    searches = []
    for text, regex in (("tok5tok", False), (r"tok12\d\dtok7", True), ("no such text anywhere", False)):
        t, c = time.perf_counter(), time.process_time()
        hits = find(ds, text, regex=regex, max_hits=100)
        searches.append({"query": text, "regex": regex, "seconds": time.perf_counter() - t,
                         "cpu_seconds": time.process_time() - c, "hits": len(hits)})  # fmt: skip
        print(f"find {text!r}: {searches[-1]['seconds']:.2f} s ({len(hits)} hits)", file=sys.stderr)
    result = {
        "store": str(args.store), "tokens": args.tokens, "layers": int(ds.sizes["layer"]),
        "experts": int(ds.attrs["model"]["n_routed_experts"]), "top_k": int(ds.sizes["k"]),
        "pages": pages, "searches": searches, "index_build": index_build,
        **{f"page_{what}_warm_median_{path}": _median([p[what] for p in pages if p["read"] == path and not p["cold"]])
           for what in ("seconds", "cpu_seconds") for path in ("index", "store")},
        "loadavg_before": load_before, "loadavg_after": os.getloadavg(), "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
