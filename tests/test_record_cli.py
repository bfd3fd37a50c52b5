"""`workbench record` end to end on tiny checkpoints: a real store that plain xarray opens, appends, bad input."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from hooks_helpers import PROMPTS, save_tiny_checkpoint, write_prompts
from typer.testing import CliRunner

from workbench.cli.app import app
from workbench.errors import StoreError, WorkbenchError

runner = CliRunner()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-ds")


@pytest.fixture(scope="module")
def other_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-mixtral", family="mixtral")


def record(*args: str | Path) -> None:
    """Invoke `workbench record` in-process; re-raise what the CLI would print as `error: ...`."""
    result = runner.invoke(app, ["record", *map(str, args)], catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output


def snapshot(store: Path) -> dict[str, str]:
    """Every file of a store and the hash of its bytes (to show a refused run left it untouched).

    The writer-lock file is left out: checking for a concurrent writer takes and releases the lock,
    which rewrites the holder line in it; no data or metadata of the store is touched.
    """
    return {
        str(p.relative_to(store)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(store.rglob("*"))
        if p.is_file() and p.name != ".workbench-writer.lock"
    }


@pytest.fixture
def no_model_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refused runs must fail before the model's weights are read."""

    def fail(*a: object, **k: object) -> None:
        raise AssertionError("load_model was called although the input could be refused before")

    monkeypatch.setattr("workbench.models.load_model", fail)


@pytest.mark.slow
def test_record_writes_a_store_plain_xarray_opens(tmp_path: Path, ckpt: Path) -> None:
    prompts = write_prompts(tmp_path / "p.jsonl", PROMPTS)
    out = tmp_path / "run.zarr"
    record("--model", ckpt, "--prompts", prompts, "--out", out, "--max-new-tokens", 4, "--batch-size", 2, "--scores")

    ds = xr.open_zarr(out)  # no workbench import needed
    assert set(ds.sizes) >= {"token", "layer", "k", "expert", "sequence", "span"}
    assert (ds.sizes["layer"], ds.sizes["k"], ds.sizes["expert"]) == (3, 2, 8)
    assert ds.layer.values.tolist() == [1, 2, 3]
    assert ds.sequence.values.tolist() == [p["id"] for p in PROMPTS]
    assert ds.sequence_domain.values.tolist() == [p["domain"] for p in PROMPTS]
    attrs = ds.attrs
    assert attrs["model"]["model_name"] == "tiny-ds" and attrs["model"]["family"] == "deepseek_v3"
    assert attrs["capture"] == "hooks" and attrs["has_router_scores"]
    assert len(attrs["tokenizer"]["vocab"]) >= 300 and attrs["tokenizer"]["special_tokens"]["[EOS]"] == 1

    # every sequence: its prompt tokens ("text") then up to 4 routed generated tokens ("completion")
    kinds = attrs["segment_kinds"]
    lengths = ds.sequence_length.values
    generated = ds.generated.values
    starts = ds.sequence_start.values
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ckpt)
    for i, p in enumerate(PROMPTS):
        rows = slice(starts[i], starts[i] + lengths[i])
        n_gen = int(generated[rows].sum())
        assert 1 <= n_gen <= 4
        if "text" in p:
            prompt_ids = tok(p["text"])["input_ids"]
            assert ds.token_id.values[rows][: len(prompt_ids)].tolist() == prompt_ids
            assert lengths[i] == len(prompt_ids) + n_gen
    span_kinds = [kinds[c] for c in ds.span_kind.values]
    assert span_kinds == ["text", "completion"] * len(PROMPTS)

    # the stored routing of a sequence is the routing of a teacher-forced forward over its stored tokens
    from workbench.hooks import route_tokens

    from workbench.models import load_model

    model, _ = load_model(ckpt)
    rows = slice(starts[1], starts[1] + lengths[1])
    again = route_tokens(model, ds.token_id.values[rows])
    assert np.array_equal(ds.expert_ids.values[rows], again.expert_ids)
    np.testing.assert_allclose(ds.gate_weights.values[rows], again.gate_weights, rtol=2e-3, atol=2e-3)  # float16

    # a second run appends new prompts; the same ids again are refused before the model loads
    more = write_prompts(tmp_path / "more.jsonl", [{"id": "x1", "domain": "code", "text": "print(add(2, 3))"}])
    record("--model", ckpt, "--prompts", more, "--out", out, "--scores")
    assert xr.open_zarr(out).sizes["sequence"] == len(PROMPTS) + 1
    before = snapshot(out)
    with pytest.raises(WorkbenchError, match=r"already in .*x1"):
        record("--model", ckpt, "--prompts", more, "--out", out, "--scores")
    assert snapshot(out) == before


