"""Difference graphs on the bundled mini K2 and prompt suite show both sides (issue: figures that read).

Records data/prompts/suite.jsonl with `workbench record --model k2-mini` once per module. Pruned on
|Δ| alone, math − code kept only edges where math is heavier (all 60 edges of the demo's
``graph-math-minus-code.graphml`` had sign +1): math's differences are the more concentrated, so they
fill every layer pair's top-N. Pruned per sign, every layer pair shows both.
"""

from __future__ import annotations

from pathlib import Path

import networkx as nx
import pytest
from workbench.viz.graph_demo import graph_for_demo

from workbench.graph import difference_of_selections
from workbench.store.io import open_store
from workbench.store.select import parse_where

pytestmark = pytest.mark.slow


def test_math_minus_code_shows_both_signs_in_every_layer_pair(suite_store: Path) -> None:
    ds = open_store(suite_store)
    d = difference_of_selections(ds, parse_where("domain=math"), parse_where("domain=code"), top_edges=12)
    layers = d.graph["layers"]
    for layer in layers[:-1]:
        signs = [s for u, _, s in d.edges(data="sign") if d.nodes[u]["layer"] == layer]
        assert signs.count(1) == 12 and signs.count(-1) == 12, (layer, signs)
    assert {s for _, s in d.nodes(data="sign")} == {1, -1}
    sides = d.graph["sides"]
    assert sides["a"]["edges"] == sides["b"]["edges"] == 12 * (len(layers) - 1)
    assert sides["a"]["tokens"] > 0 and sides["b"]["tokens"] > sides["a"]["tokens"]  # code has more tokens
    for side in "ab":  # each side's kept edges carry a part of that side's difference, stated in figures
        assert 0 < sides[side]["delta_kept"] < sides[side]["delta_total"]


def test_demo_difference_graphml_has_both_signs(suite_store: Path, tmp_path: Path) -> None:
    written = graph_for_demo(open_store(suite_store), tmp_path, formats=("graphml",))
    path = tmp_path / "graph-math-minus-code.graphml"
    assert path in written
    h = nx.read_graphml(path)
    assert {int(s) for *_, s in h.edges(data="sign")} == {1, -1}
    assert {int(s) for _, s in h.nodes(data="sign")} == {1, -1}
