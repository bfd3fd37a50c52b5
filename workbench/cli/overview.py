"""``workbench overview``: a K2-scale reading of a selection — experts grouped into supernodes per layer and
the token flow between them, as a terminal table or an alluvial figure (HTML page with zoom, PNG/SVG/PDF)."""

from __future__ import annotations

import contextlib
import shutil
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from workbench.graph.supernodes import Supernodes

EXAMPLE = """
Examples:

  workbench overview runs/k2.zarr                                   (terminal: supernodes and heaviest paths per layer)

  workbench overview runs/k2.zarr --where domain=math --export math-overview.html   (click a block: its experts)

  workbench overview runs/k2.zarr --supernodes 6 --layers 1:20 --export overview.png
"""
SHOWN_PER_LAYER = 3  # largest supernodes listed per layer in the terminal


def overview(
    store: Annotated[str, typer.Argument(help="Routing store (directory or fsspec URL).")],
    where: Annotated[list[str] | None, typer.Option(help="Selection KEY=VALUE, e.g. domain=math (repeatable).")] = None,
    sequence: Annotated[list[str] | None, typer.Option(help="Sequence id(s) (repeatable).")] = None,
    segment: Annotated[list[str] | None, typer.Option(help="Segment kind(s): think, tool_call, ...")] = None,
    layers: Annotated[str | None, typer.Option(help="MoE layers A:B (real layer indices, inclusive).")] = None,
    supernodes: Annotated[int, typer.Option("--supernodes", help="Supernodes per layer (1-64).")] = 8,
    paths: Annotated[int, typer.Option(help="Heaviest supernode paths printed (0 for none).")] = 3,
    export: Annotated[
        list[str] | None, typer.Option("--export", "-o", help="Figure to write: .html (clickable) .png .svg .pdf.")
    ] = None,
    title: Annotated[str | None, typer.Option(help="Figure title.")] = None,
) -> None:
    """Group each layer's experts into supernodes by their flow profiles and show the flow between them."""
    from rich.console import Console

    from workbench.cli.params import cli_flags
    from workbench.errors import WorkbenchError
    from workbench.graph.export import FIGURE_FORMATS, export_format
    from workbench.graph.supernodes import supernodes as group
    from workbench.outputs import check_output_file
    from workbench.store.io import open_store
    from workbench.store.select import Selection, parse_where

    if not 1 <= supernodes <= 64:
        raise WorkbenchError(f"--supernodes must be between 1 and 64, got {supernodes}")
    if paths < 0:
        raise WorkbenchError(f"--paths must be 0 or more, got {paths}")
    targets = []
    for path in export or []:  # every target checked before any work
        target = check_output_file(path, flag="--export")
        kind = export_format(path)
        if kind not in FIGURE_FORMATS:
            raise WorkbenchError(f"--export {path}: the overview is a figure; use .html, .png, .svg or .pdf")
        targets.append((target, kind))
    base = Selection()
    if sequence:
        base = base.merged(sequences=tuple(sequence))
    if segment:
        base = base.merged(segments=tuple(segment))
    sel = parse_where([*(where or []), *([f"layers={layers}"] if layers else [])], base)
    console = Console(stderr=True)
    ds = open_store(store)
    with console.status("counting the flow between experts"), cli_flags(n_supernodes="--supernodes"):
        sn = group(ds, sel, n_supernodes=supernodes)
    if not targets:
        print_summary(sn, paths)
        return
    from workbench.viz.export import static_export_session
    from workbench.viz.overview_page import export_overview

    typer.echo(_headline(sn))
    with contextlib.ExitStack() as stack:
        if any(kind != "html" for _, kind in targets):
            stack.enter_context(static_export_session())
        for target, kind in targets:
            with console.status(f"writing {target.name}"):
                export_overview(sn, target, fmt=kind, title=title)
            typer.echo(f"wrote {target}")


def _headline(sn: Supernodes) -> str:
    tokens = f"{sn.n_tokens:,} token" + ("s" if sn.n_tokens != 1 else "")
    return (
        f"{sn.model or 'routing'} · {sn.selection}: {tokens}, {sn.layers.size} MoE layers × "
        f"{sn.n_experts} experts → {int(sn.n_groups.sum())} supernodes (≤ {sn.flows.shape[1]} per layer)"
    )


def print_summary(sn: Supernodes, n_paths: int) -> None:
    """Per layer: the largest supernodes (share of the layer's routing, heaviest experts) and where the
    heaviest supernode paths pass, as one compact table."""
    from workbench.graph.path_table import format_table
    from workbench.graph.supernodes import heaviest_supernode_paths

    typer.echo(_headline(sn))
    found = heaviest_supernode_paths(sn, n_paths) if n_paths else []
    share = sn.load / sn.top_k
    header = ["layer", "largest supernodes (share of routing: heaviest experts)"]
    header += [f"path {j + 1}" for j in range(len(found))]
    rows = []
    for i in range(sn.layers.size):
        shown = [
            f"S{g} {share[i, g]:.0%}: {sn.label(i, g, 2)}" for g in range(min(SHOWN_PER_LAYER, int(sn.n_groups[i])))
        ]
        rows.append([f"L{sn.layers[i]}", " · ".join(shown), *(f"S{p[i]}" for p, _ in found)])
    typer.echo(format_table(header, rows, width=shutil.get_terminal_size((120, 24)).columns))
    if found:
        total = sn.n_tokens * sn.top_k**2 * max(sn.layers.size - 1, 1)
        typer.echo(
            "paths: the supernode sequences with the most token transitions summed over all layer pairs ("
            + ", ".join(f"path {j + 1}: {w / total:.1%}" for j, (_, w) in enumerate(found))
            + " of all transitions)"
        )
    typer.echo("supernodes: experts of one layer grouped by where their tokens come from and go to (docs/overview.md)")


def register(app: typer.Typer) -> None:
    app.command("overview", help=(overview.__doc__ or "") + "\n" + EXAMPLE)(overview)
