"""Domain divergence: Jensen-Shannon divergence between groups' expert-usage distributions per layer,
with bootstrap confidence intervals over sequences and a permutation test.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import xarray as xr

from workbench.analysis.engine import Partial, Want, accumulate
from workbench.analysis.inputs import MetricInputError, RoutingInputs, prepare
from workbench.analysis.load import entropy_bits
from workbench.store.select import Selection

BATCH = 128  # replicates per matrix product (bounds memory at BATCH x L x E floats)


def resampling_units(inputs: RoutingInputs) -> tuple[np.ndarray, np.ndarray]:
    """Number the (sequence, group) pairs of the selected tokens in row order.

    Returns ``unit`` (T,) int32 (-1 outside the selection) and ``unit_group`` (U,) int32. The unit is
    the sequence (one group per sequence when grouping by domain), or the part of a sequence in one
    group (grouping by segment), so resampling respects that tokens of one text are not independent.
    """
    sel = inputs.group >= 0
    key = inputs.seq.astype(np.int64) * max(inputs.n_groups, 1) + inputs.group.astype(np.int64)
    uniq, inverse = np.unique(key[sel], return_inverse=True)
    unit = np.full(inputs.group.shape, -1, dtype=np.int32)
    unit[sel] = inverse.astype(np.int32)
    return unit, (uniq % max(inputs.n_groups, 1)).astype(np.int32)


def jsd_bits(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """JSD(P || Q) = H(M) - (H(P) + H(Q)) / 2 with M = (P + Q) / 2, in bits (0..1), along the last axis.

    ``p`` and ``q`` are counts or probabilities (each normalised along the last axis first).
    """
    p = p / np.maximum(p.sum(axis=-1, keepdims=True), 1e-300)
    q = q / np.maximum(q.sum(axis=-1, keepdims=True), 1e-300)
    return np.maximum(entropy_bits((p + q) / 2) - (entropy_bits(p) + entropy_bits(q)) / 2, 0.0)


def _pair_stats(
    xa: np.ndarray, xb: np.ndarray, n_boot: int, n_perm: int, ci: float, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Observed JSD per layer, bootstrap CI and permutation p-value for units ``xa`` (Ua, L, E), ``xb`` (Ub, L, E)."""
    n_a, n_b = xa.shape[0], xb.shape[0]
    n_layers, n_exp = xa.shape[1:]
    fa = xa.reshape(n_a, -1).astype(np.float64)  # (Ua, L*E)
    fb = xb.reshape(n_b, -1).astype(np.float64)
    obs = jsd_bits(xa.sum(axis=0), xb.sum(axis=0))  # (L,)
    nan = np.full(n_layers, np.nan)
    out = {"jsd": obs, "ci_low": nan, "ci_high": nan, "p_value": nan, "null_mean": nan, "boot_mean": nan}
    out |= {"p_value_overall": np.array(np.nan)}
    if n_a < 2 or n_b < 2:
        return out  # one text per side: no resampling distribution to speak of
    alpha = (1 - ci) / 2
    if n_boot > 0:
        boots = []
        for start in range(0, n_boot, BATCH):
            m = min(BATCH, n_boot - start)
            wa = rng.multinomial(n_a, np.full(n_a, 1.0 / n_a), size=m).astype(np.float64)  # (m, Ua)
            wb = rng.multinomial(n_b, np.full(n_b, 1.0 / n_b), size=m).astype(np.float64)
            ca = (wa @ fa).reshape(m, n_layers, n_exp)  # (m, L, E)
            cb = (wb @ fb).reshape(m, n_layers, n_exp)
            boots.append(jsd_bits(ca, cb))  # (m, L)
        boot = np.concatenate(boots)  # (B, L)
        out["ci_low"] = np.quantile(boot, alpha, axis=0)
        out["ci_high"] = np.quantile(boot, 1 - alpha, axis=0)
        out["boot_mean"] = boot.mean(axis=0)
    if n_perm > 0:
        pooled = np.concatenate([fa, fb])  # (Ua+Ub, L*E)
        total = pooled.sum(axis=0)
        nulls = []
        for start in range(0, n_perm, BATCH):
            m = min(BATCH, n_perm - start)
            ind = np.zeros((m, n_a + n_b))
            for r in range(m):
                ind[r, rng.permutation(n_a + n_b)[:n_a]] = 1.0
            ca = ind @ pooled  # (m, L*E) relabelled group a
            cb = total[None, :] - ca
            nulls.append(jsd_bits(ca.reshape(m, n_layers, n_exp), cb.reshape(m, n_layers, n_exp)))
        null = np.concatenate(nulls)  # (P, L)
        out["p_value"] = (1 + (null >= obs[None, :] - 1e-15).sum(axis=0)) / (1 + n_perm)
        out["null_mean"] = null.mean(axis=0)
        out["p_value_overall"] = np.array(
            (1 + (null.mean(axis=1) >= obs.mean() - 1e-15).sum()) / (1 + n_perm), dtype=np.float64
        )
    return out


