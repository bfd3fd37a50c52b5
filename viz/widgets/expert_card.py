"""The expert card: what one expert does over the widget's current selection, redrawn on a click.

The card is a thin view over ``workbench.experts.ExpertPage``, the object behind ``workbench expert``
and the HTML page; it is built here from the arrays the widget already holds for its sequence
(``SequenceData``), not from the store, so a click never reads zarr: the same functions of
``workbench.experts`` (``top_contexts``, ``lift_table``, ``group_shares``, ``neighbours``) run on the
selected tokens' in-memory ids, weights and token ids. Formulas: docs/metrics.md ("Expert pages").

Within one sequence the bootstrap over sequences has a single unit, so share intervals are absent
(NaN) and the card says so; the library page over a whole store has them.
"""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as widgets
import numpy as np

from workbench.experts.contexts import ORDER_BY_WEIGHT, ORDER_FALLBACK, ORDER_UNRANKED, top_contexts
from workbench.experts.lift import lift_table
from workbench.experts.neighbours import Neighbour, neighbours
from workbench.experts.page import ExpertPage
from workbench.experts.shares import GroupShare, group_shares
from workbench.experts.vocab import text_of, visible

from .sequence_data import SequenceData

_CSS = """<style>
.wb-card{font:12px/1.4 var(--jp-ui-font-family,system-ui,sans-serif);border:1px solid #ccc;border-radius:4px;
 padding:6px 10px;background:#fcfcff;max-height:520px;overflow-y:auto}
.wb-card h4{margin:2px 0 4px;font-size:14px}.wb-card h5{margin:8px 0 2px;font-size:12px;color:#333}
.wb-card .sub{color:#555}.wb-card table{border-collapse:collapse;font-size:11px}

.wb-card td,.wb-card th{padding:1px 6px;text-align:left}
.wb-card td.n{text-align:right;font-variant-numeric:tabular-nums}
.wb-card .tok{font-family:var(--jp-code-font-family,monospace);background:#eef;padding:0 3px;border-radius:3px}
.wb-card .ctx{font-family:var(--jp-code-font-family,monospace);white-space:pre-wrap;word-break:break-all}
.wb-card .hit{background:#ffd54f;font-weight:700;border-radius:2px}
.wb-card .bar{display:inline-block;height:9px;background:#5b7bd5;vertical-align:middle}
.wb-card .cols{display:flex;gap:18px;flex-wrap:wrap}.wb-card .note{background:#fff6d6;padding:2px 6px}
</style>"""


def card_page(
    data: SequenceData, rows: np.ndarray, layer_pos: int, expert: int, texts: list[str], *, model: str = "",
    selection: str = "", top: int = 8, width: int = 6, min_count: int = 2, bins: int = 10, n_neighbours: int = 5,
) -> ExpertPage:  # fmt: skip
    """The ``ExpertPage`` of expert ``expert`` at layer index ``layer_pos`` over the sequence positions ``rows``.

    ``texts`` is the store's decoded vocabulary (``text_vocab``); ``top``, ``width``, ``min_count``, ``bins``
    mean what they mean for ``expert_page`` (smaller defaults: a card is smaller than a page);
    ``n_neighbours`` experts are listed in each neighbour list. Contexts reach past the selection into
    the rest of the sequence, as the library page's reach into the rest of the store.
    """
    rows = np.asarray(rows, dtype=np.int64)
    ids = data.expert_ids[rows]  # (T, L, k)
    hit = ids[:, layer_pos] == expert  # (T, k)
    routed = hit.any(axis=1)
    idx = np.nonzero(routed)[0]
    rank = hit[idx].argmax(axis=1)
    w_all = data.gate_weights[rows, layer_pos]
    has_w = bool(np.isfinite(w_all).any())
    weight = w_all[idx, rank].astype(np.float32) if has_w else None
    order = ORDER_BY_WEIGHT if has_w else ORDER_FALLBACK if data.rank_ordered else ORDER_UNRANKED
    notes = ["one sequence: shares have no bootstrap interval (it resamples sequences)"]
    if not has_w:
        notes.append(f"this store has no gate weights: contexts are ordered by {order}")
    if idx.size == 0:
        notes.append("no selected token is routed to this expert")
    tok = data.token_ids.astype(np.int64)
    pos = rows[idx]
    zeros = np.zeros(rows.size, dtype=np.int64)
    describe: dict[str, np.ndarray | list[str]] = {
        "sequence": [data.sequence_id], "domain": [data.domain], "segment_kinds": data.segment_kinds,
        "seq": zeros[idx], "segment": data.segment[pos], "step": data.step[pos], "position": pos,
    }  # fmt: skip
    contexts = top_contexts(
        pos, tok[pos], weight, rank, tok, np.zeros(tok.size, dtype=np.int32), texts, describe,
        top=top, width=width, ranked=data.rank_ordered,
    )  # fmt: skip
    lift, frequent = lift_table(tok[pos], tok[rows], texts, top=top, min_count=min_count)
    seg_shares = group_shares(zeros, data.segment[rows].astype(np.int64), routed, data.segment_kinds, n_boot=0)
    dom_shares = group_shares(zeros, zeros, routed, [data.domain], n_boot=0)
    if weight is not None and weight.size:
        edges = np.linspace(0.0, float(weight.max()) * 1.0001 + 1e-9, bins + 1)
        w_hist = np.histogram(weight, bins=edges)[0]
    else:
        edges, w_hist = np.zeros(0), np.zeros(0, dtype=np.int64)
    n_layers, k = ids.shape[1], ids.shape[2]
    near = [layer_pos - 1, layer_pos + 1]
    real = [int(data.layers[i]) if 0 <= i < n_layers else None for i in near]
    empty = np.zeros((rows.size, k), dtype=np.int16)
    return ExpertPage(
        layer=int(data.layers[layer_pos]), expert=int(expert), model=model, n_experts=data.n_experts, top_k=k,
        n_selected=int(rows.size), n_routed=int(idx.size), selection=selection, has_gate_weights=has_w,
        context_order=order, contexts=contexts, lift=lift, frequent=frequent, domain_shares=dom_shares,
        segment_shares=seg_shares, weight_edges=edges, weight_hist=w_hist,
        rank_hist=np.bincount(rank, minlength=k), rank_ordered=data.rank_ordered,
        co_activated=_neighbours(ids[:, layer_pos], routed, int(data.layers[layer_pos]), data.n_experts, n_neighbours,
                                 exclude=int(expert)),
        predecessors=_neighbours(ids[:, near[0]] if real[0] is not None else empty, routed, real[0], data.n_experts,
                                 n_neighbours),
        successors=_neighbours(ids[:, near[1]] if real[1] is not None else empty, routed, real[1], data.n_experts,
                               n_neighbours),
        notes=notes,
    )  # fmt: skip


