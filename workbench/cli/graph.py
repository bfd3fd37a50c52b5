"""``workbench graph``: build, prune and export the reasoning graph of a selection of a routing store.

With no pruning flag the graph is pruned to a readable default (``DEFAULT_TOP_EDGES`` heaviest edges
per layer pair; difference graphs ``DEFAULT_TOP_EDGES_DIFF`` of each sign) and one line says so;
``--all-edges`` keeps every edge. Without ``--export`` nothing is written: the terminal gets the
summary (``workbench.graph.summary``), a per-layer table of top experts and heaviest paths.
"""

from __future__ import annotations

import contextlib
from typing import Annotated

import typer

EXPORT_HELP = (
    "File to write (repeatable). Figures: .html .png .svg .pdf; data: .graphml .gexf .json (node-link), "
    ".cyjs or .cy.json (Cytoscape.js), NAME.ct (a circuit-tracer data folder)."
)
DEFAULT_TOP_EDGES = 12  # per layer pair: ~2 × 12 experts per layer, a figure a person can read
DEFAULT_TOP_EDGES_DIFF = 8  # per layer pair and sign: 8 where a > b and 8 where b > a
EXAMPLE = """
Examples:

  workbench graph runs.zarr --where domain=math          (summary in the terminal: top experts, heaviest paths)

  workbench graph runs.zarr --where domain=math --top-edges 20 --export math.svg --export math.graphml

  workbench graph runs.zarr --sequence agent-3 --segment think --where step=2 --export step2.html

  workbench graph runs.zarr --where domain=math --diff domain=code --top-edges 30 --export math-code.pdf

  workbench graph runs.zarr --tokens 0:1 --export token0.ct   (one token's own path, a circuit-tracer folder)
"""


