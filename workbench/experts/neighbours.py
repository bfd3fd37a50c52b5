"""An expert's neighbours: experts co-activated with it in the same layer, and its strongest predecessors
(layer l-1) and successors (layer l+1) over the tokens routed to it.

For expert E at layer l with N_E routed tokens, and another expert F at layer m ∈ {l-1, l, l+1}:

    count(F) = #{tokens routed to E at l and to F at m}       share(F) = count(F) / N_E
    lift(F)  = share(F) / (N_F / N_S)

where N_F / N_S is F's base rate (the fraction of selected tokens with F in their top-k at m). share
is the normalised transition weight the routing graphs use for an edge E -> F (count over the source's
tokens); lift says how much more often than its load predicts F accompanies E. Neighbours are ranked
by count. Co-activation is the same-layer pair count of Mixtral's and OLMoE's co-activation analyses
(Muennighoff et al. 2024, arXiv:2409.02060, Sec. 5 "co-activation").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Neighbour:
    """One expert that accompanies the page's expert: at the same layer, the layer before or after."""

    layer: int
    expert: int
    count: int
    share: float
    lift: float


def neighbours(
    routed_ids: np.ndarray, base: np.ndarray, n_selected: int, layer: int | None, *, exclude: int | None = None,
    top: int = 10,
) -> list[Neighbour]:  # fmt: skip
    """The ``top`` experts of one layer most often in the top-k of the routed tokens.

    ``routed_ids`` (N_E, k) are that layer's expert ids on the tokens routed to the page's expert;
    ``base`` (E,) counts the selected tokens (``n_selected`` = N_S of them) with each expert in their
    top-k at that layer. ``layer`` is the real index of that layer (None: no such layer, returns []);
    ``exclude`` drops the page's own expert from the same-layer list.
    """
    n_e = routed_ids.shape[0]
    if layer is None or n_e == 0:
        return []
    n_experts = base.size
    count = np.bincount(routed_ids.reshape(-1), minlength=n_experts)  # ids are >= 0 where the layer exists
    rate = base / max(n_selected, 1)
    if exclude is not None:
        count[exclude] = 0
    order = np.lexsort((np.arange(n_experts), -count))
    return [
        Neighbour(layer, int(f), int(count[f]), float(count[f] / n_e), float(count[f] / n_e / rate[f]))
        for f in order[:top]
        if count[f] > 0
    ]
