"""The expert atlas (``workbench atlas``): its pages agree with ``expert_page``, bad input is refused before
anything is written, and it opens from file:// in Chromium, where its search finds a token and a page renders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from experts_helpers import CAT, PLANT, VOCAB, planted_store

from workbench.experts import expert_page
from workbench.experts.atlas_data import atlas_layers
from workbench.store.layer_index import build_index
from workbench.store.select import Selection

CHROMIUM = os.environ.get("BROWSER_PATH", "/usr/bin/chromium")


def _run(*args: str) -> subprocess.CompletedProcess:
    code = "import sys; from workbench.cli.app import main; sys.argv = ['workbench', *sys.argv[1:]]; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("atlas") / "p.zarr"
    planted_store(path)
    build_index(path)
    return path


@pytest.mark.parametrize("selection", [None, Selection(domains=("math", "code"))])
def test_atlas_pages_agree_with_expert_page(store_path: Path, selection) -> None:
    from workbench.store.io import open_store

    ds = open_store(store_path)
    layers = list(atlas_layers(store_path, selection, top=10, width=8, n_boot=50))
    assert [lp["layer"] for lp in layers] == [1, 2, 3]
    for lp in layers:
        assert len(lp["experts"]) == 8
        for e in (PLANT, 0, 3):
            a = lp["experts"][e]
            p = expert_page(ds, lp["layer"], e, selection, top=10, width=8, min_count=3, n_boot=50)
            assert a["n"] == p.n_routed and lp["tokens"] == p.n_selected
            assert a["rank"] == p.rank_hist.tolist() and a["wh"] == p.weight_hist.tolist()
            assert [r[0] for r in a["lift"]] == [t.text for t in p.lift]
            assert [r[1] for r in a["lift"]] == [t.count for t in p.lift]
            assert [r[0] for r in a["freq"]] == [t.text for t in p.frequent]
            assert [(r[0], r[1]) for r in a["dom"]] == [(g.group, g.routed) for g in p.domain_shares]
            assert [(r[0], r[1]) for r in a["seg"]] == [(g.group, g.routed) for g in p.segment_shares]
            assert [r[:3] for r in a["co"]] == [[n.layer, n.expert, n.count] for n in p.co_activated[:8]]
            assert [r[:3] for r in a["pre"]] == [[n.layer, n.expert, n.count] for n in p.predecessors[:8]]
            assert [r[:3] for r in a["suc"]] == [[n.layer, n.expert, n.count] for n in p.successors[:8]]
            assert [(c[1], c[9]) for c in a["ctx"]] == [(c.token, c.rank) for c in p.contexts]
    planted = layers[1]["experts"][PLANT]
    if selection is None:  # layers=A:B keeps those layers; their neighbours still come from the layers around
        only = list(atlas_layers(store_path, Selection(layers=(2, 3)), n_boot=10))
        assert [lp["layer"] for lp in only] == [2, 3]
        assert only[0]["experts"][PLANT]["pre"] == planted["pre"]
    assert planted["lift"][0][0] == "␣cat" and planted["ctx"][0][1] == VOCAB[CAT].replace("Ġ", " ")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--where", "domain=poetry"], "unknown domain"),
        (["--where", "tokens=0:1", "--where", "segment=answer"], "no tokens"),
        (["--where", "regex=(x"], "does not compile"),
        (["--metric", "beauty"], "--metric must be one of"),
        (["--where", "layers=2:9"], "outside this model's MoE layers 1:3"),
        (["--where", "match=no such text"], "occurs nowhere"),
        (["--model", "k2-mini"], "does not compute logit effects"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(store_path: Path, tmp_path: Path, args, message) -> None:
    out = tmp_path / "atlas"
    r = _run("atlas", str(store_path), "--out", str(out), *args)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and message in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_out_inside_a_store_or_over_another_folder_is_refused(store_path: Path, tmp_path: Path) -> None:
    r = _run("atlas", str(store_path), "--out", str(store_path / "atlas"))
    assert r.returncode == 2 and "inside the routing store" in r.stderr and not (store_path / "atlas").exists()
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "thesis.tex").write_text("keep me")
    r = _run("atlas", str(store_path), "--out", str(busy))
    assert r.returncode == 2 and "not empty and holds no atlas" in r.stderr and "choose a new or empty" in r.stderr
    assert [p.name for p in busy.iterdir()] == ["thesis.tex"]


def test_an_ids_only_store_builds_and_says_what_it_fell_back_to(tmp_path: Path) -> None:
    planted_store(tmp_path / "ids.zarr", weights=False)
    out = tmp_path / "atlas"
    r = _run("atlas", str(tmp_path / "ids.zarr"), "--out", str(out), "--workers", "1")
    assert r.returncode == 0, r.stderr
    meta = (out / "data" / "meta.js").read_text()
    assert "no gate weights" in meta and "router rank, then token frequency" in meta
    layer = json.loads((out / "data" / "L002-B00.js").read_text()[len("atlasLayer(") : -3])
    grid = json.loads((out / "data" / "grid.js").read_text()[len("atlasGrid(") : -3])
    assert layer["experts"][PLANT]["wh"] == [] and grid["weight"] == [[None] * 8] * 3


@pytest.fixture(scope="module")
def atlas_dir(store_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site") / "atlas"
    r = _run("atlas", str(store_path), "--out", str(out), "--metric", "lift")
    assert r.returncode == 0, r.stderr
    assert {p.name for p in out.iterdir()} == {"index.html", "expert.html", "data", "atlas.json"}
    r = _run("atlas", str(store_path), "--out", str(out))  # an earlier atlas is replaced
    assert r.returncode == 0, r.stderr
    return out


@pytest.mark.slow
def test_atlas_opens_from_file_url_in_chromium(atlas_dir: Path) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(atlas_dir.joinpath("index.html").as_uri())
            page.wait_for_function("document.getElementById('grid').width > 0", timeout=60_000)
            assert page.locator("#metric option").count() == 5
            assert "3 MoE layers × 8 experts" in page.locator("#sub").inner_text()
            page.fill("#q", "␣cat")  # tokens show whitespace as marks
            page.wait_for_selector("#results li", timeout=60_000)
            # the planted experts take exactly the " cat" tokens (and the same math tokens), so " cat" is the
            # top-lift token of each of them, with the same lift; they come first, in layer order
            found = page.locator("#results li a").all_inner_texts()
            assert found[:4] == ["L1:E3", "L2:E2", f"L2:E{PLANT}", "L3:E6"]
            page.locator("#results li a", has_text=f"L2:E{PLANT}").click()
            page.wait_for_function("document.querySelector('h1') && document.querySelector('h1').textContent"
                                   f" === 'Expert L2:E{PLANT}'", timeout=60_000)  # fmt: skip
            assert page.locator(".hit").first.inner_text() == " cat"
            assert "Successors" in page.content() and page.locator("table").count() >= 8
            page.locator("a", has_text="L3:E6").first.click()  # a neighbour: another layer's shard
            page.wait_for_function(  # the page is replaced while it loads: no h1 for a moment
                "document.querySelector('h1') && document.querySelector('h1').textContent === 'Expert L3:E6'",
                timeout=60_000,
            )
            page.goto(atlas_dir.joinpath("expert.html").as_uri() + "#L9:E1")
            page.wait_for_selector(".note", timeout=60_000)
            assert "not in this atlas" in page.locator(".note").inner_text()
        finally:
            browser.close()
    assert errors == []
