"""The experts implementation chosen at load: measured once, cached, overridable, and result-preserving."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from workbench.hooks import RoutingRecorder, route_tokens

from workbench import experts_kernel
from workbench.errors import ParameterError
from workbench.models import load_model

PROMPTS = ["Compute 8/9 * 6/11.", "def add(a, b):\n    return", "The river flows past the old mill and"]


@pytest.fixture()
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("WORKBENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv(experts_kernel.ENV, raising=False)
    experts_kernel._MEMORY.clear()
    return tmp_path / "cache"


def test_load_measures_once_caches_and_installs_the_winner(cache_dir: Path) -> None:
    model, _ = load_model("k2-mini")
    choice = model.workbench_experts
    assert choice.source == "measured" and choice.device == "cpu"
    for size in ("decode", "prefill"):
        assert set(choice.seconds[size]) >= {"eager", "batched_mm"}  # every candidate this build runs
        assert getattr(choice, size) == min(choice.seconds[size], key=choice.seconds[size].__getitem__)
    assert model.config._experts_implementation == choice.implementation
    (entry,) = json.loads((cache_dir / "experts_kernel.json").read_text()).values()
    assert entry["implementation"] == choice.implementation and entry["seconds"] == choice.seconds

    experts_kernel._MEMORY.clear()  # a new process: read from the file, nothing measured
    again, _ = load_model("k2-mini")
    assert again.workbench_experts.source == "cache"
    assert again.config._experts_implementation == choice.implementation


def test_override_by_parameter_and_environment(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, _ = load_model("k2-mini", experts_impl="eager")
    assert model.config._experts_implementation == "eager" and model.workbench_experts.source == "override"
    monkeypatch.setenv(experts_kernel.ENV, "batched_mm")
    assert experts_kernel.choose(model).implementation == "batched_mm"
    assert model.config._experts_implementation == "batched_mm"
    assert not (cache_dir / "experts_kernel.json").exists()  # nothing measured, nothing cached
    with pytest.raises(ParameterError, match=r"unknown experts_impl 'fastest'; use auto or one of"):
        experts_kernel.choose(model, "fastest")


def test_dispatch_sends_small_forwards_to_one_implementation_and_large_to_another() -> None:
    name = experts_kernel.register_dispatch("batched_mm", "eager", 16)
    model, _ = load_model("k2-mini", experts_impl="eager")
    experts = experts_kernel._experts_module(model)
    hidden = torch.randn(40, model.config.hidden_size) * 0.1
    ids = torch.rand(40, model.config.n_routed_experts).topk(8, dim=-1).indices
    w = torch.rand(40, 8)
    with torch.no_grad():
        ref_small, ref_large = experts(hidden[:10], ids[:10], w[:10]), experts(hidden, ids, w)
        model.set_experts_implementation(name)
        small, large = experts(hidden[:10], ids[:10], w[:10]), experts(hidden, ids, w)
    torch.testing.assert_close(small, ref_small, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(large, ref_large, rtol=0, atol=0)  # > 16 tokens: eager itself, bit for bit


@pytest.mark.slow
def test_every_implementation_gives_the_same_logits_and_routing(cache_dir: Path) -> None:
    """Implementations differ only in summation order: logits allclose, recorded routing identical."""
    model, tok = load_model("k2-mini", experts_impl="eager")
    rows = [tok(p)["input_ids"] for p in PROMPTS]
    ids = torch.tensor(rows[0])[None]
    with torch.no_grad():
        ref_logits = model(input_ids=ids).logits
    ref_routes = [route_tokens(model, r, scores=True) for r in rows]
    batch = tok(PROMPTS[:2], return_tensors="pt", padding=True)
    gen_kw = dict(**batch, max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id)
    with RoutingRecorder(model) as rec, torch.no_grad():
        model.generate(**gen_kw)
    ref_gen = rec.routing()
    ran = []
    for impl in experts_kernel.CANDIDATES:
        try:
            experts_kernel.choose(model, impl)
        except (RuntimeError, ValueError):
            continue
        ran.append(impl)
        with torch.no_grad():
            torch.testing.assert_close(model(input_ids=ids).logits, ref_logits, rtol=1e-4, atol=1e-4)
        for r, ref in zip((route_tokens(model, r, scores=True) for r in rows), ref_routes, strict=True):
            assert np.array_equal(r.expert_ids, ref.expert_ids), impl
            np.testing.assert_allclose(r.gate_weights, ref.gate_weights, rtol=1e-4, atol=1e-5)
        with RoutingRecorder(model) as rec, torch.no_grad():
            model.generate(**gen_kw)
        for r, ref in zip(rec.routing(), ref_gen, strict=True):
            assert np.array_equal(r.token_ids, ref.token_ids) and np.array_equal(r.expert_ids, ref.expert_ids), impl
    assert {"eager", "batched_mm", "padded_bmm"} <= set(ran)


def test_info_shows_the_chosen_kernel_and_its_timings(
    cache_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from workbench.cli.app import main

    def run(*argv: str) -> int:
        monkeypatch.setattr("sys.argv", ["workbench", "info", *argv])
        try:
            main()
        except SystemExit as done:
            return int(done.code or 0)
        return 0

    assert run("--model", "k2-mini", "--json") == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["experts_source"] == "measured" and facts["experts_cache"] == str(cache_dir / "experts_kernel.json")
    assert facts["experts_implementation"] in facts["experts_choice"] and "decode" in facts["experts_seconds"]
    assert run("--model", "k2-mini") == 0
    assert "(cache; decode " in capsys.readouterr().out  # the second run reads the cache and prints the timings
    assert run() == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: give a routing store, or --model NAME for a model's experts kernel (not both)"