@pytest.mark.usefixtures("no_model_load")
def test_store_of_another_model_is_refused_untouched(tmp_path: Path, ckpt: Path, other_ckpt: Path) -> None:
    from workbench.models import planned_routing_config
    from workbench.store.dataset import SequenceRecord
    from workbench.store.io import StoreWriter

    out = tmp_path / "ds.zarr"
    cfg = planned_routing_config(ckpt)
    tok = {"name": "t", "vocab": [f"t{i}" for i in range(320)], "special_tokens": {}}
    with StoreWriter(out, cfg, tok) as w:
        w.add(
            SequenceRecord(
                "s0", "math", "test", np.arange(4), np.zeros((4, 3, 2), np.int16), np.ones((4, 3, 2), np.float32)
            )
        )
    before = snapshot(out)
    prompts = write_prompts(tmp_path / "p.jsonl", PROMPTS[:1])
    with pytest.raises(StoreError, match=r"(?i)model|signature|family"):
        record("--model", other_ckpt, "--prompts", prompts, "--out", out)
    assert snapshot(out) == before

    # an unknown schema version is named, and the store is left as it was
    root = json.loads((out / "zarr.json").read_text())
    root["attributes"]["schema_version"] = 99
    (out / "zarr.json").write_text(json.dumps(root))
    before = snapshot(out)
    with pytest.raises(StoreError, match="99"):
        record("--model", ckpt, "--prompts", prompts, "--out", out)
    assert snapshot(out) == before


@pytest.mark.usefixtures("no_model_load")
@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"id": "a", "domain": "math", "text": "1+1"}', "{not json", "{}"], r"p\.jsonl:2: not valid JSON"),
        (['{"id": "a", "domain": "math", "text": "1+1"}', '{"id": "b", "domain": "math", "text": "  "}'], "empty"),
        (['{"id": "a", "text": "x"}'], r'p\.jsonl:1: missing "domain"'),
        (['{"id": "a", "domain": "m", "text": "x"}', '{"id": "a", "domain": "m", "text": "y"}'], "duplicate id"),
    ],
)
def test_bad_prompt_files(tmp_path: Path, ckpt: Path, lines: list[str], message: str) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("\n".join(lines) + "\n")
    out = tmp_path / "never.zarr"
    with pytest.raises(WorkbenchError, match=message):
        record("--model", ckpt, "--prompts", prompts, "--out", out)
    assert not out.exists()


@pytest.mark.usefixtures("no_model_load")
def test_bad_models(tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "p.jsonl", PROMPTS[:1])
    with pytest.raises(WorkbenchError, match="no such directory"):
        record("--model", tmp_path / "nope", "--prompts", prompts, "--out", tmp_path / "o.zarr")
    dense = tmp_path / "dense"
    dense.mkdir()
    (dense / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 16, "num_hidden_layers": 2}))
    with pytest.raises(WorkbenchError, match="not a Mixture-of-Experts"):
        record("--model", dense, "--prompts", prompts, "--out", tmp_path / "o.zarr")
    assert not (tmp_path / "o.zarr").exists()


@pytest.mark.usefixtures("no_model_load")
def test_bad_device_map_file_is_refused_before_loading(tmp_path: Path, ckpt: Path) -> None:
    prompts = write_prompts(tmp_path / "p.jsonl", PROMPTS[:1])
    bad = tmp_path / "map.json"
    bad.write_text('{"model.layers.1": ')
    with pytest.raises(WorkbenchError, match=r"--device-map .*map\.json: cannot read it as JSON"):
        record("--model", ckpt, "--prompts", prompts, "--out", tmp_path / "o.zarr", "--device-map", bad)
    bad.write_text("[]")
    with pytest.raises(WorkbenchError, match="expected a JSON object of module name -> device"):
        record("--model", ckpt, "--prompts", prompts, "--out", tmp_path / "o.zarr", "--device-map", bad)
    assert not (tmp_path / "o.zarr").exists()


def test_device_map_file_places_layers(tmp_path: Path, ckpt: Path) -> None:
    """A placement saved as JSON (as layer_device_map's output would be) reaches accelerate."""
    from workbench.models import load_model

    placement = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers.0": "cpu",
                 "model.layers.1": "disk", "model.layers.2": "cpu", "model.layers.3": "cpu", "model.norm": "cpu",
                 "lm_head": "cpu"}  # fmt: skip
    path = tmp_path / "map.json"
    path.write_text(json.dumps(placement))
    model, _ = load_model(ckpt, device_map=str(path), offload_folder=tmp_path / "offload")
    assert model.hf_device_map == placement


def test_cli_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    """The real entry point: one `error: ...` line on stderr, exit status 2, no traceback."""
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"id": "a", "domain": "math", "text": "1+1"}\n\n{"id": "b", "domain": "math"}\n')
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    cli = str(Path(sys.executable).parent / "workbench")
    proc = subprocess.run(
        [cli, "record", "--model", "k2-mini", "--prompts", str(prompts), "--out", str(tmp_path / "o.zarr")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines == ['error: p.jsonl:3: give exactly one of "text" or "messages"']
