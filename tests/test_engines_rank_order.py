"""Engine stores are not in router rank order: the store says so, rank-based metrics refuse or adapt."""

from __future__ import annotations

import json

import numpy as np
import pytest
from engines_helpers import fake_engine, make_model_dir

from workbench.analysis import coactivation, consecutive_agreement
from workbench.analysis.compare import compare
from workbench.analysis.inputs import MetricInputError
from workbench.engines import record_from_engine
from workbench.rank_order import is_rank_ordered
from workbench.store.io import open_store
from workbench.store.synthetic import synthetic_store

PROMPTS = [
    {"id": f"{d}{i}", "domain": d, "text": " ".join(f"w{(7 * i + j) % 60}" for j in range(12))}
    for d in ("math", "code")
    for i in range(3)
]


@pytest.fixture(scope="module")
def engine_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("rank")
    mdir = make_model_dir(root / "tiny-k2", n_experts=16)
    out = str(root / "vllm.zarr")
    with fake_engine("vllm", 16) as srv:  # answers in upstream's CompletionResponse shape
        record_from_engine("vllm", srv.url, PROMPTS, out, model=str(mdir), max_new_tokens=2, progress=False)
    return out


def test_engine_store_is_marked_unordered_and_hook_like_stores_ordered(engine_store, tmp_path):
    assert open_store(engine_store).attrs["rank_order"] is False
    syn = synthetic_store(tmp_path / "s.zarr", n_tokens=400, n_layers=2, n_experts=8, k=2, progress=False)
    assert open_store(syn).attrs["rank_order"] is True
    # stores written before the attribute existed: read by their capture kind
    assert is_rank_ordered({"capture": "sglang"}) is False and is_rank_ordered({"capture": "hooks"}) is True
    assert is_rank_ordered({"capture": "vllm", "rank_order": True}) is True


def test_rank_adjacent_coactivation_is_refused_in_one_line(engine_store):
    ds = open_store(engine_store)
    with pytest.raises(MetricInputError, match=r"reads router ranks, but .* not in rank order \(capture=vllm\)") as e:
        coactivation(ds, pairs="adjacent")
    assert "\n" not in str(e.value)
    full = coactivation(ds, pairs="all")  # set-based: runs
    assert float(full["pair_count"].sum()) > 0


def test_first_choice_agreement_is_left_out_with_a_note_and_any_topk_runs(engine_store):
    ds = open_store(engine_store)
    a = consecutive_agreement(ds, by="domain")
    assert np.isnan(a["first_choice"].values).all()
    assert "not in router rank order" in a.attrs["first_choice_note"]
    assert np.isfinite(a["any_topk"].values).all() and int(a["n_pairs"].sum()) > 0
    s = compare(ds, by="domain", n_boot=20, n_perm=20).summary()
    assert all(v["mean_agreement_first_choice"] is None for v in s["groups"].values())
    assert any("first choice" in n for n in s["notes"])
    json.dumps(s, allow_nan=False)  # still valid JSON


def test_ordered_store_keeps_first_choice(tmp_path):
    ds = open_store(synthetic_store(tmp_path / "s.zarr", n_tokens=600, n_layers=2, n_experts=8, k=2, progress=False))
    a = consecutive_agreement(ds)
    assert np.isfinite(a["first_choice"].values).all() and "first_choice_note" not in a.attrs
    assert float(coactivation(ds, pairs="adjacent")["pair_count"].sum()) > 0


def test_report_figure_says_first_choice_is_not_computed(engine_store):
    from workbench.viz.figures_compare import agreement_figure

    cmp = compare(open_store(engine_store), by="domain", n_boot=20, n_perm=20)
    titles = [a.text for a in agreement_figure(cmp).layout.annotations]
    assert any("not computed, ids not in router rank order" in t for t in titles)
