"""Before a writer writes: refuse an incompatible store, repair a killed writer's tail, or create a store.

Everything here runs before the first row is written, so a refusal leaves the store exactly as it was.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
import warnings
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import numpy as np
import zarr

from workbench.errors import StoreError
from workbench.rank_order import rank_order_for_capture
from workbench.routing_config import RoutingConfig
from workbench.store import codecs
from workbench.store import schema as S
from workbench.store.commit import check_root, commit, is_committed_store, open_arrays, read_json, repair
from workbench.store.location import StoreLocation
from workbench.store.lock import LOCK_NAME
from workbench.store.verify import check_append

STRING_VARS = (S.SEQUENCE, S.SEQUENCE_DOMAIN, S.SEQUENCE_SOURCE, S.SPAN_LABEL)

DESCRIPTIONS = {
    S.EXPERT_IDS: "routed expert ids per token and MoE layer, in the router's rank order",
    S.GATE_WEIGHTS: "weights the MoE applies to the selected experts (NaN where the capture gives ids only)",
    S.ROUTER_SCORES: "router scores per expert (DeepSeek-V3/K2: sigmoid scores before the selection bias)",
    S.TOKEN_ID: "token id in attrs['tokenizer']",
    S.POSITION: "0-based position within the sequence",
    S.SEQUENCE_INDEX: "row of the token's sequence along the sequence dim",
    S.SEGMENT: "segment code; names in attrs['segment_kinds']",
    S.STEP: "tool-loop step, -1 outside any step",
    S.GENERATED: "token produced by decoding",
    S.LAYER: "the model's real layer index",
}


@dataclass
class WriteState:
    """What a writer knows about the store it appends to."""

    attrs: dict[str, Any]
    arrays: dict[str, zarr.Array]
    sequence_ids: set[str]


def vocab_digest(tokenizer: dict[str, Any]) -> str:
    blob = json.dumps([tokenizer.get("name"), tokenizer.get("vocab", [])]).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("k2-routing-workbench", "zarr", "xarray", "numpy", "numcodecs", "torch", "transformers"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def check_compatible(
    attrs: dict[str, Any], config: RoutingConfig, where: str, *, capture: str | None = None, with_scores: bool = False
) -> None:
    """Refuse (StoreError, one line) an append that would mix models, routing configs or captures."""
    stored = RoutingConfig.from_attrs(attrs["model"])
    if attrs.get("routing_signature") != config.signature():
        raise StoreError(
            f"{where} was recorded with another model or routing config ({stored.describe_difference(config)}; "
            f"stored vs this run); write to a new store instead"
        )
    if capture is not None and attrs.get("capture") != capture:
        raise StoreError(
            f"{where} was captured by {attrs.get('capture')!r}, this run captures by {capture!r}; "
            "write to a new store instead"
        )
    if with_scores and not attrs.get("has_router_scores"):
        raise StoreError(
            f"{where} was recorded without router scores; record with router scores into a new store instead"
        )


def _new_attrs(
    config: RoutingConfig, tokenizer: dict[str, Any], capture: str, with_scores: bool, has_gate_weights: bool
) -> dict[str, Any]:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {
        "schema_version": S.SCHEMA_VERSION,
        "model": config.to_attrs(),
        "routing_signature": config.signature(),
        "tokenizer": {
            "name": str(tokenizer.get("name", "")),
            "vocab": [str(t) for t in tokenizer.get("vocab", [])],
            "special_tokens": {str(k): int(v) for k, v in dict(tokenizer.get("special_tokens", {})).items()},
        },
        "tokenizer_digest": vocab_digest(tokenizer),
        "segment_kinds": list(S.SEGMENT_KINDS),
        "capture": capture,
        "has_gate_weights": has_gate_weights,
        "rank_order": rank_order_for_capture(capture),  # false for engines: see workbench/rank_order.py
        "has_router_scores": with_scores,
        "versions": versions(),
        "created": now,
        "updated": now,
        "committed": {"tokens": 0, "sequences": 0, "spans": 0},
    }


def _create(loc: StoreLocation, config: RoutingConfig, attrs: dict[str, Any], with_scores: bool) -> WriteState:
    n_layers, k, n_exp = len(config.moe_layers), config.top_k, config.n_routed_experts
    arrays: dict[str, zarr.Array] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, dims in S.DIMS.items():
            if name == S.ROUTER_SCORES and not with_scores:
                continue
            dtype = "str" if name in STRING_VARS else S.DTYPES.get(name, "int16")
            shape = tuple({S.LAYER: n_layers, S.K: k, S.EXPERT: n_exp}.get(d, 0) for d in dims)
            arrays[name] = zarr.create_array(
                loc.store,
                name=name,
                shape=shape,
                chunks=codecs.chunk_shape(name, n_layers, k, n_exp),
                dtype=dtype,
                fill_value=codecs.fill_value(name),
                compressors=codecs.compressors(name, dtype),
                config=codecs.ARRAY_CONFIG,
                dimension_names=dims,
                attributes={"description": DESCRIPTIONS[name]} if name in DESCRIPTIONS else {},
                overwrite=True,
            )
    arrays[S.LAYER][:] = np.asarray(config.moe_layers, dtype=np.int16)
    commit(loc.store, attrs, arrays)  # the empty store is committed: from here on it opens
    return WriteState(attrs, arrays, set())


def _is_debris(loc: StoreLocation, root: dict[str, Any] | None) -> bool:
    """A directory left by an interrupted creation (or an empty one): safe to (re)create in."""
    if root is not None and (root.get("attributes") or {}):
        return False
    allowed = {LOCK_NAME, "zarr.json", *S.DIMS}
    return all(name in allowed or name.endswith(".partial") for name in loc.list_top())


def check_writable(
    loc: StoreLocation, config: RoutingConfig, tokenizer: dict[str, Any] | None, *, capture: str | None,
    with_scores: bool,
) -> dict[str, Any] | None:  # fmt: skip
    """Every refusal a writer makes, without writing anything. Returns the root document (None: create).

    Besides incompatible models, tokenizers and captures, a damaged store is refused (``verify.check_append``):
    an append rewrites the tail chunk with committed rows in it, and would commit fill values as data.
    """
    root = read_json(loc.store, "zarr.json") if loc.exists() else None
    if not is_committed_store(root):
        if (root or {}).get("attributes", {}).get("schema_version") not in (None, *S.READABLE_VERSIONS):
            check_root(root, loc.where)  # raises the schema-version error
        if not _is_debris(loc, root):
            raise StoreError(f"{loc.where} exists and is not a routing store; choose a new path")
        return None
    attrs = check_root(root, loc.where)
    check_compatible(attrs, config, loc.where, capture=capture, with_scores=with_scores)
    if tokenizer is not None and attrs.get("tokenizer_digest") != vocab_digest(tokenizer):
        raise StoreError(f"{loc.where} was recorded with another tokenizer vocabulary; write to a new store instead")
    assert root is not None
    check_append(loc.where, loc.store, root)
    return root


def open_for_writing(
    loc: StoreLocation,
    config: RoutingConfig,
    tokenizer: dict[str, Any],
    *,
    capture: str,
    with_scores: bool,
    has_gate_weights: bool = True,
) -> WriteState:
    """Create the store or make an existing one ready for appending (call with the writer lock held)."""
    root = check_writable(loc, config, tokenizer, capture=capture, with_scores=with_scores)
    if root is None:
        attrs = _new_attrs(config, tokenizer, capture, with_scores, has_gate_weights)
        return _create(loc, config, attrs, with_scores)
    attrs = dict(root["attributes"])
    repair(loc.store, root)
    names = [n for n in S.DIMS if n != S.ROUTER_SCORES or attrs.get("has_router_scores")]
    arrays = open_arrays(loc.store, names)
    ids = {str(s) for s in np.asarray(arrays[S.SEQUENCE][:])} if arrays[S.SEQUENCE].shape[0] else set()
    return WriteState(attrs, arrays, ids)
