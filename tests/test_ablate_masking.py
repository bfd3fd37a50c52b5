"""Expert masking for `workbench ablate`: masked experts are never selected, the rest is the model's own
selection (checked against a recomputed top-k), and everything is restored afterwards."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hooks_helpers import (
    PROMPTS,
    randomize_bias,
    save_tiny_checkpoint,
    tiny_deepseek,
    tiny_softmax_model,
    write_prompts,
)
from workbench.hooks import find_adapter, route_tokens

from workbench.ablation import AblationError, ablate, masked_experts, parse_experts, random_like

IDS = torch.arange(3, 60)  # one sequence of 57 tokens


def test_parse_experts():
    assert parse_experts("3:17, 1:2,3:17") == [(1, 2), (3, 17)]
    with pytest.raises(AblationError, match="LAYER:EXPERT"):
        parse_experts("3-17")


def test_deepseek_mask_excludes_experts_and_matches_recomputed_topk():
    model = tiny_deepseek(seed=1)
    randomize_bias(model)
    before = route_tokens(model, IDS, scores=True)
    busiest = np.bincount(before.expert_ids[:, 0].ravel(), minlength=8).argsort()[::-1][:3]  # layer 1's top experts
    mask = [(1, int(e)) for e in busiest] + [(3, 0)]
    with masked_experts(model, mask):
        after = route_tokens(model, IDS, scores=True)
    assert not np.isin(after.expert_ids[:, 0], busiest).any()
    assert not (after.expert_ids[:, 2] == 0).any()
    # layer 1 sees unchanged hidden states: its choice is the top-k of score + bias without the masked experts
    site = find_adapter(model).sites[0]
    bias = site.selection_bias().detach().numpy()
    choice = before.router_scores[:, 0].astype(np.float64) + bias  # (T, E)
    choice[:, busiest] = -np.inf
    expected = np.sort(np.argsort(-choice, axis=1)[:, :2], axis=1)
    np.testing.assert_array_equal(np.sort(after.expert_ids[:, 0], axis=1), expected)
    np.testing.assert_allclose(after.gate_weights[:, 0].sum(axis=1), 2.5, rtol=1e-5)  # normalised x scaling factor
    restored = route_tokens(model, IDS)
    np.testing.assert_array_equal(restored.expert_ids, before.expert_ids)
    assert torch.isfinite(site.selection_bias()).all()


def test_mask_is_restored_after_an_exception():
    model = tiny_deepseek(seed=2)
    before = route_tokens(model, IDS)
    with pytest.raises(RuntimeError), masked_experts(model, [(1, 0), (2, 1)]):
        raise RuntimeError("boom")
    np.testing.assert_array_equal(route_tokens(model, IDS).expert_ids, before.expert_ids)


@pytest.mark.parametrize("family", ["mixtral", "qwen3_moe"])
def test_softmax_mask(family):
    model = tiny_softmax_model(family, seed=0)
    adapter = find_adapter(model)
    first = adapter.sites[0].layer
    before = route_tokens(model, IDS, scores=True)
    top = int(np.bincount(before.expert_ids[:, 0].ravel(), minlength=adapter.n_experts).argmax())
    with masked_experts(model, [(first, top)]):
        after = route_tokens(model, IDS, scores=True)
    assert not (after.expert_ids[:, 0] == top).any()
    changed = (before.expert_ids[:, 0] == top).any(axis=1)
    assert changed.any()
    np.testing.assert_array_equal(after.expert_ids[~changed, 0], before.expert_ids[~changed, 0])
    np.testing.assert_array_equal(route_tokens(model, IDS).expert_ids, before.expert_ids)


def test_refusals():
    model = tiny_deepseek(seed=0)
    with pytest.raises(AblationError, match="layer 9 is not an MoE layer"), masked_experts(model, [(9, 0)]):
        pass
    with pytest.raises(AblationError, match="expert 8 does not exist"), masked_experts(model, [(1, 8)]):
        pass
    with pytest.raises(AblationError, match="fewer than top-2"), masked_experts(model, [(1, e) for e in range(7)]):
        pass
    from workbench.cli.ablate import experts_from_table

    with pytest.raises(AblationError, match="cannot read"):
        bad = Path(__file__).parent / "__nonexistent__.csv"
        experts_from_table(bad, "math", 1)


def test_random_masks_match_layers_and_avoid_targets():
    rng = np.random.default_rng(0)
    for _ in range(20):
        mask = random_like({1: [0, 1], 3: [5]}, 8, rng)
        assert [m[0] for m in mask] == [1, 1, 3]
        assert not {(1, 0), (1, 1), (3, 5)} & set(mask)


def test_default_draws_allow_p_below_005():
    """The default draws (library and CLI) are the fewest for which the rank p can fall below 0.05."""
    import inspect

    from workbench.ablation import DEFAULT_DRAWS, smallest_rank_p
    from workbench.cli.ablate import ablate as cli_ablate

    assert smallest_rank_p(DEFAULT_DRAWS) < 0.05 <= smallest_rank_p(DEFAULT_DRAWS - 1)
    assert inspect.signature(cli_ablate).parameters["draws"].default == DEFAULT_DRAWS
    assert inspect.signature(ablate).parameters["draws"].default == DEFAULT_DRAWS


def test_ablate_reports_per_domain_deltas_and_restores_the_model():
    model = tiny_deepseek(seed=3)
    enc = [("a", "math", list(range(3, 40))), ("b", "code", list(range(40, 90))), ("c", "math", list(range(5, 25)))]
    res = ablate(model, enc, [(1, 0), (2, 3), (3, 5)], draws=3, seed=1)
    assert set(res["domains"]) == {"math", "code"}
    for v in res["domains"].values():
        assert v["delta"] == pytest.approx(v["targeted"] - v["base"])
        assert len(v["random_deltas"]) == 3 and 0 < v["rank_p"] <= 1
        assert v["delta"] != 0
    assert res["min_rank_p"] == 0.25  # 3 draws: no p below 1/4, however large z is
    assert all(v["rank_p"] >= res["min_rank_p"] for v in res["domains"].values())
    again = ablate(model, enc, [(1, 0), (2, 3), (3, 5)], draws=3, seed=1)
    assert again["domains"]["math"]["base"] == pytest.approx(res["domains"]["math"]["base"])
    assert again["random_masks"] == res["random_masks"]


@pytest.mark.slow
def test_ablate_cli(tmp_path):
    ckpt = save_tiny_checkpoint(tmp_path / "ckpt", seed=4)
    prompts = write_prompts(tmp_path / "p.jsonl", PROMPTS)
    exe = str(Path(sys.executable).with_name("workbench"))
    out = tmp_path / "out"
    args = [exe, "ablate", "--model", str(ckpt), "--prompts", str(prompts), "--draws", "2"]
    res = subprocess.run(
        [*args, "--experts", "1:0,2:3", "--out", str(out)], capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr
    assert "Masking 2 experts (1:0, 2:3) vs 2 random masks" in res.stdout
    assert "with 2 draws the smallest possible p is 0.333" in " ".join(res.stdout.split())
    data = json.loads((out / "ablation.json").read_text())
    assert set(data["domains"]) == {"math", "code", "language"} and data["experts"] == ["1:0", "2:3"]
    bad = subprocess.run([*args, "--experts", "7:0"], capture_output=True, text=True, timeout=300)
    assert (
        bad.returncode == 2
        and bad.stderr.strip() == "error: layer 7 is not an MoE layer of this model; MoE layers: 1..3"
    )
    table = tmp_path / "specific_experts.csv"  # as written by `workbench compare`
    table.write_text("domain,layer,rank,expert,lift\nmath,1,1,4,2.0\nmath,1,2,6,1.5\ncode,2,1,3,1.8\n")
    res = subprocess.run(
        [*args, "--experts-from", str(table), "--domain", "math", "--top", "2", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert json.loads((out / "ablation.json").read_text())["experts"] == ["1:4", "1:6"]
