"""Engine wire formats and HTTP behaviour against a real local server (no store written here)."""

from __future__ import annotations

import socket

import numpy as np
import pytest
from engines_helpers import FIRST_DENSE, N_LAYERS, TOP_K, fake_engine, generated_ids, make_model_dir, route

from workbench.engines import sglang, vllm
from workbench.engines.align import align_to_tokens, select_moe_layers
from workbench.engines.client import EngineClient, EngineError
from workbench.engines.model_info import load_tokenizer, routing_config_from_dir, tokenizer_attrs
from workbench.engines.record import _Engine, _Prompt, _to_record


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("tiny") / "tiny-k2", n_experts=16)


@pytest.fixture(scope="module")
def config(model_dir):
    return routing_config_from_dir(model_dir)


def test_config_from_json_follows_deepseek_layout(config):
    assert config.moe_layers == tuple(range(FIRST_DENSE, N_LAYERS))
    assert (config.top_k, config.n_routed_experts, config.num_hidden_layers) == (TOP_K, 16, N_LAYERS)
    assert config.family == "deepseek_v3" and config.scoring_func == "sigmoid"
    assert len(config.config_sha256) == 64


def test_k2_config_gives_60_moe_layers_and_int4_label(tmp_path):
    import json

    k2 = {
        "model_type": "kimi_k2",
        "num_hidden_layers": 61,
        "first_k_dense_replace": 1,
        "moe_layer_freq": 1,
        "n_routed_experts": 384,
        "num_experts_per_tok": 8,
        "scoring_func": "sigmoid",
        "quantization_config": {
            "quant_method": "compressed-tensors",
            "format": "pack-quantized",
            "config_groups": {"group_0": {"weights": {"num_bits": 4, "group_size": 32, "type": "int"}}},
        },
    }
    (tmp_path / "config.json").write_text(json.dumps(k2))
    cfg = routing_config_from_dir(tmp_path)
    assert cfg.moe_layers == tuple(range(1, 61))
    assert cfg.quantization == "compressed-tensors:pack-quantized:int4:g32"


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_vllm_npy_round_trip_keeps_dtype_and_shape(dtype):
    arr = np.arange(5 * 4 * 2).reshape(5, 4, 2).astype(dtype)
    out = vllm.decode_routed_experts(vllm.encode_routed_experts(arr))
    assert out.dtype == dtype and out.shape == (5, 4, 2)
    np.testing.assert_array_equal(out, arr)


def test_vllm_garbage_payload_is_one_clear_error():
    with pytest.raises(EngineError, match=r"not a base64 \.npy"):
        vllm.decode_routed_experts("bm90IGFuIG5weQ==")  # base64 of b"not an npy"


def test_sglang_flat_int32_reshapes_over_all_decoder_layers(config):
    rows = np.random.default_rng(0).integers(0, 16, size=(7, N_LAYERS, TOP_K))
    out = sglang.decode_routed_experts(sglang.encode_routed_experts(rows), config)
    assert out.shape == (7, N_LAYERS, TOP_K)
    np.testing.assert_array_equal(out, rows)


def test_sglang_size_not_matching_model_is_refused(config):
    with pytest.raises(EngineError, match="not a multiple of 4 layers"):
        sglang.decode_routed_experts(sglang.encode_routed_experts(np.zeros(7 * 5, dtype=np.int32)), config)


def test_select_drops_dense_layer_and_keeps_rank_order(config):
    raw = np.arange(3 * N_LAYERS * TOP_K).reshape(3, N_LAYERS, TOP_K) % 16
    moe = select_moe_layers(raw, config, "vllm")
    assert moe.dtype == np.int16 and moe.shape == (3, N_LAYERS - FIRST_DENSE, TOP_K)
    np.testing.assert_array_equal(moe, raw[:, FIRST_DENSE:, :])
    # an engine that counts MoE layers only is taken as is
    np.testing.assert_array_equal(select_moe_layers(raw[:, 1:], config, "vllm"), moe)


