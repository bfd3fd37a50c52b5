"""Device-side accumulation of captures: preallocated buffers, appended to per forward, copied to the host rarely.

A decode step of ``generate`` is a tiny forward (one token per row); copying its routing to the host and
stitching it into rows there costs about a millisecond per step, more than the capture itself. So each
forward's captures stay on the device they were made on: at the end of the forward the per-layer
(N, k) tensors are stacked into the next N rows of preallocated buffers (one ``torch.stack(out=...)``
per field and one gather of every layer's rank key, no host sync), which grow geometrically when full.
The host copy (one synchronisation) and the stitching into rows happen once per ``routing()`` call, or
when the buffers hold more than ``flush_bytes``; router scores are then computed on the device for the
tokens the stitcher keeps.

Buffer layout (``cap`` tokens of room, ``n`` used; L MoE sites, k experts per token, E experts):

    ids       (cap, L, k) int64                            the top-k ids in the router's output order
    weights   (cap, L, k) float32                          the gate weights
    selected  (cap, L, k) float32                          logits of the chosen experts (rank key), optional
    logits    (cap, L, E) float32                          all router logits (``scores=True``), optional
    tokens    (cap,) int64                                 the token fed at each position (-1: embeddings)
    mask      (cap,) bool                                  False for padding
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from workbench.hooks.capture import ForwardCapture


class CaptureMismatch(RuntimeError):
    """A forward's captures do not have the shapes the buffers expect (the recorder names the layer)."""


class ForwardSpan(NamedTuple):
    """Where one recorded forward's tokens lie in the buffers: rows ``start : start + batch * length``."""

    start: int
    batch: int
    length: int  # new tokens per row
    append: bool  # a continuation of the rows the KV cache holds (decode step or chunk)


@dataclass
class HostBlock:
    """The buffers' used rows on the host (numpy), and the forwards they came from, in call order."""

    ids: np.ndarray  # (N, L, k)
    weights: np.ndarray  # (N, L, k) float32
    selected: np.ndarray | None  # (N, L, k) float32
    scores: Callable[[np.ndarray], np.ndarray] | None  # rows (M,) -> their router scores (M, L, E) float32
    tokens: np.ndarray  # (N,) int64
    mask: np.ndarray  # (N,) bool
    forwards: list[ForwardSpan]


