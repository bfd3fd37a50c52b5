"""``expert_page``: what one expert does, as one plain data object that the terminal, HTML and widget
faces all render.

A page on expert E of MoE layer l over a selection S holds: its top contexts (``contexts``), the tokens
special to it by lift next to its most frequent tokens (``lift``), its shares by domain and segment kind
with bootstrap intervals (``shares``), its gate-weight and router-rank histograms, and the experts that
accompany it in the same and adjacent layers (``neighbours``). Formulas and sources are in each module's
docstring and in docs/metrics.md ("Expert pages"). The page reads the store once (``rows.load_rows``);
every part is vectorised numpy over the selected tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import import_module
from typing import Any

import numpy as np
import xarray as xr

from workbench.experts.contexts import ORDER_BY_WEIGHT, ORDER_FALLBACK, ORDER_UNRANKED, Context, top_contexts
from workbench.experts.lift import TokenLift, lift_table
from workbench.experts.logit_effect import DEFAULT_TOKENS, LogitEffect
from workbench.experts.neighbours import Neighbour, neighbours
from workbench.experts.rows import ExpertRows, load_rows
from workbench.experts.shares import GroupShare, group_shares
from workbench.experts.vocab import token_texts
from workbench.rank_order import is_rank_ordered
from workbench.store import schema as S
from workbench.store.select import Selection

SLOW_READ = 5_000_000  # token-layers above which a page read without the layer index suggests building it


@dataclass
class ExpertPage:
    """Everything a page on one expert shows. Counts are token counts over the selection.

    ``weight_hist`` are counts per bin of ``weight_edges`` (bins+1 edges; empty on ids-only stores);
    ``rank_hist[r]`` counts routed tokens where the expert was the router's (r+1)-th choice, r < k.
    ``notes`` are plain sentences the faces print (fallbacks taken, what was left out).
    """

    layer: int
    expert: int
    model: str
    n_experts: int
    top_k: int
    n_selected: int  # N_S
    n_routed: int  # N_E
    selection: str  # the selection, as the --where clauses that made it
    has_gate_weights: bool
    context_order: str
    contexts: list[Context]
    lift: list[TokenLift]
    frequent: list[TokenLift]
    domain_shares: list[GroupShare]
    segment_shares: list[GroupShare]
    weight_edges: np.ndarray  # (bins+1,)
    weight_hist: np.ndarray  # (bins,)
    rank_hist: np.ndarray  # (k,): by router rank, or by top-k slot where ``rank_ordered`` is False
    co_activated: list[Neighbour]
    predecessors: list[Neighbour]
    successors: list[Neighbour]
    notes: list[str] = field(default_factory=list)
    rank_ordered: bool = True  # False for engine captures: k is a slot, not the router's rank
    logit_effect: LogitEffect | None = None  # with a model: direct logit attribution and masking Δloss

    @property
    def load(self) -> float:
        """N_E / N_S: the fraction of selected tokens routed to the expert (uniform routing: k / E)."""
        return self.n_routed / max(self.n_selected, 1)

    @property
    def title(self) -> str:
        return f"L{self.layer}:E{self.expert}"


def describe_selection(sel: Selection | None) -> str:
    """The selection as the where clauses that make it ("all tokens" for none)."""
    if sel is None:
        return "all tokens"
    parts = []
    for key, name in (("domains", "domain"), ("sequences", "sequence"), ("segments", "segment"), ("steps", "step")):
        v = getattr(sel, key)
        if v is not None:
            parts.append(f"{name}={','.join(map(str, v))}")
    for key in ("tokens", "positions"):
        v = getattr(sel, key)
        if v is not None:
            parts.append(f"{key}={v[0]}:{v[1]}")
    for key in ("match", "regex"):
        v = getattr(sel, key, None)
        if v is not None:
            parts.append(f"{key}={v!r}")
    return " ".join(parts) or "all tokens"


def page_from_rows(
    ds: xr.Dataset, r: ExpertRows, selection: Selection | None = None, *, top: int = 20, width: int = 8,
    min_count: int = 3, smoothing: float = 1.0, bins: int = 20, n_boot: int = 200, seed: int = 0,
) -> ExpertPage:  # fmt: skip
    """Build the page from rows already read (``load_rows``); see ``expert_page`` for the parameters."""
    routed = r.routed  # (T,)
    idx = np.nonzero(routed)[0]
    rank, weight = r.rank, r.weight  # (N_E,) 0-based slot, gate weight or None
    texts = token_texts(ds)
    kinds = list(ds.attrs.get("segment_kinds", S.SEGMENT_KINDS))
    seq_ids = [str(s) for s in np.asarray(ds[S.SEQUENCE].values)]
    seq_domain = [str(d) for d in np.asarray(ds[S.SEQUENCE_DOMAIN].values)]
    notes = []
    ranked = is_rank_ordered(ds.attrs)
    order = ORDER_BY_WEIGHT if weight is not None else ORDER_FALLBACK if ranked else ORDER_UNRANKED
    if weight is None:
        notes.append(f"this store has no gate weights: contexts are ordered by {order}")
    if not ranked:
        notes.append("this store's top-k ids are not in router rank order (an engine capture): ranks are top-k slots")
    if idx.size == 0:
        notes.append("no selected token is routed to this expert")
    if not r.from_index and r.store_token_id.size * ds.sizes[S.LAYER] >= SLOW_READ:
        notes.append("read from the store's token-major chunks, which decodes every layer; `workbench index STORE` "
                     "builds a layer index that reads only the 3 layers a page needs")  # fmt: skip
    describe: dict[str, np.ndarray | list[str]] = {
        "sequence": seq_ids, "domain": seq_domain, "segment_kinds": kinds, "seq": r.seq[idx],
        "segment": r.segment[idx], "step": r.step[idx], "position": r.position[idx],
    }  # fmt: skip
    contexts = top_contexts(
        r.rows[idx], r.token_id[idx], weight, rank, r.store_token_id, r.store_seq, texts, describe,
        top=top, width=width, ranked=ranked,
    )  # fmt: skip
    lift, frequent = lift_table(r.token_id[idx], r.token_id, texts, top=top, smoothing=smoothing, min_count=min_count)
    dom_names, dom_of_seq = np.unique(np.asarray(seq_domain, dtype=object), return_inverse=True)  # per sequence
    domain_shares = group_shares(
        r.seq, dom_of_seq[r.seq], routed, [str(d) for d in dom_names], n_boot=n_boot, seed=seed
    )
    segment_shares = group_shares(r.seq, r.segment.astype(np.int64), routed, kinds, n_boot=n_boot, seed=seed)
    if weight is not None and weight.size:
        edges = np.linspace(0.0, float(weight.max()) * 1.0001 + 1e-9, bins + 1)
        w_hist = np.histogram(weight, bins=edges)[0]
    else:
        edges, w_hist = np.zeros(0), np.zeros(0, dtype=np.int64)
    prev, _, nxt = r.layers
    n_sel = int(r.rows.size)
    return ExpertPage(
        layer=r.layer, expert=r.expert, model=str(ds.attrs.get("model", {}).get("model_name", "?")),
        n_experts=r.n_experts, top_k=r.top_k, n_selected=int(r.rows.size), n_routed=int(idx.size),
        selection=describe_selection(selection), has_gate_weights=weight is not None,
        context_order=order, contexts=contexts, rank_ordered=ranked,
        lift=lift, frequent=frequent, domain_shares=domain_shares, segment_shares=segment_shares,
        weight_edges=edges, weight_hist=w_hist, rank_hist=np.bincount(rank, minlength=r.top_k),
        co_activated=neighbours(r.near_ids[:, 1], r.base[1], n_sel, r.layer, exclude=r.expert),
        predecessors=neighbours(r.near_ids[:, 0], r.base[0], n_sel, prev),
        successors=neighbours(r.near_ids[:, 2], r.base[2], n_sel, nxt), notes=notes,
    )  # fmt: skip


def expert_page(
    ds: xr.Dataset, layer: int, expert: int, selection: Selection | None = None, model: Any = None, *,
    top: int = 20, width: int = 8, min_count: int = 3, smoothing: float = 1.0, bins: int = 20,
    n_boot: int = 200, seed: int = 0, logit_tokens: int = DEFAULT_TOKENS,
) -> ExpertPage:  # fmt: skip
    """The page of expert ``expert`` at MoE layer ``layer`` (the model's real layer index) over ``selection``.

    Parameters
    ----------
    top : rows of each list (contexts, lift, frequent tokens)
    width : W, decoded tokens shown on each side of a context's token
    min_count, smoothing : minimum routed count and additive smoothing a of the lift table (``lift``)
    bins : bins of the gate-weight histogram (from 0 to the largest weight)
    n_boot, seed : bootstrap replicates (over sequences) of the share intervals, and their seed
    model : a loaded model (``workbench.models.load_model``) the store was recorded with: fills
        ``logit_effect`` (direct logit attribution and masking Δloss, ``workbench.experts.logit_effect``,
        computed by ``workbench.expert_logits``);
        a model whose layers, MoE layers, experts, top-k or vocabulary differ is refused (``LogitEffectError``)
    logit_tokens : with a model, at most this many routed tokens are re-run (the highest gate weights)

    Raises ``ExpertPageError`` / ``SelectionError`` (one line) for a layer or expert outside the model or
    an empty selection. Works on ids-only stores, saying in ``notes`` which ordering it fell back to.
    """
    compute = None
    if model is not None:
        # the model-backed part runs torch, so it lives in the apps layer (workbench.expert_logits) and is
        # loaded by name only when a model is given: workbench.experts itself never imports torch
        compute = import_module("workbench.expert_logits")
        compute.check_model_matches(ds, model)  # before any read: a wrong model is refused at once
    rows = load_rows(ds, layer, expert, selection)
    page = page_from_rows(
        ds, rows, selection, top=top, width=width, min_count=min_count, smoothing=smoothing, bins=bins,
        n_boot=n_boot, seed=seed,
    )  # fmt: skip
    if compute is not None and page.n_routed:
        page.logit_effect = compute.logit_effect(ds, rows, model, max_tokens=logit_tokens)
    return page
