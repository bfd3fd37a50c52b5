"""From a graph element back to its tokens: which selected tokens went through a node or took an edge.

A node (MoE layer l, expert e) of a selection's graph holds the selected tokens with e among their
top-k at l; an edge (l, a) -> (l', b) between consecutive MoE layers holds those with a in their
top-k at l and b in their top-k at l' (the k × k rule of ``workbench.graph``: each such token adds
one to the edge's count). Both are read from the sequence already in memory (``SequenceData``), so a
click costs a comparison over the selection's (n, k) ids, never a store read.

``edge_top_tokens`` gives each drawn edge's most frequent token texts for the hover text, in one
vectorised pass per layer pair over the selection's n·k² token-edge incidences.
"""

from __future__ import annotations

import numpy as np

from workbench.experts.vocab import text_of, visible
from workbench.graph.chunked import top_per_node
from workbench.graph.tables import sorted_unique

from .sequence_data import SequenceData

# Above this many token-edge incidences (n · k² · layer pairs) the hover skips the top tokens (a click
# on the edge still lists them): counting them would cost more than the 200 ms a click may take.
HOVER_TOKEN_BUDGET = 6_000_000


def node_positions(data: SequenceData, rows: np.ndarray, layer_pos: int, expert: int) -> np.ndarray:
    """Positions among ``rows`` (sorted, (m,)) whose top-k at layer index ``layer_pos`` holds ``expert``."""
    rows = np.asarray(rows, dtype=np.int64)
    hit = (data.expert_ids[rows, layer_pos] == expert).any(axis=1)
    return rows[hit]


def edge_positions(data: SequenceData, rows: np.ndarray, pair: int, src: int, dst: int) -> np.ndarray:
    """Positions among ``rows`` that took the edge ``src`` (layer index ``pair``) -> ``dst`` (``pair + 1``)."""
    rows = np.asarray(rows, dtype=np.int64)
    ids = data.expert_ids[rows]
    hit = (ids[:, pair] == src).any(axis=1) & (ids[:, pair + 1] == dst).any(axis=1)
    return rows[hit]


def edge_top_tokens(
    data: SequenceData, rows: np.ndarray, pair: np.ndarray, src: np.ndarray, dst: np.ndarray, texts: list[str],
    *, n: int = 3,
) -> list[str] | None:  # fmt: skip
    """For each edge i (``pair[i]``, ``src[i]`` -> ``dst[i]``), its ``n`` most frequent tokens among ``rows``
    as ``"tok (count) · ..."`` (whitespace as visible marks); None when the selection is over the budget.

    Ties are broken by the smaller token id, as ``RoutingCounts.top_tokens`` does for nodes.
    """
    m = int(pair.size)
    rows = np.asarray(rows, dtype=np.int64)
    k = data.expert_ids.shape[2]
    if m == 0:
        return []
    if rows.size * k * k * max(1, len(set(pair.tolist()))) > HOVER_TOKEN_BUDGET:
        return None
    ne = data.n_experts
    tok = data.token_ids[rows].astype(np.int64)
    shift = int(max(int(tok.max(initial=0)) + 1, 1))
    found_edge, found_tok = [], []
    order = np.lexsort((dst, src, pair))  # edges grouped by pair, codes sorted within
    for p in np.unique(pair).tolist():
        idx = order[pair[order] == p]  # edge indices of this pair, by code
        codes = src[idx].astype(np.int64) * ne + dst[idx]
        a = data.expert_ids[rows, p].astype(np.int64)  # (n, k)
        b = data.expert_ids[rows, p + 1].astype(np.int64)
        inc = (a[:, :, None] * ne + b[:, None, :]).reshape(rows.size, -1)  # (n, k²)
        at = np.searchsorted(codes, inc).clip(0, codes.size - 1)
        match = codes[at] == inc
        found_edge.append(idx[at[match]])
        found_tok.append(np.broadcast_to(tok[:, None], inc.shape)[match])
    e = np.concatenate(found_edge)
    t = np.concatenate(found_tok)
    combo, counts = sorted_unique(e * shift + t, counts=True)
    # each edge's n most frequent tokens, count descending, ties by the smaller token id; unused slots -1
    top_tok, top_cnt = top_per_node(combo, counts, shift, np.arange(m), n)
    shown: dict[int, str] = {}  # token id -> readable text, built once per distinct token
    out: list[str] = []
    for toks, cnts in zip(top_tok.tolist(), top_cnt.tolist(), strict=True):
        parts = []
        for ti, c in zip(toks, cnts, strict=True):
            if ti < 0:
                break
            if ti not in shown:
                shown[ti] = visible(text_of(texts, ti))
            parts.append(f"{shown[ti]} ({c})")
        out.append(" · ".join(parts))
    return out
