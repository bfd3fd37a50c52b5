"""Resolve a routing Dataset and a Selection into chunk-aligned inputs for the counting kernels.

Nothing here reads the routing arrays: ``expert_ids`` and ``gate_weights`` stay lazy dask arrays,
chunked along ``token`` as they are stored. Selections are not applied by fancy-indexing the token
axis (which would re-chunk and re-read the store); instead every token carries a small integer
*group code* (``-1`` = not selected), and chunks holding no selected token are skipped entirely.
"""

from __future__ import annotations

from dataclasses import dataclass

import dask.array as da
import numpy as np
import xarray as xr

from workbench.errors import SelectionError, WorkbenchError
from workbench.rank_order import is_rank_ordered
from workbench.routing_config import RoutingConfig
from workbench.store import schema as S
from workbench.store.rows import TokenRows, token_rows
from workbench.store.select import Selection, layer_indexer, token_mask

GROUP_BY = ("domain", "segment", "sequence", "step")


class MetricInputError(WorkbenchError):
    """A metric cannot be computed from this store as asked (e.g. a weight metric on an ids-only store)."""


@dataclass
class RoutingInputs:
    """What the kernels need, with the selection resolved.

    ``ids`` / ``weights`` are (T, L, k) dask arrays over *all* token rows of the store, already
    restricted to the selected layers; ``group`` (T,) holds each token's group code (-1 when not
    selected); ``seq`` (T,) the token's sequence row.
    """

    ids: da.Array  # (T, L, k) int16
    weights: da.Array | None  # (T, L, k) float, same chunks as ids; None when the store has ids only
    group: np.ndarray  # (T,) int32, -1 = not selected
    seq: np.ndarray  # (T,) int32
    groups: list[str]  # name of each group code
    by: str | None  # what the groups are ("domain", "segment", ...) or None for one group "all"
    layers: np.ndarray  # (L,) the model's real layer indices of the selected layers
    n_experts: int
    top_k: int
    config: RoutingConfig
    token_id: np.ndarray  # (T,) int32
    rank_order: bool = True  # expert_ids' k axis is the router's rank order (false for engine stores)
    ids_rows: TokenRows | None = None  # the ids (selected layers) read chunk by chunk; None: use ``ids``
    weights_rows: TokenRows | None = None  # likewise for ``weights``

    @property
    def n_groups(self) -> int:
        return len(self.groups)

    @property
    def token_chunks(self) -> tuple[int, ...]:
        return tuple(int(c) for c in self.ids.chunks[0])

    def group_tokens(self) -> np.ndarray:
        """Number of selected tokens per group. Shape (G,)."""
        sel = self.group >= 0
        return np.bincount(self.group[sel], minlength=self.n_groups).astype(np.int64)


def routing_config(ds: xr.Dataset) -> RoutingConfig:
    """The store's RoutingConfig (from ``attrs["model"]``), or a clear error if it is not a routing store."""
    model = ds.attrs.get("model")
    if not isinstance(model, dict):
        raise WorkbenchError("this Dataset has no attrs['model']; open it with workbench.open_store(PATH)")
    return RoutingConfig.from_attrs(model)


def has_gate_weights(ds: xr.Dataset) -> bool:
    return bool(ds.attrs.get("has_gate_weights", True)) and S.GATE_WEIGHTS in ds


def require_gate_weights(ds: xr.Dataset, metric: str) -> None:
    """Refuse a weight metric on an ids-only store (engine capture without gate weights)."""
    if not has_gate_weights(ds):
        raise MetricInputError(
            f"{metric} needs gate weights, but this store holds expert ids only (capture="
            f"{ds.attrs.get('capture', '?')}); use an id-based metric or record with hooks"
        )


def require_rank_order(ds: xr.Dataset, metric: str) -> None:
    """Refuse (one line) a metric that reads the k axis as router ranks on a store not in rank order."""
    if not is_rank_ordered(ds.attrs):
        raise MetricInputError(
            f"{metric} reads router ranks, but the expert ids of this store are not in rank order (capture="
            f"{ds.attrs.get('capture', '?')}); use a set-based metric or record with hooks"
        )


def _lazy(var: xr.DataArray, chunk: int) -> da.Array:
    data = var.data
    if isinstance(data, da.Array):
        return data
    return da.from_array(np.asarray(data), chunks=(chunk, *tuple(-1 for _ in data.shape[1:])))


