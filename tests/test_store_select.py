"""Selections resolve to the right token rows and layers, and fail with one clear message."""

from __future__ import annotations

import numpy as np
import pytest

import workbench.accessor  # noqa: F401  (registers ds.routing)
from workbench.errors import SelectionError
from workbench.routing_config import RoutingConfig
from workbench.store import schema as S
from workbench.store.dataset import SequenceRecord, SpanRecord, routing_dataset
from workbench.store.select import Selection, parse_where, select, token_mask

CFG = RoutingConfig("t", "deepseek_v3", "deepseek_v3", 4, (1, 2, 3), 8, 2)


def _ds():
    rng = np.random.default_rng(0)

    def rec(i, domain, n, spans=()):
        return SequenceRecord(
            id=f"s{i}",
            domain=domain,
            source="test",
            token_ids=np.arange(n),
            expert_ids=rng.integers(0, 8, (n, 3, 2)),
            gate_weights=rng.random((n, 3, 2)),
            spans=list(spans),
        )

    return routing_dataset(
        [
            rec(0, "math", 5, [SpanRecord("think", 1, 3, step=0), SpanRecord("tool_call", 3, 5, step=0, label="f:0")]),
            rec(1, "code", 4),
            rec(2, "math", 3, [SpanRecord("answer", 0, 3)]),
        ],
        CFG,
    )


def test_dataset_rows_and_spans():
    ds = _ds()
    assert ds.sizes[S.TOKEN] == 12 and ds.sizes[S.SEQUENCE] == 3 and ds.sizes[S.SPAN] == 3
    assert ds[S.SEQUENCE_START].values.tolist() == [0, 5, 9]
    assert ds[S.SPAN_START].values.tolist() == [1, 3, 9] and ds[S.SPAN_STOP].values.tolist() == [3, 5, 12]
    assert ds[S.STEP].values.tolist()[:5] == [-1, 0, 0, 0, 0]


def test_selection_by_domain_segment_and_ranges():
    ds = _ds()
    assert np.nonzero(token_mask(ds, Selection(domains=("math",))))[0].tolist() == [0, 1, 2, 3, 4, 9, 10, 11]
    assert np.nonzero(token_mask(ds, Selection(segments=("think",))))[0].tolist() == [1, 2]
    assert np.nonzero(token_mask(ds, parse_where(["domain=math", "segment=answer"])))[0].tolist() == [9, 10, 11]
    assert np.nonzero(token_mask(ds, parse_where("sequence=s1")))[0].tolist() == [5, 6, 7, 8]
    assert np.nonzero(token_mask(ds, parse_where("positions=0:1")))[0].tolist() == [0, 5, 9]
    sub = select(ds, parse_where(["tokens=2:6", "layers=2:3"]))
    assert sub.sizes[S.TOKEN] == 4 and sub[S.LAYER].values.tolist() == [2, 3]
    assert sub.routing.select(domains=["code"]).sizes[S.TOKEN] == 1


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("domain=poetry", "unknown domain 'poetry'"),
        ("segment=dream", "unknown segment 'dream'"),
        ("layers=0:9", "outside this model's MoE layers 1:3"),
        ("tokens=5:99", "outside this store's 0:12"),
        ("colour=red", "unknown selection key"),
    ],
)
def test_bad_selections_say_what_is_wrong(where, message):
    with pytest.raises(SelectionError, match=message):
        select(_ds(), parse_where(where))


def test_empty_selection_is_refused():
    with pytest.raises(SelectionError, match="holds no tokens"):
        select(_ds(), parse_where(["domain=code", "segment=think"]))
