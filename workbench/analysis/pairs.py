"""Co-activation within a layer, consecutive-token agreement (Mixtral), and layer-to-layer transitions."""

from __future__ import annotations

from math import comb

import numpy as np
import xarray as xr

from workbench.analysis.engine import Partial, Want, accumulate
from workbench.analysis.inputs import MetricInputError, RoutingInputs, prepare, require_rank_order
from workbench.rank_order import UNORDERED_NOTE
from workbench.store.select import Selection


def coactivation_dataset(inputs: RoutingInputs, part: Partial, pairs: str) -> xr.Dataset:
    """CoAct from reduced counts (shared with the comparison report)."""
    assert part.coact is not None and part.load is not None
    u = part.coact  # (L, E, E) rank-ordered pair counts
    n_pair = u + np.transpose(u, (0, 2, 1))  # (L, E, E) symmetric N(Ei, Ej)
    n_i = part.load.sum(axis=0)  # (L, E) N(Ei) over all groups
    coact = n_pair / np.maximum(n_i, 1)[:, :, None]
    e = np.arange(inputs.n_experts)
    return xr.Dataset(
        {
            "coactivation": (("layer", "expert_i", "expert_j"), coact),
            "pair_count": (("layer", "expert_i", "expert_j"), n_pair),
            "count": (("layer", "expert_i"), n_i),
        },
        coords={"layer": inputs.layers, "expert_i": e, "expert_j": e},
        attrs={
            "pairs": pairs,
            "uniform": (inputs.top_k - 1) / (inputs.n_experts - 1) if pairs == "all" else float("nan"),
        },
    )


def coactivation(ds: xr.Dataset, selection: Selection | None = None, *, pairs: str = "all") -> xr.Dataset:
    """Expert co-activation within a layer, CoAct(Ei, Ej) = N(Ei, Ej) / N(Ei).

    N(Ei, Ej) counts tokens routed to both Ei and Ej in the same layer, N(Ei) tokens routed to Ei
    (Muennighoff et al. 2024, "OLMoE", arXiv:2409.02060, Sec. 5, expert co-activation). The matrix is
    not symmetric: row i says how often Ei's tokens also use Ej. ``pairs="all"`` counts every pair in a
    token's top-k (uniform routing gives (k-1)/(E-1) off the diagonal); ``pairs="adjacent"`` only pairs
    at neighbouring ranks r, r+1 of the router's order (first with second choice, ...), a rank-adjacent
    variant, refused on stores whose ids are not in rank order (engine capture, ``attrs["rank_order"]``
    false). The diagonal is 0.

    Returns an ``xr.Dataset``: ``coactivation`` (layer, expert_i, expert_j), ``pair_count`` (same dims,
    symmetric), ``count`` (layer, expert_i) = N(Ei).
    """
    if pairs not in ("all", "adjacent"):
        raise MetricInputError(f"pairs must be 'all' or 'adjacent' (coactivation), got {pairs!r}", param="pairs")
    if pairs == "adjacent":
        require_rank_order(ds, "coactivation(pairs='adjacent')")
    inputs = prepare(ds, selection)
    return coactivation_dataset(inputs, accumulate(inputs, Want(load=True, coactivation=pairs)), pairs)


def agreement_baselines(n_experts: int, top_k: int) -> dict[str, float]:
    """Analytic agreement of two independent uniform routings (Mixtral, Jiang et al. 2024, Sec. 5).

    - first choice: P(same first expert) = 1 / E (12.5% for E = 8);
    - any of top-k: P(two random k-subsets of E intersect) = 1 - C(E-k, k) / C(E, k)
      (1 - 15/28 = 46.4% for top-2 of 8).
    """
    return {
        "first_choice": 1.0 / n_experts,
        "any_topk": 1.0 - comb(n_experts - top_k, top_k) / comb(n_experts, top_k),
    }


def agreement_dataset(inputs: RoutingInputs, part: Partial) -> xr.Dataset:
    """Consecutive agreement from reduced pair counts (shared with the comparison report).

    On a store not in router rank order (engine capture) ``first_choice`` is NaN and
    ``attrs["first_choice_note"]`` says why; ``any_topk`` is set-based and exact on every store.
    """
    assert part.agree is not None
    a = part.agree  # (G, L, 3): pairs, same first, any shared
    n = np.maximum(a[..., 0], 1)
    dim = inputs.by or "group"
    base = agreement_baselines(inputs.n_experts, inputs.top_k)
    first = a[..., 1] / n if inputs.rank_order else np.full(a.shape[:2], np.nan)
    note = {} if inputs.rank_order else {"first_choice_note": f"same first choice not computed: {UNORDERED_NOTE}"}
    return xr.Dataset(
        {
            "first_choice": ((dim, "layer"), first),
            "any_topk": ((dim, "layer"), a[..., 2] / n),
            "n_pairs": ((dim, "layer"), a[..., 0]),
        },
        coords={dim: inputs.groups, "layer": inputs.layers},
        attrs={f"baseline_{key}": value for key, value in base.items()}
        | {"top_k": inputs.top_k, "n_experts": inputs.n_experts, "rank_order": int(inputs.rank_order)}
        | note,
    )


