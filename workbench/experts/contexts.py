"""An expert's top contexts: its most strongly routed tokens, each in its surrounding text.

Order: by gate weight (descending) when the store has gate weights. On an ids-only store (engine
captures) the stated fallback is router rank (1st choice before 2nd ...), then how often the token id
occurs among the expert's tokens (typical tokens first), then token row; where the store's top-k ids are
not in router rank order (``rank_order`` false: vLLM / SGLang captures), frequency, then token row.
Near-duplicates are collapsed: two occurrences with the same token id *and* the same ``dedupe`` token
ids on either side (within the sequence) count as one context shown once with its number of copies, so
one chat-template token that recurs in every prompt cannot fill the list.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from workbench.experts.vocab import text_of, visible

ORDER_BY_WEIGHT = "gate weight (highest first)"
ORDER_FALLBACK = "router rank, then token frequency in the expert"
ORDER_UNRANKED = "token frequency in the expert (this store's top-k ids are not in router rank order)"

_LINE = str.maketrans({"\n": "↵", "\t": "⇥", "\r": "␍"})


@dataclass(frozen=True)
class Context:
    """One top context: a routed token and ±W tokens of text around it (newlines shown as ↵)."""

    row: int  # global token row
    sequence: str
    domain: str
    segment: str
    step: int
    position: int
    token_id: int
    gate_weight: float  # NaN on ids-only stores
    rank: int  # 1 = the router's first choice
    before: str
    token: str
    after: str
    copies: int  # occurrences collapsed into this one (1 = unique)


def _shown(token: str) -> str:
    """A context's own token: whitespace-only tokens as visible marks (a highlighted blank reads as nothing)."""
    return visible(token) if token.isspace() else token.translate(_LINE)


def window_ids(tok: np.ndarray, seq: np.ndarray, rows: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Token ids at offsets lo..hi (inclusive) around ``rows`` within their sequence, -1 outside. (n, hi-lo+1)."""
    g = rows[:, None] + np.arange(lo, hi + 1)[None, :]
    inside = (g >= 0) & (g < tok.size)
    gc = np.clip(g, 0, max(tok.size - 1, 0))
    ok = inside & (seq[gc] == seq[rows][:, None])
    return np.where(ok, tok[gc], -1)


def context_order(
    token_id: np.ndarray, weight: np.ndarray | None, rank: np.ndarray, *, ranked: bool = True
) -> np.ndarray:
    """Order of routed tokens for the top-context list (see the module docstring). Returns indices (n,).

    ``ranked=False``: the k slots are not the router's ranks, so they play no part in the order."""
    n = token_id.size
    if weight is not None:
        return np.lexsort((np.arange(n), -weight.astype(np.float64)))
    _, inv, counts = np.unique(token_id, return_inverse=True, return_counts=True)
    return np.lexsort((np.arange(n), -counts[inv], rank if ranked else np.zeros_like(rank)))


def top_contexts(
    rows: np.ndarray, token_id: np.ndarray, weight: np.ndarray | None, rank: np.ndarray,
    store_tok: np.ndarray, store_seq: np.ndarray, texts: list[str], describe: dict[str, np.ndarray | list[str]],
    *, top: int = 20, width: int = 8, dedupe: int = 2, ranked: bool = True, limit: int | None = None,
) -> list[Context]:  # fmt: skip
    """The ``top`` contexts of the routed tokens, near-duplicates collapsed.

    ``rows``, ``token_id``, ``weight``, ``rank`` are (n,) over the expert's routed tokens (``rank`` 0-based);
    ``describe`` maps "sequence", "domain" (per sequence row), "segment_kinds" and per-token "segment",
    "step", "position", "seq" (n,) to label each context. ``limit``: only the first ``limit`` tokens of the
    order are candidates (copies are then counted among them); by gate weight they are found by a partial
    sort, so many pages at once (the atlas) stay cheap.
    """
    if rows.size == 0:
        return []
    if limit is not None and weight is not None and rows.size > limit:
        cand = np.argpartition(-weight.astype(np.float64), limit)[:limit]
        order = cand[np.lexsort((cand, -weight[cand].astype(np.float64)))]
    else:
        order = context_order(token_id, weight, rank, ranked=ranked)[:limit]
    keys = window_ids(store_tok, store_seq, rows[order], -dedupe, dedupe)  # (n, 2d+1), centre = token id
    _, first, inv = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    copies = np.bincount(inv.reshape(-1))
    keep = np.sort(first)[:top]  # first occurrence of each distinct key, in list order
    win = window_ids(store_tok, store_seq, rows[order[keep]], -width, width)  # (top, 2W+1)
    seq_ids, domains, kinds = describe["sequence"], describe["domain"], describe["segment_kinds"]
    out = []
    for j, pos in enumerate(keep.tolist()):
        i = int(order[pos])
        ids = win[j]
        left = "".join(text_of(texts, int(t)) for t in ids[:width] if t >= 0)
        right = "".join(text_of(texts, int(t)) for t in ids[width + 1 :] if t >= 0)
        s = int(describe["seq"][i])  # type: ignore[call-overload]
        out.append(
            Context(
                row=int(rows[i]), sequence=str(seq_ids[s]), domain=str(domains[s]),
                segment=str(kinds[int(describe["segment"][i])]),  # type: ignore[call-overload]
                step=int(describe["step"][i]), position=int(describe["position"][i]),  # type: ignore[call-overload]
                token_id=int(token_id[i]), gate_weight=float(weight[i]) if weight is not None else float("nan"),
                rank=int(rank[i]) + 1, before=left.translate(_LINE), token=_shown(text_of(texts, int(token_id[i]))),
                after=right.translate(_LINE), copies=int(copies[inv.reshape(-1)[pos]]),
            )
        )  # fmt: skip
    return out
