"""Compression and chunk shapes of a routing store, chosen in one place.

Why these choices (measured by ``benchmarks/bench_store.py`` on K2-shaped synthetic routing):

- ``expert_ids`` (token, layer, k) int16: ids are < 512 for every model we record (K2: 384 experts), so the
  high byte is almost always 0 and the low byte carries a skewed (Zipf-like) distribution. Blosc's *byte*
  shuffle puts the low bytes of a block together, where zstd's Huffman stage codes them close to their
  empirical entropy; bit-shuffle instead spreads each id over 9 bit planes and hides the skew from zstd.
- ``gate_weights`` / ``router_scores`` float16: byte shuffle + zstd (exponent bytes repeat a lot).
- small per-token and per-sequence tables: zstd with byte shuffle; strings: vlen-utf8 + zstd.

Chunks: all per-token arrays share one token chunk (``schema.token_chunk``) so dask blocks line up across
variables; ``router_scores`` is split along ``layer`` as well so one chunk stays near 8 MB raw.
"""

from __future__ import annotations

from typing import Any

from zarr.codecs import BloscCodec, ZstdCodec

from workbench.store import schema as S

# Chunk of the per-sequence and per-span tables (rows). Small: rewritten on every commit's tail.
TABLE_CHUNK = 4096
# zstd level for the routing arrays: 5 is within ~2% of level 9's ratio at a fraction of its time.
ROUTING_LEVEL = 5


def compressors(name: str, dtype: str) -> list[Any]:
    """zarr v3 compressors for the variable ``name`` of numpy dtype ``dtype``."""
    if dtype == "str":
        return [ZstdCodec(level=3)]
    if name == S.EXPERT_IDS:
        return [BloscCodec(cname="zstd", clevel=ROUTING_LEVEL, shuffle="shuffle")]
    if name in (S.GATE_WEIGHTS, S.ROUTER_SCORES):
        return [BloscCodec(cname="zstd", clevel=ROUTING_LEVEL, shuffle="shuffle")]
    return [BloscCodec(cname="zstd", clevel=3, shuffle="shuffle")]


def chunk_shape(name: str, n_layers: int, k: int, n_experts: int, target_bytes: int = 8 << 20) -> tuple[int, ...]:
    """Chunk shape of ``name`` for a model with ``n_layers`` MoE layers, top-``k`` of ``n_experts``."""
    dims = S.DIMS[name]
    tc = S.token_chunk(n_layers, k)
    if name == S.ROUTER_SCORES:  # (token, layer, expert): keep ~target_bytes raw per chunk
        per_layer = tc * n_experts * 2
        lc = max(1, min(n_layers, target_bytes // per_layer))
        return (tc, lc, n_experts)
    if dims[0] == S.TOKEN:
        return (tc, n_layers, k) if len(dims) == 3 else (tc,)
    if dims == (S.LAYER,):
        return (max(1, n_layers),)
    return (TABLE_CHUNK,)
