"""One sequence of a routing store, loaded into memory for the widgets, and its token strings.

Loading is the one slow step of a widget (one read of the sequence's rows from zarr); every click
after that works on these numpy arrays. The rows are read straight from the store's chunks that hold
them (``workbench.store.rows.read_spans``), decoded into the arrays kept, with no dask graph and no
intermediate copies: a K2-sized transcript of 38k tokens (73 MB of ids and weights) reads in ~0.09 s,
against 0.10-0.41 s through dask (a store of eight such transcripts, 2 cores). Token strings come
from the vocabulary stored in the store's attrs, so no tokenizer or model is needed to look at a store.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from workbench.errors import WorkbenchError
from workbench.experts.vocab import text_vocab
from workbench.rank_order import is_rank_ordered
from workbench.store import schema as S
from workbench.store.rows import read_spans


@dataclass(frozen=True)
class SequenceData:
    """A sequence's tokens, segments and routing, all in memory. T tokens, S spans, L layers, top-k."""

    sequence_id: str
    domain: str
    token_ids: np.ndarray  # (T,) int32
    token_text: list[str]  # (T,) display strings
    segment: np.ndarray  # (T,) int8 codes into segment_kinds
    step: np.ndarray  # (T,) int32, -1 outside any tool-loop step
    span_kind: np.ndarray  # (S,) int8
    span_start: np.ndarray  # (S,) int64 positions within the sequence
    span_stop: np.ndarray  # (S,) int64 (exclusive)
    span_step: np.ndarray  # (S,) int32
    span_label: list[str]  # (S,)
    expert_ids: np.ndarray  # (T, L, k) int16
    gate_weights: np.ndarray  # (T, L, k) float16, NaN for ids-only
    layers: np.ndarray  # (L,) real layer indices
    n_experts: int
    segment_kinds: list[str]
    rank_ordered: bool = True  # False for engine captures: the k axis is a slot, not the router's rank

    @property
    def n_tokens(self) -> int:
        return int(self.token_ids.size)

    @property
    def steps(self) -> np.ndarray:
        """Sorted distinct tool-loop steps (≥ 0) present in the sequence."""
        s = np.unique(self.step)
        return s[s >= 0]


def as_dataset(store: xr.Dataset | str | Path) -> xr.Dataset:
    """A routing Dataset from a Dataset or a store path/URL (opened with ``workbench.open_store``)."""
    if isinstance(store, xr.Dataset):
        return store
    from workbench import open_store

    return open_store(str(store))


def sequence_ids(ds: xr.Dataset) -> list[str]:
    return [str(s) for s in ds[S.SEQUENCE].values]


def load_sequence(ds: xr.Dataset, sequence: str | None = None) -> SequenceData:
    """Read one sequence (default: the first one) of a routing Dataset into memory.

    Raises WorkbenchError naming the known ids when ``sequence`` is not in the store.
    """
    ids = sequence_ids(ds)
    if not ids:
        raise WorkbenchError("this routing store holds no sequences yet; record or replay something into it first")
    if sequence is None:
        sequence = ids[0]
    if sequence not in ids:
        shown = ", ".join(ids[:10]) + (" ..." if len(ids) > 10 else "")
        raise WorkbenchError(f"no sequence {sequence!r} in this store; it has: {shown}")
    i = ids.index(sequence)
    start = int(ds[S.SEQUENCE_START].values[i])
    length = int(ds[S.SEQUENCE_LENGTH].values[i])
    names = [S.TOKEN_ID, S.SEGMENT, S.STEP, S.EXPERT_IDS, S.GATE_WEIGHTS]
    loaded = read_spans(ds, names, [(start, start + length)])  # only the chunks holding these rows
    span_seq = np.asarray(ds[S.SPAN_SEQUENCE].values)
    sp = np.nonzero(span_seq == i)[0]
    span_start = np.asarray(ds[S.SPAN_START].values)[sp].astype(np.int64) - start
    order = np.argsort(span_start, kind="stable")
    sp = sp[order]
    vocab = list(ds.attrs.get("tokenizer", {}).get("vocab", []))
    display = text_vocab(vocab)  # the one byte-level BPE decoder (workbench.experts.vocab)
    token_ids = np.asarray(loaded[S.TOKEN_ID], dtype=np.int32)
    text = [display[t] if 0 <= t < len(display) else f"<{t}>" for t in token_ids.tolist()]
    cfg = ds.attrs.get("model", {})
    n_experts = int(cfg.get("n_routed_experts", 0)) or int(loaded[S.EXPERT_IDS].max()) + 1
    return SequenceData(
        sequence_id=sequence,
        domain=str(ds[S.SEQUENCE_DOMAIN].values[i]),
        token_ids=token_ids,
        token_text=text,
        segment=np.asarray(loaded[S.SEGMENT], dtype=np.int8),
        step=np.asarray(loaded[S.STEP], dtype=np.int32),
        span_kind=np.asarray(ds[S.SPAN_KIND].values, dtype=np.int8)[sp],
        span_start=np.asarray(ds[S.SPAN_START].values, dtype=np.int64)[sp] - start,
        span_stop=np.asarray(ds[S.SPAN_STOP].values, dtype=np.int64)[sp] - start,
        span_step=np.asarray(ds[S.SPAN_STEP].values, dtype=np.int32)[sp],
        span_label=[str(x) for x in np.asarray(ds[S.SPAN_LABEL].values)[sp]],
        expert_ids=loaded[S.EXPERT_IDS],
        gate_weights=loaded[S.GATE_WEIGHTS],
        layers=np.asarray(ds[S.LAYER].values),
        n_experts=n_experts,
        segment_kinds=list(ds.attrs.get("segment_kinds", S.SEGMENT_KINDS)),
        rank_ordered=is_rank_ordered(ds.attrs),
    )
