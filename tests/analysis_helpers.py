"""Small real zarr routing stores for the analysis tests (written to disk, opened lazily with dask)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from workbench.routing_config import RoutingConfig
from workbench.store import schema as S
from workbench.store.dataset import SequenceRecord, SpanRecord, routing_dataset

__all__ = ["SequenceRecord", "SpanRecord", "config", "random_topk", "write_committed_store", "write_store"]


def config(n_experts: int = 8, top_k: int = 2, n_layers: int = 3) -> RoutingConfig:
    return RoutingConfig(
        model_name="test-moe",
        model_type="deepseek_v3",
        family="deepseek_v3",
        num_hidden_layers=n_layers + 1,
        moe_layers=tuple(range(1, n_layers + 1)),
        n_routed_experts=n_experts,
        top_k=top_k,
    )


def random_topk(rng: np.random.Generator, n_tokens: int, n_layers: int, n_experts: int, k: int) -> np.ndarray:
    """Independent uniform top-k routing: k distinct experts per (token, layer) in random rank order."""
    keys = rng.random((n_tokens, n_layers, n_experts))
    return np.argsort(keys, axis=2)[:, :, :k].astype(np.int16)  # (T, L, k)


def write_store(
    path: Path,
    records: list[SequenceRecord],
    cfg: RoutingConfig,
    *,
    ids_only: bool = False,
    chunk: int | None = None,
    vocab_size: int = 64,
) -> xr.Dataset:
    """Write ``records`` as a zarr routing store at ``path`` and open it lazily (dask-backed)."""
    ds = routing_dataset(records, cfg)
    ds.attrs.update(
        schema_version=S.SCHEMA_VERSION,
        model=cfg.to_attrs(),
        routing_signature=cfg.signature(),
        tokenizer={"name": "test", "vocab": [f"t{i}" for i in range(vocab_size)], "special_tokens": {}},
        segment_kinds=list(S.SEGMENT_KINDS),
        capture="vllm" if ids_only else "hooks",
        has_gate_weights=not ids_only,
        has_router_scores=False,
    )
    n_tok = ds.sizes[S.TOKEN]
    chunk = chunk or n_tok
    enc = {
        name: {"chunks": (chunk, *tuple(ds[name].shape[1:]))} for name in (S.EXPERT_IDS, S.GATE_WEIGHTS, *S.TOKEN_VARS)
    }
    ds.to_zarr(path, mode="w", encoding=enc, consolidated=False)
    return xr.open_zarr(path, consolidated=False)


def write_committed_store(path: Path, records: list[SequenceRecord], cfg: RoutingConfig, *, ids_only: bool = False):
    """Write ``records`` through the store's own ``StoreWriter`` (what `workbench` commands open) and open it."""
    from workbench.store.io import open_store
    from workbench.store.writer import StoreWriter

    tok = {"name": "test", "vocab": [f"t{i}" for i in range(64)], "special_tokens": {}}
    with StoreWriter(str(path), cfg, tok, capture="vllm" if ids_only else "hooks", has_gate_weights=not ids_only) as w:
        for r in records:
            w.add(r)
    return open_store(str(path))