def divergence_dataset(
    inputs: RoutingInputs,
    part: Partial,
    unit_group: np.ndarray,
    *,
    n_boot: int = 1000,
    n_perm: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> xr.Dataset:
    """Pairwise JSD per layer with intervals, from per-unit counts (shared with the comparison report)."""
    assert part.unit_load is not None
    units = np.zeros((len(unit_group), *part.unit_load.shape[1:]), dtype=np.int64)  # (U, L, E)
    units[part.unit_lo : part.unit_lo + part.unit_load.shape[0]] = part.unit_load
    rng = np.random.default_rng(seed)
    names, stats = [], []
    for a, b in combinations(range(inputs.n_groups), 2):
        names.append(f"{inputs.groups[a]}|{inputs.groups[b]}")
        stats.append(_pair_stats(units[unit_group == a], units[unit_group == b], n_boot, n_perm, ci, rng))
    dim = inputs.by or "group"
    n_units = np.bincount(unit_group, minlength=inputs.n_groups)
    keys = ("jsd", "ci_low", "ci_high", "boot_mean", "p_value", "null_mean")
    data: dict[str, tuple[tuple[str, ...], np.ndarray]] = {
        key: (("pair", "layer"), np.stack([s[key] for s in stats])) for key in keys
    }
    data["p_value_overall"] = (("pair",), np.array([float(s["p_value_overall"]) for s in stats]))
    data["n_units"] = ((dim,), n_units)
    pair_a = [inputs.groups[a] for a, _ in combinations(range(inputs.n_groups), 2)]
    pair_b = [inputs.groups[b] for _, b in combinations(range(inputs.n_groups), 2)]
    return xr.Dataset(
        data,
        coords={
            "pair": names,
            "a": ("pair", pair_a),
            "b": ("pair", pair_b),
            dim: inputs.groups,
            "layer": inputs.layers,
        },
        attrs={"n_boot": n_boot, "n_perm": n_perm, "ci": ci, "seed": seed, "units": "sequences", "units_of": dim},
    )


def domain_divergence(
    ds: xr.Dataset,
    selection: Selection | None = None,
    *,
    by: str = "domain",
    n_boot: int = 1000,
    n_perm: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> xr.Dataset:
    """Jensen-Shannon divergence between groups' expert-usage distributions, per layer and pair of groups.

    For groups A, B and layer l, P_A(e) = N_l(e, A) / (k N_A) is A's expert-usage distribution and
    JSD(P_A || P_B) = H((P_A + P_B)/2) - (H(P_A) + H(P_B))/2 in bits (0 = same usage, 1 = disjoint experts;
    Lin 1991, IEEE Trans. Inf. Theory 37(1)). Uncertainty treats *sequences* as the sampling unit, since
    tokens of one text are not independent:

    - ``ci_low``/``ci_high``: percentile bootstrap interval (level ``ci``) from ``n_boot`` resamples of
      each group's sequences with replacement (Efron & Tibshirani 1993, ch. 13);
    - ``p_value``: permutation test of "A and B route alike": sequences' group labels are shuffled
      ``n_perm`` times (group sizes kept) and p = (1 + #{JSD_perm >= JSD_obs}) / (1 + n_perm), per layer;
      ``p_value_overall`` uses the mean JSD over layers as the statistic (one test for the whole model).
      ``null_mean`` is the permutation mean, the JSD expected from finite samples alone (JSD estimates
      are biased upwards: compare ``jsd`` with ``null_mean``, not with 0).

    Grouping by "segment" uses each sequence's part in a segment kind as the unit. Groups with fewer than
    two units get NaN intervals and p-values. Returns an ``xr.Dataset`` of dims (pair, layer).
    """
    inputs = prepare(ds, selection, by=by)
    if inputs.n_groups < 2:
        raise MetricInputError(f"domain_divergence needs at least two {by}s in the selection, found {inputs.groups}")
    if not 0 < ci < 1:
        raise MetricInputError(f"ci must be in (0, 1), got {ci}", param="ci")
    unit, unit_group = resampling_units(inputs)
    part = accumulate(inputs, Want(load=False, per_unit=True), unit=unit)
    return divergence_dataset(inputs, part, unit_group, n_boot=n_boot, n_perm=n_perm, ci=ci, seed=seed)
