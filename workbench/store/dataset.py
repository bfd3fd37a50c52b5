"""Build an in-memory routing Dataset that follows the store schema (schema.py).

The writer, the engine clients, tests and benchmarks all form Datasets here, so the names, dims and
dtypes of a routing store are produced in exactly one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr

from workbench.routing_config import RoutingConfig
from workbench.store import schema as S


@dataclass
class SpanRecord:
    """One segment span of a sequence; ``start``/``stop`` are positions within the sequence."""

    kind: str  # one of schema.SEGMENT_KINDS
    start: int
    stop: int  # exclusive
    step: int = -1
    label: str = ""


@dataclass
class SequenceRecord:
    """One recorded sequence: routing for each of its tokens and its metadata.

    Shapes: ``expert_ids`` (T, L, k) int; ``gate_weights`` (T, L, k) float or None (ids only);
    ``router_scores`` (T, L, E) float or None; ``token_ids`` (T,).
    """

    id: str
    domain: str
    source: str
    token_ids: np.ndarray  # (T,)
    expert_ids: np.ndarray  # (T, L, k)
    gate_weights: np.ndarray | None = None  # (T, L, k)
    router_scores: np.ndarray | None = None  # (T, L, E)
    generated: np.ndarray | None = None  # (T,) bool; default all False
    spans: list[SpanRecord] = field(default_factory=list)

    def __post_init__(self) -> None:
        t = len(self.token_ids)
        if self.expert_ids.ndim != 3 or self.expert_ids.shape[0] != t:
            raise ValueError(
                f"sequence {self.id!r}: expert_ids has shape {self.expert_ids.shape}, expected ({t}, layers, k)"
            )
        if self.gate_weights is not None and self.gate_weights.shape != self.expert_ids.shape:
            raise ValueError(
                f"sequence {self.id!r}: gate_weights shape {self.gate_weights.shape} "
                f"!= expert_ids shape {self.expert_ids.shape}"
            )
        for sp in self.spans:
            if sp.kind not in S.SEGMENT_CODE:
                raise ValueError(f"sequence {self.id!r}: unknown segment kind {sp.kind!r}")
            if not 0 <= sp.start <= sp.stop <= t:
                raise ValueError(f"sequence {self.id!r}: span {sp} outside 0..{t}")

    @property
    def n_tokens(self) -> int:
        return len(self.token_ids)


def routing_dataset(
    records: Sequence[SequenceRecord],
    config: RoutingConfig,
    *,
    token_offset: int = 0,
    sequence_offset: int = 0,
    with_scores: bool | None = None,
) -> xr.Dataset:
    """Concatenate sequences into one Dataset of the store schema.

    ``token_offset`` / ``sequence_offset`` say where these rows land in an existing store, so the
    global row numbers in ``sequence_start`` and the span table are right after an append.
    """
    n_layers, k = len(config.moe_layers), config.top_k
    if with_scores is None:
        with_scores = any(r.router_scores is not None for r in records)
    total = sum(r.n_tokens for r in records)
    ids = np.zeros((total, n_layers, k), dtype=S.DTYPES[S.EXPERT_IDS])
    weights = np.full((total, n_layers, k), np.nan, dtype=S.DTYPES[S.GATE_WEIGHTS])
    scores = (
        np.full((total, n_layers, config.n_routed_experts), np.nan, dtype=S.DTYPES[S.ROUTER_SCORES])
        if with_scores
        else None
    )
    tok = {name: np.zeros(total, dtype=S.DTYPES[name]) for name in S.TOKEN_VARS}
    tok[S.STEP][:] = -1
    seq_start, seq_len = [], []
    span_rows: list[tuple[int, int, int, int, int, str]] = []
    row = 0
    for i, r in enumerate(records):
        if r.expert_ids.shape[1:] != (n_layers, k):
            raise ValueError(
                f"sequence {r.id!r}: routing shape {r.expert_ids.shape[1:]} does not match the model's "
                f"({n_layers} MoE layers, top-{k})"
            )
        sl = slice(row, row + r.n_tokens)
        ids[sl] = r.expert_ids
        if r.gate_weights is not None:
            weights[sl] = r.gate_weights
        if scores is not None and r.router_scores is not None:
            scores[sl] = r.router_scores
        tok[S.TOKEN_ID][sl] = r.token_ids
        tok[S.POSITION][sl] = np.arange(r.n_tokens)
        tok[S.SEQUENCE_INDEX][sl] = sequence_offset + i
        tok[S.SEGMENT][sl] = S.SEGMENT_CODE["text"]
        if r.generated is not None:
            tok[S.GENERATED][sl] = r.generated
            tok[S.SEGMENT][sl][np.asarray(r.generated, bool)] = S.SEGMENT_CODE["completion"]
        for sp in r.spans:
            a, b = row + sp.start, row + sp.stop
            tok[S.SEGMENT][a:b] = S.SEGMENT_CODE[sp.kind]
            tok[S.STEP][a:b] = sp.step
            span_rows.append(
                (
                    sequence_offset + i,
                    S.SEGMENT_CODE[sp.kind],
                    token_offset + a,
                    token_offset + b,
                    sp.step,
                    sp.label,
                )
            )
        seq_start.append(token_offset + row)
        seq_len.append(r.n_tokens)
        row += r.n_tokens

    data_vars: dict[str, Any] = {
        S.EXPERT_IDS: ((S.TOKEN, S.LAYER, S.K), ids),
        S.GATE_WEIGHTS: ((S.TOKEN, S.LAYER, S.K), weights),
        **{name: ((S.TOKEN,), arr) for name, arr in tok.items()},
        S.SEQUENCE_DOMAIN: ((S.SEQUENCE,), np.array([r.domain for r in records], dtype=object)),
        S.SEQUENCE_SOURCE: ((S.SEQUENCE,), np.array([r.source for r in records], dtype=object)),
        S.SEQUENCE_START: ((S.SEQUENCE,), np.array(seq_start, dtype=S.DTYPES[S.SEQUENCE_START])),
        S.SEQUENCE_LENGTH: ((S.SEQUENCE,), np.array(seq_len, dtype=S.DTYPES[S.SEQUENCE_LENGTH])),
    }
    cols: list[Any] = list(zip(*span_rows, strict=True)) if span_rows else [[]] * 6
    for name, col in zip(S.SPAN_VARS, cols, strict=True):
        dtype = object if name == S.SPAN_LABEL else S.DTYPES[name]
        data_vars[name] = ((S.SPAN,), np.array(col, dtype=dtype))
    if scores is not None:
        data_vars[S.ROUTER_SCORES] = ((S.TOKEN, S.LAYER, S.EXPERT), scores)
    coords = {
        S.LAYER: np.array(config.moe_layers, dtype=np.int16),
        S.SEQUENCE: np.array([r.id for r in records], dtype=object),
    }
    return xr.Dataset(data_vars, coords=coords)
