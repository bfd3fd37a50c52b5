"""Integration on the bundled mini K2 (data/models/k2-mini): truth, `workbench record` on the prompt suite,
and its INT4-expert variant. Skipped until the mini K2 has been built (`make demo` builds it)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from hooks_helpers import check_against_truth
from typer.testing import CliRunner

from workbench.cli.app import app
from workbench.models import BUNDLED, planned_routing_config

MINI = BUNDLED["k2-mini"]
SUITE = Path(__file__).resolve().parent.parent / "data" / "prompts" / "suite.jsonl"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mini() -> tuple[torch.nn.Module, object]:
    from workbench.models import load_model

    return load_model("k2-mini")


def test_minik2_routing_config_is_k2s() -> None:
    cfg = planned_routing_config("k2-mini")
    assert cfg.family == "deepseek_v3" and cfg.model_name == "k2-mini"
    assert cfg.moe_layers[0] == 1 and cfg.moe_layers == tuple(range(1, cfg.num_hidden_layers))
    assert (cfg.top_k, cfg.n_shared_experts, cfg.scoring_func, cfg.topk_method) == (8, 1, "sigmoid", "noaux_tc")
    assert cfg.norm_topk_prob and cfg.routed_scaling_factor == pytest.approx(2.827)


def test_minik2_capture_matches_recomputed_topk(mini: tuple[torch.nn.Module, object]) -> None:
    model, tok = mini
    rows = ["Solve 3 * (4 + 5) = 27.", "def mean(xs):\n    return sum(xs) / len(xs)", "The fox ran."]
    enc = tok(rows, return_tensors="pt", padding=True, padding_side="left")  # type: ignore[operator]
    check_against_truth(model, enc["input_ids"], enc["attention_mask"])


def test_record_suite_subset(tmp_path: Path) -> None:
    lines = [ln for ln in SUITE.read_text().splitlines() if ln.strip()][:6]
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("\n".join(lines) + "\n")
    out = tmp_path / "mini.zarr"
    result = CliRunner().invoke(
        app, ["record", "--model", "k2-mini", "--prompts", str(prompts), "--out", str(out), "--max-new-tokens", "8"]
    )
    assert result.exception is None and result.exit_code == 0, result.output
    ds = xr.open_zarr(out)
    cfg = planned_routing_config("k2-mini")
    assert (ds.sizes["layer"], ds.sizes["k"]) == (len(cfg.moe_layers), 8)
    assert ds.sizes["sequence"] == 6
    assert ds.sequence.values.tolist() == [json.loads(ln)["id"] for ln in lines]
    ids = ds.expert_ids.values
    assert ids.min() >= 0 and ids.max() < cfg.n_routed_experts
    assert (np.sort(ids, -1)[..., 1:] != np.sort(ids, -1)[..., :-1]).all()  # k distinct experts per decision


def test_minik2_int4_experts_record(tmp_path: Path, mini: tuple[torch.nn.Module, object]) -> None:
    from workbench.hooks import RoutingRecorder, route_tokens
    from workbench.hooks.quantize import expert_group_size, quantize_routed_experts

    from workbench.models import load_model

    group = expert_group_size(MINI, 32)
    quantize_routed_experts(MINI, tmp_path / "int4", group_size=group)
    quant, tok = load_model(tmp_path / "int4", dtype="bf16")
    dense, _ = load_model("k2-mini", dtype="bf16")
    assert RoutingRecorder(quant).config.quantization == f"compressed-tensors:pack-quantized:int4:g{group}"
    ids = tok("Compute 17 * 23 step by step, then check it with a calculator call.")["input_ids"]  # type: ignore[operator]
    a, b = route_tokens(dense, ids), route_tokens(quant, ids)
    assert a.expert_ids.shape == b.expert_ids.shape
    changed = (np.sort(a.expert_ids, -1) != np.sort(b.expert_ids, -1)).any(-1).mean()
    assert changed < 0.5  # INT4 moves some decisions, not most of them (figures: bench_quant_routing.py)
