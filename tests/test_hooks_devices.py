"""Models spread with accelerate's device_map (CPU + disk offload) and INT4-quantized experts (K2 Thinking).

This machine has no GPU: the multi-device test splits layers between "cpu" and "disk" (offloaded
weights live on the meta device and are loaded by accelerate's hooks during each forward), which
exercises the same path as a GPU split: captured tensors stay where the layer ran, and are copied
to the host once per forward.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hooks_helpers import PAD, padded_batch, save_remote_checkpoint, save_tiny_checkpoint
from workbench.hooks import RoutingRecorder, route_tokens
from workbench.hooks.batch import run_batch
from workbench.hooks.quantize import quantize_routed_experts

from workbench.models import load_model

SPLIT = {
    "model.embed_tokens": "cpu",
    "model.rotary_emb": "cpu",
    "model.layers.0": "cpu",
    "model.layers.1": "disk",
    "model.layers.2": "cpu",
    "model.layers.3": "disk",
    "model.norm": "cpu",
    "lm_head": "cpu",
}


def _record(model: torch.nn.Module, new_tokens: int) -> list:  # type: ignore[type-arg]
    ids, mask = padded_batch([8, 5], seed=7)
    with RoutingRecorder(model, scores=True) as rec:
        run_batch(model, ids, mask, max_new_tokens=new_tokens, pad_id=PAD, eos_id=None)
    return rec.routing()


def _assert_same(a: list, b: list) -> None:  # type: ignore[type-arg]
    assert [r.n_tokens for r in a] == [r.n_tokens for r in b]
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x.token_ids, y.token_ids)
        assert np.array_equal(x.expert_ids, y.expert_ids)
        np.testing.assert_allclose(x.gate_weights, y.gate_weights, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(x.router_scores, y.router_scores, rtol=1e-5, atol=1e-6)


def test_device_map_with_disk_offload_records_the_same_routing(tmp_path: Path) -> None:
    ckpt = save_tiny_checkpoint(tmp_path / "tiny")
    plain, _ = load_model(ckpt)
    split, _ = load_model(ckpt, device_map=SPLIT, offload_folder=tmp_path / "offload")
    assert split.model.layers[1].mlp.gate.weight.is_meta  # really offloaded
    _assert_same(_record(plain, 4), _record(split, 4))


def test_remote_code_with_disk_offload(tmp_path: Path) -> None:
    ckpt = save_remote_checkpoint(tmp_path / "remote")
    plain, _ = load_model(ckpt, trust_remote_code=True)
    split_map = {k: v for k, v in SPLIT.items() if k != "model.rotary_emb"}
    split, _ = load_model(ckpt, trust_remote_code=True, device_map=split_map, offload_folder=tmp_path / "off")
    assert split.model.layers[3].mlp.gate.weight.is_meta
    _assert_same(_record(plain, 0), _record(split, 0))


@pytest.mark.slow
def test_int4_quantized_experts_record_and_differ_little(tmp_path: Path) -> None:
    src = save_tiny_checkpoint(tmp_path / "tiny", moe_intermediate_size=32)
    summary = quantize_routed_experts(src, tmp_path / "tiny-int4", group_size=32)
    assert summary["quantized_tensors"] == 3 * 8 * 3  # 3 MoE layers x 8 experts x (gate, up, down)
    quant, _ = load_model(tmp_path / "tiny-int4", dtype="bf16")
    dense, _ = load_model(src, dtype="bf16")

    # the loaded experts really hold INT4 values: per group of 32 at most 16 distinct levels
    w = quant.model.layers[1].mlp.experts.down_proj[0, 0, :32].float()  # (32,) one group
    assert len(torch.unique(w)) <= 16
    assert len(torch.unique(dense.model.layers[1].mlp.experts.down_proj[0, 0, :32].float())) > 16

    rec = RoutingRecorder(quant)
    assert rec.config.quantization == "compressed-tensors:pack-quantized:int4:g32"
    ids = torch.arange(3, 300, 2)  # (149,)
    a, b = route_tokens(dense, ids), route_tokens(quant, ids)
    assert a.expert_ids.shape == b.expert_ids.shape == (149, 3, 2)
    # layer 1's router sees the same input (layer 0 is dense and kept bf16): its decisions match
    assert np.array_equal(a.expert_ids[:, 0], b.expert_ids[:, 0])
    changed = (np.sort(a.expert_ids, -1) != np.sort(b.expert_ids, -1)).any(-1).mean()  # share of (token, layer)
    assert changed < 0.25
