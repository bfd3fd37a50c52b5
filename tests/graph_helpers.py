"""Hand-made routing stores for the graph tests: real zarr on disk, routing chosen by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from workbench.routing_config import RoutingConfig
from workbench.store import schema as S
from workbench.store.dataset import SequenceRecord, SpanRecord, routing_dataset

# 3 MoE layers (1..3), 4 experts, top-2.
CFG = RoutingConfig("hand", "deepseek_v3", "deepseek_v3", 4, (1, 2, 3), 4, 2)
VOCAB = ["<s>", "one", "plus", "two", "def", "f", "(", ")"]


def hand_records() -> list[SequenceRecord]:
    """Two sequences with routing and weights chosen so every count and weight is known exactly.

    math (tokens 0..2): t0 [0,1]/[0,2]/[1,3]  t1 [0,1]/[0,2]/[1,3]  t2 [2,3]/[0,1]/[0,1]
    code (tokens 3..4): t3 [0,1]/[0,2]/[1,3]  t4 [3,2]/[3,1]/[2,0]
    Gate weights are 0.5/0.25 (rank 0/1) in every layer, except token 4 (0.75/0.125).
    """
    m_ids = np.array(
        [
            [[0, 1], [0, 2], [1, 3]],
            [[0, 1], [0, 2], [1, 3]],
            [[2, 3], [0, 1], [0, 1]],
        ]
    )
    c_ids = np.array([[[0, 1], [0, 2], [1, 3]], [[3, 2], [3, 1], [2, 0]]])
    mw = np.tile(np.array([0.5, 0.25]), (3, 3, 1))
    cw = np.stack([np.tile([0.5, 0.25], (3, 1)), np.tile([0.75, 0.125], (3, 1))])
    return [
        SequenceRecord(
            "m0",
            "math",
            "hand",
            np.array([1, 2, 3]),
            m_ids,
            mw,
            spans=[SpanRecord("user", 0, 1), SpanRecord("think", 1, 3, step=0)],
        ),
        SequenceRecord("c0", "code", "hand", np.array([4, 5]), c_ids, cw, spans=[SpanRecord("answer", 0, 2)]),
    ]


def write_store(path: Path, records: list[SequenceRecord] | None = None, *, ids_only: bool = False) -> Path:
    """Write ``records`` (default: ``hand_records()``) as a routing store at ``path``."""
    records = records if records is not None else hand_records()
    if ids_only:
        for r in records:
            r.gate_weights = None
    try:
        from workbench.store.io import StoreWriter
    except ImportError:  # the store writer is not there yet: write the same schema directly
        ds = routing_dataset(records, CFG)
        ds.attrs.update(
            schema_version=S.SCHEMA_VERSION,
            model=CFG.to_attrs(),
            routing_signature=CFG.signature(),
            tokenizer={"name": "hand", "vocab": VOCAB, "special_tokens": {"<s>": 0}},
            segment_kinds=list(S.SEGMENT_KINDS),
            capture="hooks" if not ids_only else "vllm",
            has_gate_weights=not ids_only,
            has_router_scores=False,
        )
        ds.to_zarr(path, mode="w")
        return path
    tokenizer = {"name": "hand", "vocab": VOCAB, "special_tokens": {"<s>": 0}}
    with StoreWriter(str(path), CFG, tokenizer, has_gate_weights=not ids_only) as w:
        for r in records:
            w.add(r)
    return path


def open_hand_store(path: Path) -> xr.Dataset:
    try:
        from workbench.store.io import open_store
    except ImportError:
        import workbench.accessor  # noqa: F401  (registers ds.routing)

        return xr.open_zarr(path)
    return open_store(str(path))
