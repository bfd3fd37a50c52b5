"""The expert's logit effect (issue 13, page item 6) on the bundled mini K2 and a store it recorded.

Records a few prompts of data/prompts/suite.jsonl with `workbench record --model k2-mini`, then checks
``workbench.experts.logit_effect`` against computations written here from the model's raw weights and
its own modules: the direct logit attribution of one token (expert MLP from ``gate_up_proj`` /
``down_proj``, the final RMSNorm's scale frozen, the unembedding), and the masking Δloss against
``masked_experts`` run on whole sequences. A store whose recorded model differs is refused.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from typer.testing import CliRunner

from workbench.ablation import masked_experts
from workbench.cli.app import app
from workbench.experts import LogitEffectError, expert_page
from workbench.models import load_model
from workbench.store import schema as S
from workbench.store.io import open_store

pytestmark = pytest.mark.slow
SUITE = Path(__file__).resolve().parent.parent / "data" / "prompts" / "suite.jsonl"
LAYER = 3


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("logit")
    lines = SUITE.read_text().splitlines()
    picked = [ln for d in ('"math', '"code', '"language', '"tools') for ln in [x for x in lines if d in x][:3]]
    (root / "p.jsonl").write_text("\n".join(picked) + "\n")
    out = root / "s.zarr"
    args = ["record", "--model", "k2-mini", "--prompts", str(root / "p.jsonl"), "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def model():
    return load_model("k2-mini")[0]


def _routing(ds, expert: int | None = None):
    li = [int(x) for x in ds[S.LAYER].values].index(LAYER)
    ids = np.asarray(ds[S.EXPERT_IDS].values)[:, li]  # (N, k)
    w = np.asarray(ds[S.GATE_WEIGHTS].values)[:, li].astype(np.float32)
    if expert is None:
        expert = int(np.bincount(ids.reshape(-1)).argmax())  # the busiest expert of the layer
    return expert, ids, w


def _sequence(ds, row: int) -> tuple[np.ndarray, int]:
    """Token ids of row's sequence (by position) and the row's index in it."""
    seq = np.asarray(ds[S.SEQUENCE_INDEX].values)
    pos = np.asarray(ds[S.POSITION].values)
    rows = np.nonzero(seq == seq[row])[0]
    rows = rows[np.argsort(pos[rows])]
    return np.asarray(ds[S.TOKEN_ID].values)[rows].astype(np.int64), int(np.nonzero(rows == row)[0][0])


def test_dla_of_one_token_matches_raw_weights(store: Path, model) -> None:
    ds = open_store(store)
    expert, ids, w = _routing(ds)
    page = expert_page(ds, LAYER, expert, model=model, logit_tokens=1)
    le = page.logit_effect
    assert le is not None and le.n_tokens == 1 and le.n_routed == page.n_routed > 1
    hit = (ids == expert).any(axis=1)
    weight = np.where(ids == expert, w, 0).sum(axis=1)
    row = int(np.nonzero(hit)[0][np.argmax(weight[hit])])  # the routed token with the highest gate weight
    tokens, t = _sequence(ds, row)
    moe = model.model.layers[LAYER].mlp
    seen: dict[str, torch.Tensor] = {}
    h1 = moe.register_forward_pre_hook(lambda _m, a: seen.__setitem__("x", a[0][0, t].detach()))
    h2 = moe.gate.register_forward_hook(lambda _m, _a, out: seen.update(idx=out[2][t], w=out[1][t]))
    h3 = model.model.norm.register_forward_pre_hook(lambda _m, a: seen.__setitem__("r", a[0][0, t].detach()))
    try:
        with torch.no_grad():
            model(input_ids=torch.from_numpy(tokens)[None], use_cache=False)
    finally:
        for h in (h1, h2, h3):
            h.remove()
    gate = float(seen["w"][seen["idx"] == expert].sum())
    assert gate == pytest.approx(float(weight[row]), rel=2e-3)  # the store's (fp16) weight is the live one
    ex = moe.experts
    with torch.no_grad():
        g, u = (ex.gate_up_proj[expert] @ seen["x"]).chunk(2)
        out = ex.down_proj[expert] @ (torch.nn.functional.silu(g) * u)  # f_E(x): (d,)
        r = seen["r"]
        normed = model.model.norm.weight * (gate * out) / torch.sqrt(r.pow(2).mean() + 1e-6)
        dla = (model.lm_head.weight @ normed).numpy()  # (V,)
    np.testing.assert_allclose(le.mean_dla, dla, rtol=1e-4, atol=1e-5)
    assert [t.token_id for t in le.promoted] == list(np.argsort(-dla, kind="stable")[:10])
    assert le.suppressed[0].token_id == int(np.argmin(dla))


def test_masking_delta_equals_masked_experts(store: Path, model) -> None:
    ds = open_store(store)
    expert, ids, _ = _routing(ds)
    le = expert_page(ds, LAYER, expert, model=model).logit_effect
    assert le is not None and le.n_tokens == le.n_routed  # under the default cap of 256: all routed tokens
    deltas = []
    seq = np.asarray(ds[S.SEQUENCE_INDEX].values)
    for s in np.unique(seq[(ids == expert).any(axis=1)]):
        first = int(np.nonzero(seq == s)[0][0])
        tokens, _ = _sequence(ds, first)
        rows = np.nonzero(seq == s)[0]
        pos = np.asarray(ds[S.POSITION].values)[rows]
        routed = np.sort(np.searchsorted(np.sort(pos), pos[(ids[rows] == expert).any(axis=1)]))
        routed = routed[routed + 1 < tokens.size]
        x = torch.from_numpy(tokens)[None]
        with torch.no_grad():
            base = model(input_ids=x, use_cache=False).logits[0].float()
            with masked_experts(model, [(LAYER, expert)]):
                masked = model(input_ids=x, use_cache=False).logits[0].float()
        target = x[0, routed + 1]
        ce = torch.nn.functional.cross_entropy(base[routed], target, reduction="none")
        ce_m = torch.nn.functional.cross_entropy(masked[routed], target, reduction="none")
        deltas += (ce_m - ce).tolist()
    assert le.n_loss == len(deltas) > 0
    assert le.delta_loss == pytest.approx(float(np.mean(deltas)), abs=1e-5)
    assert abs(le.delta_loss) > 1e-4  # masking the busiest expert moves the loss


def test_mismatched_model_is_refused(store: Path, model, tmp_path: Path) -> None:
    other = tmp_path / "other.zarr"
    shutil.copytree(store, other)
    attrs = zarr.open_group(str(other), mode="r+").attrs
    attrs["model"] = {**attrs["model"], "n_routed_experts": 128}
    ds = open_store(other)
    with pytest.raises(LogitEffectError, match="n_routed_experts 128 vs 64"):
        expert_page(ds, LAYER, 5, model=model)
    out = tmp_path / "page.html"
    code = "import sys; from workbench.cli.app import main; sys.argv = ['workbench', *sys.argv[1:]]; main()"
    args = ["expert", str(other), f"{LAYER}:5", "--model", "k2-mini", "--export", str(out)]
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and proc.stderr.startswith("error: --model does not match the store"), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not out.exists() and "Expert" not in proc.stdout


def test_cli_prints_promoted_and_suppressed(store: Path, model, tmp_path: Path) -> None:
    ds = open_store(store)
    expert, _, _ = _routing(ds)
    le = expert_page(ds, LAYER, expert, model=model, logit_tokens=32).logit_effect
    out = tmp_path / "page.html"
    args = ["expert", str(store), f"{LAYER}:{expert}", "--model", "k2-mini", "--logit-tokens", "32"]
    args += ["--export", str(out)]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "promoted" in result.output and "suppressed" in result.output and "masking it" in result.output
    assert f"{le.promoted[0].logit:+.3f}" in result.output and f"{le.suppressed[0].logit:+.3f}" in result.output
    assert f"Δ {le.delta_loss:+.4f}" in result.output
    assert all(t.text in result.output for t in le.promoted + le.suppressed), result.output
    html = out.read_text()
    assert "Logit effect" in html and f"{le.promoted[0].logit:+.3f}" in html


def test_windows_and_batches_do_not_change_the_result(store: Path, model, monkeypatch: pytest.MonkeyPatch) -> None:
    """A context of 12 tokens splits every sequence into windows; right-padded batches of them give what
    windows run one at a time give (padding after a token cannot change it under causal attention)."""
    from workbench import expert_logits as mod

    ds = open_store(store)
    expert, _, _ = _routing(ds)
    monkeypatch.setattr(model.config, "max_position_embeddings", 12)
    batched = expert_page(ds, LAYER, expert, model=model).logit_effect
    monkeypatch.setattr(mod, "BATCH_TOKENS", 1)
    alone = expert_page(ds, LAYER, expert, model=model).logit_effect
    assert batched is not None and alone is not None
    assert batched.n_windows == alone.n_windows > len(np.unique(ds[S.SEQUENCE_INDEX].values))
    assert any("re-run in windows" in n for n in batched.notes)
    assert batched.n_tokens == alone.n_tokens > 0 and batched.n_loss == alone.n_loss > 0
    np.testing.assert_allclose(batched.mean_dla, alone.mean_dla, rtol=1e-4, atol=1e-5)
    assert batched.delta_loss == pytest.approx(alone.delta_loss, abs=1e-5)
