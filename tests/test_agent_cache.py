"""The KV-cached agent loop on the bundled mini K2: what it records equals a one-pass replay of its transcript.

The loop feeds every token once on top of a cache kept across steps (and crops the cache where a re-render
differs from what was generated); ``workbench.recording.replay`` routes the final transcript in one
teacher-forced pass. Both go through the real store, and every token row must agree.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from workbench.recording import record_agent, replay
from workbench.store.io import open_store

pytestmark = pytest.mark.slow

SC, CB, AB, CE, SE = (
    "<|tool_calls_section_begin|>",
    "<|tool_call_begin|>",
    "<|tool_call_argument_begin|>",
    "<|tool_call_end|>",
    "<|tool_calls_section_end|>",
)


class Scripted:
    """Force each generate call to emit the next scripted turn (a logits processor)."""

    def __init__(self, turns: list[list[int]]) -> None:
        self.turns, self.turn, self.start = turns, -1, -1

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        n = input_ids.shape[1]
        if self.start < 0 or n < self.start or n - self.start >= len(self.turns[self.turn]):
            self.turn, self.start = self.turn + 1, n
        forced = torch.full_like(scores, float("-inf"))
        forced[:, self.turns[self.turn][n - self.start]] = 0.0
        return forced


@pytest.fixture(scope="module")
def mini():
    from workbench.models import load_model

    return load_model("k2-mini")


def _rows(path, sid):  # type: ignore[no-untyped-def]
    ds = open_store(path)
    (i,) = np.nonzero(ds.sequence.values == sid)[0]
    a = int(ds.sequence_start.values[i])
    b = a + int(ds.sequence_length.values[i])
    return (
        np.asarray(ds.token_id.values[a:b]),
        np.asarray(ds.expert_ids.values[a:b]),
        np.asarray(ds.gate_weights.values[a:b], np.float32),
    )


def _same_as_replay(tmp_path, mini, episode, *, allow_special=False):  # type: ignore[no-untyped-def]
    model, tok = mini
    jl, agent_store, replay_store = tmp_path / "ep.jsonl", tmp_path / "agent.zarr", tmp_path / "replay.zarr"
    jl.write_text(json.dumps({"id": "ep", "domain": "agent", "messages": episode.messages, "tools": episode.tools}))
    summary = replay(model, jl, replay_store, tokenizer=tok, allow_special=allow_special, progress=False)
    assert summary.truncated_context_tokens == 0
    ids_a, eids_a, w_a = _rows(agent_store, "ep")
    ids_r, eids_r, w_r = _rows(replay_store, "ep")
    assert ids_a.tolist() == ids_r.tolist()
    bad = np.nonzero(~(eids_a == eids_r).all(axis=(1, 2)))[0]
    assert bad.size == 0, f"rows {bad[:10].tolist()} routed differently from the one-pass replay"
    np.testing.assert_allclose(w_a, w_r, rtol=2e-3, atol=2e-3)  # float16 in the store


def test_greedy_episode_equals_one_pass_replay(tmp_path, mini):
    model, tok = mini
    ep = record_agent(
        model, "What is 17 * 23 + 4?", tmp_path / "agent.zarr", tokenizer=tok, tools=["calculator", "python"],
        episode_id="ep", max_steps=4,
    )  # fmt: skip
    assert ep.steps and ep.record.generated.any() and not ep.record.generated.all()
    assert ep.rerouted_tokens == 0
    # each token is read by one forward: decode steps plus one prefill per step and one at the end
    assert ep.forwards <= int(ep.record.generated.sum()) + len(ep.steps) + 1
    _same_as_replay(tmp_path, mini, ep)


def test_cache_is_cropped_where_the_template_re_renders(tmp_path, mini):
    """A malformed call, then K2 Thinking drops that turn's reasoning once the user speaks: the cache is cut back."""
    model, tok = mini
    texts = [
        f"<think>Compute.</think>{SC}{CB}functions.calculator:0{AB}{{not json{CE}{SE}<|im_end|>",
        f'<think>Again.</think>{SC}{CB}functions.calculator:0{AB}{{"expression": "17*23+4"}}{CE}{SE}<|im_end|>',
        f'<think>And check.</think>{SC}{CB}functions.python:1{AB}{{"code": "print(17*23+4)"}}{CE}{SE}<|im_end|>',
        "<think>Both say 395.</think>395.<|im_end|>",
    ]
    turns = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    ep = record_agent(
        model, "What is 17 * 23 + 4?", tmp_path / "agent.zarr", tokenizer=tok, tools=["calculator", "python"],
        episode_id="ep", max_steps=6, max_new_tokens=64,
        generate_kwargs={"logits_processor": [Scripted(turns)]},
    )  # fmt: skip
    assert ep.stop_reason == "answered" and [s.results for s in ep.steps][1:3] == [["395"], ["395\n"]]
    assert ep.rerouted_tokens > 0  # the malformed turn's reasoning was re-rendered away: cache cropped
    assert ep.answer == "395."
    # the malformed turn's content holds the section markers the model wrote as special tokens
    _same_as_replay(tmp_path, mini, ep, allow_special=True)


def test_cli_prints_each_step_and_the_answer(tmp_path):
    """`workbench agent` on the mini K2: thinking, call and result lines per step on stderr, the answer on stdout."""
    import subprocess
    import sys

    jl = tmp_path / "ep.jsonl"
    r = subprocess.run(
        [sys.executable, "-c", "from workbench.cli.app import main; main()", "agent", "--model", "k2-mini",
         "--task", "What is 17 * 23 + 4?", "--tools", "calculator,python", "--max-steps", "4",
         "--out", str(tmp_path / "a.zarr"), "--transcript-out", str(jl)],
        capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    messages = json.loads(jl.read_text())["messages"]
    lines = r.stderr.splitlines()
    assert "step 0 (" in r.stderr and any(x.startswith("  thinking: ") for x in lines)
    calls = [m for m in messages if m.get("tool_calls")]
    if calls:  # the mini K2 calls the calculator on this task; its result is shown under the call
        name = calls[0]["tool_calls"][0]["function"]["name"]
        at = next(i for i, x in enumerate(lines) if x.startswith(f"  call {name}: "))
        first = next(m for m in messages if m["role"] == "tool")["content"].splitlines()[0]
        assert lines[at + 1] == "    -> " + " ".join(first.split())[:99]
    assert all(len(x) <= 120 for x in lines if x.startswith("  "))
    assert r.stdout.strip() == messages[-1]["content"].strip() and "answer: " in r.stderr
