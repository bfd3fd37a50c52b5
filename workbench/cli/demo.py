"""``workbench demo``: the whole journey on the embedded default (the bundled mini K2).

1. record the bundled prompt suite (math, code, language) with routing hooks   -> OUT/suite.zarr
2. replay the bundled tool-loop transcripts, segments and steps kept            -> OUT/transcripts.zarr
3. compare expert usage across domains: table, HTML report, CSV/JSON            -> OUT/compare/
4. reasoning graphs of each domain and math minus code (figures and data)       -> OUT/graphs/

Each step calls the same code as its own command, so the demo shows exactly what a user would run.
A rerun into the same folder starts afresh (the demo's stores are replaced, nothing else is touched).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer

EXAMPLE = """
Example:

  workbench demo --out demo-out

then open the report (demo-out/compare/report.html), the graphs (demo-out/graphs/) and the notebooks
(`make lab`).
"""


def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the demo's stores, report and graphs.")] = Path(
        "demo-out"
    ),
    max_new_tokens: Annotated[int, typer.Option(help="Tokens the mini K2 generates after each suite prompt.")] = 16,
) -> None:
    """Record, replay, compare and graph on the bundled mini K2, then say where everything is."""
    from rich.console import Console

    from workbench.cli.compare import compare
    from workbench.cli.record import record
    from workbench.cli.replay import replay
    from workbench.outputs import check_output_dir
    from workbench.paths import bundled
    from workbench.store.io import open_store
    from workbench.viz.graph_demo import graph_for_demo

    check_output_dir(out, flag="--out")  # writable, not under /proc, not inside a routing store
    console = Console(stderr=True)
    bundled("models/k2-mini")  # one clear line now, not after the first step, when the data is missing
    prompts = bundled("prompts/suite.jsonl")
    transcripts = sorted(bundled("transcripts").glob("*.jsonl"))
    out.mkdir(parents=True, exist_ok=True)
    suite, replayed = out / "suite.zarr", out / "transcripts.zarr"
    for store in (suite, replayed):
        if store.exists():
            shutil.rmtree(store)

    console.rule("1/4 record the prompt suite with the mini K2")
    record(model="k2-mini", prompts=str(prompts), out=str(suite), max_new_tokens=max_new_tokens, batch_size=8)
    console.rule("2/4 replay the bundled tool-loop transcripts")
    for path in transcripts:
        replay(model="k2-mini", transcripts=str(path), out=str(replayed))
    console.rule("3/4 compare expert usage across math, code and language")
    compare(str(suite), out=out / "compare", n_boot=300, n_perm=300)
    console.rule("4/4 reasoning graphs per domain and math minus code")
    written = graph_for_demo(open_store(str(suite)), out / "graphs")

    console.rule("done")
    print(f"routing store of the prompt suite : {suite}   (workbench info {suite})")
    print(f"routing store of the transcripts  : {replayed}")
    print(f"domain comparison report          : {out / 'compare' / 'report.html'}")
    print(f"reasoning graphs                  : {out / 'graphs'} ({len(written)} files)")
    print("explore it in JupyterLab          : make lab   (notebooks/01_quickstart.ipynb first)")


def register(app: typer.Typer) -> None:
    app.command(help=(demo.__doc__ or "") + EXAMPLE, short_help="The whole journey on the bundled mini K2.")(demo)
