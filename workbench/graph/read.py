"""Reading a selection's routing for an in-memory graph: only the store chunks it covers, in one dask pass.

``workbench.store.select.select`` restricts a Dataset with an integer row index, which dask turns into
a gather over whole dask blocks: the store opens with blocks of ~128 MB (40,000 K2 tokens in a small
store, ~139,000 in a large one), so a 10,000-token selection decoded the full block of expert ids
and again of gate weights, in separate passes per variable. Here the selected rows are grouped into
*spans*, runs of rows with gaps shorter than one zarr chunk of the store, each span is read as a
plain slice, so only the zarr chunks the span touches are decoded: straight from the store's chunks
into the result (``workbench.store.rows``) when the Dataset is a store's own, else through dask, every
variable in ONE ``dask.compute`` call; the rows are then taken in memory.
Several selections (the two sides of a difference) are read as the spans of their union, so a chunk
they share is decoded once. The rows and layers are those ``select`` keeps, in the same order, and a
selection ``select`` refuses is refused with the same error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

from workbench.store import schema as S
from workbench.store.rows import read_spans, spans
from workbench.store.select import Selection, layer_indexer, select, token_mask

DEFAULT_GAP = 8192  # tokens: runs closer than this are read as one span when the store's chunks are unknown


@dataclass
class SelectedRouting:
    """The routing of one selection, in memory. T selected tokens, L selected MoE layers, top-k."""

    layers: np.ndarray  # (L,) int64 real MoE layer indices
    expert_ids: np.ndarray  # (T, L, k) as stored (int16)
    gate_weights: np.ndarray | None  # (T, L, k) as stored (float16/32), None when not asked for
    token_ids: np.ndarray  # (T,)
    positions: np.ndarray  # (T,) position of each token within its sequence
    domains: tuple[str, ...]  # domain names present in the store, sorted
    token_domain: np.ndarray  # (T,) int64 index into ``domains`` of each token's sequence's domain

    @property
    def n_tokens(self) -> int:
        return int(self.expert_ids.shape[0])


def selected_rows(ds: xr.Dataset, selection: Selection) -> np.ndarray:
    """Global token rows of ``selection``, ascending (T,); raises ``select``'s ``SelectionError`` when none."""
    rows = np.flatnonzero(token_mask(ds, selection))
    if rows.size == 0:
        select(ds, selection)  # raises the one-line SelectionError for an empty selection
    return rows


def _chunk_rows(ds: xr.Dataset) -> int:
    """Tokens per zarr chunk of the expert ids (the store's encoding), else ``DEFAULT_GAP``."""
    chunks = ds[S.EXPERT_IDS].encoding.get("chunks") or ds[S.EXPERT_IDS].encoding.get("preferred_chunks")
    if isinstance(chunks, dict):
        chunks = (chunks.get(S.TOKEN),)
    return int(chunks[0]) if chunks and chunks[0] else DEFAULT_GAP


def read_selections(
    ds: xr.Dataset, selections: list[Selection], *, weights: bool = True, rows: list[np.ndarray] | None = None
) -> list[SelectedRouting]:
    """The routing of each of ``selections`` (module docstring), read together in one ``dask.compute``.

    ``weights=False`` leaves the gate weights unread (``gate_weights`` None); ``rows``, when the caller
    has them already, are the ``selected_rows`` of each selection. Raises ``SelectionError`` as
    ``select`` does (unknown names, empty selections, a layer range outside the model).
    """
    if not selections:
        return []
    names = [S.EXPERT_IDS, S.TOKEN_ID, S.POSITION, S.SEQUENCE_INDEX] + ([S.GATE_WEIGHTS] if weights else [])
    sel_rows = [rows[i] if rows is not None else selected_rows(ds, sel) for i, sel in enumerate(selections)]
    lays = [layer_indexer(ds, sel) for sel in selections]
    union = sel_rows[0] if len(sel_rows) == 1 else np.unique(np.concatenate(sel_rows))
    runs = spans(union, _chunk_rows(ds))
    whole = read_spans(ds, names, runs)
    starts = np.array([a for a, _ in runs], dtype=np.int64)
    offset = np.concatenate([[0], np.cumsum([b - a for a, b in runs])]).astype(np.int64)
    seq_domain = [str(d) for d in ds[S.SEQUENCE_DOMAIN].values]
    domains = tuple(sorted(set(seq_domain)))
    code_of_seq = np.array([domains.index(d) for d in seq_domain], dtype=np.int64)
    all_layers = np.asarray(ds[S.LAYER].values).astype(np.int64)
    out = []
    for r, lay in zip(sel_rows, lays, strict=True):
        run_of = np.searchsorted(starts, r, side="right") - 1
        local = r - starts[run_of] + offset[run_of]  # each row's place in the concatenated spans
        got = {name: arr if local.size == arr.shape[0] else arr[local] for name, arr in whole.items()}
        ids, w = got[S.EXPERT_IDS], got.get(S.GATE_WEIGHTS)
        if not isinstance(lay, slice):
            ids = ids[:, lay]
            w = w[:, lay] if w is not None else None
        seq_idx = got[S.SEQUENCE_INDEX].astype(np.int64)
        out.append(
            SelectedRouting(
                layers=all_layers[lay],
                expert_ids=ids,
                gate_weights=w,
                token_ids=got[S.TOKEN_ID],
                positions=got[S.POSITION],
                domains=domains,
                token_domain=code_of_seq[seq_idx] if seq_idx.size else np.zeros(0, dtype=np.int64),
            )
        )
    return out
