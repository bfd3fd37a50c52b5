"""The token rows an expert page reads: one pass over the store for one layer and its two neighbours.

Everything the page shows is computed from these in-memory numpy arrays, so the store is read once:
the small per-token tables (token id, sequence, segment, step, position) and the routing of layers
l-1, l, l+1 (``expert_ids``, and ``gate_weights`` of layer l when the store has them). With a fresh
layer index in the store (``workbench.store.layer_index``) only those three layers are decoded; without
one, the store's token-major chunks are, i.e. every layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import dask
import numpy as np
import xarray as xr

from workbench.errors import SelectionError, WorkbenchError
from workbench.store import schema as S
from workbench.store.cache import cached
from workbench.store.layer_index import open_index
from workbench.store.select import Selection, token_mask


class ExpertPageError(WorkbenchError):
    """An expert page cannot be built as asked (unknown layer or expert, empty selection, bad search)."""


@dataclass
class ExpertRows:
    """The selected tokens of a store and the routing a page needs around one layer. T selected tokens,
    N_E of them routed to the expert, k top-k, E experts.

    ``rows`` are global token rows along ``token`` (T,); the other per-token arrays are aligned with them.
    ``near_ids`` (N_E, 3, k) holds the expert ids of the routed tokens at layers (l-1, l, l+1), -1 where the
    layer does not exist (l is the first or last MoE layer); ``base`` (3, E) counts the selected tokens
    with each expert in their top-k at those layers (the neighbours' base rates). ``rank`` (N_E,) is the
    0-based k slot the expert holds; ``weight`` (N_E,) float32 its gate weight, None on an ids-only store.
    """

    layer: int
    expert: int
    layers: tuple[int | None, int, int | None]  # (previous, this, next) real layer indices
    n_experts: int
    top_k: int
    rows: np.ndarray  # (T,) int64
    token_id: np.ndarray  # (T,) int64
    seq: np.ndarray  # (T,) int32 row along ``sequence``
    segment: np.ndarray  # (T,) int8
    step: np.ndarray  # (T,) int32
    position: np.ndarray  # (T,) int32
    routed: np.ndarray  # (T,) bool
    rank: np.ndarray  # (N_E,) int64
    near_ids: np.ndarray  # (N_E, 3, k) int16
    base: np.ndarray  # (3, E) int64
    weight: np.ndarray | None  # (N_E,) float32
    store_token_id: np.ndarray  # (N,) token ids of every row of the store (contexts reach past the selection)
    store_seq: np.ndarray  # (N,) sequence row of every row of the store
    from_index: bool = False  # the routing came from the store's layer index (only 3 layers decoded)


def check_layer_expert(ds: xr.Dataset, layer: int, expert: int) -> tuple[int, int]:
    """Positional index of ``layer`` along ``layer`` and the number of experts; raise if either is outside."""
    layers = [int(x) for x in np.asarray(ds[S.LAYER].values)]
    n_experts = int(ds.attrs["model"]["n_routed_experts"])
    if layer not in layers:
        raise ExpertPageError(
            f"layer {layer} is not an MoE layer of this model; its MoE layers are {layers[0]}..{layers[-1]}"
        )
    if not 0 <= expert < n_experts:
        raise ExpertPageError(f"expert {expert} is outside this model's experts 0..{n_experts - 1}")
    return layers.index(layer), n_experts


def token_tables(ds: xr.Dataset) -> dict[str, np.ndarray]:
    """The small per-token arrays a page reads (token id, sequence row, segment, step, position), each (N,),
    decoded in one dask compute and kept for the Dataset's lifetime (``store.cache``)."""

    def read() -> dict[str, np.ndarray]:
        names = (S.TOKEN_ID, S.SEQUENCE_INDEX, S.SEGMENT, S.STEP, S.POSITION)
        values = dask.compute(*(ds[n].data for n in names))
        out = {n: np.asarray(v) for n, v in zip(names, values, strict=True)}
        out[S.TOKEN_ID] = out[S.TOKEN_ID].astype(np.int64)
        out[S.SEQUENCE_INDEX] = out[S.SEQUENCE_INDEX].astype(np.int32)
        return out

    return cached(ds, "token_tables", read)


def _layer_routing(
    ds: xr.Dataset, near: list[int], li: int, rows: np.ndarray | None
) -> tuple[list[np.ndarray], np.ndarray | None, np.ndarray | None]:
    """Expert ids (T, k) of each layer at positions ``near`` and layer ``li``'s gate weights (T, k) float16
    (None without gate weights), for token ``rows`` (None: all), plus the index's whole-store load table
    (L, E) when it was read from the layer index (empty for a sub-selection; None when the index was not
    used). From the layer index when the store has a fresh one (reads only those layers), else from the
    store's token-major chunks (which decodes every layer)."""
    has_w = bool(ds.attrs.get("has_gate_weights", S.GATE_WEIGHTS in ds)) and S.GATE_WEIGHTS in ds
    ix = open_index(ds)
    if ix is not None:
        lays = [ix.layer_ids(i) for i in near]  # each (N, k), contiguous
        w = ix.layer_weights(li) if has_w else None
        if rows is not None:
            lays = [x[rows] for x in lays]
            w = w[rows] if w is not None else None
        return lays, w, ix.load if rows is None else np.zeros((0, 0), dtype=np.int64)
    ids_da = ds[S.EXPERT_IDS].isel({S.LAYER: near})
    ids_da = ids_da if rows is None else ids_da.isel({S.TOKEN: rows})
    w_da = None
    if has_w:
        w_da = ds[S.GATE_WEIGHTS].isel({S.LAYER: li})
        w_da = w_da if rows is None else w_da.isel({S.TOKEN: rows})
    # one compute for both: the store's chunks hold all layers, so ids and weights decode in parallel
    parts = dask.compute(ids_da.data, *([w_da.data] if w_da is not None else []))
    ids = np.asarray(parts[0])  # (T, n, k)
    weights = np.asarray(parts[1]) if w_da is not None else None
    return [np.ascontiguousarray(ids[:, j]) for j in range(len(near))], weights, None


def load_rows(ds: xr.Dataset, layer: int, expert: int, selection: Selection | None = None) -> ExpertRows:
    """Read what a page on (``layer``, ``expert``) needs, restricted to the selected tokens.

    The layer restriction of ``selection`` is ignored (a page is about one layer); its token part
    (domains, segments, sequences, steps, token rows, positions, text matches) applies. Raises
    ``ExpertPageError`` / ``SelectionError`` with one clear line for an unknown layer or expert and an
    empty selection.
    """
    li, n_experts = check_layer_expert(ds, layer, expert)
    layers = [int(x) for x in np.asarray(ds[S.LAYER].values)]
    mask = token_mask(ds, selection or Selection())
    rows = np.nonzero(mask)[0]
    if rows.size == 0:
        raise SelectionError(
            "the selection holds no tokens; widen its where clauses or check what the store holds (`workbench info`)"
        )
    whole = rows.size == mask.size
    near = [i for i in (li - 1, li, li + 1) if 0 <= i < len(layers)]
    lays, weights, load = _layer_routing(ds, near, li, None if whole else rows)
    here = lays[near.index(li)]
    k = here.shape[-1]
    hit = here == expert  # (T, k)
    routed = hit.any(axis=1)
    idx = np.nonzero(routed)[0]
    rank = hit[idx].argmax(axis=1).astype(np.int64)
    near_ids = np.full((idx.size, 3, k), -1, dtype=np.int16)
    base = np.zeros((3, n_experts), dtype=np.int64)
    for j, i in enumerate(near):
        near_ids[:, i - li + 1] = lays[j][idx]
        counted = load[i] if load is not None and load.size else None  # the index's whole-store load
        base[i - li + 1] = counted if counted is not None else np.bincount(lays[j].reshape(-1), minlength=n_experts)
    weight = weights[idx, rank].astype(np.float32) if weights is not None else None
    if weights is not None and np.isnan(weights[: min(len(weights), 4096)]).all() and np.isnan(weights).all():
        weight = None  # an ids-only capture (engines) stores NaN weights
    tables = token_tables(ds)
    store_token_id, store_seq = tables[S.TOKEN_ID], tables[S.SEQUENCE_INDEX]

    def per_token(name: str) -> np.ndarray:
        return tables[name] if whole else tables[name][rows]

    return ExpertRows(
        layer=layer, expert=expert, n_experts=n_experts, top_k=k,
        layers=(layers[li - 1] if li > 0 else None, layer, layers[li + 1] if li + 1 < len(layers) else None),
        rows=rows.astype(np.int64), token_id=per_token(S.TOKEN_ID), seq=per_token(S.SEQUENCE_INDEX),
        segment=per_token(S.SEGMENT), step=per_token(S.STEP), position=per_token(S.POSITION),
        routed=routed, rank=rank, near_ids=near_ids, base=base, weight=weight,
        store_token_id=store_token_id, store_seq=store_seq, from_index=load is not None,
    )  # fmt: skip
