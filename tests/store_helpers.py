"""Small routing configs and deterministic sequences for the store tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from workbench.routing_config import RoutingConfig
from workbench.store.dataset import SequenceRecord, SpanRecord
from workbench.store.io import StoreWriter

N_LAYERS, TOP_K, N_EXPERTS, VOCAB = 3, 2, 16, 40


def tiny_config(**changes: object) -> RoutingConfig:
    fields: dict[str, object] = dict(
        model_name="tiny-moe", model_type="deepseek_v3", family="deepseek_v3", num_hidden_layers=N_LAYERS + 1,
        moe_layers=tuple(range(1, N_LAYERS + 1)), n_routed_experts=N_EXPERTS, top_k=TOP_K, n_shared_experts=1,
        scoring_func="sigmoid", topk_method="noaux_tc", norm_topk_prob=True, routed_scaling_factor=2.5,
    )  # fmt: skip
    fields.update(changes)
    return RoutingConfig(**fields)  # type: ignore[arg-type]


def tiny_tokenizer(vocab: int = VOCAB) -> dict:
    return {"name": "tiny", "vocab": [f"w{i}" for i in range(vocab)], "special_tokens": {"w0": 0}}


N_RECORDS = 12  # sequences in the ``tiny_store`` fixture (tests/conftest.py)


def write_tiny(path: Path | str, records: list[SequenceRecord]) -> Path | str:
    """Write (or append) ``records`` to a store of ``tiny_config()``; a path or an fsspec URL."""
    with StoreWriter(path, tiny_config(), tiny_tokenizer()) as w:
        for r in records:
            w.add(r)
    return path


def make_record(
    i: int, n_tokens: int | None = None, *, layers: int = N_LAYERS, k: int = TOP_K, experts: int = N_EXPERTS,
    scores: bool = False, weights: bool = True,
) -> SequenceRecord:  # fmt: skip
    """Sequence number ``i``: the same content for the same arguments (so a test can regenerate it)."""
    rng = np.random.default_rng(1000 + i)
    t = n_tokens if n_tokens is not None else int(rng.integers(3, 12))
    ids = np.argsort(rng.random((t, layers, experts)), axis=-1)[..., :k].astype(np.int16)  # (T, L, k) distinct
    w = np.sort(rng.random((t, layers, k)), axis=-1)[..., ::-1].astype(np.float32)
    sc = rng.random((t, layers, experts)).astype(np.float32) if scores else None
    cut = max(1, t // 2)
    return SequenceRecord(
        id=f"seq-{i}", domain=("math", "code", "language")[i % 3], source=f"prompts-{i % 2}.jsonl",
        token_ids=rng.integers(0, VOCAB, t), expert_ids=ids, gate_weights=w if weights else None,
        router_scores=sc, generated=np.arange(t) >= cut,
        spans=[SpanRecord("user", 0, cut), SpanRecord("answer", cut, t, step=i % 2, label=f"lab{i}")] if t else [],
    )  # fmt: skip


def assert_sequence_equal(ds, rec: SequenceRecord) -> None:
    """The store's rows of ``rec.id`` hold exactly ``rec`` (ids, tokens, weights to float16, spans)."""
    ids = [str(s) for s in np.asarray(ds["sequence"].values)]
    row = ids.index(rec.id)
    start = int(ds["sequence_start"].values[row])
    n = int(ds["sequence_length"].values[row])
    assert n == rec.n_tokens
    sl = slice(start, start + n)
    np.testing.assert_array_equal(ds["expert_ids"].values[sl], rec.expert_ids)
    np.testing.assert_array_equal(ds["token_id"].values[sl], rec.token_ids)
    np.testing.assert_array_equal(ds["position"].values[sl], np.arange(n))
    np.testing.assert_array_equal(ds["sequence_index"].values[sl], row)
    assert str(ds["sequence_domain"].values[row]) == rec.domain
    assert str(ds["sequence_source"].values[row]) == rec.source
    if rec.gate_weights is not None:
        np.testing.assert_array_equal(ds["gate_weights"].values[sl], rec.gate_weights.astype(np.float16))
    if rec.router_scores is not None:
        np.testing.assert_array_equal(ds["router_scores"].values[sl], rec.router_scores.astype(np.float16))
    spans = np.nonzero(np.asarray(ds["span_sequence"].values) == row)[0]
    got = [(int(ds["span_start"].values[j]) - start, int(ds["span_stop"].values[j]) - start) for j in spans]
    assert got == [(sp.start, sp.stop) for sp in rec.spans]