def group_codes(ds: xr.Dataset, mask: np.ndarray, by: str | None) -> tuple[np.ndarray, list[str]]:
    """Per-token group codes (T,) int32 with -1 where ``mask`` is False, and the group names."""
    n = ds.sizes[S.TOKEN]
    if by is None:
        code = np.zeros(n, dtype=np.int32)
        names = ["all"]
    elif by in ("domain", "sequence"):
        seq_idx = np.asarray(ds[S.SEQUENCE_INDEX].values, dtype=np.int64)
        if by == "domain":
            per_seq = np.array([str(d) for d in ds[S.SEQUENCE_DOMAIN].values], dtype=object)
        else:
            per_seq = np.array([str(s) for s in ds[S.SEQUENCE].values], dtype=object)
        present = sorted(set(per_seq[np.unique(seq_idx[mask])].tolist())) if mask.any() else []
        lookup = {name: i for i, name in enumerate(present)}
        seq_code = np.array([lookup.get(str(v), -1) for v in per_seq], dtype=np.int32)
        code = seq_code[seq_idx] if seq_idx.size else np.zeros(0, np.int32)
        names = present
    elif by == "segment":
        kinds = list(ds.attrs.get("segment_kinds", S.SEGMENT_KINDS))
        seg = np.asarray(ds[S.SEGMENT].values, dtype=np.int32)
        present_codes = sorted(np.unique(seg[mask]).tolist())
        remap = np.full(len(kinds) + 1, -1, dtype=np.int32)
        for i, c in enumerate(present_codes):
            remap[c] = i
        code = remap[seg]
        names = [kinds[c] for c in present_codes]
    elif by == "step":
        step = np.asarray(ds[S.STEP].values, dtype=np.int64)
        present_steps = sorted(np.unique(step[mask]).tolist())
        code = np.searchsorted(np.array(present_steps, dtype=np.int64), step).astype(np.int32)
        code = np.where(np.isin(step, present_steps), code, -1).astype(np.int32)
        names = [str(s) for s in present_steps]
    else:
        raise SelectionError(f"by must be one of {', '.join(GROUP_BY)}; got {by!r}", param="by")
    code = np.where(mask, code, -1).astype(np.int32)
    return code, names


def prepare(
    ds: xr.Dataset,
    selection: Selection | None = None,
    *,
    by: str | None = None,
    need_weights: bool = False,
    metric: str = "this metric",
) -> RoutingInputs:
    """Resolve ``selection`` (domains, sequences, segments, steps, token range, layers) into RoutingInputs.

    Raises SelectionError for an unknown name or an empty selection, MetricInputError when
    ``need_weights`` and the store has ids only.
    """
    sel = selection or Selection()
    config = routing_config(ds)
    if need_weights:
        require_gate_weights(ds, metric)
    mask = token_mask(ds, sel)  # (T,)
    if not mask.any():
        raise SelectionError("the selection holds no tokens; widen it (see the store's domains: `workbench info`)")
    code, names = group_codes(ds, mask, by)
    lay = layer_indexer(ds, sel)
    n_layers, k = ds.sizes[S.LAYER], ds.sizes[S.K]
    chunk = S.token_chunk(n_layers, k)
    ids = _lazy(ds[S.EXPERT_IDS], chunk)
    weights = _lazy(ds[S.GATE_WEIGHTS], chunk) if has_gate_weights(ds) else None
    if not isinstance(lay, slice):
        ids = ids[:, lay, :]
        weights = weights[:, lay, :] if weights is not None else None
    if weights is not None and weights.chunks[0] != ids.chunks[0]:
        weights = weights.rechunk({0: ids.chunks[0]})
    layers = np.asarray(ds[S.LAYER].values)[lay]
    return RoutingInputs(
        ids=ids,
        weights=weights,
        group=code,
        seq=np.asarray(ds[S.SEQUENCE_INDEX].values, dtype=np.int32),
        groups=names,
        by=by,
        layers=np.asarray(layers, dtype=np.int64),
        n_experts=int(config.n_routed_experts),
        top_k=int(ds.sizes[S.K]),
        config=config,
        token_id=np.asarray(ds[S.TOKEN_ID].values, dtype=np.int32),
        rank_order=is_rank_ordered(ds.attrs),
        ids_rows=token_rows(ds, S.EXPERT_IDS, lay),
        weights_rows=token_rows(ds, S.GATE_WEIGHTS, lay) if weights is not None else None,
    )
