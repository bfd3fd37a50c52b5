"""``workbench.recording``: record/replay from Python with one preflight, on the bundled mini K2.

- a notebook's loaded model records in-process (no second load), equal to the CLI's recording;
- refusals come before any weight is read and name Python parameters (the CLI maps them to flags);
- prompt text is plain text by default: "<|im_end|>" written in a prompt is not the end-of-turn token;
- the recording runs in a real Jupyter kernel with tqdm's notebook progress bar.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from workbench.errors import ParameterError, WorkbenchError
from workbench.prompts import PromptFileError, encode_text

PROMPTS = [
    {"id": "m1", "domain": "math", "text": "Solve 3 * (4 + 5) = 27."},
    {"id": "c1", "domain": "code", "text": "def mean(xs):\n    return sum(xs) / len(xs)"},
    {"id": "l1", "domain": "language", "text": "The fox ran across the field."},
]
IM_END = "<|im_end|>"


@pytest.fixture(scope="module")
def mini() -> tuple[object, object]:
    from workbench.models import load_model

    return load_model("k2-mini")


@pytest.fixture(scope="module")
def tokenizer() -> object:
    from workbench.models import load_tokenizer

    return load_tokenizer("k2-mini")


@pytest.fixture
def no_model_load(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*a: object, **k: object) -> None:
        raise AssertionError("load_model was called although the input could be refused before")

    monkeypatch.setattr("workbench.models.load_model", fail)


def test_special_token_strings_are_plain_text_by_default(tokenizer: object) -> None:
    special_id = tokenizer.convert_tokens_to_ids(IM_END)  # type: ignore[attr-defined]
    text = f"the answer {IM_END} is 4"
    plain = encode_text(tokenizer, text)
    assert special_id not in plain  # the characters '<', '|', 'im', ... not the end-of-turn token
    assert tokenizer.decode(plain) == text  # type: ignore[attr-defined]
    parsed = encode_text(tokenizer, text, allow_special=True)
    assert special_id in parsed and parsed != plain
    assert encode_text(tokenizer, "no specials here") == encode_text(tokenizer, "no specials here", allow_special=True)


def test_chat_prompt_special_strings_are_plain_text_unless_allowed(tokenizer: object) -> None:
    from workbench.prompts import encode_prompt, parse_prompts

    end = tokenizer.convert_tokens_to_ids(IM_END)  # type: ignore[attr-defined]
    chat, clean = parse_prompts(
        [{"id": "a", "domain": "agent", "messages": [{"role": "user", "content": f"x {IM_END} y"}]},
         {"id": "b", "domain": "agent", "messages": [{"role": "user", "content": "x y"}]}]
    )  # fmt: skip
    written_by_template = encode_prompt(tokenizer, clean).count(end)
    assert encode_prompt(tokenizer, chat).count(end) == written_by_template  # the message's string is text
    assert encode_prompt(tokenizer, chat, allow_special=True).count(end) == written_by_template + 1
    assert encode_prompt(tokenizer, clean) == encode_prompt(tokenizer, clean, allow_special=True)


@pytest.mark.usefixtures("no_model_load")
def test_refusals_before_loading_name_python_parameters(tmp_path: Path) -> None:
    from workbench.recording import record, replay

    out = tmp_path / "o.zarr"
    with pytest.raises(ParameterError, match=r"^max_new_tokens must be 0 or more"):
        record("k2-mini", PROMPTS, out, max_new_tokens=-1)
    with pytest.raises(ParameterError, match=r"^batch_size must be at least 1"):
        record("k2-mini", PROMPTS, out, batch_size=0)
    with pytest.raises(ParameterError, match=r"^unknown dtype 'fp8'"):
        record("k2-mini", PROMPTS, out, dtype="fp8")
    with pytest.raises(ParameterError, match=r"^chunk_tokens must be at least 1"):
        replay("k2-mini", [], out, chunk_tokens=0)
    with pytest.raises(PromptFileError, match=r"prompts\[1\]: duplicate id 'm1'"):
        record("k2-mini", [PROMPTS[0], PROMPTS[0]], out)
    with pytest.raises(PromptFileError, match=r"prompts\[0\]: text holds a lone surrogate"):
        record("k2-mini", [{"id": "s", "domain": "m", "text": "x \ud800"}], out)
    long = [{"id": "long", "domain": "m", "text": " ".join(["word"] * 5000)}]
    with pytest.raises(WorkbenchError, match=r"prompt 'long' \(prompts\[0\]\): 5,00\d tokens \+ 4 to generate"):
        record("k2-mini", long, out, max_new_tokens=4)
    assert not out.exists()


def test_loaded_model_records_in_process_like_the_cli(tmp_path: Path, mini: tuple[object, object]) -> None:
    from typer.testing import CliRunner

    from workbench.cli.app import app
    from workbench.recording import record
    from workbench.store.io import open_store

    model, tok = mini
    out = tmp_path / "api.zarr"
    summary = record(model, PROMPTS, out, tokenizer=tok, max_new_tokens=4, batch_size=2, progress=False)
    assert (summary.sequences, summary.store) == (3, str(out)) and summary.generated_tokens > 0
    ds = open_store(out)
    assert [str(s) for s in ds.sequence.values] == ["m1", "c1", "l1"]

    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps(p) + "\n" for p in PROMPTS))
    cli_out = tmp_path / "cli.zarr"
    args = ["record", "--model", "k2-mini", "--prompts", str(prompts), "--out", str(cli_out), "--max-new-tokens", "4",
            "--batch-size", "2"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    cli = open_store(cli_out)
    for name in ("token_id", "expert_ids", "generated", "sequence_length"):
        assert np.array_equal(ds[name].values, cli[name].values), name
    np.testing.assert_array_equal(ds.gate_weights.values, cli.gate_weights.values)

    # the same ids again: refused by the shared preflight, naming the parameter to change
    with pytest.raises(ParameterError, match=r"3 prompt id\(s\) are already in .*; use another out"):
        record(model, PROMPTS, out, tokenizer=tok)


def test_replay_in_process_with_a_loaded_model(tmp_path: Path, mini: tuple[object, object]) -> None:
    from workbench.recording import replay
    from workbench.store.io import open_store
    from workbench.transcripts import transcript_view

    model, tok = mini
    loops = Path(__file__).resolve().parents[1] / "data" / "transcripts" / "tool_loops.jsonl"
    first = [json.loads(next(ln for ln in loops.read_text().splitlines() if ln.strip()))]
    summary = replay(model, first, tmp_path / "r.zarr", tokenizer=tok, progress=False)
    ds = open_store(tmp_path / "r.zarr")
    assert summary.sequences == 1 and summary.tokens == ds.sizes["token"]
    assert any(v.kind == "tool_call" for v in transcript_view(ds, first[0]["id"]))

    bad = [dict(first[0], id="sp", messages=[{"role": "user", "content": f"say {IM_END} now"}])]
    with pytest.raises(WorkbenchError, match=r"transcript 'sp'.*messages\[0\]\.content holds '<\|im_end\|>'"):
        replay(model, bad, tmp_path / "r.zarr", tokenizer=tok, progress=False)


@pytest.mark.slow
def test_record_in_a_jupyter_kernel_shows_a_progress_widget(tmp_path: Path) -> None:
    import nbformat
    from nbclient import NotebookClient

    code = f"""
from workbench.models import load_model
from workbench.recording import record
model, tok = load_model("k2-mini")
summary = record(model, {PROMPTS!r}, {str(tmp_path / "nb.zarr")!r}, tokenizer=tok, batch_size=1)
print(summary)
"""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    NotebookClient(nb, timeout=600, kernel_name="python3").execute()
    outs = nb.cells[0].outputs
    assert not [o for o in outs if o.get("output_type") == "error"], outs
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outs), outs
    assert "recorded 3 sequences" in "".join(o.get("text", "") for o in outs)
