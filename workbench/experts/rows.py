"""The token rows an expert page reads: one pass over the store for one layer and its two neighbours.

Everything the page shows is computed from these in-memory numpy arrays, so the store is read once:
the small per-token tables (token id, sequence, segment, step, position) and the routing of layers
l-1, l, l+1 (``expert_ids``, and ``gate_weights`` of layer l when the store has them).
"""

from __future__ import annotations

from dataclasses import dataclass

import dask
import numpy as np
import xarray as xr

from workbench.errors import SelectionError, WorkbenchError
from workbench.store import schema as S
from workbench.store.select import Selection, token_mask


class ExpertPageError(WorkbenchError):
    """An expert page cannot be built as asked (unknown layer or expert, empty selection, bad search)."""


@dataclass
class ExpertRows:
    """The selected tokens of a store and their routing around one layer. T selected tokens, k top-k.

    ``rows`` are global token rows along ``token`` (T,); all other per-token arrays are aligned with them.
    ``ids`` holds the expert ids of layers (l-1, l, l+1) as (T, 3, k), with -1 where the layer does not
    exist (l is the first or last MoE layer). ``weights`` (T, k) float32 are layer l's gate weights, or
    None on an ids-only store.
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
    ids: np.ndarray  # (T, 3, k) int16
    weights: np.ndarray | None  # (T, k) float32
    store_token_id: np.ndarray  # (N,) token ids of every row of the store (contexts reach past the selection)
    store_seq: np.ndarray  # (N,) sequence row of every row of the store


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


def load_rows(ds: xr.Dataset, layer: int, expert: int, selection: Selection | None = None) -> ExpertRows:
    """Read what a page on (``layer``, ``expert``) needs, restricted to the selected tokens.

    The layer restriction of ``selection`` is ignored (a page is about one layer); its token part
    (domains, segments, sequences, steps, token rows, positions) applies. Raises ``ExpertPageError`` /
    ``SelectionError`` with one clear line for an unknown layer or expert and an empty selection.
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
    ids_da = ds[S.EXPERT_IDS].isel({S.LAYER: near})
    ids_da = ids_da if whole else ids_da.isel({S.TOKEN: rows})
    w_da = None
    if bool(ds.attrs.get("has_gate_weights", S.GATE_WEIGHTS in ds)) and S.GATE_WEIGHTS in ds:
        w_da = ds[S.GATE_WEIGHTS].isel({S.LAYER: li})
        w_da = w_da if whole else w_da.isel({S.TOKEN: rows})
    # one compute for both: the store's chunks hold all layers, so ids and weights decode in parallel
    parts = dask.compute(ids_da.data, *([w_da.data] if w_da is not None else []))
    ids_sel = np.asarray(parts[0])  # (T, n, k)
    k = ids_sel.shape[-1]
    ids = np.full((rows.size, 3, k), -1, dtype=np.int16)
    for j, i in enumerate(near):
        ids[:, i - li + 1] = ids_sel[:, j]
    weights = np.asarray(parts[1], dtype=np.float32) if w_da is not None else None
    if weights is not None and np.isnan(weights).all():
        weights = None  # an ids-only capture (engines) stores NaN weights

    store_token_id = np.asarray(ds[S.TOKEN_ID].values).astype(np.int64)
    store_seq = np.asarray(ds[S.SEQUENCE_INDEX].values).astype(np.int32)

    def per_token(name: str) -> np.ndarray:
        return np.asarray(ds[name].values)[rows]

    return ExpertRows(
        layer=layer, expert=expert, n_experts=n_experts, top_k=k,
        layers=(layers[li - 1] if li > 0 else None, layer, layers[li + 1] if li + 1 < len(layers) else None),
        rows=rows.astype(np.int64), token_id=store_token_id[rows],
        seq=store_seq[rows], segment=per_token(S.SEGMENT),
        step=per_token(S.STEP), position=per_token(S.POSITION), ids=ids, weights=weights,
        store_token_id=store_token_id, store_seq=store_seq,
    )  # fmt: skip
