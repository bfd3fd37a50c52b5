"""OLMoE domain and vocabulary specialisation, and the most domain-specific experts per layer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from workbench.analysis.engine import Partial, Want, accumulate
from workbench.analysis.inputs import MetricInputError, RoutingInputs, prepare
from workbench.store import schema as S
from workbench.store.select import Selection

# Refuse a vocabulary count array bigger than this (tokens x layers x experts x 8 bytes).
VOCAB_LIMIT_BYTES = 2 << 30


def specialization_dataset(inputs: RoutingInputs, part: Partial) -> xr.Dataset:
    """DS(E, D) from reduced per-group load counts (shared with the comparison report)."""
    assert part.load is not None
    n_d = inputs.group_tokens()  # (G,)
    ds_ = part.load / np.maximum(n_d, 1)[:, None, None]  # (G, L, E)
    dim = inputs.by or "group"
    return xr.Dataset(
        {"specialization": ((dim, "layer", "expert"), ds_), "n_tokens": ((dim,), n_d)},
        coords={dim: inputs.groups, "layer": inputs.layers, "expert": np.arange(inputs.n_experts)},
        attrs={"uniform": inputs.top_k / inputs.n_experts, "top_k": inputs.top_k, "n_experts": inputs.n_experts},
    )


def domain_specialization(ds: xr.Dataset, selection: Selection | None = None, *, by: str = "domain") -> xr.Dataset:
    """OLMoE domain specialisation DS(E, D) = N_k(E, D) / N_D per layer.

    N_k(E, D) is the number of tokens of domain D that have expert E among their top-k, and N_D the
    number of tokens of D (Muennighoff et al. 2024, "OLMoE", arXiv:2409.02060, Sec. 5, domain
    specialisation). Values lie in [0, 1]; with uniform routing every expert gets k/E (``attrs["uniform"]``),
    the line OLMoE draws in its specialisation plots. ``by`` may also be "segment" (think vs answer, ...).

    Returns an ``xr.Dataset`` with ``specialization`` of dims (by, layer, expert) and ``n_tokens`` (by,).
    """
    inputs = prepare(ds, selection, by=by)
    return specialization_dataset(inputs, accumulate(inputs, Want(load=True)))


def specificity_table(spec: xr.Dataset, top: int = 5, smoothing: float = 0.5) -> pd.DataFrame:
    """The ``top`` most domain-specific experts per (layer, domain) from a specialisation Dataset.

    For domain D and expert E: ``ds`` = DS(E, D); ``ds_rest`` = N_k(E, not D) / N_(not D) over the
    other selected groups; ``lift`` = (N_k(E,D) + a) / (N_D + a E / k) ÷ (N_k(E,¬D) + a) / (N_¬D + a E / k),
    the ratio of the two with additive smoothing a = ``smoothing`` (so unseen experts do not divide by 0);
    ``share_of_expert`` = N_k(E, D) / N_k(E), the fraction of the expert's tokens that come from D.
    Experts are ranked by lift; only experts used by D at all are listed.
    """
    dim = next(d for d in spec["specialization"].dims if d not in ("layer", "expert"))
    n_d = spec["n_tokens"].values.astype(np.float64)  # (G,)
    frac = spec["specialization"].values  # (G, L, E)
    counts = frac * n_d[:, None, None]
    k_over_e = float(spec.attrs["top_k"]) / float(spec.attrs["n_experts"])
    total = counts.sum(axis=0)  # (L, E)
    rows = []
    for gi, group in enumerate(spec[dim].values):
        rest_n = n_d.sum() - n_d[gi]
        rest_counts = total - counts[gi]
        p_d = (counts[gi] + smoothing) / (n_d[gi] + smoothing / k_over_e)
        p_rest = (rest_counts + smoothing) / (rest_n + smoothing / k_over_e)
        lift = p_d / p_rest  # (L, E)
        for li, layer in enumerate(spec["layer"].values):
            order = np.argsort(-lift[li], kind="stable")
            kept = [e for e in order if counts[gi, li, e] > 0][:top]
            for rank, e in enumerate(kept):
                rows.append(
                    {
                        dim: str(group),
                        "layer": int(layer),
                        "rank": rank + 1,
                        "expert": int(e),
                        "ds": float(frac[gi, li, e]),
                        "ds_rest": float(rest_counts[li, e] / rest_n) if rest_n > 0 else float("nan"),
                        "lift": float(lift[li, e]),
                        "share_of_expert": float(counts[gi, li, e] / max(total[li, e], 1)),
                        "tokens": round(counts[gi, li, e]),
                    }
                )
    return pd.DataFrame(rows)


def specific_experts(
    ds: xr.Dataset, selection: Selection | None = None, *, by: str = "domain", top: int = 5
) -> pd.DataFrame:
    """The most domain-specific experts per layer: experts whose DS(E, D) most exceeds DS(E, other domains).

    Ranks by the smoothed lift DS(E, D) / DS(E, ¬D) (formula in ``specificity_table``), the contrast
    OLMoE reads off its domain-specialisation plots (arXiv:2409.02060, Sec. 5) made explicit per expert.
    Returns a DataFrame with columns (by, layer, rank, expert, ds, ds_rest, lift, share_of_expert, tokens).
    """
    spec = domain_specialization(ds, selection, by=by)
    if spec.sizes[by] < 2:
        raise MetricInputError(
            f"specific_experts needs at least two {by}s in the selection, found {list(spec[by].values)}"
        )
    return specificity_table(spec, top=top)


def vocab_specialization(
    ds: xr.Dataset, selection: Selection | None = None, *, next_token: bool = False, min_count: int = 1
) -> xr.Dataset:
    """OLMoE vocabulary specialisation VS(E, x) = N_k(E, x) / N(x) per layer, for token ids x.

    N(x) counts selected tokens whose *input* token id is x (``next_token=False``) or whose *next*
    token (the one the model predicts at that position, same sequence) is x (``next_token=True``);
    N_k(E, x) counts those with E among their top-k (Muennighoff et al. 2024, arXiv:2409.02060, Sec. 5,
    vocabulary specialisation, input and output tokens). Uniform routing gives k/E. Only token ids seen
    at least ``min_count`` times are kept. Narrow ``layers`` for big vocabularies: the count array has
    (distinct tokens x layers x experts) cells.

    Returns an ``xr.Dataset`` with ``count`` (token, layer, expert), ``specialization`` (same dims),
    ``n`` (token,), coords ``token_id`` and ``token_text`` (from the store's vocabulary).
    """
    inputs = prepare(ds, selection)
    tok = inputs.token_id.astype(np.int64)
    if next_token:
        nxt = np.full_like(tok, -1)
        same = inputs.seq[1:] == inputs.seq[:-1]
        nxt[:-1] = np.where(same, tok[1:], -1)
        tok = nxt
    sel = (inputs.group >= 0) & (tok >= 0)
    uniq, n = np.unique(tok[sel], return_counts=True)
    keep = uniq[n >= min_count]
    if keep.size == 0:
        raise MetricInputError(
            f"min_count {min_count}: no token id occurs that often in the selection; lower it", param="min_count"
        )
    size = keep.size * len(inputs.layers) * inputs.n_experts * 8
    if size > VOCAB_LIMIT_BYTES:
        raise MetricInputError(
            f"vocab_specialization would need {size / 2**30:.1f} GiB for {keep.size} distinct tokens x "
            f"{len(inputs.layers)} layers; select fewer layers (layers=A:B) or raise min_count"
        )
    code = np.full(tok.shape, -1, dtype=np.int32)
    pos = np.searchsorted(keep, tok)
    hit = sel & (pos < keep.size) & (keep[np.minimum(pos, keep.size - 1)] == tok)
    code[hit] = pos[hit]
    part = accumulate(inputs, Want(load=False, extra=(("vocab", int(keep.size)),)), {"vocab": code})
    counts = part.extra["vocab"]  # (X, L, E)
    n_x = np.bincount(code[code >= 0], minlength=keep.size)
    vocab = list(ds.attrs.get("tokenizer", {}).get("vocab", []))
    text = [vocab[i] if 0 <= i < len(vocab) else f"<{i}>" for i in keep.tolist()]
    return xr.Dataset(
        {
            "count": (("token", "layer", "expert"), counts),
            "specialization": (("token", "layer", "expert"), counts / np.maximum(n_x, 1)[:, None, None]),
            "n": (("token",), n_x),
        },
        coords={
            "token_id": ("token", keep.astype(np.int64)),
            "token_text": ("token", np.array(text, dtype=object)),
            "layer": inputs.layers,
            "expert": np.arange(inputs.n_experts),
        },
        attrs={"uniform": inputs.top_k / inputs.n_experts, "next_token": next_token, "source": S.TOKEN_ID},
    )


def top_vocab(spec: xr.Dataset, layer: int, expert: int, top: int = 10) -> pd.DataFrame:
    """The ``top`` token ids most specialised to ``expert`` at ``layer`` (ties broken by frequency)."""
    sub = spec.sel(layer=layer, expert=expert)
    df = pd.DataFrame(
        {
            "token_id": sub["token_id"].values,
            "token_text": sub["token_text"].values,
            "specialization": sub["specialization"].values,
            "n": spec["n"].values,
        }
    )
    return df.sort_values(["specialization", "n"], ascending=False).head(top).reset_index(drop=True)
