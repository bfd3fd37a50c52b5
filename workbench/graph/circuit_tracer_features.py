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

The store is read once for every expert of a graph, in blocks of ``BLOCK`` tokens (the graph's layers
over T; memory: one block plus each expert's routed tokens), and once more for the few hundred tokens
of the context windows.
"""

from __future__ import annotations

from collections.abc import Sequence
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
BLOCK = 65_536  # tokens read at a time


def _read(ds: xr.Dataset, rows: np.ndarray, pos: Sequence[int], weighted: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Routing of the sorted token ``rows`` at layer positions ``pos``: ids (n, L', k), weights or None."""
    span = int(rows[-1]) - int(rows[0]) + 1
    sel: slice | np.ndarray = slice(int(rows[0]), int(rows[-1]) + 1) if span == rows.size else rows
    arrays = [ds[S.EXPERT_IDS].isel({S.TOKEN: sel, S.LAYER: list(pos)}).data]
    if weighted:
        arrays.append(ds[S.GATE_WEIGHTS].isel({S.TOKEN: sel, S.LAYER: list(pos)}).data)
    parts = dask.compute(*arrays)
    return np.asarray(parts[0]), np.asarray(parts[1], dtype=np.float32) if weighted else None


def _routed(
    ds: xr.Dataset, rows: np.ndarray, pos: Sequence[int], keys: list[tuple[int, int]], weighted: bool
) -> tuple[dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray | None]], bool]:
    """For each (layer position j, expert): the selected rows routed to it, its top-k slot there, its gate weight.

    Returns the table and whether the store has gate weights (an engine capture stores NaN: treated as none).
    """
    parts: dict[tuple[int, int], list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]] = {k: [] for k in keys}
    for start in range(0, rows.size, BLOCK):
        r = rows[start : start + BLOCK]
        ids, w = _read(ds, r, pos, weighted)
        if w is not None and start == 0 and np.isnan(w).all():
            weighted, w = False, None
        for j, e in keys:
            t, slot = np.nonzero(ids[:, j, :] == e)  # a token routes to an expert at most once per layer
            parts[(j, e)].append((r[t], slot, w[t, j, slot] if w is not None and weighted else None))
    out = {}
    for key, ps in parts.items():
        rr = np.concatenate([p[0] for p in ps]) if ps else np.zeros(0, np.int64)
        rank = np.concatenate([p[1] for p in ps]) if ps else np.zeros(0, np.int64)
        ws = [p[2] for p in ps if p[2] is not None]
        out[key] = (
            rr,
            rank,
            np.concatenate(ws) if weighted and ws else (np.zeros(0, np.float32) if weighted else None),
        )
    return out, weighted


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
    rows = np.nonzero(token_mask(ds, selection or Selection()))[0]
    weighted = bool(ds.attrs.get("has_gate_weights", S.GATE_WEIGHTS in ds)) and S.GATE_WEIGHTS in ds
    keys = [(wanted.index(layer), expert) for layer, expert, _ in experts]
    routed, weighted = _routed(ds, rows, pos, keys, weighted)
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
    order = ORDER_BY_WEIGHT if weighted else ORDER_FALLBACK if ranked else ORDER_UNRANKED
    chosen: dict[tuple[int, int], list[tuple[int, np.ndarray]]] = {}  # each expert's (context row, window rows)
    for key in keys:
        r, rank, w = routed[key]
        desc = {
            **describe, "seq": seq[r], "segment": per_token[S.SEGMENT][r],
            "step": per_token[S.STEP][r], "position": per_token[S.POSITION][r],
        }  # fmt: skip
        contexts = top_contexts(r, tok[r], w, rank, tok, seq, texts, desc, top=top, width=width, ranked=ranked)
        wins = []
        for c in contexts:
            win = c.row + np.arange(-width, width + 1)
            win = win[(win >= 0) & (win < tok.size)]
            wins.append((c.row, win[seq[win] == seq[c.row]]))
        chosen[key] = wins
    # the routing of every window's tokens (they may lie outside the selection): one more read, small
    win_rows = np.unique(np.concatenate([w for ws in chosen.values() for _, w in ws] or [np.zeros(0, np.int64)]))
    win_ids, win_w = _read(ds, win_rows, pos, weighted) if win_rows.size else (None, None)
    out: dict[int, dict[str, Any]] = {}
    for (layer, expert, feature), key in zip(experts, keys, strict=True):
        j = key[0]
        r, _, w = routed[key]
        examples = []
        for row, win in chosen[key]:
            at = np.searchsorted(win_rows, win)
            slot = win_ids[at, j, :] == expert  # type: ignore[index]
            acts = np.where(slot, win_w[at, j, :], 0.0).sum(axis=1) if win_w is not None else slot.any(axis=1)
            examples.append(
                {
                    "tokens": [text_of(texts, int(t)).translate(_LINE) for t in tok[win]],
                    "tokens_acts_list": [round(float(a), 4) for a in acts],
                    "train_token_ind": int(np.searchsorted(win, row)),
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
            "activation_frequency": float(r.size / max(rows.size, 1)),
        }
    return out