def test_align_drops_the_last_token_which_no_router_saw(config):
    moe = np.zeros((5, 3, TOP_K), dtype=np.int16)
    tokens, ids, generated = align_to_tokens(moe, [5, 6, 7], [8, 9, 10], "vllm", "s")
    assert tokens.tolist() == [5, 6, 7, 8, 9] and ids.shape[0] == 5
    assert generated.tolist() == [False, False, False, True, True]
    with pytest.raises(EngineError, match="routing for 3 tokens"):
        align_to_tokens(moe[:3], [5, 6, 7], [8, 9, 10], "vllm", "s")


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
@pytest.mark.parametrize("n_experts", [16, 300])  # uint8 and uint16 on the vLLM wire
def test_real_http_round_trip_gives_the_fake_routers_ids(tmp_path, engine, n_experts):
    mdir = make_model_dir(tmp_path / "m", n_experts=n_experts)
    cfg = routing_config_from_dir(mdir)
    prompt = [1, 10, 11, 12]
    with fake_engine(engine, n_experts) as srv:
        client = EngineClient(srv.url, engine, timeout=5)
        rec = _to_record(_Engine(engine, client, cfg, None), _Prompt("p0", "math", "t", prompt), 3, 0.0)
        client.close()
    full = prompt + generated_ids(prompt, 3)
    assert rec.token_ids.tolist() == full[:-1]  # the last sampled token has no routing
    assert rec.generated.tolist() == [False] * 4 + [True] * 2
    for pos, tok in enumerate(full[:-1]):
        for li, layer in enumerate(cfg.moe_layers):
            assert rec.expert_ids[pos, li].tolist() == [route(tok, pos, layer, r, n_experts) for r in range(TOP_K)]
    assert rec.gate_weights is None
    if engine == "sglang":
        assert srv.requests[0]["return_routed_experts"] is True
    else:
        assert srv.requests[0]["model"] == "tiny-k2" and srv.requests[0]["prompt"] == prompt


def test_vllm_legacy_json_lists_are_read(config):
    with fake_engine("vllm", 16, mode="legacy_lists") as srv:
        client = EngineClient(srv.url, "vllm", timeout=5)
        rec = _to_record(_Engine("vllm", client, config, None), _Prompt("p", "", "t", [1, 4, 5]), 2, 0.0)
    assert rec.n_tokens == 4 and rec.expert_ids.shape == (4, 3, TOP_K)


def test_teacher_forced_keeps_prompt_tokens_only(config):
    with fake_engine("sglang", 16) as srv:
        client = EngineClient(srv.url, "sglang", timeout=5)
        rec = _to_record(_Engine("sglang", client, config, None), _Prompt("p", "", "t", [1, 4, 5, 6]), 0, 0.0)
    assert rec.token_ids.tolist() == [1, 4, 5, 6] and not rec.generated.any()
    assert srv.requests[0]["sampling_params"]["max_new_tokens"] == 1


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("no_capture", "returned no routed experts: restart it with --enable-return-routed-experts"),
        ("http500", "HTTP 500: CUDA out of memory"),
        ("bad_layers", "5 layers per token but the model tiny-k2 has 4 decoder layers"),
        ("bad_k", "top-3 per layer but"),
        ("bad_ids", "ids outside 0..15"),
    ],
)
@pytest.mark.parametrize("engine", ["vllm", "sglang"])
def test_server_faults_become_one_line_errors(config, engine, mode, message):
    if engine == "sglang" and mode == "bad_k":  # a flat buffer cannot tell a wrong k from a wrong layer count
        message = "6 layers per token but the model tiny-k2 has 4 decoder layers"
    with fake_engine(engine, 16, mode=mode) as srv:
        client = EngineClient(srv.url, engine, timeout=5)
        with pytest.raises(EngineError, match=message) as info:
            _to_record(_Engine(engine, client, config, None), _Prompt("p", "", "t", [1, 4, 5]), 2, 0.0)
    assert "\n" not in str(info.value)


def test_timeout_is_reported_with_what_to_do(config):
    with fake_engine("sglang", 16, mode="slow") as srv:
        client = EngineClient(srv.url, "sglang", timeout=0.5)
        with pytest.raises(EngineError, match=r"did not answer POST /generate within 0.5 s: raise timeout"):
            client.post_json("/generate", {"input_ids": [1], "sampling_params": {"max_new_tokens": 1}})


