"""Synthetic uniform routing against the analytic baselines, and the kernels against plain numpy."""

from __future__ import annotations

import numpy as np
import pytest
from analysis_helpers import SequenceRecord, config, random_topk, write_store

from workbench.analysis import (
    agreement_baselines,
    coactivation,
    consecutive_agreement,
    domain_divergence,
    expert_load,
    routing_entropy,
    transitions,
)


def _uniform_store(path, *, top_k: int, n_seq: int = 40, length: int = 250, n_layers: int = 2, seed: int = 0):
    rng = np.random.default_rng(seed)
    recs = [
        SequenceRecord(
            f"s{i}",
            "math" if i % 2 else "code",
            "synthetic",
            rng.integers(0, 64, length).astype(np.int32),
            random_topk(rng, length, n_layers, 8, top_k),
        )
        for i in range(n_seq)
    ]
    return write_store(path, recs, config(n_experts=8, top_k=top_k, n_layers=n_layers), chunk=1024), recs


def test_analytic_baselines():
    assert agreement_baselines(8, 1) == {"first_choice": 0.125, "any_topk": 0.125}
    assert agreement_baselines(8, 2)["any_topk"] == pytest.approx(1 - 15 / 28)  # 46.4%
    assert round(agreement_baselines(8, 2)["any_topk"], 3) == 0.464
    assert agreement_baselines(384, 8)["first_choice"] == pytest.approx(1 / 384)


@pytest.mark.parametrize("top_k", [1, 2])
def test_uniform_routing_meets_mixtral_baselines(tmp_path, top_k):
    store, _ = _uniform_store(tmp_path / "u.zarr", top_k=top_k)  # 10 000 tokens, ~9 960 pairs per layer
    agr = consecutive_agreement(store)
    base = agreement_baselines(8, top_k)
    # standard error ~ sqrt(p(1-p)/n) <= 0.005: 4 SE tolerance
    np.testing.assert_allclose(agr["first_choice"].values, 0.125, atol=0.014)
    np.testing.assert_allclose(agr["any_topk"].values, base["any_topk"], atol=0.02)
    assert agr.attrs["baseline_any_topk"] == pytest.approx(base["any_topk"])


def test_uniform_routing_is_balanced_and_unspecific(tmp_path):
    store, _ = _uniform_store(tmp_path / "u.zarr", top_k=2)
    load = expert_load(store)
    np.testing.assert_allclose(load["relative_load"].values, 1.0, atol=0.06)
    assert (routing_entropy(store)["normalized"].values > 0.999).all()
    co = coactivation(store)["coactivation"].values
    off = co[:, ~np.eye(8, dtype=bool)]
    np.testing.assert_allclose(off, 1 / 7, atol=0.03)  # (k-1)/(E-1)
    tr = transitions(store)
    np.testing.assert_allclose(tr["probability"].values, 1 / 8, atol=0.03)
    assert tr["layer_top_mass"].item() == pytest.approx(tr.attrs["uniform_top_mass"], abs=0.02)  # 2 of 8 = 0.25
    div = domain_divergence(store, n_boot=100, n_perm=100)
    assert (div["p_value"].values > 0.01).all()  # same routing law in both domains
    assert (div["jsd"].values < 0.01).all()


def test_kernels_match_plain_numpy_across_chunks(tmp_path):
    store, recs = _uniform_store(tmp_path / "u.zarr", top_k=2, n_seq=7, length=333, n_layers=3, seed=3)
    ids = np.concatenate([r.expert_ids for r in recs]).astype(np.int64)  # (T, L, k)
    seq = np.concatenate([np.full(r.n_tokens, i) for i, r in enumerate(recs)])
    _t, n_layers, k = ids.shape
    co_ref = np.zeros((n_layers, 8, 8), np.int64)
    tr_ref = np.zeros((n_layers - 1, 8, 8), np.int64)
    for a in range(k):
        for b in range(k):
            if a != b:
                for layer in range(n_layers):
                    np.add.at(co_ref[layer], (ids[:, layer, a], ids[:, layer, b]), 1)
            for layer in range(n_layers - 1):
                np.add.at(tr_ref[layer], (ids[:, layer, a], ids[:, layer + 1, b]), 1)
    np.testing.assert_array_equal(coactivation(store)["pair_count"].values, co_ref)
    np.testing.assert_array_equal(transitions(store)["count"].values, tr_ref)
    same_seq = seq[1:] == seq[:-1]
    first = (ids[1:, :, 0] == ids[:-1, :, 0]) & same_seq[:, None]
    agr = consecutive_agreement(store)
    np.testing.assert_array_equal(agr["n_pairs"].values[0], same_seq.sum())
    np.testing.assert_allclose(agr["first_choice"].values[0], first.sum(axis=0) / same_seq.sum())


@pytest.mark.parametrize("top_k", [2, 8])  # 8: the kernels' unrolled path (K2's k)
def test_runs_chains_and_int32_limits_do_not_change_any_number(tmp_path, monkeypatch, top_k):
    """Cutting blocks into many runs of rows, chains restarting before an int32 overflow and int64
    merges give exactly the numbers of one task per block (every count, every float)."""
    import xarray as xr

    from workbench.analysis import engine, partial
    from workbench.analysis.compare import compare

    store, recs = _uniform_store(tmp_path / "u.zarr", top_k=top_k, n_seq=9, length=301, n_layers=3, seed=5)
    if top_k == 8:  # 8 of 8 experts would make every pair count equal: use 16 experts
        rng = np.random.default_rng(6)
        for r in recs:
            r.expert_ids = random_topk(rng, r.n_tokens, 3, 16, 8)
        store = write_store(tmp_path / "u16.zarr", recs, config(n_experts=16, top_k=8, n_layers=3), chunk=1024)

    def run():
        return [
            coactivation(store),
            coactivation(store, pairs="adjacent"),
            transitions(store),
            expert_load(store, by="domain", weighted=False),
            compare(store, n_boot=5, n_perm=5).load,
        ]

    whole = run()
    monkeypatch.setattr(engine, "TASK_PAIRS", 5_000)  # runs of a few rows
    monkeypatch.setattr(engine, "INT32_MAX", 2_000)  # chains restart every run or two
    monkeypatch.setattr(partial, "INT32_MAX", 2_000)  # merges widen to int64
    cut = run()
    for a, b in zip(whole, cut, strict=True):
        xr.testing.assert_identical(a, b)
    assert len(engine.row_runs(1024, 3, top_k, engine.Want(coactivation="all", transitions=True))) >= 4
