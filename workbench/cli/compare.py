"""``workbench compare``: compare expert usage across domains (or segments, steps) of a routing store."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer

EXAMPLE = """
Examples:

  workbench compare runs.zarr --by domain --out report/

  workbench compare runs.zarr --by domain --where domain=math,code --where layers=1:30 --out math-vs-code/

  workbench compare runs.zarr --by segment --where segment=think,answer --out think-vs-answer/

  workbench compare s3://bucket/k2.zarr --by domain --out report/ --scheduler tcp://10.0.0.5:8786

Writes report.html (self-contained), summary.json and CSVs (per_layer, experts, divergence,
specific_experts, transitions). Definitions of every number: docs/metrics.md.
"""


MAX_TABLE_ROWS = 40  # groups listed in the terminal; every group is in summary.json and the CSVs
MAX_PAIR_ROWS = 15  # divergence pairs listed (the most divergent when there are more)


def esc(text: str) -> str:
    """User text (group names, model name, paths) shown literally by rich, whose markup uses [brackets]."""
    from rich.markup import escape

    return escape(text)


def _num(x: float, spec: str) -> str:
    return "–" if math.isnan(x) else format(x, spec)


def _more(console: Any, shown: int, total: int, what: str, where: str) -> None:
    if total > shown:
        console.print(f"[dim]… {total - shown} more {what} in {where}[/dim]")


def _groups_table(console: Any, cmp: Any, s: dict[str, Any]) -> None:
    from rich.table import Table

    base = s["baselines"]["agreement"]
    t = Table(title=f"Expert usage by {cmp.by}: {esc(str(s['store']['model']))} (top-{s['store']['top_k']} of "
                    f"{s['store']['n_experts']}, {len(s['store']['layers'])} layers)")  # fmt: skip
    for col in (cmp.by, "tokens", "seqs", "entropy/max", "same 1st", "any top-k"):
        t.add_column(col, justify="left" if col == cmp.by else "right", overflow="fold")
    groups = list(s["groups"].items())
    for g, v in groups[:MAX_TABLE_ROWS]:
        t.add_row(
            esc(g),
            f"{v['tokens']:,}",
            str(v["sequences"]),
            f"{v['mean_load_entropy_normalized']:.3f}",
            "n/a" if v["mean_agreement_first_choice"] is None else f"{v['mean_agreement_first_choice']:.3f}",
            f"{v['mean_agreement_any_topk']:.3f}",
        )
    t.add_row("random", "", "", "1.000", f"{base['first_choice']:.3f}", f"{base['any_topk']:.3f}", style="dim")
    console.print(t)
    for note in s.get("notes", []):
        console.print(f"[dim]note: {esc(note)}[/dim]")
    _more(console, MAX_TABLE_ROWS, len(groups), f"{cmp.by}s", "summary.json and per_layer.csv")


def _divergence_table(console: Any, cmp: Any, s: dict[str, Any]) -> None:
    """One row per pair; the two groups in their own columns, wrapped (never cut) in a narrow terminal."""
    from rich.table import Table

    d = cmp.divergence
    pairs = zip(d["pair"].values, d["a"].values, d["b"].values, strict=True)
    rows = [(str(a), str(b), s["divergence"][str(p)]) for p, a, b in pairs]
    title = f"Divergence between {cmp.by}s (JSD in bits, mean over layers)"
    if len(rows) > MAX_PAIR_ROWS:
        rows = sorted(rows, key=lambda r: -r[2]["mean_jsd"])[:MAX_PAIR_ROWS]
        title += f": the {MAX_PAIR_ROWS} most divergent of {d.sizes['pair']} pairs"
    t = Table(title=title, caption="null: JSD with shuffled labels; peak: layer of max JSD; p: permutation test")
    for col in (f"{cmp.by} a", f"{cmp.by} b", "mean JSD", "null", "peak", "max JSD", "p"):
        left = col.startswith(cmp.by)
        t.add_column(col, justify="left" if left else "right", overflow="fold", no_wrap=not left)
    for a, b, v in rows:
        t.add_row(
            esc(a),
            esc(b),
            f"{v['mean_jsd']:.4f}",
            _num(v["mean_null_jsd"], ".4f"),
            str(v["max_jsd_layer"]),
            f"{v['max_jsd']:.4f}",
            _num(v["p_value_overall"], ".3g"),
        )
    console.print(t)
    if all(math.isnan(v["p_value_overall"]) for _, _, v in rows):
        console.print(f"[dim]no null or p: they resample whole sequences, which needs two or more per {cmp.by}[/dim]")
    _more(console, len(rows), d.sizes["pair"], "pairs", "divergence.csv and summary.json")


def _specific_table(console: Any, cmp: Any) -> None:
    from rich.table import Table

    top = cmp.specific[cmp.specific["rank"] == 1].sort_values("lift", ascending=False).head(8)
    e = Table(title=f"Most {cmp.by}-specific experts")
    for col in (cmp.by, "layer", "expert", "DS", "DS rest", "lift", f"share from {cmp.by}"):
        e.add_column(col, justify="left" if col == cmp.by else "right", overflow="fold")
    for r in top.itertuples(index=False):
        row = r._asdict()
        e.add_row(
            esc(str(row[cmp.by])),
            str(row["layer"]),
            str(row["expert"]),
            f"{row['ds']:.3f}",
            f"{row['ds_rest']:.3f}",
            f"{row['lift']:.2f}",
            f"{row['share_of_expert']:.2f}",
        )
    console.print(e)


def _print_tables(cmp: Any) -> None:
    from rich.console import Console

    console = Console()
    s = cmp.summary()
    _groups_table(console, cmp, s)
    if "divergence" in s:
        _divergence_table(console, cmp, s)
    if cmp.specific is not None and not cmp.specific.empty:
        _specific_table(console, cmp)


def compare(
    store: Annotated[str, typer.Argument(help="Routing store (directory or fsspec URL).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for report.html, summary.json and CSVs.")],
    by: Annotated[str, typer.Option(help="Group tokens by domain, segment, sequence or step.")] = "domain",
    where: Annotated[
        list[str] | None, typer.Option(help="Selection KEY=VALUE, e.g. domain=math,code or layers=1:30 (repeatable).")
    ] = None,
    scheduler: Annotated[
        str | None,
        typer.Option(help="Run the counting on dask.distributed: tcp://HOST:8786, or local:N worker processes."),
    ] = None,
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples over sequences for the JSD intervals.")] = 1000,
    n_perm: Annotated[int, typer.Option(help="Label permutations for the JSD p-values.")] = 1000,
    ci: Annotated[float, typer.Option(help="Confidence level of the bootstrap intervals.")] = 0.95,
    seed: Annotated[int, typer.Option(help="Random seed of bootstrap and permutations.")] = 0,
    top: Annotated[int, typer.Option(help="Most specific experts listed per layer and group.")] = 5,
    transitions: Annotated[
        bool, typer.Option(help="Also count layer-to-layer transitions (k² pairs per token and layer).")
    ] = True,
    title: Annotated[str | None, typer.Option(help="Report title.")] = None,
) -> None:
    """Compare expert usage across domains: a table here, an HTML report and CSV/JSON numbers in --out."""
    from rich.console import Console

    from workbench.analysis.compare import compare as run_compare
    from workbench.analysis.inputs import GROUP_BY
    from workbench.cli.params import cli_flags
    from workbench.distributed import check_store_visible, cluster_summary, dask_client
    from workbench.errors import WorkbenchError
    from workbench.outputs import check_output_dir
    from workbench.store.io import open_store
    from workbench.store.select import parse_where
    from workbench.viz.report import write_report

    if by not in GROUP_BY:
        raise WorkbenchError(f"--by must be one of {', '.join(GROUP_BY)}, got {by!r}")
    if n_boot < 0 or n_perm < 0:
        raise WorkbenchError("--n-boot and --n-perm must be >= 0")
    if not 0 < ci < 1:
        raise WorkbenchError(f"--ci must be between 0 and 1, got {ci}")
    check_output_dir(out, flag="--out")  # before any work: writable, not under /proc, not inside a store
    selection = parse_where(where)
    ds = open_store(store)
    with cli_flags(address="--scheduler"), dask_client(scheduler) as client:
        if client is not None:
            check_store_visible(client, store)
            info = cluster_summary(client)
            Console(stderr=True).print(f"dask cluster {info['scheduler']}: {info['workers']} workers")
        cmp = run_compare(
            ds, selection, by=by, n_boot=n_boot, n_perm=n_perm, ci=ci, seed=seed, top=top,
            with_transitions=transitions, progress=client is None,
        )  # fmt: skip
        cmp.store["dask"] = cluster_summary(client)
    _print_tables(cmp)
    paths = write_report(cmp, out, title=title, flag="--out")
    Console().print(esc(f"wrote {paths['report.html']} and {len(paths) - 1} data files in {out}"))


def register(app: typer.Typer) -> None:
    app.command("compare", help=(compare.__doc__ or "") + "\n" + EXAMPLE)(compare)
