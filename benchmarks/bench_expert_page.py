"""Benchmark: an expert page and a text search on a 1M-token K2-shaped synthetic store (60 layers x 384 experts).

Writes the store once (``workbench.store.synthetic.synthetic_store``, kept at --store for reruns), then times
``expert_page`` for a few experts (cold: first page after opening the store; warm: the rest) and ``find``
for a literal text and a regular expression, and writes the timings as JSON. Goals (issue 13): page <= 1 s,
search <= 1 s. The machine's load average is recorded next to the timings, since a shared machine skews them.

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", type=Path, default=Path("/tmp/bench_expert_page_k2.zarr"))
    ap.add_argument("--tokens", type=int, default=1_000_000)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/expert_page.json"))
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    from workbench.experts import expert_page, find
    from workbench.store.io import open_store
    from workbench.store.synthetic import synthetic_store

    t0 = time.perf_counter()
    if not args.store.exists():
        synthetic_store(args.store, n_tokens=args.tokens)
        print(f"wrote {args.store} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    ds = open_store(args.store)
    assert ds.sizes["token"] == args.tokens, f"{args.store} holds {ds.sizes['token']} tokens; remove it"
    load_before = os.getloadavg()
    pages = []
    for i, (layer, expert) in enumerate([(30, 0), (1, 17), (60, 383), (30, 200)][: args.repeat + 1]):
        t = time.perf_counter()
        page = expert_page(ds, layer, expert)
        pages.append({"layer": layer, "expert": expert, "seconds": time.perf_counter() - t,
                      "routed_tokens": page.n_routed, "cold": i == 0})  # fmt: skip
        print(f"page L{layer}:E{expert}: {pages[-1]['seconds']:.2f} s ({page.n_routed} routed)", file=sys.stderr)
    searches = []
    for text, regex in (("tok5tok", False), (r"tok12\d\dtok7", True), ("no such text anywhere", False)):
        t = time.perf_counter()
        hits = find(ds, text, regex=regex, max_hits=100)
        searches.append({"query": text, "regex": regex, "seconds": time.perf_counter() - t, "hits": len(hits)})
        print(f"find {text!r}: {searches[-1]['seconds']:.2f} s ({len(hits)} hits)", file=sys.stderr)
    result = {
        "store": str(args.store), "tokens": args.tokens, "layers": int(ds.sizes["layer"]),
        "experts": int(ds.attrs["model"]["n_routed_experts"]), "top_k": int(ds.sizes["k"]),
        "pages": pages, "searches": searches,
        "page_seconds_warm_median": sorted(p["seconds"] for p in pages if not p["cold"])[len(pages[1:]) // 2]
        if len(pages) > 1 else None,
        "loadavg_before": load_before, "loadavg_after": os.getloadavg(), "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
