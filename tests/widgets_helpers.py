"""Synthetic tool-loop transcript stores for the widget tests, notebook tests and bench_widgets.py.

A transcript here looks like a K2 tool loop: system, tool declarations, user, then per step a think
segment, a tool call and a tool result, and a final answer, with template scaffolding between
segments. Routing depends on the segment kind (each kind prefers its own band of experts), so
graphs of different segments really differ. Stores are real zarr v3 stores on disk.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from workbench.routing_config import RoutingConfig
from workbench.store import schema as S
from workbench.store.dataset import SequenceRecord, SpanRecord

SPECIALS = ["<|im_system|>", "<|im_user|>", "<|im_assistant|>", "<|im_middle|>", "<|im_end|>", "<think>", "</think>"]
# "Ã©" is how byte-level BPE writes "é"
WORDS = ["the", "cat", "sum", "of", "is", "x", "=", "print", "(", ")", "42", "def", "return", "search", "ok", "Ã©"]
VOCAB = SPECIALS + ["Ċ"] + [f"Ġ{w}" for w in WORDS] + WORDS  # byte-level style (Ġ = space, Ċ = newline)


def synthetic_config(n_layers: int = 6, n_experts: int = 64, k: int = 8) -> RoutingConfig:
    return RoutingConfig(
        model_name="synthetic-k2",
        model_type="deepseek_v3",
        family="deepseek_v3",
        num_hidden_layers=n_layers + 1,
        moe_layers=tuple(range(1, n_layers + 1)),
        n_routed_experts=n_experts,
        top_k=k,
        n_shared_experts=1,
        scoring_func="sigmoid",
        topk_method="noaux_tc",
        norm_topk_prob=True,
        routed_scaling_factor=2.827,
    )


def _routing(rng: np.random.Generator, kinds: np.ndarray, n_layers: int, n_experts: int, k: int):
    """(T, L, k) distinct expert ids with a band per segment kind, and descending gate weights."""
    t = kinds.size
    band = (kinds.astype(np.int64) * (n_experts // 10))[:, None]  # (T, 1)
    layer_shift = (np.arange(n_layers) * 3)[None, :]  # (1, L)
    first = (band + layer_shift + rng.geometric(0.3, size=(t, n_layers)) - 1) % n_experts  # (T, L)
    gaps = rng.integers(1, max(2, n_experts // k), size=(t, n_layers, k - 1))  # keeps ids distinct
    offsets = np.concatenate([np.zeros((t, n_layers, 1), np.int64), np.cumsum(gaps, axis=-1)], axis=-1)
    ids = (first[:, :, None] + offsets) % n_experts  # (T, L, k)
    w = np.sort(rng.gamma(1.0, size=(t, n_layers, k)), axis=-1)[..., ::-1]
    w = 2.827 * w / w.sum(-1, keepdims=True)
    return ids.astype(np.int16), w.astype(np.float32)


def transcript_record(
    seq_id: str,
    n_steps: int,
    *,
    rng: np.random.Generator,
    config: RoutingConfig,
    think: int = 24,
    call: int = 12,
    result: int = 16,
    ids_only: bool = False,
) -> SequenceRecord:
    """One synthetic tool-loop transcript of ``n_steps`` steps."""
    spans: list[SpanRecord] = []
    pos = 0

    def add(kind: str, n: int, step: int = -1, label: str = "") -> None:
        nonlocal pos
        spans.append(SpanRecord(kind, pos, pos + n, step, label))
        pos += n

    add("template", 1)
    add("system", 10)
    add("tool_declare", 20)
    add("template", 2)
    add("user", 14)
    for s in range(n_steps):
        add("template", 2, s)
        add("think", think, s)
        add("tool_call", call, s, f"functions.calculator:{s}")
        add("template", 1, s)
        add("tool_result", result, s, f"functions.calculator:{s}")
    add("template", 2)
    add("answer", 12)
    kinds = np.zeros(pos, dtype=np.int8)
    for sp in spans:
        kinds[sp.start : sp.stop] = S.SEGMENT_CODE[sp.kind]
    ids, w = _routing(rng, kinds, len(config.moe_layers), config.n_routed_experts, config.top_k)
    token_ids = rng.integers(0, len(VOCAB), size=pos).astype(np.int32)
    return SequenceRecord(
        id=seq_id,
        domain="agent",
        source="synthetic",
        token_ids=token_ids,
        expert_ids=ids,
        gate_weights=None if ids_only else w,
        spans=spans,
    )


def write_store(path: Path, records: list[SequenceRecord], config: RoutingConfig) -> Path:
    """Write records as a committed routing store through the store layer's ``StoreWriter``."""
    from workbench.store.io import StoreWriter

    tokenizer = {"name": "synthetic", "vocab": VOCAB, "special_tokens": {s: i for i, s in enumerate(SPECIALS)}}
    has_w = any(r.gate_weights is not None for r in records)
    with StoreWriter(str(path), config, tokenizer, has_gate_weights=has_w) as writer:
        for r in records:
            writer.add(r)
    return path


def transcript_store(
    path: Path,
    *,
    n_steps: int = 5,
    n_transcripts: int = 2,
    n_layers: int = 6,
    n_experts: int = 64,
    k: int = 8,
    seed: int = 0,
    ids_only: bool = False,
) -> Path:
    """A store of ``n_transcripts`` synthetic transcripts (ids t0, t1, ...)."""
    rng = np.random.default_rng(seed)
    config = synthetic_config(n_layers, n_experts, k)
    recs = [
        transcript_record(f"t{i}", n_steps + i, rng=rng, config=config, ids_only=ids_only) for i in range(n_transcripts)
    ]
    return write_store(path, recs, config)


def open_test_store(path: Path) -> xr.Dataset:
    from workbench.store.io import open_store

    return open_store(str(path))


def domain_store(
    path: Path, *, domains: tuple[str, ...] = ("math", "code", "language"), per_domain: int = 6, n_tokens: int = 40,
    config: RoutingConfig | None = None,
) -> Path:  # fmt: skip
    """Plain prompts of several domains whose routing prefers a different band of experts per domain."""
    rng = np.random.default_rng(1)
    config = config or synthetic_config()
    recs = []
    for d_i, dom in enumerate(domains):
        for j in range(per_domain):
            band = np.full(n_tokens, 3 * d_i, dtype=np.int8)
            ids, w = _routing(rng, band, len(config.moe_layers), config.n_routed_experts, config.top_k)
            recs.append(
                SequenceRecord(
                    id=f"{dom}-{j}",
                    domain=dom,
                    source="synthetic",
                    token_ids=rng.integers(0, len(VOCAB), size=n_tokens).astype(np.int32),
                    expert_ids=ids,
                    gate_weights=w,
                )
            )
    return write_store(path, recs, config)
