"""RoutingRecorder on tiny random models: families, hook cleanup, padding, generate with KV cache, EOS."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hooks_helpers import EOS, PAD, VOCAB, padded_batch, tiny_deepseek, tiny_softmax_model
from workbench.hooks import RoutingRecorder, UnsupportedModelError, route_tokens
from workbench.hooks.batch import positions

from workbench.errors import WorkbenchError

FAMILIES = ["deepseek", "mixtral", "qwen3_moe", "olmoe"]


def _model(family: str) -> torch.nn.Module:
    return tiny_deepseek() if family == "deepseek" else tiny_softmax_model(family)


def _n_hooks(model: torch.nn.Module) -> int:
    """Forward hooks registered plus forwards replaced on the instance (how the recorder captures)."""
    return sum(
        len(m._forward_hooks)
        + len(m._forward_pre_hooks)
        + len(getattr(m, "_forward_hooks_always_called", {}))
        + ("forward" in m.__dict__)
        for m in model.modules()
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_family_config_and_shapes(family: str) -> None:
    model = _model(family)
    with RoutingRecorder(model, scores=True) as rec, torch.no_grad():
        model(input_ids=torch.arange(3, 13)[None])
    cfg = rec.config
    (r,) = rec.routing()
    if family == "deepseek":
        assert (cfg.family, cfg.scoring_func, cfg.moe_layers) == ("deepseek_v3", "sigmoid", (1, 2, 3))
        assert cfg.routed_scaling_factor == 2.5 and cfg.norm_topk_prob and cfg.n_shared_experts == 1
    else:
        assert (cfg.family, cfg.scoring_func, cfg.moe_layers) == ("softmax_topk", "softmax", (0, 1, 2))
    assert r.expert_ids.shape == (10, 3, 2) and r.expert_ids.dtype == np.int16
    assert r.gate_weights.shape == (10, 3, 2) and r.gate_weights.dtype == np.float32
    assert r.router_scores is not None and r.router_scores.shape == (10, 3, 8)
    assert r.layers == cfg.moe_layers
    assert np.array_equal(r.token_ids, np.arange(3, 13))
    # each token's two experts are distinct, in range, and ranked: the chosen experts' scores come first
    assert (r.expert_ids[..., 0] != r.expert_ids[..., 1]).all()
    assert r.expert_ids.min() >= 0 and r.expert_ids.max() < 8
    chosen = np.take_along_axis(r.router_scores, r.expert_ids.astype(np.int64), -1)  # (T, L, k)
    if family != "deepseek":  # softmax routers rank by score; DeepSeek ranks by score + bias (test_hooks_truth)
        assert (chosen[..., 0] >= chosen[..., 1]).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_hooks_removed_on_exit_and_after_exception(family: str) -> None:
    model = _model(family)
    before = _n_hooks(model)
    with RoutingRecorder(model) as rec:
        assert _n_hooks(model) > before and rec.active
    assert _n_hooks(model) == before and not rec.active

    with pytest.raises(RuntimeError, match="boom"), RoutingRecorder(model):
        raise RuntimeError("boom")
    assert _n_hooks(model) == before

    # an exception inside the forward itself (ids beyond the vocabulary): hooks go, nothing half-recorded
    rec = RoutingRecorder(model)
    with pytest.raises(IndexError), rec, torch.no_grad():
        model(input_ids=torch.tensor([[VOCAB + 5]]))
    assert _n_hooks(model) == before
    assert rec.routing() == []


def test_unsupported_model_names_the_families() -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    dense = LlamaForCausalLM(
        LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    )
    with pytest.raises(UnsupportedModelError, match=r"llama.*supported families: .*DeepSeek-V3.*MoEGate.*Mixtral"):
        RoutingRecorder(dense)


def test_recorder_is_not_reentrant() -> None:
    model = tiny_deepseek()
    rec = RoutingRecorder(model)
    with rec, pytest.raises(WorkbenchError, match="already active"), rec:
        pass


@pytest.mark.parametrize("family", ["deepseek", "mixtral"])
def test_padded_batch_matches_single_sequences(family: str) -> None:
    model = _model(family)
    lengths = [9, 4, 6]
    ids, mask = padded_batch(lengths, seed=1)
    with RoutingRecorder(model, scores=True) as rec, torch.no_grad():
        model(input_ids=ids, attention_mask=mask, position_ids=positions(mask))
    routes = rec.routing()
    assert [r.n_tokens for r in routes] == lengths  # pad tokens never recorded
    for b, (r, n) in enumerate(zip(routes, lengths, strict=True)):
        assert PAD not in r.token_ids
        alone = route_tokens(model, ids[b, -n:], scores=True)
        assert np.array_equal(r.token_ids, alone.token_ids)
        assert np.array_equal(r.expert_ids, alone.expert_ids)
        np.testing.assert_allclose(r.gate_weights, alone.gate_weights, rtol=1e-4, atol=1e-5)
        assert r.router_scores is not None and alone.router_scores is not None
        np.testing.assert_allclose(r.router_scores, alone.router_scores, rtol=1e-4, atol=1e-5)
        assert not r.generated.any()


@pytest.mark.parametrize("family", ["deepseek", "qwen3_moe"])
def test_generate_with_cache_appends_decode_steps(family: str) -> None:
    model = _model(family)
    lengths = [7, 4]
    ids, mask = padded_batch(lengths, seed=2)
    new = 5
    with RoutingRecorder(model, eos_token_id=[]) as rec, torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new, do_sample=False, pad_token_id=PAD)
    assert rec.forwards == new  # one prefill + new-1 decode steps (the last token is never fed back)
    routes = rec.routing()
    seqs = out.sequences if hasattr(out, "sequences") else out
    for b, (r, n) in enumerate(zip(routes, lengths, strict=True)):
        fed = seqs[b, ids.shape[1] - n : -1]  # the prompt and every generated token but the last
        assert np.array_equal(r.token_ids, fed.numpy())
        assert r.generated.tolist() == [False] * n + [True] * (new - 1)
        # decoding with the KV cache routes every token as a teacher-forced forward of the whole sequence does
        full = route_tokens(model, fed)
        assert np.array_equal(r.expert_ids, full.expert_ids)
        np.testing.assert_allclose(r.gate_weights, full.gate_weights, rtol=1e-4, atol=1e-5)


def test_tokens_after_eos_are_not_recorded() -> None:
    model = tiny_deepseek()
    ids, mask = padded_batch([6, 6], seed=3)
    kw = dict(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=PAD)
    with torch.no_grad():
        free = model.generate(**kw)
    gen = free[:, ids.shape[1] :]  # (2, 6)
    # make row 0 stop at its third generated token: declare that token the EOS
    stop = int(gen[0, 2])
    if stop in gen[1].tolist() or stop in gen[0, :2].tolist():
        pytest.skip("the random model repeats the stop token; pick another seed")
    with RoutingRecorder(model, eos_token_id=stop) as rec, torch.no_grad():
        model.generate(**kw, eos_token_id=stop)
    r0, r1 = rec.routing()
    assert r0.token_ids.tolist() == ids[0].tolist() + gen[0, :3].tolist()  # up to and including its EOS
    assert r0.generated.sum() == 3
    assert r1.token_ids.tolist() == ids[1].tolist() + gen[1, :5].tolist()  # the other row runs on
    assert EOS not in r0.token_ids.tolist()[-1:] or stop == EOS


def test_routing_reset_and_separate_calls() -> None:
    model = tiny_deepseek()
    with RoutingRecorder(model) as rec, torch.no_grad():
        model(input_ids=torch.arange(3, 8)[None])
        model(input_ids=torch.arange(3, 6)[None].repeat(2, 1))
        assert [r.n_tokens for r in rec.routing(reset=True)] == [5, 3, 3]
        assert rec.routing() == []
        model(input_ids=torch.arange(3, 7)[None])
    assert [r.n_tokens for r in rec.routing()] == [4]


def test_route_tokens_rejects_a_batch() -> None:
    with pytest.raises(WorkbenchError, match="one sequence"):
        route_tokens(tiny_deepseek(), torch.zeros(2, 3, dtype=torch.long))


def test_captures_are_named_and_shapes_checked_before_anything_is_kept() -> None:
    from workbench.hooks import RouterCapture
    from workbench.hooks.capture import ForwardCapture

    assert RouterCapture._fields == ("expert_ids", "gate_weights", "selected_logits", "router_logits")
    model = tiny_deepseek()
    with RoutingRecorder(model, scores=True) as rec, torch.no_grad():
        model(input_ids=torch.arange(3, 9)[None])
    (r,) = rec.routing()
    assert r.expert_ids.shape == (6, 3, 2)

    rec = RoutingRecorder(model)
    good = RouterCapture(torch.zeros(6, 2, dtype=torch.long), torch.ones(6, 2), torch.zeros(6, 2), None)
    bad = RouterCapture(torch.zeros(5, 2, dtype=torch.long), torch.ones(5, 2), torch.zeros(5, 2), None)
    with pytest.raises(WorkbenchError, match=r"MoE layer 2: captured expert ids \(5, 2\) .* expected \(6, 2\)"):
        rec._on_forward(ForwardCapture.of(1, 6, False, torch.arange(6)[None], None, [good, bad, good]))
    assert rec.routing() == []
    rec._on_forward(ForwardCapture.of(1, 6, False, torch.arange(6)[None], None, [good, good, good]))
    (row,) = rec.routing()
    assert row.expert_ids.dtype == np.int16 and row.expert_ids.shape == (6, 3, 2) and row.layers == (1, 2, 3)


@pytest.mark.parametrize("family", FAMILIES)
def test_one_wrapper_per_moe_layer_and_no_hooks(family: str) -> None:
    """One wrapped forward on the decoder and one per MoE layer (the router), also during generate; no
    registered hook (a hooked module leaves torch's fast call path); every module's forward is its class's
    again afterwards."""
    model = _model(family)

    def registered() -> int:
        return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())

    def wrapped() -> set[str]:
        return {name for name, m in model.named_modules() if "forward" in m.__dict__}

    ids, mask = padded_batch([5, 3], seed=9)
    with RoutingRecorder(model) as rec, torch.no_grad():
        model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=3, do_sample=False, pad_token_id=PAD)
        assert rec._hooks.n_wrapped == 1 + len(rec.sites) == len(wrapped())
        assert wrapped() == {"model"} | {f"{s.name}.gate" for s in rec.sites}
        assert registered() == 0
    assert registered() == 0 and wrapped() == set()


def test_an_instance_forward_already_there_is_wrapped_and_put_back() -> None:
    """A forward another library set on the instance (accelerate, nnsight, a patch) keeps running under the
    recorder and is the module's forward again after it; one set over ours meanwhile is left alone."""
    model = tiny_deepseek()
    gate = model.model.layers[1].mlp.gate
    calls = []
    inner = gate.forward

    def patched(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return inner(*args, **kwargs)

    gate.forward = patched
    with RoutingRecorder(model) as rec, torch.no_grad():
        model(input_ids=torch.arange(3, 9)[None])
    assert gate.__dict__["forward"] is patched and calls == [1]  # put back: the very same object
    assert rec.routing()[0].n_tokens == 6
    del gate.__dict__["forward"]

    with RoutingRecorder(model) as rec, torch.no_grad():
        ours = model.model.__dict__["forward"]
        model.model.forward = lambda *a, **k: ours(*a, **k)  # wrapped over ours while recording
        assert ours.__func__.__name__ == "forward" and ours.__self__ is model.model  # a bound method, as torch's
        over = model.model.__dict__["forward"]
    assert model.model.__dict__["forward"] is over  # not ours to remove
    with torch.no_grad():
        model(input_ids=torch.arange(3, 9)[None])  # ours, left inside, is inert
    assert rec.routing() == [] and not any("forward" in m.__dict__ for m in model.model.layers.modules())
    del model.model.__dict__["forward"]


def test_flushing_every_forward_records_what_one_flush_does() -> None:
    """Device buffers copied to the host after every forward (flush_bytes=0) or once: the same rows, with EOS."""
    model = tiny_deepseek()
    ids, mask = padded_batch([6, 4, 5], seed=3)
    kw = dict(input_ids=ids, attention_mask=mask, max_new_tokens=7, do_sample=False, pad_token_id=PAD)
    with torch.no_grad():
        gen = model.generate(**kw)[:, ids.shape[1] :]
    stop = int(gen[0, 2])  # row 0 ends early at this token; any other row that meets it ends too
    got = []
    for flush_bytes in (0, 256 << 20):
        with RoutingRecorder(model, scores=True, eos_token_id=stop, flush_bytes=flush_bytes) as rec, torch.no_grad():
            model.generate(**kw, eos_token_id=stop)
            model(input_ids=torch.arange(3, 9)[None])  # a plain forward after generate: a new row
        got.append(rec.routing())
    once, every = got[1], got[0]
    assert len(once) == len(every) == 4
    assert once[0].generated.sum() == 3  # up to and including its EOS
    for a, b in zip(once, every, strict=True):
        assert np.array_equal(a.token_ids, b.token_ids) and np.array_equal(a.generated, b.generated)
        assert np.array_equal(a.expert_ids, b.expert_ids)
        assert np.array_equal(a.gate_weights, b.gate_weights)
        assert a.router_scores is not None and b.router_scores is not None
        assert np.array_equal(a.router_scores, b.router_scores)


def test_device_buffers_grow_geometrically() -> None:
    from workbench.hooks.buffer import DeviceBuffer

    model = tiny_deepseek()
    with RoutingRecorder(model) as rec, torch.no_grad():
        caps = []
        for _ in range(200):
            model(input_ids=torch.arange(3, 6)[None])
            caps.append(rec._buffer.cap)
    assert isinstance(rec._buffer, DeviceBuffer) and rec._buffer.n == 600
    assert len(set(caps)) <= 6  # 64, 128, ..., 1024: log2 growth, not one allocation per forward
    assert [r.n_tokens for r in rec.routing()] == [3] * 200


@pytest.mark.slow
def test_torch_compile_traces_the_hooks_without_a_graph_break() -> None:
    """dynamo (backend "eager": tracing without code generation) traces the wrapped forwards into one graph
    with no break, also for a model compiled before the recorder attached; same routing."""
    import torch._dynamo as dynamo

    model = tiny_deepseek()
    ids = torch.arange(3, 13)[None]
    with RoutingRecorder(model, scores=True) as rec, torch.no_grad():
        model(input_ids=ids)
    (ref,) = rec.routing()
    dynamo.reset()
    compiled = torch.compile(model, backend="eager")
    with torch.no_grad():
        compiled(input_ids=ids)  # compiled before the recorder wraps the forwards: its guards see the change
    with RoutingRecorder(model, scores=True) as rec, torch.no_grad():
        compiled(input_ids=ids)
        compiled(input_ids=ids)
        explained = dynamo.explain(model)(input_ids=ids)
    routes = rec.routing()
    assert explained.graph_break_count == 0 and explained.graph_count == 1
    assert len(routes) == 3  # two compiled forwards and the explained one, each a row
    with torch.no_grad():
        compiled(input_ids=ids)  # after the recorder: nothing recorded, the forwards are the class's again
    assert rec.routing() == routes and all("forward" not in m.__dict__ for m in model.modules())
    for r in routes:
        assert np.array_equal(r.expert_ids, ref.expert_ids) and np.array_equal(r.token_ids, ref.token_ids)
        assert r.router_scores is not None and ref.router_scores is not None
        np.testing.assert_allclose(r.router_scores, ref.router_scores, rtol=1e-6, atol=1e-7)
    dynamo.reset()