def test_unreachable_server_and_wrong_engine():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(EngineError, match="cannot reach the vllm server"):
        EngineClient(f"http://127.0.0.1:{port}", "vllm", timeout=2).get_json("/v1/models")
    with fake_engine("sglang", 16) as srv, pytest.raises(EngineError, match="no /v1/models endpoint"):
        EngineClient(srv.url, "vllm", timeout=2).get_json("/v1/models")
    with pytest.raises(EngineError, match="not an HTTP URL"):
        EngineClient("127.0.0.1:8000", "vllm")


def test_tokenizer_attrs_hold_vocab_by_id(model_dir):
    tok = load_tokenizer(model_dir)
    attrs = tokenizer_attrs(tok, "tiny-k2")
    assert attrs["vocab"][10] == "w6" and attrs["special_tokens"]["<s>"] == 1


def test_vllm_answer_has_upstreams_shape_and_the_echo_is_checked(config):
    """vLLM's CompletionResponse: prompt_token_ids, token_ids, routed_experts per choice, none at the top."""
    with fake_engine("vllm", 16) as srv:
        client = EngineClient(srv.url, "vllm", timeout=5)
        path, payload = vllm.request([1, 4, 5], model="tiny-k2", max_new_tokens=2, temperature=0.0)
        resp = client.post_json(path, payload)
        assert payload["return_token_ids"] is True
        assert "prompt_token_ids" not in resp and "routed_experts" not in resp
        assert resp["choices"][0]["prompt_token_ids"] == [1, 4, 5]
        ids, raw = vllm.parse(resp, [1, 4, 5])
        assert raw.shape == (4, N_LAYERS, TOP_K) and len(ids) == 2
        with pytest.raises(EngineError, match="3 sent, first difference at token 1"):
            vllm.parse(resp, [1, 5, 5])  # what a top-level-only check would never have seen


@pytest.mark.parametrize(
    ("engine", "mode", "message"),
    [
        ("vllm", "retokenized", "vllm echoed other prompt token ids than were sent"),
        ("vllm", "no_echo", "no choices\\[0\\].prompt_token_ids"),
        ("sglang", "retokenized", "sglang routed 4 prompt tokens but 3 were sent"),
    ],
)
def test_retokenized_prompt_is_refused_in_one_line(config, engine, mode, message):
    with fake_engine(engine, 16, mode=mode) as srv:
        client = EngineClient(srv.url, engine, timeout=5)
        with pytest.raises(EngineError, match=message) as info:
            _to_record(_Engine(engine, client, config, None), _Prompt("p", "", "t", [1, 4, 5]), 2, 0.0)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("mode", ["ok", "legacy_lists"])
def test_vllm_chat_answer_shape_reads_with_the_same_parser(model_dir, mode):
    """ChatCompletionResponse: the echo at response level (not per choice), routing per choice; both read."""
    tok = load_tokenizer(model_dir)
    messages = [{"role": "user", "content": "w5 w6 w7"}]
    ours = tok.apply_chat_template(messages, add_generation_prompt=True)
    ours = [int(t) for t in (ours["input_ids"] if hasattr(ours, "keys") else ours)]
    with fake_engine("vllm", 16, mode=mode, tokenizer=tok) as srv:
        client = EngineClient(srv.url, "vllm", timeout=5)
        body = {"model": "tiny-k2", "messages": messages, "max_completion_tokens": 2, "return_token_ids": True}
        resp = client.post_json("/v1/chat/completions", body)
    assert resp["object"] == "chat.completion" and resp["prompt_token_ids"] == ours
    assert "prompt_token_ids" not in resp["choices"][0]
    ids, raw = vllm.parse(resp, ours)
    assert len(ids) == 2 and raw.shape == (len(ours) + 1, N_LAYERS, TOP_K)
    with pytest.raises(EngineError, match="echoed other prompt token ids"):
        vllm.parse(resp, [*ours[:-1], 4])
