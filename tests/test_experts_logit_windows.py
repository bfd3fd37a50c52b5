"""Fast parts of the expert's logit effect, without a model: the re-run windows of long sequences and
the store-vs-model check (the model-backed checks are in test_experts_logit.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from experts_helpers import N_EXPERTS, VOCAB, planted_config, planted_store

from workbench.experts.logit_effect import LogitEffectError, check_matches, chosen_tokens, windows


@pytest.mark.parametrize(("n", "ctx"), [(10, 64), (100, 16), (100, 3), (37, 37), (5000, 512)])
def test_windows_cover_each_token_once_within_the_context(n: int, ctx: int) -> None:
    rng = np.random.default_rng(n + ctx)
    positions = np.sort(rng.choice(n, size=min(n, 40), replace=False))
    positions = np.unique(np.r_[positions, n - 1])  # the last token too (no next token, still attributed)
    wins = windows(positions, n, ctx)
    covered = np.concatenate([inside for _, _, inside in wins])
    np.testing.assert_array_equal(covered, positions)  # every needed token exactly once, in order
    for start, end, inside in wins:
        assert 0 <= start < end <= n and end - start <= ctx and inside.size
        assert ((inside >= start) & (inside < end)).all()
        assert ((inside + 1 < end) | (end == n)).all()  # its next token is in the window, when it has one
        assert (inside - start >= min(int(inside[0]), ctx - 2)).all()  # the promised left context
    if n <= ctx:
        assert len(wins) == 1 and wins[0][:2] == (0, n)  # a sequence within the context runs once, whole


def test_check_matches_names_what_differs(tmp_path: Path) -> None:
    ds = planted_store(tmp_path / "p.zarr")
    same = planted_config().to_attrs()
    check_matches(ds, same, len(VOCAB))  # the recorded model: accepted
    check_matches(ds, same, None)  # vocabulary unknown (no vocab_size): not checked
    with pytest.raises(LogitEffectError, match=f"n_routed_experts {N_EXPERTS} vs 16; top_k 2 vs 4"):
        check_matches(ds, {**same, "n_routed_experts": 16, "top_k": 4}, len(VOCAB))
    with pytest.raises(LogitEffectError, match=r"moe_layers \[1, 2, 3\] vs \[1, 2\]"):
        check_matches(ds, {**same, "moe_layers": [1, 2]}, len(VOCAB))
    with pytest.raises(LogitEffectError, match=f"vocabulary {len(VOCAB)} vs 8"):
        check_matches(ds, same, 8)


def test_chosen_tokens_take_the_highest_gate_weights_or_first_choices() -> None:
    w = np.array([0.1, 0.9, 0.5, 0.9, 0.2], dtype=np.float32)
    rank = np.array([3, 0, 1, 0, 2])
    assert chosen_tokens(SimpleNamespace(weight=w, rank=rank), 3).tolist() == [1, 2, 3]  # type: ignore[arg-type]
    assert chosen_tokens(SimpleNamespace(weight=w, rank=rank), 99).tolist() == [0, 1, 2, 3, 4]  # type: ignore[arg-type]
    # ids-only store: first choices first, then second... (ties in store order)
    assert chosen_tokens(SimpleNamespace(weight=None, rank=rank), 3).tolist() == [1, 2, 3]  # type: ignore[arg-type]
    assert chosen_tokens(SimpleNamespace(weight=None, rank=rank), 4).tolist() == [1, 2, 3, 4]  # type: ignore[arg-type]
