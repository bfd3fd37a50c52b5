"""Selections of tokens and layers in a routing store, shared by analysis, graphs and widgets.

A selection is resolved from the small per-token arrays (sequence_index, segment, step) only, so
selecting in a 1M-token K2 store reads a few MB and never the routing arrays themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import xarray as xr

from workbench.errors import SelectionError
from workbench.store import schema as S
from workbench.store.text import compile_pattern, match_mask


@dataclass(frozen=True)
class Selection:
    """Which tokens and layers to use. ``None`` means no restriction.

    ``tokens`` are global token rows [start, stop); ``positions`` are positions within each sequence;
    ``layers`` are the model's real layer indices, inclusive at both ends (``--layers 1:60``); ``match``
    (literal text) and ``regex`` (a Python regular expression) keep the token rows a match of the decoded
    text covers, across token boundaries, never across two sequences (``workbench.store.text``).
    """

    domains: tuple[str, ...] | None = None
    sequences: tuple[str, ...] | None = None
    segments: tuple[str, ...] | None = None
    steps: tuple[int, ...] | None = None
    tokens: tuple[int, int] | None = None
    positions: tuple[int, int] | None = None
    layers: tuple[int, int] | None = None
    match: str | None = None
    regex: str | None = None

    def merged(self, **changes: object) -> Selection:
        return replace(self, **changes)  # type: ignore[arg-type]


def _range(text: str, what: str) -> tuple[int, int]:
    try:
        a, b = text.split(":")
        return int(a), int(b)
    except ValueError:
        raise SelectionError(f"{what} must look like A:B with integers, got {text!r}") from None


def parse_where(where: list[str] | tuple[str, ...] | str | None, base: Selection | None = None) -> Selection:
    """Parse ``where`` clauses such as ``domain=math,code`` or ``segment=think`` into a Selection.

    Keys: domain, sequence, segment, step, tokens (A:B), positions (A:B), layers (A:B), match (literal
    text, commas included) and regex (a Python regular expression; checked here, so a pattern that does not
    compile fails before any store is read).
    """
    sel = base or Selection()
    if where is None:
        return sel
    for expr in [where] if isinstance(where, str) else where:
        key, sep, value = expr.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not value:
            raise SelectionError(f"where needs KEY=VALUE (e.g. domain=math), got {expr!r}", param="where")
        values = tuple(v.strip() for v in value.split(",") if v.strip())
        if key in ("match", "regex"):
            raw = expr.partition("=")[2]  # the text as given: commas and spaces are part of it
            try:
                compile_pattern(raw, regex=key == "regex")
            except SelectionError as err:
                raise SelectionError(f"where {key}=: {err}", param="where") from None
            sel = sel.merged(**{key: raw})
        elif key == "domain":
            sel = sel.merged(domains=values)
        elif key == "sequence":
            sel = sel.merged(sequences=values)
        elif key == "segment":
            sel = sel.merged(segments=values)
        elif key == "step":
            try:
                sel = sel.merged(steps=tuple(int(v) for v in values))
            except ValueError:
                raise SelectionError(f"step must be integers, got {value!r}") from None
        elif key in ("tokens", "positions", "layers"):
            sel = sel.merged(**{key: _range(value, key)})
        else:
            raise SelectionError(
                f"unknown selection key {key!r}; use domain, sequence, segment, step, tokens, positions, layers, "
                "match or regex"
            )
    return sel


def _check_known(asked: tuple[str, ...], known: list[str], what: str) -> None:
    unknown = [a for a in asked if a not in known]
    if unknown:
        shown = ", ".join(sorted(known)[:20])
        raise SelectionError(f"unknown {what} {', '.join(map(repr, unknown))}; this store has: {shown}")


def token_mask(ds: xr.Dataset, sel: Selection) -> np.ndarray:
    """Boolean mask over ``token`` for ``sel`` (layers are not part of it). Shape (T,)."""
    n = ds.sizes[S.TOKEN]
    mask = np.ones(n, dtype=bool)
    seq_idx: np.ndarray | None = None
    if sel.domains is not None or sel.sequences is not None or sel.positions is not None:
        seq_idx = np.asarray(ds[S.SEQUENCE_INDEX].values)
    if sel.domains is not None:
        domains = [str(d) for d in ds[S.SEQUENCE_DOMAIN].values]
        _check_known(sel.domains, sorted(set(domains)), "domain")
        keep = np.array([d in sel.domains for d in domains], dtype=bool)
        assert seq_idx is not None
        mask &= keep[seq_idx]
    if sel.sequences is not None:
        ids = [str(s) for s in ds[S.SEQUENCE].values]
        _check_known(sel.sequences, ids, "sequence")
        keep = np.isin(np.array(ids, dtype=object), np.array(sel.sequences, dtype=object))
        assert seq_idx is not None
        mask &= keep[seq_idx]
    if sel.segments is not None:
        kinds = list(ds.attrs.get("segment_kinds", S.SEGMENT_KINDS))
        _check_known(sel.segments, kinds, "segment")
        codes = [kinds.index(s) for s in sel.segments]
        mask &= np.isin(np.asarray(ds[S.SEGMENT].values), codes)
    if sel.steps is not None:
        mask &= np.isin(np.asarray(ds[S.STEP].values), list(sel.steps))
    if sel.tokens is not None:
        a, b = sel.tokens
        if not (0 <= a < b <= n):
            raise SelectionError(f"token range {a}:{b} is outside this store's 0:{n}")
        rng = np.zeros(n, dtype=bool)
        rng[a:b] = True
        mask &= rng
    if sel.positions is not None:
        a, b = sel.positions
        pos = np.asarray(ds[S.POSITION].values)
        mask &= (pos >= a) & (pos < b)
    for key, text in (("match", sel.match), ("regex", sel.regex)):
        if text is not None:
            hit = match_mask(ds, compile_pattern(text, regex=key == "regex"))
            if not hit.any():
                raise SelectionError(
                    f"{key}={text!r} occurs nowhere in this store's text; check it with `workbench find STORE TEXT`"
                    + (" --regex" if key == "regex" else "")
                )
            mask &= hit
    return mask


def layer_indexer(ds: xr.Dataset, sel: Selection) -> slice | np.ndarray:
    """Positional indexer along ``layer`` for ``sel.layers`` (real layer indices, inclusive)."""
    if sel.layers is None:
        return slice(None)
    layers = np.asarray(ds[S.LAYER].values)
    a, b = sel.layers
    if a > b or a < layers.min() or b > layers.max():
        raise SelectionError(
            f"layer range {a}:{b} is outside this model's MoE layers {int(layers.min())}:{int(layers.max())}"
        )
    idx = np.nonzero((layers >= a) & (layers <= b))[0]
    if idx.size == 0:
        raise SelectionError(f"layer range {a}:{b} holds no MoE layer")
    return idx


def select(ds: xr.Dataset, sel: Selection) -> xr.Dataset:
    """The Dataset restricted to the selected tokens and layers (lazy where ``ds`` is dask-backed).

    Raises SelectionError with one clear line when the selection is unknown or empty.
    """
    mask = token_mask(ds, sel)
    rows = np.nonzero(mask)[0]
    if rows.size == 0:
        raise SelectionError(
            "the selection holds no tokens; widen its where clauses or check what the store holds (`workbench info`)"
        )
    out = ds
    if rows.size < ds.sizes[S.TOKEN]:
        out = out.isel({S.TOKEN: rows})
    lay = layer_indexer(ds, sel)
    if not isinstance(lay, slice):
        out = out.isel({S.LAYER: lay})
    return out
