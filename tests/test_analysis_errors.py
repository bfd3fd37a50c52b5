"""Bad input gets one clear WorkbenchError line: unknown names, empty selections, ids-only stores."""

from __future__ import annotations

import numpy as np
import pytest
from analysis_helpers import SequenceRecord, config, random_topk, write_store

from workbench.analysis import (
    MetricInputError,
    coactivation,
    consecutive_agreement,
    domain_divergence,
    expert_load,
    routing_entropy,
    transitions,
)
from workbench.errors import SelectionError, WorkbenchError
from workbench.store.select import parse_where


def _store(path, *, ids_only=False):
    rng = np.random.default_rng(1)
    recs = [
        SequenceRecord(
            f"s{i}",
            "math",
            "t",
            np.arange(10, dtype=np.int32),
            random_topk(rng, 10, 2, 8, 2),
            None if ids_only else rng.random((10, 2, 2)).astype(np.float32),
        )
        for i in range(2)
    ]
    return write_store(path, recs, config(n_experts=8, top_k=2, n_layers=2), ids_only=ids_only)


def test_unknown_domain_and_segment(tmp_path):
    store = _store(tmp_path / "s.zarr")
    with pytest.raises(SelectionError, match="unknown domain 'poetry'; this store has: math"):
        expert_load(store, parse_where("domain=poetry"))
    with pytest.raises(SelectionError, match="unknown segment 'thinking'"):
        expert_load(store, parse_where("segment=thinking"))


def test_empty_selection(tmp_path):
    store = _store(tmp_path / "s.zarr")
    with pytest.raises(SelectionError, match="holds no tokens"):
        expert_load(store, parse_where("segment=tool_call"))


def test_ids_only_store_refuses_weight_metrics_but_counts(tmp_path):
    store = _store(tmp_path / "s.zarr", ids_only=True)
    with pytest.raises(MetricInputError, match=r"needs gate weights.*ids only"):
        routing_entropy(store, kind="gate")
    with pytest.raises(MetricInputError, match="needs gate weights"):
        expert_load(store, weighted=True)
    assert int(expert_load(store)["count"].sum()) == 2 * 10 * 2 * 2  # id metrics still work


def test_metric_specific_refusals(tmp_path):
    store = _store(tmp_path / "s.zarr")
    with pytest.raises(MetricInputError, match="at least two domains"):
        domain_divergence(store)
    with pytest.raises(MetricInputError, match="at least two MoE layers"):
        transitions(store, parse_where("layers=1:1"))
    with pytest.raises(MetricInputError, match="no pair of consecutive tokens"):
        consecutive_agreement(store, parse_where("positions=0:1"))
    with pytest.raises(SelectionError, match="by must be one of"):
        expert_load(store, by="colour")
    assert issubclass(MetricInputError, WorkbenchError)


def test_expert_ids_outside_the_config_stop_with_one_line(tmp_path):
    """A store whose ids exceed n_routed_experts (damaged, or a foreign config) is refused, never counted
    out of bounds, by every kind of pass."""
    store = _store(tmp_path / "s.zarr").load()
    ids = store["expert_ids"].values.copy()
    ids[13, 1, 0] = 8  # E = 8: ids are 0..7
    bad = store.assign(expert_ids=(store["expert_ids"].dims, ids)).chunk({"token": 7})
    for metric in (
        lambda: expert_load(bad),
        lambda: expert_load(bad, weighted=True),
        lambda: transitions(bad),
        lambda: coactivation(bad),
        lambda: domain_divergence(bad, by="sequence"),
    ):
        with pytest.raises(MetricInputError, match=r"expert id outside 0\.\.7 at token row 13"):
            metric()