def graph(
    store: Annotated[str, typer.Argument(help="Routing store (directory or fsspec URL).")],
    export: Annotated[list[str] | None, typer.Option("--export", "-o", help=EXPORT_HELP)] = None,
    where: Annotated[list[str] | None, typer.Option(help="Selection KEY=VALUE, e.g. domain=math (repeatable).")] = None,
    sequence: Annotated[list[str] | None, typer.Option(help="Sequence id(s) (repeatable).")] = None,
    segment: Annotated[
        list[str] | None, typer.Option(help="Segment kind(s): think, tool_call, tool_result, ...")
    ] = None,
    tokens: Annotated[str | None, typer.Option(help="Global token rows A:B (B exclusive).")] = None,
    layers: Annotated[str | None, typer.Option(help="MoE layers A:B (real layer indices, inclusive).")] = None,
    min_count: Annotated[int | None, typer.Option(help="Drop edges taken by fewer tokens.")] = None,
    top_edges: Annotated[
        int | None,
        typer.Option(
            help="Keep the N heaviest edges per layer pair (--diff: N of each sign). With no pruning flag: "
            f"{DEFAULT_TOP_EDGES} ({DEFAULT_TOP_EDGES_DIFF} of each sign)."
        ),
    ] = None,
    flow: Annotated[
        float | None, typer.Option(help="Keep the fewest edges carrying this share of flow per layer pair.")
    ] = None,
    all_edges: Annotated[
        bool, typer.Option("--all-edges", help="Keep every edge (no default pruning; large graphs become hairballs).")
    ] = False,
    diff: Annotated[
        list[str] | None,
        typer.Option(help="Second selection (KEY=VALUE, overriding the first): export first minus second."),
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option("--format", help="Format for .json exports: node-link (default) or cytoscape."),
    ] = None,
    paths: Annotated[
        int | None,
        typer.Option(help="Tabulate the N heaviest paths through all layers (default 3; differences: 1 per side)."),
    ] = None,
    top_tokens: Annotated[int, typer.Option(help="Top tokens listed per expert and per edge (hover, exports).")] = 5,
    title: Annotated[str | None, typer.Option(help="Figure title.")] = None,
) -> None:
    """Build the reasoning graph of a selection (experts per layer, edges between layers); summarise or export it."""
    from rich.console import Console
    from rich.markup import escape

    from workbench.cli.params import cli_flags
    from workbench.errors import WorkbenchError
    from workbench.graph import (
        difference_of_selections,
        layered_layout,
        reasoning_graph,
        set_communities,
    )
    from workbench.graph.circuit_tracer_export import SUFFIX as CT_SUFFIX
    from workbench.graph.circuit_tracer_export import check_folder, write_circuit_tracer
    from workbench.graph.export import FIGURE_FORMATS, export_format
    from workbench.graph.prune import check_pruning
    from workbench.graph.summary import graph_summary
    from workbench.outputs import check_output_file
    from workbench.store.io import open_store
    from workbench.store.select import Selection, parse_where

    check_pruning(min_count, top_edges, flow)  # GraphError names the parameter; main() words it as the flag
    if all_edges and (min_count or top_edges is not None or flow is not None):
        raise WorkbenchError("--all-edges keeps every edge: drop it, or drop --min-count/--top-edges/--flow")
    if paths is not None and paths < 0:
        raise WorkbenchError(f"--paths must be >= 0, got {paths}")
    n_paths = paths if paths is not None else (1 if diff else 3)
    default_pruning = not (all_edges or min_count or top_edges is not None or flow is not None)
    if default_pruning:
        top_edges = DEFAULT_TOP_EDGES_DIFF if diff else DEFAULT_TOP_EDGES
    if fmt is not None and fmt not in ("node-link", "cytoscape"):
        raise WorkbenchError(f"--format must be node-link or cytoscape, got {fmt!r}")
    targets = []
    for path in export or []:  # every target checked before any work: where it is, then its format
        check = check_folder if path.lower().rstrip("/").endswith(CT_SUFFIX) else check_output_file  # a folder
        target = check(path, flag="--export")
        targets.append((target, export_format(path, fmt if path.lower().endswith(".json") else None)))

    base = Selection()
    if sequence:
        base = base.merged(sequences=tuple(sequence))
    if segment:
        base = base.merged(segments=tuple(segment))
    extra = [f"tokens={tokens}"] if tokens else []
    extra += [f"layers={layers}"] if layers else []
    sel_a = parse_where([*(where or []), *extra], base)
    console = Console(stderr=True)
    ds = open_store(store)
    with console.status("counting expert pathways"):
        if diff:
            with cli_flags(where="--diff"):
                sel_b = parse_where(diff, sel_a)
            g = difference_of_selections(
                ds, sel_a, sel_b, min_count=min_count, top_edges=top_edges, flow=flow, top_tokens=top_tokens
            )
        else:
            g = reasoning_graph(ds, sel_a, min_count=min_count, top_edges=top_edges, flow=flow, top_tokens=top_tokens)
        set_communities(g)
        layered_layout(g)
    what = f"{g.graph['label_a']} − {g.graph['label_b']}" if diff else g.graph["selection"]
    n_tok = f"{g.graph['n_tokens_a']} vs {g.graph['n_tokens_b']} tokens" if diff else f"{g.graph['n_tokens']} tokens"
    typer.echo(
        f"{what}: {g.number_of_nodes()} experts, {g.number_of_edges()} edges from {n_tok}; "
        f"pruning: {g.graph.get('pruning', 'none')}; {g.graph.get('n_communities', 0)} circuits"
    )
    if default_pruning:
        each = " of each sign" if diff else ""
        typer.echo(
            f"pruned by default to the {top_edges} heaviest edges per layer pair{each} "
            "(choose with --top-edges N, --flow F or --min-count N; --all-edges keeps all)"
        )
    if not g.graph.get("weighted", True):
        typer.echo(f"note: {g.graph['note']}")
    if diff:
        sides = g.graph["sides"]
        for key, colour in (("a", "red"), ("b", "blue")):
            s = sides[key]
            typer.echo(
                f"more in {g.graph['label_' + key]} ({colour} in figures): {s['edges']} edges, {s['nodes']} experts, "
                f"carrying {s['kept']:.0%} of that side's Δ share (Σ {s['delta_kept']:.3g} of {s['delta_total']:.3g})"
            )
    if n_paths:
        typer.echo(graph_summary(g, paths=n_paths))

    from workbench.viz.export import export_graph, static_export_session

    static = any(kind in FIGURE_FORMATS and kind != "html" for _, kind in targets)
    with contextlib.ExitStack() as stack:
        if static:
            stack.enter_context(static_export_session())
        for target, kind in targets:
            with console.status(escape(f"writing {target.name}")):
                if kind == "circuit-tracer":  # with the store: feature files and a token's context
                    write_circuit_tracer(g, target, ds=ds, selection=None if diff else sel_a)
                else:
                    export_graph(g, target, fmt=kind, title=title, store=ds, selection=None if diff else sel_a)
            typer.echo(f"wrote {target}")


def register(app: typer.Typer) -> None:
    app.command("graph", help=(graph.__doc__ or "") + "\n" + EXAMPLE)(graph)
