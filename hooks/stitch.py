"""Host side of the recorder: turn a block of buffered forwards into per-row ``Routing`` pieces.

Runs rarely (once per ``routing()`` call, or when the device buffers are full; ``hooks/buffer.py``), on
numpy arrays of every forward since the last flush at once: first which tokens each batch row keeps
(padding and tokens after a fed EOS dropped; a run of decode steps, one token per row each, is one
(steps, rows) grid, so the Python loop is per row, not per step), then every field is gathered once in
row order, each kept token's top-k is put into the router's rank order (one vectorised argsort) and
the router scores of the kept tokens are computed where the buffers are. Every piece is a ``Routing``
in its final dtypes (int16 ids, float32 weights and scores) and a view of one block's arrays; a row
that spans several flushes is the concatenation of its pieces.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from workbench.hooks.buffer import ForwardSpan, HostBlock
from workbench.hooks.routing import Routing, rank_key, to_rank_order


@dataclass
class _Row:
    """One batch row's pieces across a prefill and its decode steps."""

    pieces: list[Routing] = field(default_factory=list)
    finished: bool = False  # an EOS was fed by a decode step: later tokens are padding


class RowStitcher:
    """Collects ``Routing`` rows from blocks of finished forwards (see the module docstring).

    Parameters
    ----------
    layers
        The real layer index of each MoE site, in site order.
    top_k, n_experts, scoring
        The router's k, E and scoring ("sigmoid" or "softmax").
    bias
        Per site, the selection bias (E,) ranked by (DeepSeek-V3/K2), or None.
    scores
        Compute the full router scores (T, L, E) from the captured logits.
    eos
        Token ids after whose feeding a row's later tokens are padding.
    """

    def __init__(
        self,
        layers: tuple[int, ...],
        *,
        top_k: int,
        n_experts: int,
        scoring: str,
        bias: list[np.ndarray | None],
        scores: bool,
        eos: np.ndarray,
    ) -> None:
        self.layers, self.top_k, self.n_experts, self.scoring = layers, top_k, n_experts, scoring
        self.bias, self.scores, self.eos = bias, scores, eos
        self._rows: list[_Row] = []
        self._open: list[int] = []  # indices into _rows of the rows the KV cache currently holds

    def __len__(self) -> int:
        return len(self._rows)

    def _bias_table(self) -> np.ndarray | None:
        """(L, E) selection biases, zeros for layers without one; None when no layer has one."""
        if all(b is None for b in self.bias):
            return None
        return np.stack([np.zeros(self.n_experts, np.float32) if b is None else b for b in self.bias])

    def add(self, block: HostBlock) -> None:
        """Stitch every forward of ``block`` into the rows (new rows, or appended to the open ones).

        First which buffer rows each batch row keeps (padding and post-EOS tokens dropped), then every
        field is gathered once in row order, so each batch row's tokens of this block are one contiguous
        slice: ranking and scores run only on kept tokens, and a row's piece is a view, not a copy.
        """
        if not block.forwards:
            return
        kept: dict[int, list[np.ndarray]] = {}  # row index -> buffer rows it keeps, in token order
        generated = np.zeros(len(block.tokens), bool)
        spans = block.forwards
        i = 0
        while i < len(spans):
            first = spans[i]
            if first.append and first.length == 1:  # a run of decode steps over the same rows
                j = i + 1
                while j < len(spans) and spans[j].append and spans[j].length == 1 and spans[j].batch == first.batch:
                    j += 1
                self._decode_run(j - i, first.batch, first.start, block, kept)
                generated[first.start : spans[j - 1].start + first.batch] = True
                i = j
            else:
                self._forward(first, block, kept)
                i += 1
        rows = sorted(kept)
        parts = [np.concatenate(kept[r]) for r in rows]
        order = np.concatenate(parts) if parts else np.zeros(0, np.int64)  # (M,) buffer rows, row by row
        ids, weights = block.ids[order], block.weights[order]  # (M, L, k)
        if block.selected is not None:  # routers with an unsorted top-k: rank by what they selected by
            keys = rank_key(block.selected[order], ids, self.scoring, self._bias_table())
        else:  # routers that return their top-k sorted: the weights keep that order (stable sort)
            keys = None
        ids, weights = to_rank_order(ids, weights, keys)
        ids = ids.astype(np.int16, copy=False)
        weights = weights.astype(np.float32, copy=False)
        scores = block.scores(order) if self.scores and block.scores is not None else None  # (M, L, E)
        tokens, gen = block.tokens[order], generated[order]
        start = 0
        for r, part in zip(rows, parts, strict=True):
            sl = slice(start, start + len(part))
            start = sl.stop
            self._rows[r].pieces.append(
                Routing(ids[sl], weights[sl], None if scores is None else scores[sl], tokens[sl], gen[sl], self.layers)
            )

    def _forward(self, span: ForwardSpan, block: HostBlock, kept: dict[int, list[np.ndarray]]) -> None:
        """One prefill (new rows) or multi-token continuation (appended to the open rows)."""
        b, t = span.batch, span.length
        keep = block.mask[span.start : span.start + b * t].reshape(b, t)
        if not span.append:
            self._open = list(range(len(self._rows), len(self._rows) + b))
            self._rows.extend(_Row() for _ in range(b))
        for row_b, row_i in enumerate(self._open):
            if self._rows[row_i].finished:
                continue
            kept.setdefault(row_i, []).append(span.start + row_b * t + np.flatnonzero(keep[row_b]))

    def _decode_run(self, steps: int, b: int, start: int, block: HostBlock, kept: dict[int, list[np.ndarray]]) -> None:
        """``steps`` consecutive one-token steps over the ``b`` open rows, as one (steps, b) grid.

        A row that has been fed an EOS (at an unmasked position) records nothing from the next step on.
        """
        rows = slice(start, start + steps * b)
        tokens = block.tokens[rows].reshape(steps, b)
        keep = block.mask[rows].reshape(steps, b)
        finished = np.array([self._rows[r].finished for r in self._open], bool)  # (b,) before this run
        eos_fed = np.isin(tokens, self.eos) & keep  # (steps, b)
        before = finished[None, :] | ((np.cumsum(eos_fed, axis=0) - eos_fed) > 0)  # an EOS fed at an earlier step
        sel = keep & ~before  # (steps, b)
        for row_b, row_i in enumerate(self._open):
            row = self._rows[row_i]
            if row.finished:
                continue
            kept.setdefault(row_i, []).append(start + np.flatnonzero(sel[:, row_b]) * b + row_b)
            row.finished = bool(eos_fed[:, row_b].any())

    def routing(self) -> list[Routing]:
        """One ``Routing`` per row, in the order the rows were opened."""
        empty = Routing.empty(self.layers, self.top_k, self.n_experts if self.scores else None)
        return [Routing.concat(row.pieces) if row.pieces else empty for row in self._rows]

    def reset(self) -> None:
        self._rows.clear()
        self._open.clear()
