"""Text search over decoded tokens (across token boundaries) and the `workbench expert` / `find` CLI faces."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from experts_helpers import AT, CAT, PLANT, S_, THE, planted_records, planted_store

from workbench.experts import ExpertPageError, find
from workbench.store.select import Selection


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("planted") / "p.zarr"
    planted_store(path)
    return path


@pytest.fixture(scope="module")
def store(store_path: Path):
    from workbench.store.io import open_store

    return open_store(store_path)


def test_find_across_token_boundaries(store) -> None:
    hits = find(store, "cat sat", max_hits=100)  # " cat" + " s" + "at"
    assert len(hits) == 8  # the planted template of sequence math-0
    tok = np.asarray(store["token_id"].values)
    for h in hits:
        assert h.sequence == "math-0" and h.text == "cat sat"
        assert tok[h.start : h.stop].tolist() == [CAT, S_, AT]
        assert h.rows.tolist() == list(range(h.start, h.stop))
    assert hits[0].start == 1 and hits[0].position == 1 and hits[0].before == " the "


def test_find_counts_every_occurrence_and_respects_selection(store) -> None:
    recs = planted_records()
    n_cat = sum(int((r.token_ids == CAT).sum()) for r in recs)
    assert len(find(store, " cat", max_hits=10_000)) == n_cat
    code = find(store, " cat", max_hits=10_000, selection=Selection(domains=("code",)))
    assert code and all(h.domain == "code" for h in code)
    assert len(find(store, " cat", max_hits=3)) == 3


def test_find_regex_and_case(store) -> None:
    hits = find(store, r"the cat s(at)?", regex=True)
    assert hits and all(h.text == "the cat sat" for h in hits)
    tok = np.asarray(store["token_id"].values)
    assert tok[hits[0].start] == THE
    assert find(store, "THE CAT", ignore_case=True)
    assert not find(store, "THE CAT")


def test_find_never_spans_two_sequences(store) -> None:
    recs = planted_records()
    last = recs[0].token_ids[-1]
    first = recs[1].token_ids[0]
    from experts_helpers import VOCAB

    from workbench.experts.vocab import text_vocab

    texts = text_vocab(VOCAB)
    joined = texts[last] + texts[first]
    for h in find(store, joined, max_hits=10_000):
        assert store["sequence_index"].values[h.start] == store["sequence_index"].values[h.stop - 1]


def test_find_bad_input(store) -> None:
    with pytest.raises(ExpertPageError, match="does not compile"):
        find(store, "(unclosed", regex=True)
    with pytest.raises(ExpertPageError, match="empty"):
        find(store, "")


def _run(*args: str) -> subprocess.CompletedProcess:
    code = "import sys; from workbench.cli.app import main; sys.argv = ['workbench', *sys.argv[1:]]; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=600)


def test_cli_expert_prints_and_exports(store_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "page.html"
    r = _run("expert", str(store_path), f"L2:E{PLANT}", "--min-count", "2", "--export", str(out))
    assert r.returncode == 0, r.stderr
    assert "Expert L2:E5" in r.stdout and "Top contexts" in r.stdout and "predecessors: L1:E3" in r.stdout
    text = out.read_text()
    assert "<h1>Expert 5 of MoE layer 2" in text and "Top contexts" in text and "<svg" in text
    assert "http://" not in text and "https://" not in text  # self-contained


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["2:99"], "outside this model's experts"),
        (["7:1"], "not an MoE layer"),
        (["2-1"], "LAYER:EXPERT"),
        (["2:1", "--where", "domain=poetry"], "unknown domain"),
        (["2:1", "--where", "tokens=0:1", "--where", "segment=answer"], "no tokens"),
    ],
)
def test_cli_expert_bad_input(store_path: Path, tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "page.html"
    r = _run("expert", str(store_path), *args, "--export", str(out))
    assert r.returncode == 2 and r.stderr.startswith("error: ") and message in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not out.exists() and not list(tmp_path.iterdir())


def test_cli_find(store_path: Path) -> None:
    r = _run("find", str(store_path), "cat sat")
    assert r.returncode == 0 and "8 hit(s)" in r.stdout and "rows 1:4" in r.stdout
    r = _run("find", str(store_path), "(bad", "--regex")
    assert r.returncode == 2 and "does not compile" in r.stderr


def test_cli_expert_on_an_ids_only_store_says_what_it_fell_back_to(tmp_path: Path) -> None:
    planted_store(tmp_path / "ids.zarr", weights=False)
    out = tmp_path / "ids.html"
    r = _run("expert", str(tmp_path / "ids.zarr"), f"2:{PLANT}", "--export", str(out))
    assert r.returncode == 0, r.stderr
    assert "note: this store has no gate weights: contexts are ordered by router rank" in " ".join(r.stdout.split())
    assert "this store has no gate weights" in out.read_text()
