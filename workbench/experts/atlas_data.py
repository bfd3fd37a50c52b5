"""The data of an expert atlas: every expert's page, layer by layer, from a store's layer index.

``atlas_layers`` reads the selection's per-token tables once (``Common``), then computes each MoE layer's
pages (``layer_pages``) from the layer index: layer l and its two neighbours, decoded alone. Layers are
independent, so ``workers`` processes (fork) share them; each opens the store once. The store must have
a fresh layer index (``workbench.store.layer_index.build_index``; ``workbench atlas`` builds it).
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from workbench.errors import SelectionError
from workbench.experts.layer_pages import Common, layer_pages
from workbench.experts.rows import ExpertPageError, token_tables
from workbench.rank_order import is_rank_ordered
from workbench.store import schema as S
from workbench.store.io import open_store
from workbench.store.layer_index import LayerIndex, open_index
from workbench.store.select import Selection, layer_indexer, token_mask
from workbench.store.text import token_texts


def prepare(ds: xr.Dataset, selection: Selection | None = None, *, n_boot: int = 100, seed: int = 0) -> Common:
    """The selected tokens and their labels, shared by every layer's pages. Raises on an empty selection."""
    mask = token_mask(ds, selection or Selection())
    rows = np.nonzero(mask)[0]
    if rows.size == 0:
        raise SelectionError(
            "the selection holds no tokens; widen its where clauses or check what the store holds (`workbench info`)"
        )
    t = token_tables(ds)
    whole = rows.size == mask.size

    def pick(name: str) -> np.ndarray:
        return t[name] if whole else t[name][rows]

    return Common(
        rows=rows.astype(np.int64), token_id=pick(S.TOKEN_ID), seq=pick(S.SEQUENCE_INDEX), segment=pick(S.SEGMENT),
        step=pick(S.STEP), position=pick(S.POSITION), store_token_id=t[S.TOKEN_ID], store_seq=t[S.SEQUENCE_INDEX],
        texts=token_texts(ds), seq_ids=[str(s) for s in np.asarray(ds[S.SEQUENCE].values)],
        seq_domain=[str(d) for d in np.asarray(ds[S.SEQUENCE_DOMAIN].values)],
        kinds=list(ds.attrs.get("segment_kinds", S.SEGMENT_KINDS)), ranked=is_rank_ordered(ds.attrs),
        n_boot=n_boot, seed=seed,
    )  # fmt: skip


def require_index(ds: xr.Dataset, where: str) -> LayerIndex:
    ix = open_index(ds)
    if ix is None:
        raise ExpertPageError(f"{where} has no up-to-date layer index; build it with `workbench index {where}`")
    return ix


def one_layer(ds: xr.Dataset, ix: LayerIndex, common: Common, li: int, kw: dict[str, Any]) -> dict[str, Any]:
    """The pages of the layer at position ``li`` along ``layer`` (see ``layer_pages``)."""
    layers = [int(x) for x in np.asarray(ds[S.LAYER].values)]
    n_experts = int(ds.attrs["model"]["n_routed_experts"])
    whole = common.rows.size == ds.sizes[S.TOKEN]

    def ids(i: int) -> np.ndarray:
        x = ix.layer_ids(i)
        return x if whole else x[common.rows]

    w = ix.layer_weights(li) if bool(ds.attrs.get("has_gate_weights", True)) else None
    if w is not None and not whole:
        w = w[common.rows]
    prev = (layers[li - 1], ids(li - 1)) if li > 0 else None
    nxt = (layers[li + 1], ids(li + 1)) if li + 1 < len(layers) else None
    return layer_pages(common, layers[li], ids(li), w, n_experts, prev=prev, nxt=nxt, **kw)


_WORKER: dict[str, Any] = {}


def _init(path: str, storage_options: dict[str, Any] | None, common: Common, kw: dict[str, Any]) -> None:
    ds = open_store(path, storage_options=storage_options)
    _WORKER.update(ds=ds, ix=require_index(ds, path), common=common, kw=kw)


def _job(li: int) -> dict[str, Any]:
    return one_layer(_WORKER["ds"], _WORKER["ix"], _WORKER["common"], li, _WORKER["kw"])


def atlas_layers(
    path_or_url: str | Path, selection: Selection | None = None, *, workers: int = 1,
    storage_options: dict[str, Any] | None = None, n_boot: int = 100, **kw: Any,
) -> Iterator[dict[str, Any]]:  # fmt: skip
    """Every layer's pages (``layer_pages``' dicts), in layer order. ``kw`` go to ``layer_pages`` (top, width, ...)."""
    where = str(path_or_url)
    ds = open_store(path_or_url, storage_options=storage_options)
    ix = require_index(ds, where)
    common = prepare(ds, selection, n_boot=n_boot)
    lay = layer_indexer(ds, selection or Selection())  # ``layers=A:B`` keeps those layers (neighbours still read)
    positions = list(range(ds.sizes[S.LAYER])) if isinstance(lay, slice) else [int(i) for i in lay]
    if workers <= 1 or len(positions) < 2:
        for li in positions:
            yield one_layer(ds, ix, common, li, kw)
        return
    ctx = mp.get_context("fork")  # the workers inherit ``common`` without pickling it
    init = (where, storage_options, common, kw)
    with ctx.Pool(min(workers, len(positions)), initializer=_init, initargs=init) as pool:
        yield from pool.imap(_job, positions)
