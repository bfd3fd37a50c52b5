"""Node ids and node codes of reasoning graphs: the one place either is formed or read back.

A node is one routed expert at one MoE layer. Its id, in every graph, export and widget, is
``"L{layer}:E{expert}"`` with the model's real layer index (``"L3:E17"``). Inside the array code a
node is a *code* ``layer_pos · E + expert``, where ``layer_pos`` is the layer's position along the
selection's MoE layers (0..L-1) and E the routed experts per layer; codes sort by (layer, expert).
"""

from __future__ import annotations

import re

import numpy as np

from workbench.errors import GraphError

_NODE_ID = re.compile(r"L(-?\d+):E(\d+)")


def node_id(layer: int, expert: int) -> str:
    """The id of ``expert`` at MoE layer ``layer`` (real layer index): ``node_id(3, 17) == "L3:E17"``."""
    return f"L{int(layer)}:E{int(expert)}"


def parse_node_id(node: str) -> tuple[int, int]:
    """``(layer, expert)`` of a node id, the inverse of ``node_id``: ``parse_node_id("L3:E17") == (3, 17)``."""
    m = _NODE_ID.fullmatch(str(node))
    if m is None:
        raise GraphError(f"node must be an id like 'L3:E17' (layer 3, expert 17), got {node!r}", param="node")
    return int(m.group(1)), int(m.group(2))


def node_codes(ids: np.ndarray, n_experts: int) -> np.ndarray:
    """Node codes ``layer_pos · E + expert`` of routing ``ids`` (T, L, k) -> (T, L, k) int64."""
    n_layers = ids.shape[1]
    return ids.astype(np.int64) + np.arange(n_layers, dtype=np.int64)[None, :, None] * n_experts
