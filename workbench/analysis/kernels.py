"""Compiled counting kernels (numba) over a run of token rows of routing.

Every kernel reads the ids as they are stored, token-major ``ids`` of shape (T, L, k), so a chunk read
from the store is counted without a copy. The pair counts (co-activation, layer-to-layer transitions)
loop over layers outside and tokens inside, one kind of pair at a time into a uint16 scratch of E² cells
that stays in a core's L2 cache while the tokens stream past (for K2, 295 KB; ``routing_counts``); the
other kernels loop over tokens outside. Kernels release the GIL, so dask's threads count two runs of
rows at once.

The counting kernels add (+=) into int32 arrays the caller passes, so the engine's chains keep adding
runs of rows into one set of arrays; the engine bounds the rows added to one set so that no cell can
overflow (at most k² per row).

A token takes part when its group code ``group[t] >= 0``; consecutive-token kernels only pair rows
``t, t+1`` of the same sequence and the same group, so pairs never cross a sequence boundary.

Kernels do not check ids (a check inside the pair loop cost 60%); the engine runs ``first_bad_row``
over every run of rows before any kernel that writes at an id-derived index, so a damaged or foreign
store can never make a kernel write outside its arrays, and turns the row into a one-line error.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from workbench.pair_counts import token_pairs_k

SCRATCH_ROWS = 65535  # rows counted into the uint16 scratch between flushes (routing_counts): none can wrap


@njit(nogil=True, cache=True)
def first_bad_row(ids: np.ndarray, n_experts: int) -> int:  # pragma: no cover (compiled)
    """-1 when every id of ``ids`` (T, L, k) lies in 0..E-1, else the first row holding one that does not.

    One vectorised min/max pass over the rows (a few ms per 64k K2 rows), run before any kernel
    writes at an id-derived index, so a damaged or foreign store never makes a kernel write out of bounds.
    """
    flat = ids.reshape(-1)
    lo = np.int64(0)
    hi = np.int64(n_experts - 1)
    mn, mx = lo, hi
    for i in range(flat.shape[0]):
        v = np.int64(flat[i])
        mn = min(mn, v)
        mx = max(mx, v)
    if mn >= lo and mx <= hi:
        return -1
    per_row = max(ids.shape[1] * ids.shape[2], 1)
    for i in range(flat.shape[0]):
        if flat[i] < lo or flat[i] > hi:
            return i // per_row
    return -1


@njit(nogil=True, cache=True, inline="always")
def _coact_rows(
    ids: np.ndarray, group: np.ndarray, t0: int, t1: int, layer: int, k: int, n_experts: int, out: np.ndarray, mode: int
) -> int:  # pragma: no cover (compiled)
    """Rank pairs of rows ``t0:t1`` at ``layer`` into ``out`` (``mode`` 1: all r < s, 2: s = r + 1 only);
    returns the number of selected rows. Called with a literal ``k`` and ``mode`` so the loops unroll."""
    n = 0
    for t in range(t0, t1):
        if group[t] < 0:
            continue
        n += 1
        a = ids[t, layer]
        if mode == 2:
            for r in range(k - 1):
                out[np.int64(a[r]) * n_experts + a[r + 1]] += 1
        else:
            for r in range(k - 1):
                base = np.int64(a[r]) * n_experts
                for s in range(r + 1, k):
                    out[base + a[s]] += 1
    return n


@njit(nogil=True, cache=True, inline="always")
def _trans_rows(
    ids: np.ndarray, group: np.ndarray, t0: int, t1: int, layer: int, k: int, n_experts: int, out: np.ndarray
) -> int:  # pragma: no cover (compiled)
    """The k × k pairs (layer, layer + 1) of rows ``t0:t1`` into ``out``; returns the number of selected rows."""
    n = 0
    for t in range(t0, t1):
        if group[t] < 0:
            continue
        n += 1
        token_pairs_k(ids[t, layer], ids[t, layer + 1], k, n_experts, out)
    return n


@njit(nogil=True, cache=True)
def _coact(
    ids: np.ndarray, group: np.ndarray, t0: int, t1: int, layer: int, n_experts: int, out: np.ndarray, mode: int
) -> int:  # pragma: no cover (compiled)
    k = ids.shape[2]
    if k == 8:  # K2, DeepSeek-V3, Qwen3, OLMoE: unrolled loops
        if mode == 2:
            return _coact_rows(ids, group, t0, t1, layer, 8, n_experts, out, 2)
        return _coact_rows(ids, group, t0, t1, layer, 8, n_experts, out, 1)
    if mode == 2:
        return _coact_rows(ids, group, t0, t1, layer, k, n_experts, out, 2)
    return _coact_rows(ids, group, t0, t1, layer, k, n_experts, out, 1)


@njit(nogil=True, cache=True)
def _trans(
    ids: np.ndarray, group: np.ndarray, t0: int, t1: int, layer: int, n_experts: int, out: np.ndarray
) -> int:  # pragma: no cover (compiled)
    k = ids.shape[2]
    if k == 8:
        return _trans_rows(ids, group, t0, t1, layer, 8, n_experts, out)
    return _trans_rows(ids, group, t0, t1, layer, k, n_experts, out)


@njit(nogil=True, cache=True)
def _flush(scratch: np.ndarray, out: np.ndarray, expected: int) -> bool:  # pragma: no cover (compiled)
    """Add the uint16 ``scratch`` into ``out`` and zero it, if its cells total ``expected`` increments.

    A cell that wrapped past 65,535 lowers the total by a multiple of 65,536, so a total short of
    ``expected`` proves a wrap: then ``out`` is left alone (the caller recounts into it) and False returned.
    """
    total = np.int64(0)
    for i in range(scratch.shape[0]):
        total += scratch[i]
    if total != expected:
        scratch[:] = 0
        return False
    for i in range(scratch.shape[0]):
        out[i] += scratch[i]
        scratch[i] = 0
    return True


@njit(nogil=True, cache=True)
def routing_counts(
    ids: np.ndarray,
    group: np.ndarray,
    n_experts: int,
    load: np.ndarray,
    coact: np.ndarray,
    adjacent: bool,
    trans: np.ndarray,
) -> None:  # pragma: no cover (compiled)
    """Loads, co-activation and layer-to-layer transitions of the selected rows, in one call.

    Adds, for each token t with ``group[t] = g >= 0`` and layer l (S_l(t) its top-k row):

    - ``load[g, l, e]`` += 1 for e in S_l(t) (N_l(e), docs/metrics.md "Expert load");
    - ``coact[l, a·E + b]`` += 1 for a at a lower rank than b in S_l(t) (all rank pairs, or only
      ranks r, r + 1 when ``adjacent``; U + Uᵀ is the co-activation count N(Ei, Ej));
    - ``trans[l, a·E + b]`` += 1 for a in S_l(t), b in S_{l+1}(t) (the transition count C_l, with
      ``workbench.pair_counts``' per-token k × k kernel, the one reasoning graphs count with).

    Speed: layer by layer, and within a layer first the co-activation pairs, then the transitions, each
    into one uint16 scratch of E² cells (295 KB for K2's E = 384), flushed into the int32 counts after
    every ``SCRATCH_ROWS`` rows. One scratch fits a core's L2 cache (1 MB here) with the rows streaming
    past, where one layer's two int32 matrices (1.2 MB) did not: measured 0.52 against 0.79 ns per
    increment on 49,152 K2 rows. Router top-k ids are distinct, so a row adds at most 1 to a cell and
    ``SCRATCH_ROWS`` < 65,536 rows cannot wrap one; ids that repeat within a row could, which ``_flush``
    detects from the scratch's total, and those rows are then counted again straight into the int32 counts.

    Parameters
    ----------
    ids : (T, L, k) int
        Expert ids, token-major as stored, all in 0..E-1 (``first_bad_row`` checks; not checked here).
    group : (T,) int32
        Group code of each row, -1 = not selected.
    load : (G, L, E) int32, or (0, 0, 0) to skip.
    coact : (L, E·E) int32, or (1, 0) to skip.
    trans : (L-1, E·E) int32 (L ≥ 2), or (1, 0) to skip.
    """
    n_tokens, n_layers, k = ids.shape
    mode = 0 if coact.shape[1] == 0 else (2 if adjacent else 1)
    with_trans = trans.shape[1] > 0
    if load.shape[0] > 0:
        for t in range(n_tokens):
            g = group[t]
            if g < 0:
                continue
            for layer in range(n_layers):
                for r in range(k):
                    load[g, layer, ids[t, layer, r]] += 1
    if mode == 0 and not with_trans:
        return
    scratch = np.zeros(n_experts * n_experts, np.uint16)
    per_row = (k - 1) if mode == 2 else k * (k - 1) // 2
    for layer in range(n_layers):
        for t0 in range(0, n_tokens, SCRATCH_ROWS):
            t1 = min(n_tokens, t0 + SCRATCH_ROWS)
            if mode != 0:
                n = _coact(ids, group, t0, t1, layer, n_experts, scratch, mode)
                if not _flush(scratch, coact[layer], np.int64(n) * per_row):
                    _coact(ids, group, t0, t1, layer, n_experts, coact[layer], mode)
            if with_trans and layer + 1 < n_layers:
                n = _trans(ids, group, t0, t1, layer, n_experts, scratch)
                if not _flush(scratch, trans[layer], np.int64(n) * k * k):
                    _trans(ids, group, t0, t1, layer, n_experts, trans[layer])


@njit(nogil=True, cache=True)
def load_counts(ids: np.ndarray, codes: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover (compiled)
    """``out[c, l, e]`` += 1 for each row t with code c = ``codes[t] >= 0`` and e in its top-k at layer l.

    ``ids`` (T, L, k) in 0..E-1, ``codes`` (T,) int32, ``out`` (C, L, E) int32.
    """
    n_tokens, n_layers, k = ids.shape
    for t in range(n_tokens):
        c = codes[t]
        if c < 0:
            continue
        for layer in range(n_layers):
            for r in range(k):
                out[c, layer, ids[t, layer, r]] += 1


@njit(nogil=True, cache=True)
def weight_sums(
    ids: np.ndarray, w: np.ndarray, group: np.ndarray, n_groups: int, n_experts: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.int64]:  # pragma: no cover (compiled)
    """Gate-weight mass per (group, layer, expert), per-token gate entropy sums, and a NaN count.

    ``ids`` (T, L, k) in 0..E-1, ``w`` (T, L, k). Returns ``mass`` (G, L, E) float64 = sum of gate
    weights, ``ent`` (G, L) float64 = sum over tokens of the entropy (bits) of the token's top-k gate
    weights normalised to sum 1, ``n`` (G, L) int64 tokens counted, and the number of NaN weights met
    (ids-only rows). Each cell adds its terms in row order.
    """
    n_tokens, n_layers, k = ids.shape
    mass = np.zeros((n_groups, n_layers, n_experts), np.float64)
    ent = np.zeros((n_groups, n_layers), np.float64)
    cnt = np.zeros((n_groups, n_layers), np.int64)
    nan = np.int64(0)
    for t in range(n_tokens):
        g = group[t]
        if g < 0:
            continue
        for layer in range(n_layers):
            total = 0.0
            bad = False
            for r in range(k):
                x = np.float64(w[t, layer, r])
                if np.isnan(x):
                    bad = True
                    nan += 1
                    continue
                mass[g, layer, ids[t, layer, r]] += x
                total += x
            if bad or total <= 0.0:
                continue
            h = 0.0
            for r in range(k):
                p = np.float64(w[t, layer, r]) / total
                if p > 0.0:
                    h -= p * np.log2(p)
            ent[g, layer] += h
            cnt[g, layer] += 1
    return mass, ent, cnt, nan


@njit(nogil=True, cache=True)
def agreement_counts(ids: np.ndarray, group: np.ndarray, seq: np.ndarray, n_groups: int) -> np.ndarray:
    """A[g, l, :] = (pairs, same first choice, any shared expert) over consecutive rows t, t+1.

    ``ids`` (T, L, k). A pair counts when both rows are selected, in the same group and the same
    sequence. (G, L, 3) int64. Ids are only compared, never used as indices.
    """
    n_tokens, n_layers, k = ids.shape
    out = np.zeros((n_groups, n_layers, 3), np.int64)
    for t in range(n_tokens - 1):
        g = group[t]
        if g < 0 or group[t + 1] != g or seq[t + 1] != seq[t]:
            continue
        for layer in range(n_layers):
            out[g, layer, 0] += 1
            if ids[t, layer, 0] == ids[t + 1, layer, 0]:
                out[g, layer, 1] += 1
            shared = False
            for r in range(k):
                a = ids[t, layer, r]
                for s in range(k):
                    if ids[t + 1, layer, s] == a:
                        shared = True
                        break
                if shared:
                    break
            if shared:
                out[g, layer, 2] += 1
    return out
