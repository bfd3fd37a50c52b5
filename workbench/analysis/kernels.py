"""Compiled counting kernels (numba) over one token chunk of routing.

Every kernel takes the chunk in *layer-major* layout ``ids_lt`` of shape (L, T, k) (one contiguous
copy of the stored (T, L, k) chunk), so the per-layer count matrices stay hot in cache while the
tokens stream past. Kernels release the GIL, so dask's threads run two chunks at once on two cores.
Counts are int32 per chunk (a chunk holds at most a few hundred thousand tokens); the engine sums
the per-chunk partial counts in int64.

A token takes part when its group code ``group[t] >= 0``; consecutive-token kernels only pair rows
``t, t+1`` of the same sequence and the same group, so pairs never cross a sequence boundary.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from workbench.pair_counts import BLOCK, pair_counts


def layer_major(ids: np.ndarray) -> np.ndarray:
    """(T, L, k) -> contiguous (L, T, k) copy, the layout every kernel expects."""
    return np.ascontiguousarray(np.transpose(ids, (1, 0, 2)))  # (L, T, k)


@njit(nogil=True, cache=True)
def load_counts(ids_lt: np.ndarray, group: np.ndarray, n_groups: int, n_experts: int) -> np.ndarray:
    """N[g, l, e]: number of tokens of group g routed to expert e (any rank) in layer l. (G, L, E) int32."""
    n_layers, n_tokens, k = ids_lt.shape
    out = np.zeros((n_groups, n_layers, n_experts), np.int32)
    for layer in range(n_layers):
        for t in range(n_tokens):
            g = group[t]
            if g < 0:
                continue
            for r in range(k):
                out[g, layer, ids_lt[layer, t, r]] += 1
    return out


@njit(nogil=True, cache=True)
def weight_sums(
    ids_lt: np.ndarray, w_lt: np.ndarray, group: np.ndarray, n_groups: int, n_experts: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.int64]:
    """Gate-weight mass per (group, layer, expert), per-token gate entropy sums, and a NaN count.

    Returns ``mass`` (G, L, E) float64 = sum of gate weights, ``ent`` (G, L) float64 = sum over tokens
    of the entropy (bits) of the token's top-k gate weights normalised to sum 1, ``n`` (G, L) int64
    tokens counted, and the number of NaN weights met (ids-only rows).
    """
    n_layers, n_tokens, k = ids_lt.shape
    mass = np.zeros((n_groups, n_layers, n_experts), np.float64)
    ent = np.zeros((n_groups, n_layers), np.float64)
    cnt = np.zeros((n_groups, n_layers), np.int64)
    nan = np.int64(0)
    for layer in range(n_layers):
        for t in range(n_tokens):
            g = group[t]
            if g < 0:
                continue
            total = 0.0
            bad = False
            for r in range(k):
                w = np.float64(w_lt[layer, t, r])
                if np.isnan(w):
                    bad = True
                    nan += 1
                    continue
                mass[g, layer, ids_lt[layer, t, r]] += w
                total += w
            if bad or total <= 0.0:
                continue
            h = 0.0
            for r in range(k):
                p = np.float64(w_lt[layer, t, r]) / total
                if p > 0.0:
                    h -= p * np.log2(p)
            ent[g, layer] += h
            cnt[g, layer] += 1
    return mass, ent, cnt, nan


# Co-activation counts go through a uint16 (E, E) scratch per layer flushed every BLOCK tokens, as the
# layer-pair kernel does (``workbench.pair_counts`` says why).


@njit(nogil=True, cache=True)
def _flush(out: np.ndarray, layer: int, scratch: np.ndarray) -> None:
    n = scratch.shape[0]
    for i in range(n):
        for j in range(n):
            if scratch[i, j]:
                out[layer, i, j] += scratch[i, j]
                scratch[i, j] = 0


@njit(nogil=True, cache=True)
def coactivation_counts(ids_lt: np.ndarray, group: np.ndarray, n_experts: int, adjacent: bool) -> np.ndarray:
    """U[l, a, b]: tokens whose top-k holds a at a lower rank than b (all rank pairs, or only ranks r, r+1).

    U + U^T is the symmetric co-activation count N(Ei, Ej). (L, E, E) int32.
    """
    n_layers, n_tokens, k = ids_lt.shape
    out = np.zeros((n_layers, n_experts, n_experts), np.int32)
    scratch = np.zeros((n_experts, n_experts), np.uint16)
    for layer in range(n_layers):
        for start in range(0, n_tokens, BLOCK):
            for t in range(start, min(n_tokens, start + BLOCK)):
                if group[t] < 0:
                    continue
                if adjacent:
                    for r in range(k - 1):
                        scratch[ids_lt[layer, t, r], ids_lt[layer, t, r + 1]] += 1
                else:
                    for r in range(k - 1):
                        a = ids_lt[layer, t, r]
                        for s in range(r + 1, k):
                            scratch[a, ids_lt[layer, t, s]] += 1
            _flush(out, layer, scratch)
    return out


@njit(nogil=True, cache=True)
def transition_counts(ids_lt: np.ndarray, group: np.ndarray, n_experts: int) -> np.ndarray:
    """C[l, a, b]: tokens routed to a in layer l and to b in layer l+1 (all k x k pairs). (L-1, E, E) int32.

    The k × k count is ``workbench.pair_counts.pair_counts``, the kernel reasoning graphs use too.
    """
    n_layers, _, k = ids_lt.shape
    out = np.zeros((max(n_layers - 1, 0), n_experts * n_experts), np.int32)
    keep = group >= 0
    no_w = np.zeros((0, k))  # ids only
    no_sums = np.zeros(0)
    for layer in range(n_layers - 1):
        pair_counts(ids_lt[layer], ids_lt[layer + 1], no_w, no_w, keep, n_experts, out[layer], no_sums)
    return out.reshape((max(n_layers - 1, 0), n_experts, n_experts))


@njit(nogil=True, cache=True)
def agreement_counts(ids_lt: np.ndarray, group: np.ndarray, seq: np.ndarray, n_groups: int) -> np.ndarray:
    """A[g, l, :] = (pairs, same first choice, any shared expert) over consecutive rows t, t+1.

    A pair counts when both rows are selected, in the same group and the same sequence. (G, L, 3) int64.
    """
    n_layers, n_tokens, k = ids_lt.shape
    out = np.zeros((n_groups, n_layers, 3), np.int64)
    for t in range(n_tokens - 1):
        g = group[t]
        if g < 0 or group[t + 1] != g or seq[t + 1] != seq[t]:
            continue
        for layer in range(n_layers):
            out[g, layer, 0] += 1
            if ids_lt[layer, t, 0] == ids_lt[layer, t + 1, 0]:
                out[g, layer, 1] += 1
            shared = False
            for r in range(k):
                a = ids_lt[layer, t, r]
                for s in range(k):
                    if ids_lt[layer, t + 1, s] == a:
                        shared = True
                        break
                if shared:
                    break
            if shared:
                out[g, layer, 2] += 1
    return out
