"""Draw docs/architecture.png: the import layers (read from pyproject.toml's contracts) and the data flow.

    python tools/architecture_figure.py [--out docs/architecture.png]

The left panel is the ``layers`` contract of ``[tool.importlinter]`` as it stands, so the picture and
the check cannot drift apart: one box per layer, its packages inside, arrows for the only direction
imports may go. The right panel is the path the data takes, from the hooks to the views.
Needs plotly and kaleido (core dependencies) and a Chromium (``BROWSER_PATH``).
"""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path

import plotly.graph_objects as go

REPO = Path(__file__).resolve().parents[1]
LAYER_NAMES = ["CLI", "apps: views, recording, agent, engines", "graph · analysis · experts", "store · hooks", "core"]
INK, MUTED, FILL, EDGE = "#1f2933", "#52606d", "#eef2f7", "#9aa5b1"
SIDE = {"graph": "#e3f0ff", "analysis": "#e3f0ff", "experts": "#e3f0ff", "store": "#fff3d6", "hooks": "#ffe3e3"}


def contract_layers(pyproject: Path = REPO / "pyproject.toml") -> list[tuple[list[str], bool]]:
    """The layers contract, top first: (short package names, whether the siblings are independent)."""
    contracts = tomllib.loads(pyproject.read_text())["tool"]["importlinter"]["contracts"]
    layers = next(c for c in contracts if c["type"] == "layers")["layers"]
    out = []
    for layer in layers:
        sep = "|" if "|" in layer else ":"
        names = [n.strip().strip("()").removeprefix("workbench.") for n in layer.split(sep)]
        out.append((names, sep == "|"))
    return out


def _box(fig: go.Figure, x0: float, y0: float, x1: float, y1: float, fill: str, dash: str = "solid") -> None:
    fig.add_shape(
        type="rect", x0=x0, y0=y0, x1=x1, y1=y1, fillcolor=fill, line={"color": EDGE, "width": 1.5, "dash": dash}
    )


def _text(fig: go.Figure, x: float, y: float, text: str, size: int = 15, color: str = INK, **kw: object) -> None:
    fig.add_annotation(x=x, y=y, text=text, showarrow=False, font={"size": size, "color": color}, **kw)


def _arrow(fig: go.Figure, x: float, y0: float, y1: float, color: str = INK) -> None:
    fig.add_annotation(
        x=x, y=y1, ax=x, ay=y0, xref="x", yref="y", axref="x", ayref="y", text="", showarrow=True,
        arrowhead=2, arrowsize=1.4, arrowwidth=2.2, arrowcolor=color,
    )  # fmt: skip


def layer_panel(fig: go.Figure) -> None:
    layers = contract_layers()
    top, h, gap, x0, x1 = 9.2, 1.25, 0.55, 0.2, 8.6
    _text(fig, (x0 + x1) / 2, top + 0.55, "<b>Imports</b>: each layer imports only the layers below it", size=18)
    for i, (names, independent) in enumerate(layers):
        y1 = top - i * (h + gap)
        y0 = y1 - h
        _box(fig, x0, y0, x1, y1, FILL)
        title = LAYER_NAMES[i] if i < len(LAYER_NAMES) else ""
        _text(fig, x0 + 0.12, y1 - 0.2, f"<b>{title}</b>", size=14, color=MUTED, xanchor="left")
        if independent:  # two side-by-side boxes that may not import each other
            w = (x1 - x0 - 0.6) / len(names)
            for j, name in enumerate(names):
                bx0 = x0 + 0.2 + j * (w + 0.2)
                _box(fig, bx0, y0 + 0.12, bx0 + w, y1 - 0.38, SIDE.get(name, "white"))
                _text(fig, bx0 + w / 2, (y0 + y1 - 0.26) / 2, f"<b>workbench.{name}</b>", size=16)
            _text(fig, (x0 + x1) / 2, (y0 + y1 - 0.26) / 2, "✕", size=20, color="#c81e1e")
        else:
            text = f"workbench.{names[0]}" if len(names) == 1 else "workbench.{" + ", ".join(names) + "}"
            if len(text) > 60:  # wrap long package lists over two lines
                half = (len(names) + 1) // 2
                text = "workbench.{" + ", ".join(names[:half]) + ",<br>" + ", ".join(names[half:]) + "}"
            _text(fig, (x0 + x1) / 2, (y0 + y1 - 0.26) / 2, text, size=15)
        if i:
            _arrow(fig, (x0 + x1) / 2, y1 + gap - 0.02, y1 + 0.02)
    bottom = top - len(layers) * (h + gap) + gap
    _text(
        fig, (x0 + x1) / 2, bottom - 0.45,
        "✕ independent: no imports either way · never torch/transformers in analysis, graph, store, viz · "
        "no import cycles<br>checked by <b>make test</b> (python -m tools.lint_imports, contracts in pyproject.toml)",
        size=13, color=MUTED,
    )  # fmt: skip


def flow_panel(fig: go.Figure) -> None:
    x0, x1 = 9.6, 14.6
    xc = (x0 + x1) / 2
    _text(fig, xc, 9.75, "<b>Data flow</b>", size=18)
    steps = [
        ("capture", "forward hooks on a transformers model<br>(workbench.hooks) or a vLLM / SGLang<br>"
         "server (workbench.engines)", "#ffe3e3"),
        ("routing store", "zarr v3: expert ids, gate weights,<br>tokens, spans per sequence<br>"
         "(workbench.store, docs/store.md)", "#fff3d6"),
        ("analysis · graph", "metrics with intervals and tests<br>(workbench.analysis) · reasoning<br>"
         "graphs (workbench.graph)", "#e3f0ff"),
        ("views", "figures, widgets, exports (workbench.viz),<br>reports and commands (workbench.cli),<br>"
         "notebooks, ds.routing", "#e6f6ea"),
    ]  # fmt: skip
    h, gap, top = 1.6, 0.62, 9.2
    for i, (title, body, fill) in enumerate(steps):
        y1 = top - i * (h + gap)
        _box(fig, x0, y1 - h, x1, y1, fill)
        _text(fig, xc, y1 - 0.28, f"<b>{title}</b>", size=16)
        _text(fig, xc, y1 - 0.95, body, size=13, color=MUTED)
        if i:
            _arrow(fig, xc, y1 + gap - 0.02, y1 + 0.02, color="#2f6f3e")
    _text(fig, xc, top - 4 * (h + gap) + gap - 0.45, "torch only in capture: a laptop explores a GPU's store", size=13,
          color=MUTED)  # fmt: skip


def figure() -> go.Figure:
    fig = go.Figure()
    layer_panel(fig)
    flow_panel(fig)
    fig.add_shape(type="line", x0=9.1, x1=9.1, y0=-0.4, y1=9.9, line={"color": EDGE, "width": 1, "dash": "dot"})
    fig.update_xaxes(visible=False, range=[0, 14.8])
    fig.update_yaxes(visible=False, range=[-0.5, 10.1])
    fig.update_layout(
        width=1500, height=1000, margin={"l": 10, "r": 10, "t": 10, "b": 10}, plot_bgcolor="white",
        paper_bgcolor="white", font={"family": "DejaVu Sans, Arial, sans-serif"},
    )  # fmt: skip
    return fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "architecture.png")
    args = parser.parse_args()
    from workbench.viz.export import export_figure

    print(export_figure(figure(), args.out, scale=1.0))


if __name__ == "__main__":
    main()
