"""Compression and chunk shapes of a routing store, chosen in one place.

Why these choices (Blosc codecs measured on one 8192-token chunk of K2-shaped synthetic routing, 60 x 8,
whose per-layer marginal entropy is 7.8 bits per id, i.e. a limit of 7.8 bytes per token-layer):

- ``expert_ids`` (token, layer, k) int16: Blosc zstd level 5 with *bit* shuffle: 8.9 bytes per token-layer
  (raw: 16) in ~30 ms per chunk. Ids are < 512, so the top 7 bit planes are all zero and vanish; zstd then
  codes the 9 live bit planes. Byte shuffle gives 9.3 B (and is 10x slower), no shuffle 10.5 B, lz4 9.0 B.
- ``gate_weights`` / ``router_scores`` float16: Blosc zstd level 2 with byte shuffle: 11.1 bytes per
  token-layer (raw 16) at about half the time of level 3 (10.9 B); level 5 gives 10.3 B at 6x the time.
  (Synthetic weights carry random mantissas; real ones compress a little better.)
- small per-token and per-sequence tables: zstd with byte shuffle; strings: vlen-utf8 + zstd.
- every array ends with zarr v3's ``crc32c`` codec: 4 bytes per chunk holding the CRC-32C (Castagnoli) of
  the compressed bytes, so a truncated or altered chunk is caught before it is decoded (``integrity.py``).
  It is a standard v3 codec: plain zarr and xarray verify it too.

Chunks: all per-token arrays share one token chunk (``schema.token_chunk``, at most ``MAX_TOKEN_CHUNK``) so
dask blocks line up across variables; ``router_scores`` is split along ``layer`` as well so one chunk stays
near 8 MB raw. The cap matters for narrow models only (K2: 8192, mini K2: 65536 are unchanged): every commit
re-encodes the partly filled tail chunk of each per-token array, which for a 3-layer top-2 test model would
otherwise be 524288 rows (measured: 0.4 s against 0.04 s per small commit).
"""

from __future__ import annotations

from typing import Any

from zarr.codecs import BloscCodec, Crc32cCodec, ZstdCodec
from zarr.core.array_spec import ArrayConfigParams

from workbench.store import schema as S

# Chunk of the per-sequence and per-span tables (rows). Small: rewritten on every commit's tail.
TABLE_CHUNK = 4096
# Most tokens per chunk (a power of two, so chunks still line up with schema.token_chunk multiples).
MAX_TOKEN_CHUNK = 65536
# zstd levels (see above): level 9 gains <1% on ids at 70x the time.
IDS_LEVEL = 5
WEIGHTS_LEVEL = 2


def compressors(name: str, dtype: str) -> list[Any]:
    """zarr v3 bytes-to-bytes codecs for the variable ``name`` of numpy dtype ``dtype``: a compressor, then crc32c."""
    return [_compressor(name, dtype), Crc32cCodec()]


def _compressor(name: str, dtype: str) -> Any:
    if dtype == "str":
        return ZstdCodec(level=3)
    if name == S.EXPERT_IDS:
        return BloscCodec(cname="zstd", clevel=IDS_LEVEL, shuffle="bitshuffle")
    if name in (S.GATE_WEIGHTS, S.ROUTER_SCORES):
        return BloscCodec(cname="zstd", clevel=WEIGHTS_LEVEL, shuffle="shuffle")
    return BloscCodec(cname="zstd", clevel=3, shuffle="shuffle")


def fill_value(name: str) -> Any:
    """The fill value of ``name``: one no recorded value can take (``schema.FILL``)."""
    return S.FILL[name]


# zarr runtime config of every array a writer opens: write a chunk even when it holds only fill values,
# so that a missing chunk always means damage (zarr's default skips such chunks).
ARRAY_CONFIG: ArrayConfigParams = {"write_empty_chunks": True}


def token_chunk(n_layers: int, k: int) -> int:
    """Rows per chunk along ``token`` for every per-token array of the store."""
    return min(S.token_chunk(n_layers, k), MAX_TOKEN_CHUNK)


def chunk_shape(name: str, n_layers: int, k: int, n_experts: int, target_bytes: int = 8 << 20) -> tuple[int, ...]:
    """Chunk shape of ``name`` for a model with ``n_layers`` MoE layers, top-``k`` of ``n_experts``."""
    dims = S.DIMS[name]
    tc = token_chunk(n_layers, k)
    if name == S.ROUTER_SCORES:  # (token, layer, expert): keep ~target_bytes raw per chunk
        per_layer = tc * n_experts * 2
        lc = max(1, min(n_layers, target_bytes // per_layer))
        return (tc, lc, n_experts)
    if dims[0] == S.TOKEN:
        return (tc, n_layers, k) if len(dims) == 3 else (tc,)
    if dims == (S.LAYER,):
        return (max(1, n_layers),)
    return (TABLE_CHUNK,)