class DeviceBuffer:
    """Growable device buffers of captures (see the module docstring)."""

    def __init__(self, *, n_sites: int, top_k: int, n_experts: int, selected: bool, logits: bool) -> None:
        self.n_sites, self.top_k, self.n_experts = n_sites, top_k, n_experts
        self.keep_selected, self.keep_logits = selected, logits
        self.n = 0
        self.cap = 0
        self.device: torch.device | None = None
        self.fields: dict[str, torch.Tensor] = {}
        self.forwards: list[ForwardSpan] = []
        self.split: bool | None = None  # the sites' captures live on several devices (None: not known yet)

    @property
    def row_bytes(self) -> int:
        """Bytes one token takes in the buffers."""
        lk = self.n_sites * self.top_k
        return lk * 8 + lk * 4 * (1 + self.keep_selected) + (self.n_sites * self.n_experts * 4 * self.keep_logits) + 9

    @property
    def nbytes(self) -> int:
        return self.n * self.row_bytes

    def _allocate(self, cap: int, device: torch.device) -> dict[str, torch.Tensor]:
        lk = (cap, self.n_sites, self.top_k)
        out = {
            "ids": torch.empty(lk, dtype=torch.int64, device=device),  # as the router made them: the gather's index
            "weights": torch.empty(lk, dtype=torch.float32, device=device),
            "tokens": torch.empty(cap, dtype=torch.int64, device=device),
            "mask": torch.empty(cap, dtype=torch.bool, device=device),
        }
        if self.keep_selected:
            out["selected"] = torch.empty(lk, dtype=torch.float32, device=device)
        if self.keep_logits:
            out["logits"] = torch.empty((cap, self.n_sites, self.n_experts), dtype=torch.float32, device=device)
        return out

    def _reserve(self, n_new: int, device: torch.device) -> None:
        if self.device != device:  # only while empty (``append`` keeps appending where the rows are)
            self.fields, self.cap, self.device = {}, 0, device
        need = self.n + n_new
        if need <= self.cap:
            return
        cap = max(need, 2 * self.cap, 64)  # geometric growth: O(log T) reallocations per recording
        grown = self._allocate(cap, device)
        for name, old in self.fields.items():
            grown[name][: self.n].copy_(old[: self.n])
        self.fields, self.cap = grown, cap

    def append(self, capture: ForwardCapture) -> None:
        """Stack one complete forward's captures (site order) into the next ``batch * length`` rows, on the device.

        A few ops per forward whatever the number of layers: one ``torch.stack`` per field, plus one gather
        of every layer's chosen logits (the rank key) from the stacked logits when the layers held them.
        Raises ``CaptureMismatch`` (or torch's error, for layers of unequal shapes) before any row is
        kept when a shape is not what the recorder expects; the recorder then names the layer.
        """
        ids_l, w_l, sel_l, lg_l = capture.ids, capture.weights, capture.selected, capture.logits
        first = ids_l[0]
        assert first is not None
        # rows go where the buffers are (or, while empty, where the first site's captures are); captures of
        # sites on other devices (a device_map split) are moved there asynchronously
        device = self.device if self.n and self.device is not None else first.device
        if self.split is None:  # checked once per recording: a model's layers stay where they are
            self.split = len({t.device for t in ids_l if t is not None}) > 1
        if self.split or first.device != device:
            ids_l, w_l, sel_l, lg_l = ([_to(t, device) for t in f] for f in (ids_l, w_l, sel_l, lg_l))
        n, k = capture.batch * capture.length, self.top_k
        if first.shape != (n, k) or w_l[0] is None or w_l[0].shape != (n, k):
            raise CaptureMismatch("expert ids or weights")
        self._reserve(n, device)
        rows = slice(self.n, self.n + n)
        f = self.fields
        ids = f["ids"][rows]
        torch.stack(ids_l, dim=1, out=ids)  # type: ignore[arg-type]  # (N, L, k); layers of other shapes raise
        torch.stack(w_l, dim=1, out=f["weights"][rows])  # type: ignore[arg-type]
        logits = None
        if self.keep_logits:
            if lg_l[0] is None or lg_l[0].shape != (n, self.n_experts):
                raise CaptureMismatch("router logits")
            logits = f["logits"][rows]
            torch.stack(lg_l, dim=1, out=logits)  # type: ignore[arg-type]  # (N, L, E)
        if self.keep_selected and sel_l[0] is None:  # the layers held their logits: every rank key in one gather
            if logits is None:
                logits = torch.stack(lg_l, dim=1)  # type: ignore[arg-type]
            torch.gather(logits, 2, ids, out=f["selected"][rows])  # (N, L, k)
        elif self.keep_selected:  # gathered in each layer (large forwards)
            if sel_l[0].shape != (n, k):
                raise CaptureMismatch("the rank key")
            torch.stack(sel_l, dim=1, out=f["selected"][rows])  # type: ignore[arg-type]
        if capture.input_ids is not None:
            f["tokens"][rows].copy_(capture.input_ids.reshape(-1), non_blocking=True)
        else:
            f["tokens"][rows].fill_(-1)
        if capture.mask is not None:
            f["mask"][rows].copy_(capture.mask.reshape(-1), non_blocking=True)
        else:
            f["mask"][rows].fill_(True)
        self.forwards.append(ForwardSpan(self.n, capture.batch, capture.length, capture.append))
        self.n += n

    def to_host(self, scoring: str) -> HostBlock:
        """Copy the used rows to the host (one synchronisation) and empty the buffers (their room is kept).

        The logits (``scores=True``) are not copied here: ``HostBlock.scores(rows)`` turns the rows the
        stitcher keeps into scores on the device (``scoring``: "sigmoid" or "softmax") and copies only
        those. It must be called before the next ``append``, which reuses the room.
        """
        f, n = self.fields, self.n
        pinned = self.device is not None and self.device.type == "cuda"

        def host(name: str) -> np.ndarray | None:
            if name not in f:
                return None
            src = f[name][:n]
            if pinned:
                src = torch.empty(src.shape, dtype=src.dtype, pin_memory=True).copy_(src, non_blocking=True)
            else:  # a CPU buffer's rows are read in place (the stitcher copies what it keeps)
                src = src.to("cpu", non_blocking=True)
            return src.numpy() if src.device.type == "cpu" else None

        out = {name: host(name) for name in ("ids", "weights", "selected", "tokens", "mask")}
        if self.device is not None and self.device.type not in ("cpu", "meta"):
            getattr(torch, self.device.type).synchronize(self.device)
        forwards, self.forwards, self.n = self.forwards, [], 0
        if not f:  # nothing was ever appended
            lk = np.zeros((0, self.n_sites, self.top_k), np.float32)
            return HostBlock(lk.astype(np.int16), lk, None, None, np.zeros(0, np.int64), np.zeros(0, bool), forwards)
        logits = f["logits"][:n] if "logits" in f else None
        return HostBlock(
            ids=out["ids"],  # type: ignore[arg-type]
            weights=out["weights"],  # type: ignore[arg-type]
            selected=out["selected"],
            scores=None if logits is None else (lambda rows: device_scores(logits, rows, scoring)),
            tokens=out["tokens"],  # type: ignore[arg-type]
            mask=out["mask"],  # type: ignore[arg-type]
            forwards=forwards,
        )

    def clear(self) -> None:
        """Forget the rows (room kept)."""
        self.n = 0
        self.forwards = []


def _to(t: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    return t if t is None or t.device == device else t.to(device, non_blocking=True)


def device_scores(logits: torch.Tensor, rows: np.ndarray, scoring: str) -> np.ndarray:
    """Router scores of the buffer ``rows`` (M,) from their logits (N, L, E), computed where the logits are.

    DeepSeek-V3/K2: ``sigmoid`` (written ``1 / (1 + exp(-x))``: torch's fused sigmoid rounds the last
    elements of a tensor differently from the rest, so a token's score would depend on where a flush cut
    the buffer; this form does not); softmax routers: ``softmax`` over the E experts. Returns (M, L, E)
    float32 on the host.
    """
    picked = logits[torch.from_numpy(rows).to(logits.device)]  # (M, L, E), a copy: the buffer is left as is
    sigmoid = scoring == "sigmoid"
    scores = picked.neg_().exp_().add_(1.0).reciprocal_() if sigmoid else torch.softmax(picked, dim=-1)
    return scores.cpu().numpy()
