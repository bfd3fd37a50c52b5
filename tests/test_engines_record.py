"""record_from_engine end to end: a real local HTTP server answering as vLLM/SGLang, a real store on disk."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from engines_helpers import FIRST_DENSE, N_LAYERS, TOP_K, fake_engine, generated_ids, make_model_dir, route

from workbench.engines import EngineError, record_from_engine
from workbench.errors import WorkbenchError
from workbench.store import schema as S
from workbench.store.io import open_store

PROMPTS = [
    {"id": "m0", "domain": "math", "text": "w1 w2 w3 w4"},
    {"id": "c0", "domain": "code", "text": "w9 w8 w7"},
    {"id": "l0", "domain": "language", "text": "w20 w21 w22 w23 w24 w25"},
    {"id": "t0", "domain": "agent", "messages": [{"role": "user", "content": "w5 w6"}]},
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("tiny") / "tiny-k2", n_experts=300)  # uint16 on the vLLM wire


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
def test_store_holds_the_servers_routing_ids_only(tmp_path, model_dir, engine):
    out = str(tmp_path / f"{engine}.zarr")
    with fake_engine(engine, 300) as srv:
        result = record_from_engine(
            engine, srv.url, PROMPTS, out, model=str(model_dir), max_new_tokens=3, concurrency=2, progress=False
        )
    assert result["sequences"] == 4
    ds = open_store(out)
    assert ds.attrs["capture"] == engine and ds.attrs["has_gate_weights"] is False
    assert ds[S.LAYER].values.tolist() == list(range(FIRST_DENSE, N_LAYERS))
    assert ds.sizes[S.K] == TOP_K and ds.sizes[S.TOKEN] == result["tokens"]
    assert np.isnan(ds[S.GATE_WEIGHTS].values.astype(np.float32)).all()
    assert ds[S.SEQUENCE].values.tolist() == ["m0", "c0", "l0", "t0"]  # prompt order, whatever the answer order
    assert ds[S.SEQUENCE_DOMAIN].values.tolist() == ["math", "code", "language", "agent"]
    starts, lengths = ds[S.SEQUENCE_START].values, ds[S.SEQUENCE_LENGTH].values
    tok, ids, gen = ds[S.TOKEN_ID].values, ds[S.EXPERT_IDS].values, ds[S.GENERATED].values
    for row in range(len(PROMPTS)):
        a, n = int(starts[row]), int(lengths[row])
        prompt = tok[a : a + n][~gen[a : a + n]].tolist()
        full = prompt + generated_ids(prompt, 3)
        assert tok[a : a + n].tolist() == full[:-1]  # the last sampled token has no routing: not stored
        assert gen[a : a + n].sum() == 2
        for pos in range(n):
            for li, layer in enumerate(range(FIRST_DENSE, N_LAYERS)):
                want = [route(full[pos], pos, layer, r, 300) for r in range(TOP_K)]
                assert ids[a + pos, li].tolist() == want


def test_bad_payload_writes_nothing(tmp_path, model_dir):
    out = tmp_path / "never.zarr"
    with fake_engine("vllm", 300, mode="bad_layers") as srv, pytest.raises(EngineError, match="5 layers per token"):
        record_from_engine("vllm", srv.url, PROMPTS, str(out), model=str(model_dir), progress=False)
    assert not out.exists()


@pytest.mark.parametrize("mode", ["no_capture", "http500"])
def test_server_without_capture_flag_or_failing_writes_nothing(tmp_path, model_dir, mode):
    out = tmp_path / "never.zarr"
    with fake_engine("sglang", 300, mode=mode) as srv, pytest.raises(EngineError):
        record_from_engine("sglang", srv.url, PROMPTS, str(out), model=str(model_dir), progress=False)
    assert not out.exists()


def test_failure_mid_run_keeps_committed_sequences_and_says_how_many(tmp_path, model_dir):
    out = tmp_path / "mid.zarr"
    many = [{"id": f"s{i}", "domain": "math", "text": f"w{i} w{i + 1}"} for i in range(12)]
    with fake_engine("sglang", 300, mode="fail_after_2") as srv:
        with pytest.raises(EngineError, match=r"HTTP 500.*\(2 of 12 sequences were committed"):
            record_from_engine("sglang", srv.url, many, str(out), model=str(model_dir), concurrency=1, progress=False)
        assert len(srv.requests) <= 4  # the failing one and at most one already in flight: the rest was not sent
    ds = open_store(str(out))
    assert ds[S.SEQUENCE].values.tolist() == ["s0", "s1"]


def test_append_keeps_existing_sequences_and_refuses_duplicate_ids(tmp_path, model_dir):
    out = str(tmp_path / "app.zarr")
    with fake_engine("sglang", 300) as srv:
        record_from_engine("sglang", srv.url, PROMPTS[:2], out, model=str(model_dir), progress=False)
        record_from_engine("sglang", srv.url, PROMPTS[2:], out, model=str(model_dir), progress=False)
        assert open_store(out).sizes[S.SEQUENCE] == 4
        with pytest.raises(WorkbenchError):
            record_from_engine("sglang", srv.url, PROMPTS[:1], out, model=str(model_dir), progress=False)
    assert open_store(out).sizes[S.SEQUENCE] == 4


def test_other_model_store_is_refused_before_any_request(tmp_path, model_dir):
    out = str(tmp_path / "a.zarr")
    other = make_model_dir(tmp_path / "other", n_experts=16)
    with fake_engine("sglang", 300) as srv:
        record_from_engine("sglang", srv.url, PROMPTS[:1], out, model=str(model_dir), progress=False)
        n_before = len(srv.requests)
        with pytest.raises(WorkbenchError):
            record_from_engine("sglang", srv.url, PROMPTS[:1], out, model=str(other), progress=False)
        assert len(srv.requests) == n_before


def test_duplicate_prompt_ids_and_unknown_engine(tmp_path, model_dir):
    with pytest.raises(EngineError, match="appears more than once"):
        record_from_engine("sglang", "http://127.0.0.1:1", PROMPTS[:1] * 2, str(tmp_path / "x"), model=str(model_dir))
    with pytest.raises(EngineError, match="choose one of vllm, sglang"):
        record_from_engine("tgi", "http://127.0.0.1:1", PROMPTS, str(tmp_path / "x"), model=str(model_dir))


def test_cli_unreachable_server_is_one_line_exit_2(tmp_path, model_dir):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("\n".join(json.dumps(p) for p in PROMPTS[:3]) + "\n")
    out = tmp_path / "cli.zarr"
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("workbench")), "record", "--engine", "vllm", "--url", "http://127.0.0.1:9",
         "--model", str(model_dir), "--prompts", str(prompts), "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach the vllm server")
    assert not out.exists()


def test_cli_timeout_option_reaches_the_client(tmp_path, model_dir):
    """`workbench record --engine ... --timeout S`: a server slower than S gives one line naming the fix."""
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("\n".join(json.dumps(p) for p in PROMPTS[:1]) + "\n")
    out = tmp_path / "slow.zarr"
    with fake_engine("sglang", 300, mode="slow") as srv:
        proc = subprocess.run(
            [str(Path(sys.executable).with_name("workbench")), "record", "--engine", "sglang", "--url", srv.url,
             "--model", str(model_dir), "--prompts", str(prompts), "--out", str(out), "--timeout", "0.5",
             "--concurrency", "1"],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "within 0.5 s: raise --timeout" in lines[0], proc.stderr
    assert not out.exists()
