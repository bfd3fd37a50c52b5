"""What is special to an expert: tokens ranked by lift (OLMoE's vocabulary specialisation, per expert).

For token id x, an expert E at layer l and the selected tokens S (N_S of them, N_E routed to E, i.e.
with E among their top-k at l), with counts c_E(x) and c_S(x):

    lift(x) = P̂(x | routed to E) / P̂(x | S)
            = [(c_E(x) + a) / (N_E + a V)] / [(c_S(x) + a) / (N_S + a V)]

with additive (Laplace/Lidstone) smoothing a (default 1) over the V distinct token ids of S, so a token
seen twice in the expert is not ranked above one seen 200 times by chance; tokens with c_E(x) below
``min_count`` are not ranked at all. Unsmoothed, lift(x) = VS(E, x) / (N_E / N_S), where
VS(E, x) = c_E(x) / c_S(x) is OLMoE's vocabulary specialisation (Muennighoff et al. 2024, "OLMoE: Open
Mixture-of-Experts Language Models", arXiv:2409.02060, Sec. 5 "vocabulary specialization"): the share
of token x's occurrences routed to E, divided by E's overall share of tokens, so 1 means "no more than
its load predicts". Both columns are returned next to the raw frequency c_E(x) / N_E.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TokenLift:
    """One token of an expert's lift table."""

    token_id: int
    text: str  # readable, whitespace shown as marks
    count: int  # c_E(x): routed occurrences
    frequency: float  # c_E(x) / N_E
    base_count: int  # c_S(x): occurrences in the selection
    specialization: float  # VS(E, x) = c_E(x) / c_S(x)
    lift: float  # smoothed P(x | E) / P(x | S)


def token_lift(
    routed_ids: np.ndarray, selected_ids: np.ndarray, *, smoothing: float = 1.0, min_count: int = 3
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Lift of every token id occurring in the expert, by the formula of the module docstring.

    Parameters
    ----------
    routed_ids : (N_E,) int token ids of the tokens routed to the expert
    selected_ids : (N_S,) int token ids of all selected tokens (a superset of ``routed_ids``)

    Returns ``(token_id, c_E, c_S, lift)``, each (X,), for the X ids with c_E >= ``min_count``,
    ordered by lift (descending), then by c_E.
    """
    if routed_ids.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty, np.zeros(0)
    size = int(selected_ids.max()) + 1  # token ids index a vocabulary: count by bincount (O(N), no sort)
    c_s_all = np.bincount(selected_ids, minlength=size)
    uniq = np.nonzero(c_s_all)[0]
    c_s = c_s_all[uniq]
    c_e = np.bincount(routed_ids, minlength=size)[uniq]
    lift = lift_from_counts(c_e, c_s, routed_ids.size, selected_ids.size, smoothing=smoothing)
    keep = np.nonzero(c_e >= max(min_count, 1))[0]
    order = keep[np.lexsort((-c_e[keep], -lift[keep]))]
    return uniq[order].astype(np.int64), c_e[order], c_s[order], lift[order]


def lift_from_counts(
    c_e: np.ndarray, c_s: np.ndarray, n_e: int, n_s: int, *, smoothing: float = 1.0, n_vocab: int | None = None
) -> np.ndarray:
    """The smoothed lift of the module docstring for counts ``c_e`` (routed) and ``c_s`` (selection), each (X,),
    with N_E = ``n_e``, N_S = ``n_s`` and V = ``n_vocab`` distinct token ids in the selection (default X: the
    counts cover every id of the selection). Returns (X,)."""
    v = float(c_s.size if n_vocab is None else n_vocab)
    return ((c_e + smoothing) / (n_e + smoothing * v)) / ((c_s + smoothing) / (n_s + smoothing * v))


def lift_table(
    routed_ids: np.ndarray, selected_ids: np.ndarray, texts: list[str], *, top: int = 20,
    smoothing: float = 1.0, min_count: int = 3,
) -> tuple[list[TokenLift], list[TokenLift]]:  # fmt: skip
    """The ``top`` tokens by lift and the ``top`` by raw frequency, as ``TokenLift`` rows (same columns)."""
    from workbench.experts.vocab import text_of, visible

    tid, c_e, c_s, lift = token_lift(routed_ids, selected_ids, smoothing=smoothing, min_count=1)
    n_e = max(int(routed_ids.size), 1)

    def row(i: int) -> TokenLift:
        return TokenLift(
            int(tid[i]), visible(text_of(texts, int(tid[i]))), int(c_e[i]), float(c_e[i] / n_e), int(c_s[i]),
            float(c_e[i] / max(int(c_s[i]), 1)), float(lift[i]),
        )  # fmt: skip

    ranked = [row(i) for i in np.nonzero(c_e >= max(min_count, 1))[0][:top]]
    frequent = [row(int(i)) for i in np.lexsort((-lift, -c_e))[:top]]
    return ranked, frequent
