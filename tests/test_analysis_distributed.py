"""The same numbers on a dask.distributed cluster (2 worker processes) as on the threaded scheduler."""

from __future__ import annotations

import numpy as np
import pytest
from analysis_helpers import SequenceRecord, config, random_topk, write_store

from workbench.analysis.compare import compare

distributed = pytest.importorskip("distributed")


@pytest.mark.slow
def test_compare_on_local_cluster_matches_threads(tmp_path):
    rng = np.random.default_rng(3)
    recs = [
        SequenceRecord(f"s{i}", ("math", "code")[i % 2], "t", rng.integers(0, 64, 90).astype(np.int32),
                       random_topk(rng, 90, 3, 8, 2), rng.random((90, 3, 2)).astype(np.float32))
        for i in range(10)
    ]  # fmt: skip
    store = write_store(tmp_path / "s.zarr", recs, config(n_experts=8, top_k=2, n_layers=3), chunk=128)
    local = compare(store, None, n_boot=50, n_perm=50)
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        distributed.Client(cluster),
    ):
        remote = compare(store, None, n_boot=50, n_perm=50)
    np.testing.assert_array_equal(local.load["count"].values, remote.load["count"].values)
    np.testing.assert_array_equal(local.agreement["n_pairs"].values, remote.agreement["n_pairs"].values)
    np.testing.assert_array_equal(local.transitions["count"].values, remote.transitions["count"].values)
    np.testing.assert_allclose(local.divergence["jsd"].values, remote.divergence["jsd"].values)
    np.testing.assert_allclose(local.divergence["ci_low"].values, remote.divergence["ci_low"].values)