def _neighbours(
    layer_ids: np.ndarray,
    routed: np.ndarray,
    layer: int | None,
    n_experts: int,
    top: int,
    *,
    exclude: int | None = None,
) -> list[Neighbour]:
    """``workbench.experts.neighbours`` on one layer's ids (T, k) of the selection and the routed (T,) mask."""
    base = np.bincount(layer_ids.reshape(-1), minlength=n_experts) if layer is not None else np.zeros(n_experts)
    return neighbours(layer_ids[routed], base, layer_ids.shape[0], layer, exclude=exclude, top=top)


def _e(x: object) -> str:
    return html.escape(str(x))


def _bars(counts: np.ndarray, labels: list[str]) -> str:
    top = max(int(np.max(counts, initial=0)), 1)
    rows = "".join(
        f"<tr><td>{_e(lab)}</td><td class='n'>{int(c)}</td><td><span class='bar' style='width:{80 * c / top:.0f}px'>"
        "</span></td></tr>"
        for lab, c in zip(labels, counts.tolist(), strict=True)
    )
    return f"<table>{rows}</table>"


def _interval(r: GroupShare) -> str:
    ok = np.isfinite(r.ratio_low) and np.isfinite(r.ratio_high)
    return f" <span class='sub'>[{r.ratio_low:.2f}, {r.ratio_high:.2f}]</span>" if ok else ""


def _shares(rows: list[GroupShare]) -> str:
    body = "".join(
        f"<tr><td>{_e(r.group)}</td><td class='n'>{r.routed}</td><td class='n'>{r.share:.0%}</td>"
        f"<td class='n'>{r.base:.0%}</td><td class='n'>{r.ratio:.2f}{_interval(r)}</td></tr>"
        for r in rows
    )
    return f"<table><tr><th>kind</th><th>tokens</th><th>share</th><th>base</th><th>ratio</th></tr>{body}</table>"


