"""Where an expert's tokens come from: shares by domain and by segment kind against the selection's base
rates, with percentile bootstrap intervals over sequences.

For a group g (a domain or a segment kind), with n_E(g) tokens of g routed to the expert and n_S(g)
selected tokens of g:

    share(g) = n_E(g) / Σ_g n_E(g)        base(g) = n_S(g) / Σ_g n_S(g)        ratio(g) = share / base

ratio > 1 means the expert over-represents g relative to the selection (the per-expert reading of
OLMoE's domain specialisation, Muennighoff et al. 2024, arXiv:2409.02060, Sec. 5). Tokens of one text
are not independent, so the interval resamples *sequences* with replacement (B replicates; Efron &
Tibshirani 1993, ch. 13, percentile interval): each replicate reweights every sequence's (routed,
selected) counts per group by its multinomial draw count and recomputes share and ratio.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GroupShare:
    """One group's share of the expert's tokens against its base rate, with bootstrap intervals."""

    group: str
    routed: int  # n_E(g)
    selected: int  # n_S(g)
    share: float
    share_low: float
    share_high: float
    base: float
    ratio: float
    ratio_low: float
    ratio_high: float


def group_shares(
    seq: np.ndarray, group: np.ndarray, routed: np.ndarray, names: list[str], *,
    n_boot: int = 200, ci: float = 0.95, seed: int = 0,
) -> list[GroupShare]:  # fmt: skip
    """Shares of ``routed`` tokens per group with intervals (formula in the module docstring).

    Parameters
    ----------
    seq : (T,) int sequence row of each selected token (the resampling unit)
    group : (T,) int group code of each token, indexing ``names``
    routed : (T,) bool whether the token is routed to the expert
    names : group names by code; only groups with selected tokens are returned, by share descending
    """
    present = np.bincount(seq) > 0  # sequences with selected tokens are the resampling units (O(T), no sort)
    useq = np.nonzero(present)[0]
    seq_code = (np.cumsum(present) - 1)[seq]
    n_groups = len(names)
    cell = seq_code.astype(np.int64) * n_groups + group.astype(np.int64)
    sel = np.bincount(cell, minlength=useq.size * n_groups).reshape(useq.size, n_groups).astype(np.float64)
    hit = np.bincount(cell[routed], minlength=useq.size * n_groups).reshape(useq.size, n_groups).astype(np.float64)
    tot_sel, tot_hit = sel.sum(0), hit.sum(0)  # (G,)
    share = tot_hit / max(tot_hit.sum(), 1.0)
    base = tot_sel / max(tot_sel.sum(), 1.0)
    ratio = np.divide(share, base, out=np.full(n_groups, np.nan), where=base > 0)
    lo_s = hi_s = lo_r = hi_r = np.full(n_groups, np.nan)
    if n_boot > 0 and useq.size >= 2:
        rng = np.random.default_rng(seed)
        draws = rng.multinomial(useq.size, np.full(useq.size, 1.0 / useq.size), size=n_boot).astype(np.float64)
        b_hit, b_sel = draws @ hit, draws @ sel  # (B, G)
        b_share = b_hit / np.maximum(b_hit.sum(1, keepdims=True), 1.0)
        b_base = b_sel / np.maximum(b_sel.sum(1, keepdims=True), 1.0)
        b_ratio = np.divide(b_share, b_base, out=np.full_like(b_share, np.nan), where=b_base > 0)
        alpha = (1 - ci) / 2
        lo_s, hi_s = np.quantile(b_share, [alpha, 1 - alpha], axis=0)
        with warnings.catch_warnings():  # groups without selected tokens have no ratio at all
            warnings.simplefilter("ignore", RuntimeWarning)
            lo_r, hi_r = np.nanquantile(b_ratio, [alpha, 1 - alpha], axis=0)
    # fmt: off
    out = [
        GroupShare(names[g], int(tot_hit[g]), int(tot_sel[g]), float(share[g]), float(lo_s[g]), float(hi_s[g]),
                   float(base[g]), float(ratio[g]), float(lo_r[g]), float(hi_r[g]))
        for g in range(n_groups)
        if tot_sel[g] > 0
    ]
    # fmt: on
    return sorted(out, key=lambda r: -r.share)
