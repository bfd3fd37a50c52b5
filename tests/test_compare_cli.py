"""`workbench compare` end to end on a real store: table, self-contained HTML, CSV/JSON equal to the metrics."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from analysis_helpers import SequenceRecord, SpanRecord, config, random_topk, write_committed_store

from workbench.analysis import consecutive_agreement, domain_divergence, expert_load
from workbench.analysis.compare import compare

WORKBENCH = str(Path(sys.executable).with_name("workbench"))


def _store(path: Path, *, ids_only: bool = False):
    rng = np.random.default_rng(7)
    recs = []
    for i in range(12):
        domain = ("math", "code", "language")[i % 3]
        t = 40 + 3 * i
        ids = random_topk(rng, t, 3, 8, 2)
        if domain == "math":  # math prefers experts 0 and 1 in layer 2
            ids[: t // 2, 1, 0] = np.where(ids[: t // 2, 1, 1] == 0, 1, 0)
        w = None if ids_only else rng.random((t, 3, 2)).astype(np.float32)
        spans = [SpanRecord("think", 0, t // 2), SpanRecord("answer", t // 2, t)]
        recs.append(
            SequenceRecord(f"{domain}-{i}", domain, "t", rng.integers(0, 64, t).astype(np.int32), ids, w, spans=spans)
        )
    return write_committed_store(path, recs, config(n_experts=8, top_k=2, n_layers=3), ids_only=ids_only)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([WORKBENCH, "compare", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_compare_writes_report_and_numbers(tmp_path):
    store = _store(tmp_path / "s.zarr")
    out = tmp_path / "report"
    res = _run(str(tmp_path / "s.zarr"), "--by", "domain", "--out", str(out), "--n-boot", "100", "--n-perm", "100")
    assert res.returncode == 0, res.stderr
    assert "Expert usage by domain" in res.stdout
    assert re.search(r"│ code\s+│ math\s+│", res.stdout) and not re.search(r"│ math\s+│ code\s+│", res.stdout)  # sorted
    for name in (
        "report.html",
        "summary.json",
        "per_layer.csv",
        "experts.csv",
        "divergence.csv",
        "specific_experts.csv",
    ):
        assert (out / name).stat().st_size > 0, name
    html = (out / "report.html").read_text()
    assert len(re.findall(r"\* plotly\.js(?: \(cartesian - minified\))? v\d", html)) == 1  # inlined once: offline
    assert not re.search(r"<script[^>]*\bsrc=", html)  # nothing fetched from a CDN
    for fig in ("fig-usage", "fig-divergence", "fig-specialization", "fig-agreement"):
        assert f'id="{fig}"' in html
    summary = json.loads((out / "summary.json").read_text())
    agr = consecutive_agreement(store, by="domain")
    assert summary["groups"]["math"]["mean_agreement_any_topk"] == pytest.approx(
        float(agr["any_topk"].sel(domain="math").mean())
    )
    assert summary["baselines"]["agreement"]["any_topk"] == pytest.approx(1 - 15 / 28)
    experts = pd.read_csv(out / "experts.csv")
    load = expert_load(store, by="domain")
    got = experts[(experts.domain == "code") & (experts.layer == 2)].sort_values("expert")["count"].to_numpy()
    np.testing.assert_array_equal(got, load["count"].sel(domain="code", layer=2).values)
    div = pd.read_csv(out / "divergence.csv")
    ref = domain_divergence(store, n_boot=100, n_perm=100)
    row = div[(div.pair == "code|math") & (div.layer == 2)].iloc[0]
    assert row.jsd == pytest.approx(float(ref["jsd"].sel(pair="code|math", layer=2)))
    assert row.ci_low <= row.ci_high


@pytest.mark.slow
def test_compare_by_segment_with_where_and_ids_only(tmp_path):
    store = _store(tmp_path / "ids.zarr", ids_only=True)
    cmp = compare(store, None, by="segment", n_boot=20, n_perm=20)
    assert cmp.groups == ["think", "answer"] and cmp.gate_entropy is None
    out = tmp_path / "seg"
    res = _run(
        str(tmp_path / "ids.zarr"),
        "--by",
        "segment",
        "--where",
        "domain=math",
        "--out",
        str(out),
        "--n-boot",
        "20",
        "--n-perm",
        "20",
    )
    assert res.returncode == 0, res.stderr
    per_layer = pd.read_csv(out / "per_layer.csv")
    assert set(per_layer.segment) == {"think", "answer"} and "gate_entropy_bits" not in per_layer


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--where", "domain=poetry"], "error: unknown domain 'poetry'"),
        (["--where", "segment=tool_call"], "error: the selection holds no tokens"),
        (["--by", "colour"], "error: --by must be one of"),
    ],
)
def test_compare_bad_input_is_one_line(tmp_path, args, message):
    _store(tmp_path / "s.zarr")
    out = tmp_path / "never"
    res = _run(str(tmp_path / "s.zarr"), "--out", str(out), *args)
    assert res.returncode == 2
    assert res.stderr.strip().startswith(message) and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not out.exists()


def test_compare_unreachable_scheduler(tmp_path):
    _store(tmp_path / "s.zarr")
    res = _run(str(tmp_path / "s.zarr"), "--out", str(tmp_path / "o"), "--scheduler", "tcp://127.0.0.1:9")
    assert res.returncode == 2 and "cannot reach the dask scheduler at tcp://127.0.0.1:9" in res.stderr


@pytest.fixture(scope="module")
def thirty_sequences(tmp_path_factory) -> Path:
    """A synthetic K2-shaped store (4 layers, 16 experts, top-2) of exactly 30 sequences in 4 domains."""
    from workbench.store.synthetic import synthetic_store

    path = tmp_path_factory.mktemp("seq") / "syn.zarr"
    synthetic_store(path, n_tokens=3000, n_layers=4, n_experts=16, k=2, mean_length=100, progress=False)
    return path


@pytest.mark.slow
def test_compare_by_sequence_on_30_sequences(thirty_sequences, tmp_path):
    """Was a plotly error ("would have 30 rows"); now one heatmap row per sequence, every sequence in the data."""
    out = tmp_path / "seq"
    res = subprocess.run(
        [WORKBENCH, "compare", str(thirty_sequences), "--by", "sequence", "--out", str(out), "--n-boot", "20",
         "--n-perm", "20"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "COLUMNS": "80"},
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "the 15 most divergent of 435 pairs" in " ".join(res.stdout.split())
    assert "… 420 more pairs in divergence.csv and summary.json" in res.stdout
    assert "no null or p: they resample whole sequences" in res.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["groups"]) == 30 and len(summary["divergence"]) == 435
    assert pd.read_csv(out / "divergence.csv").pair.nunique() == 435
    html = (out / "report.html").read_text()
    for fig in ("fig-usage", "fig-divergence", "fig-specialization", "fig-agreement", "fig-entropy"):
        assert f'id="{fig}"' in html
    assert "The 40 most divergent of 435 pairs" in html


def test_many_groups_figures_have_one_row_per_group(thirty_sequences):
    from workbench.viz.report import figures

    from workbench.store.io import open_store

    cmp = compare(open_store(str(thirty_sequences)), None, by="sequence", n_boot=0, n_perm=0, with_transitions=False)
    figs = figures(cmp)
    usage = figs["usage"]
    assert len(usage.data) == 4 and [t.visible for t in usage.data] == [True, False, False, False]  # slider: layer
    assert len(usage.layout.sliders[0].steps) == 4 and list(usage.data[0].y) == cmp.groups
    z, ids = np.asarray(usage.data[2].z), np.asarray(usage.data[2].customdata)  # columns: busiest expert first
    want = cmp.load["relative_load"].sel(layer=3).transpose("sequence", "expert").values
    np.testing.assert_allclose(z, np.take_along_axis(want, ids.astype(int), axis=1), rtol=1e-6)
    pooled = cmp.load["count"].sel(layer=3).sum("sequence").values[ids[0].astype(int)]
    assert np.all(np.diff(pooled) <= 0) and sorted(ids[0].tolist()) == list(range(want.shape[1]))
    div = figs["divergence"].data[0]
    m = np.asarray(div.z)
    assert m.shape == (30, 30) and np.allclose(m, m.T) and np.all(np.diag(m) == 0)
    s = cmp.summary()["divergence"]
    pair = f"{cmp.groups[3]}|{cmp.groups[17]}"
    assert m[3, 17] == pytest.approx(s[pair]["mean_jsd"])
    for key in ("agreement", "entropy", "specialization"):
        heat = [t for t in figs[key].data if t.type == "heatmap"]
        assert heat and all(list(t.y) == cmp.groups for t in heat), key
    assert figs["agreement"].layout.height >= 30 * 18  # rows stay readable


def test_compare_by_segment_is_readable_at_80_columns(tmp_path):
    """Segment names are never cut ("template|tool…" before): each side of a pair has its own column."""
    rng = np.random.default_rng(3)
    recs = []
    for i in range(6):
        t = 60
        ids = random_topk(rng, t, 3, 8, 2)
        spans = [
            SpanRecord("template", 0, 10),
            SpanRecord("tool_call", 10, 30, 0),
            SpanRecord("tool_result", 30, 60, 0),
        ]
        recs.append(
            SequenceRecord(f"s{i}", "agent", "t", rng.integers(0, 64, t).astype(np.int32), ids, None, spans=spans)
        )
    write_committed_store(tmp_path / "s.zarr", recs, config(n_experts=8, top_k=2, n_layers=3), ids_only=True)
    res = subprocess.run(
        [WORKBENCH, "compare", str(tmp_path / "s.zarr"), "--by", "segment", "--out", str(tmp_path / "o"),
         "--n-boot", "20", "--n-perm", "20"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "COLUMNS": "80"},
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "…" not in res.stdout and max(len(line) for line in res.stdout.splitlines()) <= 80
    for a, b in (("template", "tool_call"), ("template", "tool_result"), ("tool_call", "tool_result")):
        assert re.search(rf"│ {a}\s+│ {b}\s+│", res.stdout), res.stdout


def test_group_names_are_printed_literally_not_as_rich_markup(tmp_path, monkeypatch, capsys):
    """A domain named "[/bold]" was a MarkupError traceback; "[link=…]" would become a terminal hyperlink."""
    from workbench.cli.app import main

    rng = np.random.default_rng(11)
    names = ("[/bold]", "[link=https://evil.example/]math[/link]")
    recs = [
        SequenceRecord(f"s{i}", names[i % 2], "t", rng.integers(0, 64, 30).astype(np.int32),
                       random_topk(rng, 30, 3, 8, 2), None)
        for i in range(6)
    ]  # fmt: skip
    write_committed_store(tmp_path / "s.zarr", recs, config(n_experts=8, top_k=2, n_layers=3), ids_only=True)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr(sys, "argv", ["workbench", "compare", str(tmp_path / "s.zarr"), "--out", str(tmp_path / "o"),
                                      "--n-boot", "10", "--n-perm", "10"])  # fmt: skip
    with pytest.raises(SystemExit) as exit_:
        main()
    out = capsys.readouterr().out
    assert exit_.value.code in (0, None)
    assert "│ [/bold] " in out and "│ [link=https://evil.example/]math[/link] " in out


def test_more_groups_than_rows_draws_those_with_most_tokens(thirty_sequences, monkeypatch):
    from workbench.viz import figures_many
    from workbench.viz.report import figures

    from workbench.store.io import open_store

    monkeypatch.setattr(figures_many, "MAX_ROWS", 10)
    cmp = compare(open_store(str(thirty_sequences)), None, by="sequence", n_boot=0, n_perm=0, with_transitions=False)
    tokens = {g: int(cmp.load["n_tokens"].sel(sequence=g)) for g in cmp.groups}
    expect = [g for g in cmp.groups if tokens[g] >= sorted(tokens.values())[-10]]  # store order kept
    for key, fig in figures(cmp).items():
        rows = next(t for t in fig.data if t.type == "heatmap").y
        assert list(rows) == expect, key
        assert "the 10 of 30 sequences with the most tokens" in fig.layout.title.text, key
