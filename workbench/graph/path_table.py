"""Heaviest paths as a compact per-layer table, for terminals: one row per MoE layer, one column per path.

A path through K2's 60 MoE layers printed as one line of 60 hops (``L1:E17 → L2:E203 → …``) cannot be
read; as a table the paths sit side by side, a layer per row, so where they agree and where they part
shows at a glance. Long tables fold into side-by-side blocks of layers when the terminal is wide enough
(60 layers → 3 blocks of 20 rows). Used by ``workbench overview`` for supernode paths and usable for the
expert paths of ``heaviest_paths`` (``expert_path_rows``).
"""

from __future__ import annotations

from workbench.graph.ids import parse_node_id

FOLD_MIN_ROWS = 24  # tables longer than this fold into blocks when the width allows


def expert_path_rows(paths: list[tuple[list[str], float]]) -> tuple[list[str], list[list[str]]]:
    """``heaviest_paths`` output as ``(header, rows)``: rows ``[f"L{layer}", "E17", "E3", ...]`` by layer.

    A layer a path does not reach shows ``·``. Header cells give each path's rank and weight.
    """
    by_layer: dict[int, dict[int, str]] = {}
    for j, (nodes, _) in enumerate(paths):
        for node in nodes:
            layer, expert = parse_node_id(node)
            by_layer.setdefault(layer, {})[j] = f"E{expert}"
    header = ["layer", *(f"path {j + 1} ({w:.4g})" for j, (_, w) in enumerate(paths))]
    rows = [[f"L{layer}", *(cells.get(j, "·") for j in range(len(paths)))] for layer, cells in sorted(by_layer.items())]
    return header, rows


def format_table(header: list[str], rows: list[list[str]], *, width: int = 100, gap: str = "  ") -> str:
    """Left-aligned columns; more than ``FOLD_MIN_ROWS`` rows fold into side-by-side blocks that fit ``width``.

    Returns the text without a trailing newline. Every block repeats the header.
    """
    cols = len(header)
    sizes = [max(len(str(r[c])) for r in [header, *rows]) for c in range(cols)]
    row_width = sum(sizes) + len(gap) * (cols - 1)
    sep = " │ "
    blocks = 1
    if len(rows) > FOLD_MIN_ROWS:
        blocks = max(1, min(3, (width + len(sep)) // (row_width + len(sep))))
    per = -(-len(rows) // blocks) if rows else 0

    def line(r: list[str]) -> str:
        return gap.join(str(v).ljust(sizes[c]) for c, v in enumerate(r))

    chunks = [rows[b * per : (b + 1) * per] for b in range(blocks)]
    out = [sep.join(line(header) for _ in chunks).rstrip()]
    for k in range(per):
        out.append(sep.join(line(ch[k]) if k < len(ch) else " " * row_width for ch in chunks).rstrip())
    return "\n".join(out)
