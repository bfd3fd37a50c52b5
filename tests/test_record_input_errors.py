"""Bad input to `workbench record/replay/agent/ablate` through the real CLI on the bundled mini K2: one
`error:` line, exit status 2, no traceback, nothing written (issue: tracebacks instead of one line)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
WORKBENCH = str(Path(sys.executable).parent / "workbench")
GOOD = {"id": "a", "domain": "math", "text": "2 + 2 ="}


def refused(*args: str | Path, cwd: Path, wrap: list[str] | None = None) -> str:
    """Run the CLI; assert exit 2 and exactly one stderr line `error: ...`; return that line."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [*(wrap or []), WORKBENCH, *map(str, args)], capture_output=True, text=True, env=env, timeout=600, cwd=cwd
    )
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith(("loading ", "Loading weights"))]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    return lines[0]


def _jsonl(path: Path, *objs: object) -> Path:
    path.write_text("".join(json.dumps(o) + "\n" for o in objs))
    return path


def test_non_utf8_inputs_are_named_by_line(tmp_path: Path) -> None:
    binary = tmp_path / "p.jsonl"
    binary.write_bytes(json.dumps(GOOD).encode() + b"\n" + bytes(range(128, 256)) + b"\n")
    out = tmp_path / "o.zarr"
    line = refused("record", "--model", "k2-mini", "--prompts", binary, "--out", out, cwd=tmp_path)
    assert line.startswith("error: p.jsonl:2: not UTF-8 text (byte 0x80")
    line = refused("ablate", "--model", "k2-mini", "--experts", "1:0", "--prompts", binary, cwd=tmp_path)
    assert line.startswith("error: p.jsonl:2: not UTF-8 text")
    png = tmp_path / "t.jsonl"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    line = refused("replay", "--model", "k2-mini", "--transcripts", png, "--out", out, cwd=tmp_path)
    assert line.startswith("error: t.jsonl line 1: not UTF-8 text (byte 0x89")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_bytes(b"hello\n\n\xff\xfe binary")
    agent = ("agent", "--model", "k2-mini", "--task", "hi", "--tools", "search", "--out", out)
    assert refused(*agent, "--docs", docs, cwd=tmp_path).startswith("error: a.md:3: not UTF-8 text (byte 0xff)")
    (tmp_path / "d.jsonl").write_bytes(b'{"title": "t", "text": "\xff"}\n')
    assert refused(*agent, "--docs", tmp_path / "d.jsonl", cwd=tmp_path).startswith("error: d.jsonl line 1: not UTF-8")
    assert not out.exists()


def test_lone_surrogate_is_refused_at_read_time(tmp_path: Path) -> None:
    p = tmp_path / "p.jsonl"
    p.write_text(json.dumps(GOOD) + "\n" + '{"id": "s", "domain": "m", "text": "x \\ud800 y"}\n')
    line = refused("record", "--model", "k2-mini", "--prompts", p, "--out", tmp_path / "o.zarr", cwd=tmp_path)
    assert line.startswith("error: p.jsonl:2: text holds a lone surrogate escape")
    assert not (tmp_path / "o.zarr").exists()


def test_prompts_longer_than_the_context_are_refused_before_loading(tmp_path: Path) -> None:
    words = _jsonl(tmp_path / "p.jsonl", GOOD, {"id": "long", "domain": "m", "text": " ".join(["word"] * 200_000)})
    out = tmp_path / "o.zarr"
    line = refused(
        "record", "--model", "k2-mini", "--prompts", words, "--out", out, "--max-new-tokens", 8, cwd=tmp_path
    )
    want = r"prompt 'long' \(p\.jsonl:2\): [\d,]{7} tokens \+ 8 to generate do not fit k2-mini's context window"
    assert re.search(want, line), line
    huge = tmp_path / "huge.jsonl"
    with huge.open("w") as fh:  # one line of 17 MiB: longer than any line the reader takes
        fh.write('{"id": "h", "domain": "m", "text": "' + "x" * (17 * 2**20) + '"}\n')
    line = refused("record", "--model", "k2-mini", "--prompts", huge, "--out", out, cwd=tmp_path)
    assert line.startswith("error: huge.jsonl:1: the line is longer than 16,777,216 bytes")
    assert not out.exists()


def test_truncated_weights_are_named(tmp_path: Path) -> None:
    model = tmp_path / "k2-cut"
    shutil.copytree(REPO / "data" / "models" / "k2-mini", model)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    p = _jsonl(tmp_path / "p.jsonl", GOOD)
    line = refused("record", "--model", model, "--prompts", p, "--out", tmp_path / "o.zarr", cwd=tmp_path)
    assert line.startswith(f"error: model weights {weights}: truncated (")
    weights.write_bytes(b"\x10\x00")
    line = refused("record", "--model", model, "--prompts", p, "--out", tmp_path / "o.zarr", cwd=tmp_path)
    assert line.startswith(f"error: model weights {weights}: its header is cut off")
    assert not (tmp_path / "o.zarr").exists()


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap for a read-only bind mount")
def test_read_only_out_is_refused_before_loading(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    wrap = ["bwrap", "--bind", "/", "/", "--ro-bind", str(ro), str(ro), "--dev", "/dev", "--proc", "/proc"]
    probe = subprocess.run([*wrap, "touch", str(ro / "x")], capture_output=True)
    if probe.returncode == 0 or b"Read-only" not in probe.stderr:
        pytest.skip(f"bubblewrap cannot make a read-only mount here: {probe.stderr[-200:]!r}")
    p = _jsonl(tmp_path / "p.jsonl", GOOD)
    loops = REPO / "data" / "transcripts" / "tool_loops.jsonl"
    for args in (
        ("record", "--model", "k2-mini", "--prompts", p, "--out", ro / "a.zarr"),
        ("replay", "--model", "k2-mini", "--transcripts", loops, "--out", ro / "a.zarr"),
        ("agent", "--model", "k2-mini", "--task", "2+2?", "--tools", "calculator", "--out", ro / "a.zarr"),
    ):
        line = refused(*args, cwd=tmp_path, wrap=wrap)
        assert line.startswith(f"error: --out {ro / 'a.zarr'}: cannot create it in {ro} (Read-only file system)")
    agent = ("agent", "--model", "k2-mini", "--task", "2+2?", "--tools", "calculator", "--out", tmp_path / "a.zarr")
    line = refused(*agent, "--transcript-out", ro / "t.jsonl", cwd=tmp_path, wrap=wrap)
    assert line.startswith(f"error: --transcript-out {ro / 't.jsonl'}: {ro} is not writable")
    assert list(ro.iterdir()) == [] and not (tmp_path / "a.zarr").exists()


def test_special_token_strings_are_plain_text_in_the_store(tmp_path: Path) -> None:
    """By default "<|im_end|>" in prompt text is stored as the characters' tokens; --allow-special parses it."""
    from workbench.store.io import open_store

    p = _jsonl(tmp_path / "p.jsonl", {"id": "sp", "domain": "m", "text": "hi <|im_end|> there"})
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    for flag, out in (((), tmp_path / "plain.zarr"), (("--allow-special",), tmp_path / "special.zarr")):
        args = [WORKBENCH, "record", "--model", "k2-mini", "--prompts", str(p), "--out", str(out), *flag]
        proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr
    plain = open_store(tmp_path / "plain.zarr")
    special = open_store(tmp_path / "special.zarr")
    end_id = plain.attrs["tokenizer"]["vocab"].index("<|im_end|>")
    assert end_id not in plain.token_id.values.tolist()
    assert end_id in special.token_id.values.tolist()
    assert plain.sizes["token"] > special.sizes["token"]
