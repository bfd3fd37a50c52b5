"""Host side of the recorder: turn each finished forward's captures into per-row ``Routing`` pieces.

Once per forward, off the hot path: the captures come to the host (one sync per device), their shapes
are checked (here, once: nothing downstream re-checks them), each token's top-k is put into the
router's rank order, scores are computed from logits when asked for, and the (B, T) batch is split
into rows with padding dropped. Every piece is already a ``Routing`` in its final dtypes (int16 ids,
float32 weights and scores); a row that spans a prefill and its decode steps is the concatenation of
its pieces.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from workbench.hooks.capture import ForwardCapture, RouterCapture, to_host
from workbench.hooks.routing import Routing, rank_key, scores_from_logits, to_rank_order

from workbench.errors import WorkbenchError


@dataclass
class _Row:
    """One batch row's pieces across a prefill and its decode steps."""

    pieces: list[Routing] = field(default_factory=list)
    finished: bool = False  # an EOS was fed by a decode step: later tokens are padding


class RowStitcher:
    """Collects ``Routing`` rows from finished forwards (see the module docstring).

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

    @property
    def open_rows(self) -> int:
        return len(self._open)

    def __len__(self) -> int:
        return len(self._rows)

    def _check(self, sites: list[RouterCapture], n: int) -> None:
        k, e = self.top_k, self.n_experts
        for pos, c in enumerate(sites):
            where = f"MoE layer {self.layers[pos]}"
            if tuple(c.expert_ids.shape) != (n, k) or tuple(c.gate_weights.shape) != (n, k):
                raise WorkbenchError(
                    f"{where}: captured expert ids {tuple(c.expert_ids.shape)} and weights "
                    f"{tuple(c.gate_weights.shape)}, expected ({n}, {k}) for {n} tokens; nothing was recorded"
                )
            if c.router_logits is not None and tuple(c.router_logits.shape) != (n, e):
                raise WorkbenchError(f"{where}: router logits {tuple(c.router_logits.shape)}, expected ({n}, {e})")
        if self.scores and any(c.router_logits is None for c in sites):
            raise WorkbenchError("router scores were asked for but a router's logits could not be computed")

    def add(self, capture: ForwardCapture) -> None:
        """Stitch one finished forward into the rows (new rows, or appended to the open ones)."""
        sites, ids_t, mask_t = to_host(capture)  # the one sync of this forward
        b, t = capture.batch, capture.length
        self._check(sites, b * t)
        ids = np.stack([c.expert_ids.numpy() for c in sites], axis=1)  # (N, L, k)
        weights = np.stack([c.gate_weights.float().numpy() for c in sites], axis=1)  # (N, L, k)
        keys = None
        if all(c.selected_logits is not None for c in sites):
            keys = np.stack(
                [
                    rank_key(c.selected_logits.float().numpy(), c.expert_ids.numpy(), self.scoring, self.bias[pos])  # type: ignore[union-attr]
                    for pos, c in enumerate(sites)
                ],
                axis=1,
            )  # (N, L, k)
        ids, weights = to_rank_order(ids, weights, keys)
        n_sites = len(sites)
        ids = ids.reshape(b, t, n_sites, -1).astype(np.int16)  # (B, T, L, k)
        weights = weights.reshape(b, t, n_sites, -1).astype(np.float32)  # (B, T, L, k)
        scores = None
        if self.scores:
            scores = np.stack(
                [scores_from_logits(c.router_logits.float().numpy(), self.scoring) for c in sites],  # type: ignore[union-attr]
                axis=1,
            ).reshape(b, t, n_sites, -1)  # (B, T, L, E)
        tokens = ids_t.numpy().astype(np.int64) if ids_t is not None else np.full((b, t), -1, np.int64)  # (B, T)
        keep = mask_t.numpy().astype(bool) if mask_t is not None else np.ones((b, t), bool)  # (B, T)

        if not capture.append:
            self._open = list(range(len(self._rows), len(self._rows) + b))
            self._rows.extend(_Row() for _ in range(b))
        decode = capture.append and t == 1
        for row_b, row_i in enumerate(self._open):
            row = self._rows[row_i]
            if decode and row.finished:
                continue
            sel = keep[row_b] & (not row.finished)
            fed = tokens[row_b][sel]
            row.pieces.append(
                Routing(
                    expert_ids=ids[row_b][sel],
                    gate_weights=weights[row_b][sel],
                    router_scores=scores[row_b][sel] if scores is not None else None,
                    token_ids=fed,
                    generated=np.full(len(fed), decode),
                    layers=self.layers,
                )
            )
            if decode and fed.size and np.isin(fed, self.eos).any():
                row.finished = True

    def routing(self) -> list[Routing]:
        """One ``Routing`` per row, in the order the rows were opened."""
        empty = Routing.empty(self.layers, self.top_k, self.n_experts if self.scores else None)
        return [Routing.concat(row.pieces) if row.pieces else empty for row in self._rows]

    def reset(self) -> None:
        self._rows.clear()
        self._open.clear()
