"""``--where match=TEXT`` / ``regex=PATTERN``: the token rows text matches cover, for every command with --where."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from experts_helpers import PLANT, planted_store

from workbench.errors import SelectionError
from workbench.experts import expert_page, find
from workbench.store.select import Selection, parse_where, select, token_mask


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("match") / "p.zarr"
    planted_store(path)
    return path


@pytest.fixture(scope="module")
def ds(store_path: Path):
    from workbench.store.io import open_store

    return open_store(store_path)


def _rows_of(hits) -> np.ndarray:
    return np.unique(np.concatenate([h.rows for h in hits])) if hits else np.zeros(0, dtype=np.int64)


def test_match_keeps_exactly_the_rows_find_covers(ds) -> None:
    sel = parse_where(["match= cat sat, on"])  # commas and spaces are part of the text
    assert sel.match == " cat sat, on" and sel.regex is None
    sel = parse_where(["match= cat sat"])
    rows = np.nonzero(token_mask(ds, sel))[0]
    hits = find(ds, " cat sat", max_hits=10_000)
    assert hits and np.array_equal(rows, _rows_of(hits))
    # a match across token boundaries covers every token it touches: " cat", " s", "at"
    assert all(h.stop - h.start == 3 for h in hits)


def test_regex_and_other_keys_combine(ds) -> None:
    sel = parse_where(["regex=\\d[+=]?", "domain=math"])
    mask = token_mask(ds, sel)
    hits = find(ds, r"\d[+=]?", regex=True, max_hits=10_000, selection=Selection(domains=("math",)))
    covered = _rows_of(hits)
    math = token_mask(ds, Selection(domains=("math",)))
    assert mask.any() and np.array_equal(np.nonzero(mask)[0], covered[math[covered]])
    assert select(ds, sel).sizes["token"] == int(mask.sum())


def test_a_page_over_a_match_counts_only_matched_tokens(ds) -> None:
    page = expert_page(ds, 2, PLANT, parse_where(["match= cat"]), n_boot=20)
    assert page.n_selected == len(find(ds, " cat", max_hits=10_000))  # " cat" is one token
    assert page.n_routed == page.n_selected  # the planted expert takes every " cat"
    assert "match=' cat'" in page.selection


@pytest.mark.parametrize(
    ("clause", "message"),
    [
        ("regex=(unclosed", "does not compile"),
        ("match=", "KEY=VALUE"),
        ("match=no such text anywhere", "occurs nowhere"),
    ],
)
def test_bad_match_clauses_are_one_line(ds, clause: str, message: str) -> None:
    with pytest.raises(SelectionError, match=message) as err:
        token_mask(ds, parse_where([clause]))
    assert "\n" not in str(err.value)


def _run(*args: str) -> subprocess.CompletedProcess:
    code = "import sys; from workbench.cli.app import main; sys.argv = ['workbench', *sys.argv[1:]]; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=600)


def test_cli_commands_take_match(store_path: Path, tmp_path: Path) -> None:
    r = _run("expert", str(store_path), f"2:{PLANT}", "--where", "match= cat")
    assert r.returncode == 0 and "match=' cat'" in r.stdout, r.stderr
    out = tmp_path / "g.graphml"
    r = _run("graph", str(store_path), "--where", "match= cat", "--export", str(out))
    assert r.returncode == 0 and out.exists(), r.stderr
    r = _run("find", str(store_path), "sat", "--where", "match=cat sat")
    assert r.returncode == 0 and "8 hit(s)" in r.stdout, r.stderr


def test_cli_bad_regex_in_where_is_one_line_and_writes_nothing(store_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "g.graphml"
    r = _run("graph", str(store_path), "--where", "regex=(", "--export", str(out))
    assert r.returncode == 2 and r.stderr.startswith("error: --where regex=") and "does not compile" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not out.exists()


def test_the_accessor_finds_and_selects_by_text(store_path: Path) -> None:
    import workbench

    ds = workbench.open_store(store_path)
    hits = ds.routing.find(" cat", max_hits=10_000)
    assert hits and all(h.text == " cat" for h in hits)
    assert ds.routing.select(where="match= cat").sizes["token"] == len(hits)  # " cat" is one token
    assert ds.routing.select(where=["match= cat", "domain=math"]).sizes["token"] == sum(
        h.domain == "math" for h in hits
    )
