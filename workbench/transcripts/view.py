"""Lay out a recorded transcript for display: its segments, in order, with token rows and strings.

Reads only the small per-sequence and per-span tables and the token ids of one sequence (never the
routing arrays), so it is cheap on a dask-backed store of any size; widgets call it once per sequence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

from workbench.errors import SelectionError
from workbench.store import schema as S


@dataclass
class SegmentView:
    """One segment of a recorded sequence.

    ``rows`` are global token rows ``[start, stop)`` along ``token`` (what selections and graphs take);
    ``positions`` the same range within the sequence; ``tokens`` the token strings (from the store's
    vocabulary) and ``text`` their concatenation with byte-level markers (``Ġ``, ``Ċ``) turned back into
    spaces and newlines.
    """

    index: int  # row along the span table
    kind: str
    step: int
    label: str
    rows: tuple[int, int]
    positions: tuple[int, int]
    tokens: list[str]
    text: str


_BYTE_LEVEL = str.maketrans({"Ġ": " ", "Ċ": "\n", "ĉ": "\t"})


def _text(tokens: list[str]) -> str:
    return "".join(tokens).translate(_BYTE_LEVEL)


def transcript_view(ds: xr.Dataset, sequence_id: str) -> list[SegmentView]:
    """The segments of sequence ``sequence_id`` in token order, covering all its tokens.

    Tokens of the sequence that no span covers (e.g. a plain prompt recorded without spans) come back
    as segments of the token's own ``segment`` kind, so the result always tiles the sequence.

    >>> view = transcript_view(ds, "episode-1")        # doctest: +SKIP
    >>> [(v.kind, v.step, v.label) for v in view][:3]  # doctest: +SKIP
    [('template', -1, ''), ('tool_declare', -1, 'tools'), ('template', -1, '')]
    """
    ids = [str(s) for s in ds[S.SEQUENCE].values]
    if sequence_id not in ids:
        shown = ", ".join(ids[:10]) + (" ..." if len(ids) > 10 else "")
        raise SelectionError(f"no sequence {sequence_id!r} in this store; it has: {shown}")
    row = ids.index(sequence_id)
    start = int(ds[S.SEQUENCE_START].values[row])
    length = int(ds[S.SEQUENCE_LENGTH].values[row])
    kinds = list(ds.attrs.get("segment_kinds", S.SEGMENT_KINDS))
    vocab = list(ds.attrs.get("tokenizer", {}).get("vocab", []))
    token_ids = np.asarray(ds[S.TOKEN_ID].isel({S.TOKEN: slice(start, start + length)}).values)
    strings = [vocab[i] if 0 <= i < len(vocab) else f"<{i}>" for i in token_ids.tolist()]

    span_seq = np.asarray(ds[S.SPAN_SEQUENCE].values)
    mine = np.nonzero(span_seq == row)[0]
    starts = np.asarray(ds[S.SPAN_START].values)[mine]
    order = mine[np.argsort(starts, kind="stable")]
    out: list[SegmentView] = []
    pos = start

    def gap(a: int, b: int) -> None:
        seg = np.asarray(ds[S.SEGMENT].isel({S.TOKEN: slice(a, b)}).values)
        steps = np.asarray(ds[S.STEP].isel({S.TOKEN: slice(a, b)}).values)
        cut = np.nonzero((seg[1:] != seg[:-1]) | (steps[1:] != steps[:-1]))[0] + 1
        for lo, hi in zip([0, *cut.tolist()], [*cut.tolist(), b - a], strict=True):
            toks = strings[a - start + lo : a - start + hi]
            out.append(
                SegmentView(-1, kinds[int(seg[lo])], int(steps[lo]), "", (a + lo, a + hi),
                            (a + lo - start, a + hi - start), toks, _text(toks))
            )  # fmt: skip

    kind_codes = np.asarray(ds[S.SPAN_KIND].values)
    span_steps = np.asarray(ds[S.SPAN_STEP].values)
    stops = np.asarray(ds[S.SPAN_STOP].values)
    labels = ds[S.SPAN_LABEL].values
    for i in order.tolist():
        a, b = int(ds[S.SPAN_START].values[i]), int(stops[i])
        if a > pos:
            gap(pos, a)
        toks = strings[a - start : b - start]
        out.append(
            SegmentView(i, kinds[int(kind_codes[i])], int(span_steps[i]), str(labels[i]), (a, b),
                        (a - start, b - start), toks, _text(toks))
        )  # fmt: skip
        pos = max(pos, b)
    if pos < start + length:
        gap(pos, start + length)
    return out


def step_rows(view: list[SegmentView], step: int) -> np.ndarray:
    """Global token rows of one tool-loop step (for ``Selection(tokens=...)`` or masks). Shape (n,)."""
    parts = [np.arange(*v.rows) for v in view if v.step == step]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
