"""Device-side accumulation of captures: preallocated buffers, appended to per forward, copied to the host rarely.

A decode step of ``generate`` is a tiny forward (one token per row); copying its routing to the host and
stitching it into rows there costs about a millisecond per step, more than the capture itself. So each
forward's captures stay on the device they were made on: at the end of the forward the per-layer
(N, k) tensors are stacked into the next N rows of preallocated buffers (one ``torch.stack(out=...)``
per field, no host sync), which grow geometrically when full. The host copy (one synchronisation)
and the stitching into rows happen once per ``routing()`` call, or when the buffers hold more than
``flush_bytes``.

Buffer layout (``cap`` tokens of room, ``n`` used; L MoE sites, k experts per token, E experts):

    ids       (cap, L, k) int16 (int32 when E > 32767)   the top-k ids in the router's output order
    weights   (cap, L, k) float32                          the gate weights
    selected  (cap, L, k) float32                          logits of the chosen experts (rank key), optional
    logits    (cap, L, E) float32                          all router logits (``scores=True``), optional
    tokens    (cap,) int64                                 the token fed at each position (-1: embeddings)
    mask      (cap,) bool                                  False for padding
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from workbench.hooks.capture import ForwardCapture, RouterCapture


@dataclass(frozen=True)
class ForwardSpan:
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
        self.id_dtype = torch.int16 if n_experts <= torch.iinfo(torch.int16).max else torch.int32
        self.n = 0
        self.cap = 0
        self.device: torch.device | None = None
        self.fields: dict[str, torch.Tensor] = {}
        self.forwards: list[ForwardSpan] = []

    @property
    def row_bytes(self) -> int:
        """Bytes one token takes in the buffers."""
        lk = self.n_sites * self.top_k
        return (
            lk * (2 if self.id_dtype == torch.int16 else 4)
            + lk * 4 * (1 + self.keep_selected)
            + (self.n_sites * self.n_experts * 4 * self.keep_logits)
            + 9
        )

    @property
    def nbytes(self) -> int:
        return self.n * self.row_bytes

    def _allocate(self, cap: int, device: torch.device) -> dict[str, torch.Tensor]:
        lk = (cap, self.n_sites, self.top_k)
        out = {
            "ids": torch.empty(lk, dtype=self.id_dtype, device=device),
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
        """Stack one forward's captures (site order) into the next ``batch * length`` rows, on the device.

        A few ops per forward whatever the number of layers: one ``torch.stack`` per field, plus one gather
        of every layer's chosen logits (the rank key) from the stacked logits when the layers held them.
        """
        layers: list[RouterCapture] = capture.layers  # type: ignore[assignment]  # complete: checked by the caller
        # rows go where the buffers are (or, while empty, where the first site's captures are); captures of
        # sites on other devices (a device_map split) are moved there asynchronously
        device = self.device if self.n and self.device is not None else layers[0].expert_ids.device
        if len({c.expert_ids.device for c in layers}) > 1 or layers[0].expert_ids.device != device:
            layers = [RouterCapture(*(_to(t, device) for t in c)) for c in layers]
        n = capture.batch * capture.length
        self._reserve(n, device)
        rows = slice(self.n, self.n + n)
        f = self.fields
        gather = self.keep_selected and layers[0].selected_logits is None  # the rank key from the held logits
        if gather:
            ids = torch.stack([c.expert_ids for c in layers], dim=1)  # (N, L, k) int64: the gather's index
            f["ids"][rows].copy_(ids)
        else:
            torch.stack([c.expert_ids for c in layers], dim=1, out=f["ids"][rows])  # (N, L, k)
        torch.stack([c.gate_weights for c in layers], dim=1, out=f["weights"][rows])
        logits = None
        if self.keep_logits:
            logits = f["logits"][rows]
            torch.stack([c.router_logits for c in layers], dim=1, out=logits)  # type: ignore[misc]  # (N, L, E)
        if gather:
            if logits is None:
                logits = torch.stack([c.router_logits for c in layers], dim=1)  # type: ignore[misc]
            torch.gather(logits, 2, ids, out=f["selected"][rows])  # (N, L, k)
        elif self.keep_selected:
            torch.stack([c.selected_logits for c in layers], dim=1, out=f["selected"][rows])  # type: ignore[misc]
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
