"""A reasoning graph as a terminal table: one row per MoE layer (``workbench graph`` without ``--export``).

A 60-layer path printed as one line of 60 hops cannot be read, and neither can a hairball. Per layer
the table gives the number of experts drawn, the top experts (reasoning graph: by load, the share of
the selected tokens routed there; difference graph: by Δ load on each side), and the expert each of
the heaviest paths takes there. Paths after the first show ``=`` where they agree with path 1, so
the layers where the alternatives differ stand out.

Difference graphs have one heaviest path per side: through the edges where a is heavier (sign +1)
and through those where b is (sign −1), each by Σ |Δ share|.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import networkx as nx

from workbench.graph.paths import heaviest_paths


def _by_layer(g: nx.DiGraph) -> dict[int, list[tuple[str, dict[str, Any]]]]:
    out: dict[int, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
    for n, d in g.nodes(data=True):
        out[int(d["layer"])].append((n, d))
    return dict(sorted(out.items()))


def _top(items: list[tuple[str, dict[str, Any]]], key: str, n: int, sign: int = 0) -> str:
    """The ``n`` experts with the largest ``key`` (of one sign when ``sign``), as ``E17 .31 · E3 .22``."""
    vals = [(float(d.get(key, 0.0)), int(d["expert"])) for _, d in items]
    if sign:
        vals = [(v * sign, e) for v, e in vals if v * sign > 0]
    vals.sort(key=lambda x: (-x[0], x[1]))
    fmt = "{:.2f}" if not sign else ("+{:.2f}" if sign > 0 else "−{:.2f}")
    return " · ".join(f"E{e} {fmt.format(v).replace('0.', '.', 1)}" for v, e in vals[:n]) or "-"


def side_paths(g: nx.DiGraph, n: int) -> list[tuple[str, list[tuple[list[str], float]]]]:
    """The heaviest paths to tabulate: ``[(column name, paths)]`` (one column per path)."""
    if g.graph.get("kind") != "difference":
        return [("path", heaviest_paths(g, n))]
    out = []
    for side, sign in (("a", 1), ("b", -1)):
        sub = g.edge_subgraph([(u, v) for u, v, s in g.edges(data="sign", default=0) if s == sign]).copy()
        out.append((f"path {side}", heaviest_paths(sub, n)))
    return out


def graph_table(g: nx.DiGraph, *, paths: int = 3, top: int = 3) -> list[list[str]]:
    """Rows (header first) of the per-layer table: layer, experts drawn, top experts, one column per path."""
    diff = g.graph.get("kind") == "difference"
    columns = side_paths(g, paths)
    header = ["layer", "experts"]
    if diff:
        header += [f"more in {g.graph.get(key, key[-1])} (Δ load)" for key in ("label_a", "label_b")]
    else:
        header += ["top experts (load)"]
    steps: list[dict[int, str]] = []
    for name, found in columns:
        for i, (nodes, _) in enumerate(found, 1):
            header.append(f"{name} {i}" if len(found) > 1 or not diff else name)
            steps.append({int(g.nodes[v]["layer"]): f"E{g.nodes[v]['expert']}" for v in nodes})
    rows = [header]
    for layer, items in _by_layer(g).items():
        row = [str(layer), str(len(items))]
        row += [_top(items, "delta", top, 1), _top(items, "delta", top, -1)] if diff else [_top(items, "load", top)]
        first: dict[int, str] = {}
        for j, step in enumerate(steps):
            here = step.get(layer, "")
            lead = _column_lead(columns, j)
            if lead == j:
                first = step
            row.append("=" if lead != j and here and here == first.get(layer) else here)
        rows.append(row)
    return rows


def _column_lead(columns: list[tuple[str, list[tuple[list[str], float]]]], j: int) -> int:
    """Index of the first path of the column group that path ``j`` belongs to (``=`` compares with it)."""
    start = 0
    for _, found in columns:
        if j < start + len(found):
            return start
        start += len(found)
    return start


def format_table(rows: list[list[str]]) -> str:
    """Rows as aligned plain text (numbers right-aligned, text left-aligned), two spaces between columns."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for r in rows:
        cells = [c.rjust(w) if i < 2 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def path_weights(g: nx.DiGraph, n: int) -> str:
    """One line with the weights of the tabulated paths, or why there are none."""
    parts = []
    for name, found in side_paths(g, n):
        if not found:
            parts.append(f"{name}: none through all layers (prune less)")
        for i, (_, w) in enumerate(found, 1):
            parts.append(f"{name}{' ' + str(i) if len(found) > 1 else ''} = {w:.4g}")
    unit = "Σ |Δ share|" if g.graph.get("kind") == "difference" else "Σ edge weight"
    return f"heaviest paths ({unit}): " + ", ".join(parts)


def graph_summary(g: nx.DiGraph, *, paths: int = 3, top: int = 3) -> str:
    """The per-layer table and the path weights, ready to print.

    Examples
    --------
    >>> print(graph_summary(reasoning_graph(ds, parse_where("domain=math"), top_edges=12)))  # doctest: +SKIP
    layer  experts  top experts (load)            path 1  path 2  path 3
        1        6  E61 .59 · E32 .21 · E29 .18   E61     =       =
    """
    return path_weights(g, paths) + "\n" + format_table(graph_table(g, paths=paths, top=top))
