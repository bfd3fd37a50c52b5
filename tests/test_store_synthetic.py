"""The synthetic K2-shaped routing has the structure it promises, and writes real stores."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from workbench import open_store  # registers ds.routing
from workbench.store import schema as S
from workbench.store.synthetic import DEFAULT_DOMAINS, synthetic_records, synthetic_store

L, E, K = 6, 32, 4


def records(n: int = 4000, seed: int = 0, **kw):
    return list(synthetic_records(n, L, E, K, seed=seed, mean_length=200, vocab_size=500, **kw))


def mutual_information(a: np.ndarray, b: np.ndarray, n: int) -> float:
    """I(A; B) in bits from paired samples of two variables with values in 0..n-1."""
    joint = np.zeros((n, n))
    np.add.at(joint, (a, b), 1)
    joint /= joint.sum()
    pa, pb = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
    nz = joint > 0
    return float((joint[nz] * np.log2(joint[nz] / (pa @ pb)[nz])).sum())


def test_shapes_ranks_weights_and_determinism() -> None:
    recs = records()
    assert sum(r.n_tokens for r in recs) == 4000
    assert {r.domain for r in recs} == set(DEFAULT_DOMAINS)
    ids = np.concatenate([r.expert_ids for r in recs])  # (T, L, k)
    assert ids.shape == (4000, L, K) and ids.min() >= 0 and ids.max() < E
    srt = np.sort(ids, axis=-1)
    assert (np.diff(srt, axis=-1) > 0).all(), "an expert appears twice in one token's top-k"
    w = np.concatenate([r.gate_weights for r in recs])
    assert (np.diff(w, axis=-1) <= 0).all(), "gate weights are not in rank order"
    np.testing.assert_allclose(w.sum(-1), 2.827, rtol=1e-5)  # normalised top-k times routed_scaling_factor
    again = np.concatenate([r.expert_ids for r in records()])
    other = np.concatenate([r.expert_ids for r in records(seed=1)])
    assert np.array_equal(ids, again) and not np.array_equal(ids, other)
    for r in recs:
        assert r.spans and all(0 <= s.start < s.stop <= r.n_tokens for s in r.spans)


def test_structure_skewed_loads_domains_and_layer_correlation() -> None:
    recs = records(6000)
    ids = np.concatenate([r.expert_ids for r in recs])
    dom = np.concatenate([[DEFAULT_DOMAINS.index(r.domain)] * r.n_tokens for r in recs])
    load = np.stack([np.bincount(ids[:, layer].ravel(), minlength=E) for layer in range(L)])  # (L, E)
    assert (load.max(1) > 2 * load.mean(1)).all(), "per-layer loads are not skewed"
    assert (load.max(1) > 5 * load.min(1)).all()

    def dist(mask: np.ndarray, layer: int) -> np.ndarray:
        c = np.bincount(ids[mask, layer].ravel(), minlength=E) + 0.5
        return c / c.sum()

    def jsd(p: np.ndarray, q: np.ndarray) -> float:
        m = (p + q) / 2
        return float((p * np.log2(p / m)).sum() + (q * np.log2(q / m)).sum()) / 2

    math, code = dom == 0, dom == 1
    half = math & (np.arange(len(dom)) % 2 == 0)
    for layer in range(L):  # domains differ far more than two halves of one domain
        assert jsd(dist(math, layer), dist(code, layer)) > 3 * jsd(dist(half, layer), dist(math & ~half, layer))

    rng = np.random.default_rng(0)
    top1 = ids[:, :, 0].astype(int)
    for layer in range(L - 1):  # the expert at layer l tells about the expert at l + 1
        mi = mutual_information(top1[:, layer], top1[:, layer + 1], E)
        base = mutual_information(top1[:, layer], rng.permutation(top1[:, layer + 1]), E)
        assert mi > base + 0.05, (layer, mi, base)


def test_scores_agree_with_ids() -> None:
    r = records(300, with_scores=True)[0]
    assert r.router_scores is not None and r.router_scores.shape == (r.n_tokens, L, E)
    top = np.argsort(-r.router_scores, axis=-1)[..., :K]  # (T, L, k) by descending score
    np.testing.assert_array_equal(top, r.expert_ids)


def test_synthetic_store_is_a_real_store(tmp_path: Path) -> None:
    path = synthetic_store(tmp_path / "syn.zarr", 2500, L, E, K, seed=3, mean_length=300, vocab_size=500,
                           progress=False)  # fmt: skip
    ds = open_store(path)
    assert ds.sizes[S.TOKEN] == 2500 and ds.sizes[S.LAYER] == L
    assert int(ds[S.SEQUENCE_LENGTH].sum()) == 2500
    expected = np.concatenate([r.expert_ids for r in synthetic_records(2500, L, E, K, seed=3, mean_length=300,
                                                                         vocab_size=500)])  # fmt: skip
    np.testing.assert_array_equal(ds[S.EXPERT_IDS].values, expected)
    assert ds.attrs["capture"] == "synthetic" and ds.routing.config.n_routed_experts == E
    assert set(str(d) for d in ds[S.SEQUENCE_DOMAIN].values) == set(DEFAULT_DOMAINS)
