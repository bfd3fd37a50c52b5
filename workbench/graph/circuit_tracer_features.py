"""Feature files for circuit-tracer's node panel: each expert's top contexts, gate-weight histogram and load.

circuit-tracer shows, for a clicked feature, its top activating examples (``feature_models.py``:
``examples_quantiles`` of ``{tokens, tokens_acts_list, train_token_ind, is_repeated_datapoint}``),
an activation histogram (``histogram``, ``act_min``, ``act_max``, ``quantile_values``) and
``activation_frequency``. For an expert E of MoE layer l over the tokens T of a selection (default: the
whole store), as on an expert page (docs/experts.md, ``workbench.experts.contexts``):

- examples: the expert's top contexts (highest gate weight first; ids-only stores: router rank, then
  token frequency), near-duplicates collapsed, each with ±``width`` tokens of its sequence;
  ``tokens_acts_list[i]`` = E's gate weight g_l(t_i, E) on each token of the window (0 where E is not
  among the token's top-k; ids-only stores: 1 where it is);
- ``histogram``: counts of g_l(t, E) over the routed tokens in ``bins`` equal bins on [0, max];
  ``quantile_values``: its 1st..100th percentiles (the frontend places the clicked node's activation,
  the mean gate weight, among them); ``activation_frequency`` = |{t ∈ T : E ∈ K_l(t)}| / |T| (the load);
- ``top_logits`` / ``bottom_logits``: empty (a routing store holds no logit effects).

The store is read once for every expert of a graph: the routing of the graph's layers over T.
"""

from __future__ import annotations

from typing import Any

import dask
import numpy as np
import xarray as xr

from workbench.experts.contexts import ORDER_BY_WEIGHT, ORDER_FALLBACK, ORDER_UNRANKED, top_contexts
from workbench.experts.vocab import text_of, token_texts
from workbench.rank_order import is_rank_ordered
from workbench.store import schema as S
from workbench.store.select import Selection, token_mask

_LINE = str.maketrans({"\n": "↵", "\t": "⇥", "\r": "␍"})


def expert_features(
    ds: xr.Dataset,
    experts: list[tuple[int, int, int]],
    scan: str,
    selection: Selection | None = None,
    *,
    top: int = 10,
    width: int = 8,
    bins: int = 20,
) -> dict[int, dict[str, Any]]:
    """Feature JSON (``feature_models.Model``) of each ``(layer, expert, feature index)``, by feature index.

    ``layer`` is the model's real MoE layer index; ``selection`` chooses the tokens the contexts and
    statistics are drawn from (None: every token of the store).
    """
    layers = [int(x) for x in np.asarray(ds[S.LAYER].values)]
    wanted = sorted({layer for layer, _, _ in experts})
    pos = [layers.index(layer) for layer in wanted]
    mask = token_mask(ds, selection or Selection())
    rows = np.nonzero(mask)[0]
    ids_da = ds[S.EXPERT_IDS].isel({S.LAYER: pos})
    weighted = bool(ds.attrs.get("has_gate_weights", S.GATE_WEIGHTS in ds)) and S.GATE_WEIGHTS in ds
    parts = dask.compute(ids_da.data, *([ds[S.GATE_WEIGHTS].isel({S.LAYER: pos}).data] if weighted else []))
    ids = np.asarray(parts[0])  # (N, L', k), every row of the store
    weights = np.asarray(parts[1], dtype=np.float32) if weighted else None
    if weights is not None and np.isnan(weights).all():
        weights = None
    tok = np.asarray(ds[S.TOKEN_ID].values).astype(np.int64)
    seq = np.asarray(ds[S.SEQUENCE_INDEX].values).astype(np.int32)
    texts = token_texts(ds)
    describe: dict[str, Any] = {
        "sequence": [str(s) for s in np.asarray(ds[S.SEQUENCE].values)],
        "domain": [str(d) for d in np.asarray(ds[S.SEQUENCE_DOMAIN].values)],
        "segment_kinds": list(ds.attrs.get("segment_kinds", S.SEGMENT_KINDS)),
    }
    per_token = {name: np.asarray(ds[name].values) for name in (S.SEGMENT, S.STEP, S.POSITION)}
    ranked = is_rank_ordered(ds.attrs)
    order = ORDER_BY_WEIGHT if weights is not None else ORDER_FALLBACK if ranked else ORDER_UNRANKED
    out: dict[int, dict[str, Any]] = {}
    for layer, expert, feature in experts:
        j = wanted.index(layer)
        hit_all = ids[:, j, :] == expert  # (N, k) over the whole store: acts of context windows
        hit = hit_all[rows]
        sel_idx = np.nonzero(hit.any(axis=1))[0]
        routed = rows[sel_idx]
        rank = hit[sel_idx].argmax(axis=1)
        w = weights[routed, j, rank] if weights is not None else None
        desc = {
            **describe, "seq": seq[routed], "segment": per_token[S.SEGMENT][routed],
            "step": per_token[S.STEP][routed], "position": per_token[S.POSITION][routed],
        }  # fmt: skip
        contexts = top_contexts(
            routed, tok[routed], w, rank, tok, seq, texts, desc, top=top, width=width, ranked=ranked
        )
        examples = []
        for c in contexts:
            win = c.row + np.arange(-width, width + 1)
            win = win[(win >= 0) & (win < tok.size)]
            win = win[seq[win] == seq[c.row]]
            slot = hit_all[win]
            if weights is not None:
                acts = np.where(slot, weights[win, j, :], 0.0).sum(axis=1)
            else:
                acts = slot.any(axis=1).astype(np.float64)
            examples.append(
                {
                    "tokens": [text_of(texts, int(t)).translate(_LINE) for t in tok[win]],
                    "tokens_acts_list": [round(float(a), 4) for a in acts],
                    "train_token_ind": int(np.searchsorted(win, c.row)),
                    "is_repeated_datapoint": False,
                }
            )
        if w is not None and w.size:
            hi = float(w.max())
            hist = np.histogram(w, bins=bins, range=(0.0, hi * 1.0001 + 1e-9))[0].tolist()
            quant = np.quantile(w, np.arange(1, 101) / 100).round(4).tolist()
        else:
            hi, hist, quant = 1.0, [], []
        out[feature] = {
            "transcoder_id": scan,
            "index": feature,
            "examples_quantiles": [
                {"quantile_name": f"Top contexts of L{layer}:E{expert}, by {order}", "examples": examples}
            ],
            "top_logits": [],
            "bottom_logits": [],
            "act_min": 0.0,
            "act_max": hi,
            "quantile_values": quant,
            "histogram": hist,
            "activation_frequency": float(sel_idx.size / max(rows.size, 1)),
        }
    return out
