"""Every expert page of one layer at once: what the atlas (``workbench atlas``) computes per layer.

A page for each of K2's 23,040 experts one by one would read each layer 384 times; here one pass over a
layer's routing (from the layer index) gives all E experts' pages, with the formulas of the single page
(``page.py`` and its modules; docs/metrics.md, "Expert pages"), vectorised across experts:

- load N_E / N_S, router-rank histogram (bincount of expert · k + slot), gate-weight histogram;
- tokens by lift: ``lift.lift_from_counts`` on each expert's token counts over a compact vocabulary;
- shares by domain and segment kind with percentile bootstrap intervals over sequences: one (S, E·G)
  count matrix per grouping, and one multinomial draw matrix (B, S) shared by all experts;
- neighbours: the co-activation (l, l) and transition (l-1, l), (l, l+1) count matrices
  (``pair_counts``), with share = count / N_E and lift = share over the neighbour's load;
- top contexts: ``contexts.top_contexts`` on each expert's ``limit`` best candidates (so near-duplicate
  ``copies`` are counted among those candidates, not among all routed tokens).

The result is plain JSON-ready data (``LayerPages``), rounded for size; the atlas writes it as one
script shard per layer.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from workbench.experts.contexts import Context, top_contexts
from workbench.experts.lift import lift_from_counts
from workbench.experts.vocab import text_of, visible
from workbench.pair_counts import pair_counts

METRICS = {
    "load": "tokens routed here over the uniform share k/E (1 = uniform)",
    "lift": "largest token lift (vocabulary specialisation: P(token | here) / P(token | selection))",
    "domain": "largest domain ratio (share of a domain here over its share of the selection)",
    "weight": "mean gate weight on its tokens",
    "first": "share of its tokens for which it is the router's first choice",
}
MAX_CELLS = 40_000_000  # S x E x G bootstrap cells above which sequences are pooled into clusters


@dataclass
class Common:
    """What every layer's pages share: the selected tokens (T of them) and their labels."""

    rows: np.ndarray  # (T,) global token rows
    token_id: np.ndarray  # (T,)
    seq: np.ndarray  # (T,) sequence row
    segment: np.ndarray  # (T,) segment code
    step: np.ndarray  # (T,)
    position: np.ndarray  # (T,)
    store_token_id: np.ndarray  # (N,)
    store_seq: np.ndarray  # (N,)
    texts: list[str]
    seq_ids: list[str]
    seq_domain: list[str]
    kinds: list[str]
    ranked: bool
    n_boot: int = 100
    seed: int = 0
    tok_codes: np.ndarray = field(init=False)  # (T,) compact token code
    tok_uniq: np.ndarray = field(init=False)  # (V,) token id of each code
    c_s: np.ndarray = field(init=False)  # (V,) selection counts
    dom_names: list[str] = field(init=False)
    dom_code: np.ndarray = field(init=False)  # (T,)
    unit: np.ndarray = field(init=False)  # (T,) resampling unit (sequence, or cluster of sequences)
    n_units: int = field(init=False)
    draws: np.ndarray = field(init=False)  # (B, S) multinomial counts

    def __post_init__(self) -> None:
        self.tok_uniq, self.tok_codes = np.unique(self.token_id, return_inverse=True)
        self.c_s = np.bincount(self.tok_codes, minlength=self.tok_uniq.size)
        names, of_seq = np.unique(np.asarray(self.seq_domain, dtype=object), return_inverse=True)
        self.dom_names = [str(d) for d in names]
        self.dom_code = of_seq[self.seq]
        present = np.bincount(self.seq) > 0
        code = (np.cumsum(present) - 1)[self.seq]
        n = int(present.sum())
        self.unit, self.n_units = code, n
        self.draws = np.zeros((0, n))
        if self.n_boot > 0 and n >= 2:
            rng = np.random.default_rng(self.seed)
            self.draws = rng.multinomial(n, np.full(n, 1.0 / n), size=self.n_boot).astype(np.float64)

    def units_for(self, n_cells: int) -> tuple[np.ndarray, int, np.ndarray]:
        """Resampling units and draws, pooling sequences into clusters when S x ``n_cells`` is too large."""
        if self.n_units * n_cells <= MAX_CELLS or self.draws.shape[0] == 0:
            return self.unit, self.n_units, self.draws
        n = max(2, MAX_CELLS // n_cells)
        unit = np.random.default_rng(self.seed).permutation(self.n_units)[self.unit] % n
        rng = np.random.default_rng(self.seed)
        return unit, n, rng.multinomial(n, np.full(n, 1.0 / n), size=self.draws.shape[0]).astype(np.float64)


def _r(x: float, digits: int = 4) -> float | None:
    """Rounded for JSON (None for NaN)."""
    return None if not np.isfinite(x) else float(f"{x:.{digits}g}")


def _shares(common: Common, entry_tok: np.ndarray, entry_exp: np.ndarray, group: np.ndarray, n_groups: int,
            n_experts: int, ci: float = 0.95) -> tuple[np.ndarray, ...]:  # fmt: skip
    """Per expert and group: routed count, share, its interval, base, ratio and its interval; each (E, G)."""
    unit, n_units, draws = common.units_for(n_experts * n_groups)
    cell = (unit[entry_tok].astype(np.int64) * n_experts + entry_exp) * n_groups + group[entry_tok]
    hit = np.bincount(cell, minlength=n_units * n_experts * n_groups).reshape(n_units, n_experts * n_groups)
    sel = np.bincount(unit.astype(np.int64) * n_groups + group, minlength=n_units * n_groups)
    sel = sel.reshape(n_units, n_groups).astype(np.float64)
    tot_hit = hit.sum(0).reshape(n_experts, n_groups).astype(np.float64)
    share = tot_hit / np.maximum(tot_hit.sum(1, keepdims=True), 1.0)
    base = sel.sum(0) / max(sel.sum(), 1.0)
    ratio = np.divide(share, base, out=np.full_like(share, np.nan), where=base > 0)
    nan = np.full_like(share, np.nan)
    lo_s = hi_s = lo_r = hi_r = nan
    if draws.shape[0]:
        b_hit = (draws @ hit.astype(np.float64)).reshape(-1, n_experts, n_groups)
        b_share = b_hit / np.maximum(b_hit.sum(2, keepdims=True), 1.0)
        b_sel = draws @ sel
        b_base = b_sel / np.maximum(b_sel.sum(1, keepdims=True), 1.0)
        bb = b_base[:, None, :]
        b_ratio = np.divide(b_share, bb, out=np.full_like(b_share, np.nan), where=bb > 0)
        alpha = (1 - ci) / 2
        lo_s, hi_s = np.quantile(b_share, [alpha, 1 - alpha], axis=0)
        with warnings.catch_warnings():  # groups without selected tokens in a replicate have no ratio
            warnings.simplefilter("ignore", RuntimeWarning)
            lo_r, hi_r = np.nanquantile(b_ratio, [alpha, 1 - alpha], axis=0)
    return tot_hit, share, lo_s, hi_s, np.broadcast_to(base, share.shape), ratio, lo_r, hi_r


def _neighbour_rows(count: np.ndarray, n_e: int, rate: np.ndarray, layer: int, top: int) -> list[list[Any]]:
    order = np.lexsort((np.arange(count.size), -count))[:top]
    return [
        [layer, int(f), int(count[f]), _r(count[f] / n_e), _r(count[f] / n_e / rate[f]) if rate[f] > 0 else None]
        for f in order
        if count[f] > 0
    ]


def _context_row(c: Context) -> list[Any]:
    return [c.before, c.token, c.after, c.sequence, c.domain, c.segment, c.step, c.position, _r(c.gate_weight),
            c.rank, c.copies, c.row]  # fmt: skip


def _token_row(common: Common, i: int, n_e: int, c_e: int, lift: float) -> list[Any]:
    """[text, count here, frequency here, count in selection, VS, lift] of compact token code ``i``."""
    c_s = int(common.c_s[i])
    text = visible(text_of(common.texts, int(common.tok_uniq[i])))
    return [text, c_e, _r(c_e / max(n_e, 1)), c_s, _r(c_e / max(c_s, 1)), _r(lift)]


def _share_rows(s: tuple[np.ndarray, ...], e: int, names: list[str]) -> list[list[Any]]:
    """[group, routed, share, low, high, base, ratio, low, high] per group with selected tokens, by share."""
    routed, share, lo, hi, base, ratio, rlo, rhi = (x[e] for x in s)
    rows = [
        [names[g], int(routed[g]), _r(share[g]), _r(lo[g]), _r(hi[g]), _r(base[g]), _r(ratio[g]), _r(rlo[g]),
         _r(rhi[g])]
        for g in range(len(names))
        if base[g] > 0
    ]  # fmt: skip
    return sorted(rows, key=lambda row: -(row[2] or 0.0))


def _weight_hist(w: np.ndarray | None, bins: int) -> tuple[list[int], list[float | None]]:
    if w is None or not w.size:
        return [], []
    edges = np.linspace(0.0, float(w.max()) * 1.0001 + 1e-9, bins + 1)
    return [int(x) for x in np.histogram(w, bins=edges)[0]], [_r(float(edges[0])), _r(float(edges[-1]))]


def _pairs(a: np.ndarray, b: np.ndarray, n_experts: int) -> np.ndarray:
    """C[e, f]: tokens with e in their top-k at ``a``'s layer and f at ``b``'s, (E, E) int64."""
    cnt = np.zeros(n_experts * n_experts, dtype=np.int64)
    empty_w = np.zeros((0, a.shape[1]), dtype=np.float32)
    pair_counts(a, b, empty_w, empty_w, np.zeros(0, dtype=np.bool_), n_experts, cnt, np.zeros(0))
    return cnt.reshape(n_experts, n_experts)


def layer_pages(
    common: Common, layer: int, ids: np.ndarray, weights: np.ndarray | None, n_experts: int, *,
    prev: tuple[int, np.ndarray] | None = None, nxt: tuple[int, np.ndarray] | None = None,
    top: int = 12, width: int = 6, min_count: int = 3, smoothing: float = 1.0, bins: int = 20,
    n_neighbours: int = 8, limit: int = 200,
) -> dict[str, Any]:  # fmt: skip
    """All E experts' pages of one layer over the selection ``common`` (module docstring).

    Parameters
    ----------
    layer : the real layer index; ``ids`` (T, k) its expert ids on the selected tokens; ``weights`` (T, k)
        its gate weights or None (ids-only stores: contexts by the page's fallback order)
    prev, nxt : (real index, (T, k) ids) of the adjacent layers, or None at the ends
    top, width, min_count, smoothing, bins : as ``expert_page``; ``n_neighbours`` per neighbour list;
        ``limit`` contexts candidates per expert (see the module docstring)

    Returns ``{"layer", "grid": {metric: [E values]}, "experts": [E page dicts]}`` (keys in ``viz/atlas``).
    """
    t_n, k = ids.shape
    flat = ids.reshape(-1)
    order = np.argsort(flat, kind="stable")  # entries grouped by expert, token order within (radix sort: int16)
    counts = np.bincount(flat, minlength=n_experts)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    entry_tok = order // k  # (T k,) selected-token index of each entry
    entry_slot = order % k
    entry_exp = flat[order].astype(np.int64)
    w_flat = None
    if weights is not None:
        w_flat = np.asarray(weights, dtype=np.float32).reshape(-1)[order]
        if np.isnan(w_flat[: min(w_flat.size, 4096)]).all() and np.isnan(w_flat).all():
            w_flat = None
    rank_hist = np.bincount(entry_exp * k + entry_slot, minlength=n_experts * k).reshape(n_experts, k)
    dom = _shares(common, entry_tok, entry_exp, common.dom_code, len(common.dom_names), n_experts)
    seg = _shares(common, entry_tok, entry_exp, common.segment.astype(np.int64), len(common.kinds), n_experts)
    co = _pairs(ids, ids, n_experts)
    prev_layer, next_layer = (prev[0] if prev is not None else -1), (nxt[0] if nxt is not None else -1)
    pre = _pairs(prev[1], ids, n_experts) if prev is not None else None  # [f at l-1, e at l]
    suc = _pairs(ids, nxt[1], n_experts) if nxt is not None else None
    rate_here = counts / max(t_n, 1)
    rate_prev = np.bincount(prev[1].reshape(-1), minlength=n_experts) / max(t_n, 1) if prev is not None else counts
    rate_next = np.bincount(nxt[1].reshape(-1), minlength=n_experts) / max(t_n, 1) if nxt is not None else counts
    tok_code_entries = common.tok_codes[entry_tok]
    n_v = common.tok_uniq.size
    uniform = k / n_experts
    grid: dict[str, list[float | None]] = {m: [] for m in METRICS}
    experts = []
    for e in range(n_experts):
        a, b = int(offsets[e]), int(offsets[e + 1])
        n_e = b - a
        toks = entry_tok[a:b]
        slots = entry_slot[a:b]
        w = w_flat[a:b] if w_flat is not None else None
        c_all = np.bincount(tok_code_entries[a:b], minlength=n_v)
        seen = np.nonzero(c_all)[0]  # lift is only needed where the expert has the token
        c_e, c_s = c_all[seen], common.c_s[seen]
        lift = lift_from_counts(c_e, c_s, n_e, t_n, smoothing=smoothing, n_vocab=n_v)
        ranked = np.nonzero(c_e >= max(min_count, 1))[0]
        ranked = ranked[np.lexsort((-c_e[ranked], -lift[ranked]))][:top]
        frequent = np.lexsort((-lift, -c_e))[:top]

        describe: dict[str, np.ndarray | list[str]] = {
            "sequence": common.seq_ids, "domain": common.seq_domain, "segment_kinds": common.kinds,
            "seq": common.seq[toks], "segment": common.segment[toks], "step": common.step[toks],
            "position": common.position[toks],
        }  # fmt: skip
        ctx = top_contexts(
            common.rows[toks], common.token_id[toks], w, slots, common.store_token_id, common.store_seq,
            common.texts, describe, top=top, width=width, ranked=common.ranked, limit=limit,
        )  # fmt: skip
        w_hist, w_range = _weight_hist(w, bins)
        dshares = _share_rows(dom, e, common.dom_names)
        page = {
            "e": e,
            "n": n_e,
            "ctx": [_context_row(c) for c in ctx],
            "lift": [_token_row(common, int(seen[i]), n_e, int(c_e[i]), float(lift[i])) for i in ranked],
            "freq": [_token_row(common, int(seen[i]), n_e, int(c_e[i]), float(lift[i])) for i in frequent],
            "dom": dshares,
            "seg": _share_rows(seg, e, common.kinds),
            "rank": [int(x) for x in rank_hist[e]],
            "wh": w_hist,
            "wr": w_range,
            "co": _neighbour_rows(np.where(np.arange(n_experts) == e, 0, co[e]), n_e, rate_here, layer, n_neighbours),
            "pre": _neighbour_rows(pre[:, e], n_e, rate_prev, prev_layer, n_neighbours) if pre is not None else [],
            "suc": _neighbour_rows(suc[e], n_e, rate_next, next_layer, n_neighbours) if suc is not None else [],
        }
        experts.append(page)
        grid["load"].append(_r(n_e / max(t_n, 1) / uniform))
        grid["lift"].append(_r(float(lift[ranked[0]])) if ranked.size else None)
        grid["domain"].append(max((r[6] or 0.0 for r in dshares if r[1] >= min_count), default=None))
        grid["weight"].append(_r(float(w.mean(dtype=np.float64))) if w is not None and n_e else None)
        grid["first"].append(_r(float((slots == 0).mean())) if n_e else None)
    return {"layer": layer, "tokens": t_n, "grid": grid, "experts": experts}