def consecutive_agreement(ds: xr.Dataset, selection: Selection | None = None, *, by: str | None = None) -> xr.Dataset:
    """Mixtral's consecutive-token agreement per layer, with its analytic random baselines.

    Over pairs of consecutive tokens (t, t+1) of the same sequence (never across a sequence boundary;
    with a segment or step selection both tokens must be selected and in the same group):

    - ``first_choice`` = share of pairs whose first-choice (rank-0) experts are equal;
    - ``any_topk`` = share of pairs whose top-k sets share at least one expert.

    Jiang et al. 2024, "Mixtral of Experts", arXiv:2401.04088, Sec. 5 (Routing analysis, Table 5:
    "repeated assignments" for first choice and first-or-second choice). Baselines for independent
    uniform routing in ``attrs``: 1/E and 1 - C(E-k, k)/C(E, k) (12.5% and 46.4% for top-2 of 8).
    On a store not in router rank order (engine capture) ``first_choice`` is NaN with
    ``attrs["first_choice_note"]``; ``any_topk`` does not depend on the order and is computed.
    """
    inputs = prepare(ds, selection, by=by)
    part = accumulate(inputs, Want(load=False, agreement=True))
    if part.agree is None or int(part.agree[..., 0].sum()) == 0:
        raise MetricInputError("the selection holds no pair of consecutive tokens of the same sequence")
    return agreement_dataset(inputs, part)


def transitions_dataset(inputs: RoutingInputs, part: Partial, top_fraction: float = 0.2) -> xr.Dataset:
    """Transition probabilities and top-mass from reduced counts (shared with the comparison report)."""
    assert part.trans is not None
    c = part.trans  # (L-1, E, E)
    row = c.sum(axis=2, keepdims=True)  # (L-1, E, 1) = k * N_l(e)
    p = c / np.maximum(row, 1)
    n_top = max(1, int(np.ceil(top_fraction * inputs.n_experts)))
    top = -np.partition(-p, n_top - 1, axis=2)[:, :, :n_top].sum(axis=2)  # (L-1, E) mass of top candidates
    w = row[:, :, 0].astype(np.float64)  # weight rows by how often e is used at l
    top_mass = (top * w).sum(axis=1) / np.maximum(w.sum(axis=1), 1)  # (L-1,)
    layers = inputs.layers
    e = np.arange(inputs.n_experts)
    return xr.Dataset(
        {
            "probability": (("layer", "expert", "next_expert"), p),
            "count": (("layer", "expert", "next_expert"), c),
            "top_mass": (("layer", "expert"), top),
            "layer_top_mass": (("layer",), top_mass),
        },
        coords={"layer": layers[:-1], "next_layer": ("layer", layers[1:]), "expert": e, "next_expert": e},
        attrs={"top_fraction": top_fraction, "n_top": n_top, "uniform_top_mass": n_top / inputs.n_experts},
    )


def transitions(ds: xr.Dataset, selection: Selection | None = None, *, top_fraction: float = 0.2) -> xr.Dataset:
    """Inter-layer transitions P(e' at layer l+1 | e at layer l) between consecutive selected MoE layers.

    C_l(e, e') counts tokens with e in their top-k at layer l and e' in their top-k at layer l+1 (all
    k x k pairs), and P(e' | e) = C_l(e, e') / sum_e'' C_l(e, e'') (rows sum to 1: the chance that one
    of the token's next-layer experts, drawn at random, is e'). ``top_mass[l, e]`` is the probability
    mass held by the ceil(top_fraction x E) most likely next experts of e (20% by default; uniform routing
    gives top_fraction); ``layer_top_mass[l]`` averages it over e weighted by e's load. This is the
    inter-layer expert affinity of Yao et al. 2024 ("Exploiting Inter-Layer Expert Affinity for
    Accelerating MoE Inference", arXiv:2401.08383, Sec. 3), as the prefetching analyses of DeepSeek-style
    models use it. ``layer`` is the source layer; ``next_layer`` the destination.
    """
    inputs = prepare(ds, selection)
    if len(inputs.layers) < 2:
        raise MetricInputError("transitions need at least two MoE layers in the selection; select layers=A:B, B > A")
    if not 0 < top_fraction <= 1:
        raise MetricInputError(f"top_fraction must be in (0, 1], got {top_fraction}", param="top_fraction")
    return transitions_dataset(inputs, accumulate(inputs, Want(load=False, transitions=True)), top_fraction)
