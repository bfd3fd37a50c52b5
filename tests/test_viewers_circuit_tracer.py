"""Our circuit-tracer export opened in circuit-tracer's own frontend, served by its own local server.

A K2-shaped store (60 MoE layers × 384 experts, top-8, 16,590 tokens of synthetic tool-loop transcripts)
gives the three graphs the issue names: one token's path (written by ``workbench graph --export
NAME.ct``), one thinking step (a transcript segment) and an aggregate of every token (> 10k). Each is
served by ``circuit_tracer.frontend.local_server.serve`` (the PyPI wheel, installed with ``--no-deps``) and
opened in headless Chromium; the test counts what the frontend drew: every exported node as a node of
the link graph, the pinned heaviest path's links in the subgraph panel, the clicked expert's connections,
and its top contexts from our feature file in the node panel. A copy of the step graph with a one-token
prompt (what the old export wrote) must draw nothing: that is the frontend rule the export now meets.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from viewers_helpers import chromium_page, circuit_tracer_routes, free_port, node_modules
from widgets_helpers import open_test_store, transcript_store

from workbench.cli.app import main
from workbench.graph import layered_layout, reasoning_graph, set_communities
from workbench.graph.circuit_tracer_export import write_circuit_tracer
from workbench.store.select import parse_where, token_mask

pytestmark = [pytest.mark.browser, pytest.mark.slow]

DRAWN = """() => ({
  nodes: document.querySelectorAll('.link-graph text.node').length,
  pinnedLinks: document.querySelectorAll('.subgraph path.link-path').length,
  connections: document.querySelectorAll('.node-connections .feature-row').length,
  examples: document.querySelectorAll('.feature-detail .ctx-container').length,
  title: document.querySelector('.feature-detail .feature-title')?.textContent || '',
})"""


@pytest.fixture(scope="module")
def export(tmp_path_factory, monkeypatch_module):
    root = tmp_path_factory.mktemp("ct")
    store = transcript_store(root / "k2.zarr", n_steps=12, n_transcripts=15, n_layers=60, n_experts=384)
    ds = open_test_store(store)
    assert ds.sizes["token"] >= 10_000 and ds.sizes["layer"] == 60
    folder = root / "graphs.ct"
    # one token's path, through the CLI: a think token of the first transcript
    think_row = int(np.flatnonzero(token_mask(ds, parse_where(["sequence=t0", "segment=think", "step=0"])))[3])
    monkeypatch_module.chdir(root)
    argv = ["workbench", "graph", str(store), "--tokens", f"{think_row}:{think_row + 1}", "--export", str(folder)]
    monkeypatch_module.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 0
    for slug, where in {"step": ["sequence=t0", "segment=think", "step=2"], "all": []}.items():
        sel = parse_where(where)
        g = reasoning_graph(ds, sel, top_edges=3)
        set_communities(g)
        layered_layout(g)
        write_circuit_tracer(g, folder, slug=slug, ds=ds, selection=sel)
    # the old export's shape: a one-token prompt; the frontend's formatData must drop every node of it
    control = json.loads((folder / "step.json").read_text())
    control["metadata"].update(slug="control", prompt_tokens=control["metadata"]["prompt_tokens"][:1])
    for n in control["nodes"]:
        n["ctx_idx"] = 0
    (folder / "control.json").write_text(json.dumps(control))
    meta = json.loads((folder / "graph-metadata.json").read_text())
    meta["graphs"].append(control["metadata"])
    (folder / "graph-metadata.json").write_text(json.dumps(meta))
    return folder


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


@pytest.fixture(scope="module")
def served(export):
    local_server = pytest.importorskip(
        "circuit_tracer.frontend.local_server", reason="circuit-tracer missing: pip install --no-deps circuit-tracer"
    )
    port = free_port()
    server = local_server.serve(data_dir=str(export), port=port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def test_metadata_lists_every_graph(export):
    meta = json.loads((export / "graph-metadata.json").read_text())
    assert [g["slug"] for g in meta["graphs"]] == ["graphs", "step", "all", "control"]
    token = json.loads((export / "graphs.json").read_text())
    assert len(token["metadata"]["prompt_tokens"]) == 16  # 15 tokens before it, then the token
    assert {n["ctx_idx"] for n in token["nodes"]} == {15}
    agg = json.loads((export / "all.json").read_text())
    assert agg["metadata"]["prompt_tokens"] == ["16,590 tokens", "experts"]


def test_the_frontend_draws_our_graphs(export, served):
    nm = node_modules()
    artifacts = Path(os.environ.get("WORKBENCH_ARTIFACTS", export.parent))
    failed: list[str] = []
    with chromium_page(circuit_tracer_routes(nm)) as (page, refused):
        page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        for slug in ("graphs", "step", "all"):
            data = json.loads((export / f"{slug}.json").read_text())
            page.goto(f"{served}/index.html?slug={slug}")
            page.wait_for_function("() => document.querySelectorAll('.feature-detail .ctx-container').length > 0")
            drawn = page.evaluate(DRAWN)
            pinned = set(data["qParams"]["pinnedIds"])
            clicked = data["qParams"]["clickedId"]
            assert drawn["nodes"] == len(data["nodes"]) > 60, (slug, drawn)  # input, experts of 60 layers, output
            n_pinned = sum(1 for x in data["links"] if x["source"] in pinned and x["target"] in pinned)
            assert drawn["pinnedLinks"] == n_pinned > 0, (slug, drawn)
            touching = {x["source"] for x in data["links"] if x["target"] == clicked}
            touching |= {x["target"] for x in data["links"] if x["source"] == clicked}
            assert drawn["connections"] == len(touching) > 0, (slug, drawn)
            layer, _, _ = clicked.split("_")
            assert f"L{layer}/" in drawn["title"], drawn  # the clicked expert's panel, with its examples
            page.screenshot(path=str(artifacts / f"circuit-tracer-{slug}.png"))
        # its pruning slider keeps nodes whose cumulative influence is <= the threshold (inputs and outputs always)
        data = json.loads((export / "all.json").read_text())
        kept = [n for n in data["nodes"] if n["influence"] <= 0.5 or n["feature_type"] in ("embedding", "logit")]
        assert 2 < len(kept) < len(data["nodes"])
        page.goto(f"{served}/index.html?slug=all&pruningThreshold=0.5")
        page.wait_for_function("() => document.querySelector('.feature-detail .feature-header') !== null")
        assert page.evaluate(DRAWN)["nodes"] == len(kept)
        page.goto(f"{served}/index.html?slug=control")
        page.wait_for_function("() => document.querySelector('.feature-detail .feature-header') !== null")
        assert page.evaluate(DRAWN)["nodes"] == 0  # one prompt token: the frontend deletes every node
    assert refused == [], refused  # everything came from its server or our npm packages
    assert failed == [] and errors == [], (failed, errors)