def card_html(page: ExpertPage) -> str:
    """The card as an HTML fragment (the widget's ``ExpertCard`` shows it)."""
    p = page
    out = [_CSS, "<div class='wb-card' data-expert='", f"{p.layer}:{p.expert}'>",
           f"<h4 class='wb-card-title'>Expert L{p.layer}:E{p.expert}</h4>",
           f"<div class='sub'>{p.n_routed} of {p.n_selected} selected tokens routed here ({p.load:.1%}; "
           f"uniform k/E = {p.top_k / max(p.n_experts, 1):.1%}) · {_e(p.selection)}</div>"]  # fmt: skip
    out += [f"<div class='note'>{_e(n)}</div>" for n in p.notes if not n.startswith("one sequence")]
    toks = (
        "".join(
            f"<tr><td><span class='tok'>{_e(t.text)}</span></td><td class='n'>{t.count}</td>"
            f"<td class='n'>{t.lift:.2f}</td></tr>"
            for t in p.lift
        )
        or "<tr><td colspan='3' class='sub'>no token occurs often enough here to rank</td></tr>"
    )
    freq = "".join(
        f"<tr><td><span class='tok'>{_e(t.text)}</span></td><td class='n'>{t.count}</td>"
        f"<td class='n'>{t.frequency:.0%}</td></tr>"
        for t in p.frequent
    )
    out.append(
        "<div class='cols'><div><h5>Special tokens (lift)</h5><table><tr><th>token</th><th>here</th><th>lift</th></tr>"
        f"{toks}</table></div><div><h5>Most frequent</h5><table><tr><th>token</th><th>here</th><th>freq.</th></tr>"
        f"{freq}</table></div></div>"
    )
    ctx = "".join(
        f"<tr><td class='n'>{c.gate_weight:.2f}</td><td class='ctx'>{_e(c.before)}<span class='hit'>{_e(c.token)}"
        f"</span>{_e(c.after)}</td><td class='n'>{c.position}</td></tr>"
        for c in p.contexts
    )
    out.append(f"<h5>Top contexts <span class='sub'>({_e(p.context_order)})</span></h5><table>{ctx}</table>")
    ranks = _bars(p.rank_hist, [str(i + 1) for i in range(p.rank_hist.size)])
    weights = (
        _bars(
            p.weight_hist, [f"{(a + b) / 2:.2f}" for a, b in zip(p.weight_edges[:-1], p.weight_edges[1:], strict=True)]
        )
        if p.has_gate_weights
        else "<i>no gate weights</i>"
    )
    rank_name = "router rank" if p.rank_ordered else "top-k slot"
    domains = f"<div><h5>By domain</h5>{_shares(p.domain_shares)}</div>" if len(p.domain_shares) > 1 else ""
    out.append(
        f"<div class='cols'>{domains}<div><h5>By segment kind</h5>{_shares(p.segment_shares)}</div>"
        f"<div><h5>{rank_name}</h5>{ranks}</div><div><h5>Gate weight</h5>{weights}</div></div>"
    )

    def nbs(items: list[Any]) -> str:
        return "".join(f"<tr><td>L{n.layer}:E{n.expert}</td><td class='n'>{n.share:.0%}</td>"
                       f"<td class='n'>{n.lift:.1f}</td></tr>" for n in items) or "<tr><td>none</td></tr>"  # fmt: skip

    out.append(
        "<h5>Neighbours <span class='sub'>(share of its tokens · lift over load)</span></h5><div class='cols'>"
        f"<div>co-activated<table>{nbs(p.co_activated)}</table></div>"
        f"<div>predecessors<table>{nbs(p.predecessors)}</table></div>"
        f"<div>successors<table>{nbs(p.successors)}</table></div></div></div>"
    )
    return "".join(out)


def edge_html(layer_a: int, src: int, layer_b: int, dst: int, positions: np.ndarray, data: SequenceData,
              texts: list[str], *, limit: int = 200) -> str:  # fmt: skip
    """The tokens that took the edge L{layer_a}:E{src} -> L{layer_b}:E{dst}: a list with their positions."""
    items = "".join(
        f"<li data-pos='{p}'><span class='tok'>{_e(visible(text_of(texts, int(data.token_ids[p]))))}</span> "
        f"<span class='sub'>pos {p} · {_e(data.segment_kinds[int(data.segment[p])])}"
        f"{' · step ' + str(int(data.step[p])) if data.step[p] >= 0 else ''}</span></li>"
        for p in positions[:limit].tolist()
    )
    more = f"<div class='sub'>… and {positions.size - limit} more</div>" if positions.size > limit else ""
    return (
        f"{_CSS}<div class='wb-card wb-edge' data-edge='{layer_a}:{src}-{layer_b}:{dst}'>"
        f"<h4 class='wb-card-title'>Edge L{layer_a}:E{src} → L{layer_b}:E{dst}</h4>"
        f"<div class='sub'>{positions.size} selected tokens took this transition</div>"
        f"<ol class='wb-edge-tokens'>{items}</ol>{more}</div>"
    )


EMPTY_CARD = "<div class='sub' style='color:#777'>click a node or an edge of the graph</div>"


class ExpertCard(widgets.HTML):
    """An HTML widget that shows an expert card or an edge's token list (empty until something is clicked)."""

    def __init__(self) -> None:
        super().__init__(value=EMPTY_CARD)
        self.page: ExpertPage | None = None

    def show_page(self, page: ExpertPage) -> None:
        self.page = page
        self.value = card_html(page)

    def clear(self) -> None:
        self.show_html(EMPTY_CARD)

    def show_html(self, value: str) -> None:
        self.page = None
        self.value = value
