"""The fused counting kernel (``kernels.routing_counts``) against plain loops, wrapped uint16 scratch cells included."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.analysis import kernels as K


def reference(ids: np.ndarray, group: np.ndarray, n_experts: int, adjacent: bool, n_groups: int):
    """Loads, rank-ordered co-activation and transitions by the definitions (docs/metrics.md), in int64."""
    n_tokens, n_layers, k = ids.shape
    e = n_experts
    load = np.zeros((n_groups, n_layers, e), np.int64)
    co = np.zeros((n_layers, e * e), np.int64)
    tr = np.zeros((max(n_layers - 1, 1), e * e), np.int64)
    pairs = [(r, r + 1) for r in range(k - 1)] if adjacent else [(r, s) for r in range(k) for s in range(r + 1, k)]
    for t in range(n_tokens):
        g = group[t]
        if g < 0:
            continue
        for layer in range(n_layers):
            a = ids[t, layer].astype(np.int64)
            np.add.at(load[g, layer], a, 1)
            for r, s in pairs:
                co[layer, a[r] * e + a[s]] += 1
            if layer + 1 < n_layers:
                b = ids[t, layer + 1].astype(np.int64)
                np.add.at(tr[layer], (a[:, None] * e + b[None, :]).ravel(), 1)
    return load, co, tr


@pytest.mark.parametrize(
    ("n_tokens", "n_layers", "k", "n_experts", "distinct", "adjacent"),
    [
        (300, 4, 8, 16, True, False),  # K2's k: the unrolled loops
        (300, 3, 8, 5, False, False),  # ids repeat within a row (not a router's top-k, but counted right)
        (257, 3, 3, 7, False, True),  # another k, adjacent ranks only
        (120, 2, 8, 384, True, True),  # K2's E
    ],
)
def test_counts_equal_the_definitions(n_tokens, n_layers, k, n_experts, distinct, adjacent) -> None:
    rng = np.random.default_rng(n_tokens + k)
    if distinct:
        ids = np.argsort(rng.random((n_tokens, n_layers, n_experts)), axis=-1)[..., :k].astype(np.int16)
    else:
        ids = rng.integers(0, n_experts, (n_tokens, n_layers, k)).astype(np.int16)
    group = rng.integers(-1, 2, n_tokens).astype(np.int32)
    e = n_experts
    load = np.zeros((2, n_layers, e), np.int32)
    co = np.zeros((n_layers, e * e), np.int32)
    tr = np.zeros((max(n_layers - 1, 1), e * e), np.int32)
    K.routing_counts(ids, group, e, load, co, adjacent, tr)
    want_load, want_co, want_tr = reference(ids, group, e, adjacent, 2)
    np.testing.assert_array_equal(load, want_load)
    np.testing.assert_array_equal(co, want_co)
    np.testing.assert_array_equal(tr[: n_layers - 1], want_tr[: n_layers - 1])


def test_a_wrapped_scratch_cell_is_recounted() -> None:
    """Repeated ids on 3 experts push cells far past 65,535 within one scratch block of rows: the flush sees
    the scratch total fall short and those rows are counted again into the int32 counts."""
    rng = np.random.default_rng(5)
    n, e, k = 70_000, 3, 8
    ids = rng.integers(0, e, (n, 2, k)).astype(np.int16)
    group = np.zeros(n, np.int32)
    co = np.zeros((2, e * e), np.int32)
    tr = np.zeros((1, e * e), np.int32)
    K.routing_counts(ids, group, e, np.zeros((0, 0, 0), np.int32), co, False, tr)
    x = ids.astype(np.int64)
    want_tr = np.bincount((x[:, 0, :, None] * e + x[:, 1, None, :]).ravel(), minlength=e * e)
    iu = np.triu_indices(k, 1)
    want_co = np.bincount((x[:, 1, iu[0]] * e + x[:, 1, iu[1]]).ravel(), minlength=e * e)
    assert want_tr.max() > 65_535  # the case this test is for
    np.testing.assert_array_equal(tr[0], want_tr)
    np.testing.assert_array_equal(co[1], want_co)
