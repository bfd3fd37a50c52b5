"""The tables of a routing store checked against each other, and which sequences survive damage.

``verify.py`` reads every chunk; here the small arrays it kept (the sequence and span tables and the
per-token ``sequence_index``, ``position``, ``segment``, ``step``) are checked for what the writer always
produces (``dataset.routing_dataset``):

- sequence ids are non-empty and unique; every length is at least 1;
- sequences tile the token rows in commit order: start[0] = 0, start[i+1] = start[i] + length[i], and the
  last one ends at the committed token count;
- each token row r of sequence i has sequence_index[r] = i and position[r] = r - start[i];
- each span lies inside its sequence (start <= stop), and the tokens it covers carry its kind and step.

Rows inside damaged chunks are unknown and skipped; a sequence is *damaged* when any of its rows (token
rows in any per-token array, its row in the sequence table, the rows of its spans) is unknown or fails a
check above. Every other sequence is *intact*: all its data reads back as recorded.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from workbench.store import schema as S

_DIM_COUNT = {S.TOKEN: "tokens", S.SEQUENCE: "sequences", S.SPAN: "spans"}


@dataclass
class Tables:
    """Columns by name (full length; rows in damaged chunks hold placeholders) and unknown rows per dim."""

    counts: dict[str, int]
    cols: dict[str, np.ndarray]
    bad: dict[str, np.ndarray]  # dim -> (rows,) bool: the row's value is unknown in at least one array
    unknown: dict[str, np.ndarray]  # column name -> (rows,) bool: this column's value is unknown

    @property
    def n_sequences(self) -> int:
        return self.counts[S.SEQUENCE]

    @classmethod
    def build(
        cls, attrs: dict[str, Any], expected: dict[str, Any], kept: dict[str, list[tuple[int, np.ndarray]]],
        bad_rows: dict[str, list[tuple[int, int]]],
    ) -> Tables:  # fmt: skip
        counts = {dim: int(attrs["committed"][key]) for dim, key in _DIM_COUNT.items()}
        bad = {dim: np.zeros(n, dtype=bool) for dim, n in counts.items()}
        for dim, ranges in bad_rows.items():
            for a, b in ranges:
                bad[dim][a:b] = True
        cols: dict[str, np.ndarray] = {}
        unknown: dict[str, np.ndarray] = {}
        for name in (S.SEQUENCE_INDEX, S.POSITION, S.SEGMENT, S.STEP, S.SEQUENCE, *S.SEQUENCE_VARS, *S.SPAN_VARS):
            dim = S.DIMS[name][0]
            if expected.get(name, ("",))[0] == "string":
                col = np.full(counts[dim], "", dtype=object)
            else:  # int32 where the schema's dtype fits, so 1M tokens take ~16 MB here
                col = np.full(counts[dim], -1, dtype=np.int64 if S.DTYPES.get(name) == "int64" else np.int32)
            miss = np.ones(counts[dim], dtype=bool)
            for start, values in kept.get(name, []):
                col[start : start + len(values)] = values
                miss[start : start + len(values)] = False
            bad[dim] |= miss  # a damaged chunk, or the whole array missing from the commit record
            cols[name], unknown[name] = col, miss
        return cls(counts, cols, bad, unknown)


@dataclass
class TableResult:
    problems: list[str] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)  # sequence ids (or "row N" where the id is unknown)
    intact: list[str] = field(default_factory=list)
    intact_tokens: int = 0


def _rows(mask: np.ndarray, show: int = 5) -> str:
    idx = np.nonzero(mask)[0]
    return ", ".join(map(str, idx[:show].tolist())) + (f" ... ({idx.size} rows)" if idx.size > show else "")


def check_tables(t: Tables) -> TableResult:
    """The checks of the module docstring; returns the problems and the damaged / intact sequences."""
    res = TableResult()
    n_tok, n_seq = t.counts[S.TOKEN], t.counts[S.SEQUENCE]
    ids, start, length = t.cols[S.SEQUENCE], t.cols[S.SEQUENCE_START], t.cols[S.SEQUENCE_LENGTH]
    seq_ok = ~t.bad[S.SEQUENCE]
    affected = t.bad[S.SEQUENCE].copy()

    def flag(mask: np.ndarray, what: str) -> None:
        if mask.any():
            res.problems.append(f"sequence rows {_rows(mask)}: {what}")
            affected[mask] = True

    flag(seq_ok & (ids == ""), "empty sequence id")
    seen = Counter(ids[seq_ok].tolist())
    flag(seq_ok & np.array([seen[i] > 1 for i in ids.tolist()], dtype=bool), "sequence id used more than once")
    flag(seq_ok & (length < 1), "length below 1")
    flag(seq_ok & ((start < 0) | (start + length > n_tok)), f"rows outside the committed 0:{n_tok} tokens")
    if n_seq:
        prev_end = np.concatenate([[0], start[:-1] + length[:-1]])
        both = seq_ok & np.concatenate([[True], seq_ok[:-1]])
        flag(both & (start != prev_end), "start does not follow the previous sequence (sequences must tile the tokens)")
        if seq_ok[-1] and start[-1] + length[-1] != n_tok:
            flag(np.arange(n_seq) == n_seq - 1, f"the last sequence ends at {start[-1] + length[-1]}, not at {n_tok}")
    good = np.nonzero(seq_ok & ~affected)[0]
    lens = length[good]
    tok_bad = t.bad[S.TOKEN]
    cs = np.concatenate([[0], np.cumsum(tok_bad)])
    affected[good[(cs[start[good] + lens] - cs[start[good]]) > 0]] = True  # rows in damaged chunks
    # per-token rows against the sequence table
    owner = np.repeat(good, lens)
    pos = np.arange(owner.size) - np.repeat(np.cumsum(lens) - lens, lens)
    rows = np.repeat(start[good], lens) + pos
    known = ~tok_bad[rows]
    for name, want, what in ((S.SEQUENCE_INDEX, owner, "sequence_index"), (S.POSITION, pos, "position")):
        wrong = known & (t.cols[name][rows] != want)
        if wrong.any():
            seqs = np.unique(owner[wrong])
            first = int(rows[wrong][0])
            res.problems.append(
                f"{what} disagrees with the sequence table at {int(wrong.sum())} token rows (first {first}) "
                f"of {seqs.size} sequences"
            )
            affected[seqs] = True
    _check_spans(t, seq_ok, affected, res)
    for i in np.nonzero(affected)[0]:
        res.damaged.append(str(ids[i]) if seq_ok[i] and ids[i] else f"row {i}")
    intact = ~affected
    res.intact = [str(s) for s in ids[intact]]
    res.intact_tokens = int(length[intact].sum())
    return res


def _check_spans(t: Tables, seq_ok: np.ndarray, affected: np.ndarray, res: TableResult) -> None:
    n_seq, n_tok = t.counts[S.SEQUENCE], t.counts[S.TOKEN]
    seq, s0, s1 = t.cols[S.SPAN_SEQUENCE], t.cols[S.SPAN_START], t.cols[S.SPAN_STOP]
    kind, step = t.cols[S.SPAN_KIND], t.cols[S.SPAN_STEP]
    ok = ~t.bad[S.SPAN]
    in_range = (seq >= 0) & (seq < n_seq)
    if (ok & ~in_range).any():
        res.problems.append(f"span rows {_rows(ok & ~in_range)}: sequence row outside 0:{n_seq}")
    # damaged span rows: their sequences are affected (found from the nearest intact rows when unknown)
    bad_idx = np.nonzero(~ok)[0]
    ok_idx = np.nonzero(ok & in_range)[0]
    for r in bad_idx:
        if 0 <= seq[r] < n_seq and not t.unknown[S.SPAN_SEQUENCE][r]:
            affected[seq[r]] = True
            continue
        j = np.searchsorted(ok_idx, r)
        lo = seq[ok_idx[j - 1]] if j > 0 else 0
        hi = seq[ok_idx[j]] if j < ok_idx.size else n_seq - 1
        affected[lo : hi + 1] = True
    if n_seq == 0:
        return
    sel = ok & in_range
    sel[sel] &= seq_ok[seq[sel]]
    safe = np.clip(seq, 0, n_seq - 1)
    lo = np.where(sel, t.cols[S.SEQUENCE_START][safe], 0)
    hi = np.where(sel, lo + t.cols[S.SEQUENCE_LENGTH][safe], 0)
    outside = sel & ((s0 < lo) | (s1 > hi) | (s0 > s1))
    if outside.any():
        res.problems.append(f"span rows {_rows(outside)}: not inside their sequence's token rows")
        affected[seq[outside]] = True
    sel &= ~outside
    lens = np.where(sel, s1 - s0, 0)
    span_of = np.repeat(np.arange(seq.size), lens)
    rows = np.repeat(s0, lens) + (np.arange(span_of.size) - np.repeat(np.cumsum(lens) - lens, lens))
    rows = np.clip(rows, 0, max(n_tok - 1, 0))
    known = ~t.bad[S.TOKEN][rows] if rows.size else np.zeros(0, dtype=bool)
    for name, col in ((S.SEGMENT, kind), (S.STEP, step)):
        wrong = known & (t.cols[name][rows] != col[span_of])
        if wrong.any():
            res.problems.append(
                f"{name} of {int(wrong.sum())} token rows (first {int(rows[wrong][0])}) disagrees with their span"
            )
            affected[seq[np.unique(span_of[wrong])]] = True
