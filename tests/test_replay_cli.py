"""``workbench replay`` and ``workbench agent`` end to end through the real CLI, and their refusals."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hooks_helpers import tiny_deepseek
from transcripts_helpers import k2_test_tokenizer, tool_loop_transcript

WORKBENCH = [sys.executable, "-c", "from workbench.cli.app import main; main()"]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*WORKBENCH, *map(str, args)], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("ckpt")
    tok = k2_test_tokenizer()
    tiny_deepseek(vocab_size=len(tok), max_position_embeddings=4096).save_pretrained(d)
    tok.save_pretrained(d)
    return d


def _transcripts(path: Path, *objs: dict) -> Path:
    path.write_text("".join(json.dumps(o) + "\n" for o in objs))
    return path


@pytest.mark.slow
def test_replay_end_to_end(tmp_path, checkpoint):
    from workbench.store.io import open_store
    from workbench.transcripts import transcript_view

    a, b = tool_loop_transcript(2), tool_loop_transcript(4)
    b["id"] = "t2"
    src = _transcripts(tmp_path / "t.jsonl", a, b)
    store = tmp_path / "s.zarr"
    r = _cli("replay", "--model", checkpoint, "--transcripts", src, "--out", store, "--chunk-tokens", "256")
    assert r.returncode == 0, r.stderr
    assert "replayed 2 transcripts" in r.stderr
    ds = open_store(store)
    assert [str(s) for s in ds.sequence.values] == ["t1", "t2"]
    view = transcript_view(ds, "t2")
    assert [v.step for v in view if v.kind == "think"] == [0, 1, 2, 3, 4]
    assert [v.label for v in view if v.kind == "tool_call"][:2] == ["functions.calculator:0", "functions.calculator:1"]
    assert ds.attrs["tokenizer"]["vocab"][int(ds.token_id.values[0])] == "<|im_system|>"
    assert not np.asarray(ds.generated.values).any()
    again = _cli("replay", "--model", checkpoint, "--transcripts", src, "--out", store)
    assert again.returncode == 2 and "already in" in again.stderr and "Traceback" not in again.stderr


def test_replay_refuses_bad_transcript_before_loading(tmp_path, checkpoint):
    bad = tool_loop_transcript(1)
    bad["id"] = "t2"
    bad["messages"][2]["tool_calls"][0]["function"]["name"] = None
    src = _transcripts(tmp_path / "t.jsonl", tool_loop_transcript(1), bad)
    r = _cli("replay", "--model", checkpoint, "--transcripts", src, "--out", tmp_path / "s.zarr")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("error: t.jsonl line 2: messages[2].tool_calls[0]")
    assert not (tmp_path / "s.zarr").exists()
    r = _cli("replay", "--model", tmp_path / "nope", "--transcripts", src, "--out", tmp_path / "s.zarr")
    assert r.returncode == 2 and "error:" in r.stderr and "Traceback" not in r.stderr


def test_agent_refusals(tmp_path, checkpoint):
    r = _cli("agent", "--model", checkpoint, "--task", "hi", "--tools", "python,web", "--out", tmp_path / "a.zarr")
    assert r.returncode == 2 and "unknown tool(s) web" in r.stderr
    r = _cli("agent", "--model", checkpoint, "--task", " ", "--out", tmp_path / "a.zarr")
    assert r.returncode == 2 and "--task is empty" in r.stderr
    assert not (tmp_path / "a.zarr").exists()


@pytest.mark.slow
def test_agent_end_to_end_on_a_random_model(tmp_path, checkpoint):
    from workbench.store.io import open_store

    out, jl = tmp_path / "a.zarr", tmp_path / "a.jsonl"
    r = _cli("agent", "--model", checkpoint, "--task", "What is 6*7?", "--tools", "calculator", "--out", out,
             "--max-steps", "2", "--max-new-tokens", "12", "--id", "ep1", "--transcript-out", jl)  # fmt: skip
    assert r.returncode == 0, r.stderr
    ds = open_store(out)
    assert [str(s) for s in ds.sequence.values] == ["ep1"]
    assert "step 0 (" in r.stderr and "-> " in r.stderr
    (line,) = jl.read_text().splitlines()
    episode = json.loads(line)
    assert episode["messages"][0] == {"role": "user", "content": "What is 6*7?"}
    # the stored tokens are the episode as the model read it (a random model's turns get re-rendered)
    from transformers import AutoTokenizer

    from workbench.transcripts import render_as_generated, transcript_from_dict

    tok = AutoTokenizer.from_pretrained(checkpoint)
    want = render_as_generated(tok, transcript_from_dict(episode)).token_ids
    assert np.asarray(ds.token_id.values).tolist() == want.tolist()


def test_replay_past_the_window_says_what_it_means(tmp_path):
    """No tokenizer 'indexing errors' warning (the workbench windows); one line on half-window context."""
    d = tmp_path / "ckpt"
    tok = k2_test_tokenizer()
    tok.model_max_length = 64
    tiny_deepseek(vocab_size=len(tok), max_position_embeddings=4096).save_pretrained(d)
    tok.save_pretrained(d)
    src = _transcripts(tmp_path / "t.jsonl", tool_loop_transcript(3))
    r = _cli("replay", "--model", d, "--transcripts", src, "--out", tmp_path / "s.zarr", "--window", "64")
    assert r.returncode == 0, r.stderr
    assert "indexing errors" not in r.stderr and "longer than the specified maximum" not in r.stderr
    (note,) = [x for x in r.stderr.splitlines() if "context window" in x]
    assert "past the 64-token context window" in note and "previous 32+ tokens as context" in note
