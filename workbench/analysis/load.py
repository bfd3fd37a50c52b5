"""Expert load per layer (counts, shares, DeepSeek-V3 relative load) and routing entropy per layer."""

from __future__ import annotations

import numpy as np
import xarray as xr

from workbench.analysis.engine import Partial, Want, accumulate
from workbench.analysis.inputs import MetricInputError, RoutingInputs, prepare
from workbench.store.select import Selection


def _group_dim(inputs: RoutingInputs) -> str:
    return inputs.by or "group"


def load_dataset(inputs: RoutingInputs, part: Partial) -> xr.Dataset:
    """Build the ``expert_load`` Dataset from reduced counts (shared with the comparison report)."""
    assert part.load is not None
    counts = part.load  # (G, L, E)
    n_tokens = inputs.group_tokens()  # (G,)
    k, n_exp = inputs.top_k, inputs.n_experts
    slots = np.maximum(counts.sum(axis=2, keepdims=True), 1)  # (G, L, 1) = k * N_tokens
    share = counts / slots
    balanced = np.maximum(n_tokens[:, None, None], 1) * k / n_exp  # (G, 1, 1)
    dims = (_group_dim(inputs), "layer", "expert")
    coords = {dims[0]: inputs.groups, "layer": inputs.layers, "expert": np.arange(n_exp)}
    out = xr.Dataset(
        {
            "count": (dims, counts),
            "share": (dims, share),
            "relative_load": (dims, counts / balanced),
            "n_tokens": ((dims[0],), n_tokens),
        },
        coords=coords,
        attrs={"top_k": k, "n_experts": n_exp, "uniform_share": 1.0 / n_exp},
    )
    if part.mass is not None:
        mass_total = np.maximum(part.mass.sum(axis=2, keepdims=True), 1e-30)
        out["gate_mass"] = (dims, part.mass)
        out["gate_share"] = (dims, part.mass / mass_total)
    return out


def expert_load(
    ds: xr.Dataset, selection: Selection | None = None, *, by: str | None = None, weighted: bool = False
) -> xr.Dataset:
    """Expert load per layer: counts, shares and DeepSeek-V3's relative load.

    Formulas, for layer l and expert e over the N selected tokens (each routed to k experts):

    - ``count[l, e]`` = N_l(e), tokens with e among their top-k;
    - ``share[l, e]`` = N_l(e) / (k N), the expert's fraction of routed slots (sums to 1 over e);
    - ``relative_load[l, e]`` = N_l(e) / (N k / E), load divided by the perfectly balanced load, as in
      the expert-load analysis of DeepSeek-V3 (DeepSeek-AI 2024, arXiv:2412.19437, Sec. 4.5.3 and
      Appendix C, Fig. 10: "relative expert load", actual ÷ theoretically balanced load); 1 everywhere
      means perfect balance;
    - with ``weighted=True`` also ``gate_mass`` = sum of the gate weights the MoE applied to e, and
      ``gate_share`` its normalised form (needs gate weights; refused on ids-only stores).

    Parameters
    ----------
    ds : routing Dataset (``workbench.open_store``), dask-backed; read chunk by chunk.
    selection : which tokens/layers (domain, sequence, segment, step, token range, layers).
    by : optional grouping ("domain", "segment", "sequence", "step"); the leading dim is named after it
        (``"group"`` with one value ``"all"`` when None).

    Returns
    -------
    xr.Dataset with ``count``, ``share``, ``relative_load`` of dims (by, layer, expert) and ``n_tokens`` (by,).

    Examples
    --------
    >>> load = expert_load(ds, parse_where("domain=math"))  # doctest: +SKIP
    >>> load.relative_load.max("expert")  # the hottest expert per layer, x balanced  # doctest: +SKIP
    """
    inputs = prepare(ds, selection, by=by, need_weights=weighted, metric="expert_load(weighted=True)")
    part = accumulate(inputs, Want(load=True, weights=weighted))
    if weighted and part.nan_weights:
        raise MetricInputError(
            f"{part.nan_weights} selected gate weights are missing (NaN); select tokens recorded with weights"
        )
    return load_dataset(inputs, part)


def entropy_bits(p: np.ndarray, axis: int = -1) -> np.ndarray:
    """Shannon entropy in bits along ``axis`` of a (non-normalised) non-negative array."""
    total = p.sum(axis=axis, keepdims=True)
    q = np.divide(p, total, out=np.zeros_like(p, dtype=np.float64), where=total > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(q > 0, -q * np.log2(q), 0.0)
    return np.asarray(terms.sum(axis=axis))


def entropy_dataset(inputs: RoutingInputs, part: Partial, kind: str) -> xr.Dataset:
    """Build the ``routing_entropy`` Dataset from reduced counts."""
    dims = (_group_dim(inputs), "layer")
    coords = {dims[0]: inputs.groups, "layer": inputs.layers}
    if kind == "load":
        assert part.load is not None
        h = entropy_bits(part.load.astype(np.float64))  # (G, L)
        h_max = np.log2(inputs.n_experts)
    else:
        assert part.entropy is not None and part.entropy_n is not None
        h = part.entropy / np.maximum(part.entropy_n, 1)
        h_max = np.log2(inputs.top_k)
    return xr.Dataset(
        {"entropy": (dims, h), "normalized": (dims, h / h_max if h_max > 0 else h * 0)},
        coords=coords,
        attrs={"kind": kind, "units": "bits", "max_bits": float(h_max)},
    )


def routing_entropy(
    ds: xr.Dataset, selection: Selection | None = None, *, by: str | None = None, kind: str = "load"
) -> xr.Dataset:
    """Routing entropy per layer, in bits, and normalised by its maximum.

    - ``kind="load"``: H_l = -sum_e p_l(e) log2 p_l(e) with p_l(e) = N_l(e) / (k N) the expert-usage
      distribution of the layer (``share`` of ``expert_load``); max log2 E when every expert is used
      equally. This is the load-balance entropy used in MoE routing analyses (e.g. OLMoE, Muennighoff et
      al. 2024, arXiv:2409.02060, Sec. 5; DeepSeek-V3, arXiv:2412.19437, Sec. 2.1.2 on balance).
    - ``kind="gate"``: mean over tokens of -sum_r w_r log2 w_r with w_r the token's top-k gate weights
      normalised to sum 1; max log2 k (weights spread evenly over the k chosen experts). Needs gate
      weights: refused on ids-only stores.

    Returns an ``xr.Dataset`` with ``entropy`` and ``normalized`` of dims (by, layer).
    """
    if kind not in ("load", "gate"):
        raise MetricInputError(f"kind must be 'load' or 'gate' (routing_entropy), got {kind!r}", param="kind")
    weighted = kind == "gate"
    inputs = prepare(ds, selection, by=by, need_weights=weighted, metric="routing_entropy(kind='gate')")
    part = accumulate(inputs, Want(load=True, weights=weighted))
    if weighted and part.nan_weights:
        raise MetricInputError(
            f"{part.nan_weights} selected gate weights are missing (NaN); select tokens recorded with weights"
        )
    return entropy_dataset(inputs, part, kind)
