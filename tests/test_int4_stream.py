"""INT4 K2 Thinking layout through K2-style remote code: packed weights stay packed, each projection is
decompressed only while it runs, and the model computes exactly what the fully decompressed one does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from hooks_helpers import PROMPTS, save_remote_checkpoint, write_prompts
from typer.testing import CliRunner
from workbench.hooks import RoutingRecorder, route_tokens
from workbench.hooks.int4_stream import StreamDecompression, decompressed_weight, packed_modules
from workbench.hooks.quantize import quantize_routed_experts

from workbench.cli.app import app
from workbench.models import load_model


@pytest.fixture(scope="module")
def int4_remote(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("int4")
    src = save_remote_checkpoint(root / "k2-remote")
    quantize_routed_experts(src, root / "k2-remote-int4", group_size=16)  # expert width 16 in the stand-in
    return root / "k2-remote-int4"


def _fresh(path: Path, stream: bool) -> torch.nn.Module:
    model, _ = load_model(path, dtype="bf16", trust_remote_code=True, stream_int4=stream)
    return model


def test_remote_code_loads_packed_and_compressed_tensors_would_decompress_all(int4_remote: Path) -> None:
    model = _fresh(int4_remote, stream=False)
    packed = packed_modules(model)
    assert len(packed) == 3 * 8 * 3  # 3 MoE layers x 8 experts x (gate, up, down)
    assert all("weight" not in m._parameters and m.weight_packed.dtype == torch.int32 for m in packed.values())
    assert hasattr(model, "ct_decompress_hook")  # the whole-model decompression that streaming replaces
    with torch.no_grad():
        model(input_ids=torch.arange(3, 12)[None])
    assert not packed_modules(model)  # one forward decompressed every module in place


def test_streaming_is_exact_and_never_holds_more_than_one_projection(int4_remote: Path) -> None:
    full = _fresh(int4_remote, stream=False)
    model = _fresh(int4_remote, stream=True)
    stream = model.workbench_int4_stream
    assert isinstance(stream, StreamDecompression) and not hasattr(model, "ct_decompress_hook")
    ids = torch.arange(3, 300, 3)[None]  # (1, 99)
    with torch.no_grad():
        logits = model(input_ids=ids).logits
        ref = full(input_ids=ids).logits  # compressed-tensors' own whole-model decompression
    assert torch.equal(logits, ref)

    packed = packed_modules(model)
    assert len(packed) == 72  # still packed after the forward: nothing stayed decompressed
    assert all("weight" not in m._parameters for m in packed.values())
    largest = max(m.weight_shape.prod().item() * 2 for m in packed.values())  # bf16 bytes
    assert stream.stats.peak_live_bytes == largest and stream.stats.live_bytes == 0
    # the decompressed values are the dequantized INT4 ones: <= 16 levels per group of 16
    w = decompressed_weight(packed["model.layers.1.mlp.experts.0.down_proj"])
    assert w.dtype == torch.bfloat16 and len(torch.unique(w[0, :16].float())) <= 16

    # only experts the router picked were decompressed
    routing = route_tokens(model, ids[0])
    picked = {(layer, int(e)) for li, layer in enumerate((1, 2, 3)) for e in np.unique(routing.expert_ids[:, li])}
    touched = {(int(n.split(".")[2]), int(n.split(".")[5])) for n in stream.stats.modules_touched}
    assert touched == picked

    stream.remove()  # the model is as loaded again: compressed-tensors' hook is back
    assert hasattr(model, "ct_decompress_hook")


def test_recorded_routing_matches_the_decompressed_model(int4_remote: Path) -> None:
    full = _fresh(int4_remote, stream=False)
    model = _fresh(int4_remote, stream=True)
    ids = torch.arange(5, 200, 2)
    with RoutingRecorder(model) as rec:
        assert rec.config.quantization == "compressed-tensors:pack-quantized:int4:g16"
        assert rec.config.family == "deepseek_remote"
    a, b = route_tokens(model, ids), route_tokens(full, ids)
    assert np.array_equal(a.expert_ids, b.expert_ids)
    np.testing.assert_array_equal(a.gate_weights, b.gate_weights)


@pytest.mark.slow
def test_workbench_record_on_the_int4_remote_checkpoint(tmp_path: Path, int4_remote: Path) -> None:
    prompts = write_prompts(tmp_path / "p.jsonl", PROMPTS)
    out = tmp_path / "int4.zarr"
    result = CliRunner().invoke(
        app,
        ["record", "--model", str(int4_remote), "--trust-remote-code", "--dtype", "bf16", "--prompts", str(prompts),
         "--out", str(out), "--batch-size", "1"],  # one per batch: no padding, same arithmetic as route_tokens
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    ds = xr.open_zarr(out)
    assert ds.attrs["model"]["quantization"] == "compressed-tensors:pack-quantized:int4:g16"
    assert ds.sizes["sequence"] == len(PROMPTS) and ds.layer.values.tolist() == [1, 2, 3]
    full = _fresh(int4_remote, stream=False)
    for i in range(len(PROMPTS)):  # prompt-only: the stand-in remote code has no generate()
        seq = ds.isel(token=ds.sequence_index.values == i)
        ref = route_tokens(full, torch.as_tensor(seq.token_id.values.astype(np.int64)))
        assert np.array_equal(seq.expert_ids.values, ref.expert_ids)
