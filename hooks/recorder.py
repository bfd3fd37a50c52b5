"""``RoutingRecorder``: a context manager that records per-token expert routing of a model.

It joins the three parts of a recording: the device-side capture (``hooks/capture.py``: wrapped
instance forwards keeping one ``RouterCapture`` per MoE layer and forward, references to device tensors
only), the device buffers (``hooks/buffer.py``: each forward's captures stacked into preallocated device
memory, no host sync; router scores computed there at flush time) and the host-side stitching
(``hooks/stitch.py``: once per ``routing()`` call or full buffer: one sync, kept tokens, rank order,
rows). Forwards are wrapped in ``RoutingRecorder.__enter__`` (plus, for routers that return no routing,
each MoE layer's experts on the first forward) and every one is put back in ``__exit__``, also when the
body raised.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Any

import numpy as np
import torch
from torch import nn
from workbench.hooks.adapters import Adapter, MoESite, find_adapter, routing_config
from workbench.hooks.buffer import DeviceBuffer
from workbench.hooks.capture import CaptureHooks, ForwardCapture, RouterCapture, offloaded
from workbench.hooks.routing import Routing
from workbench.hooks.stitch import RowStitcher

from workbench.errors import WorkbenchError
from workbench.routing_config import RoutingConfig


class RoutingRecorder:
    """Record the routing of every MoE layer during forward / ``generate`` calls inside ``with``.

    Parameters
    ----------
    model
        A loaded transformers model of a supported family (see ``workbench.hooks.adapters``).
    scores
        Also keep the full router scores (T, L, E) per token (DeepSeek-V3/K2: sigmoid before the bias).
    eos_token_id
        Id(s) ending generation; tokens a batch row is fed after its EOS are not recorded.
        Defaults to ``model.generation_config.eos_token_id``.
    model_name
        Name for ``.config.model_name`` (default: the checkpoint directory's name).
    flush_bytes
        Copy the device buffers to the host and stitch them once they hold more than this many bytes
        (default 256 MiB); otherwise that happens once per ``routing()`` call.

    Examples
    --------
    >>> with RoutingRecorder(model) as rec:                        # doctest: +SKIP
    ...     model.generate(**batch, max_new_tokens=32)
    >>> routes = rec.routing()    # one Routing per batch row: expert_ids (T, L, k), gate_weights (T, L, k)
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        scores: bool = False,
        eos_token_id: int | Sequence[int] | None = None,
        model_name: str | None = None,
        flush_bytes: int = 256 << 20,
    ) -> None:
        self.model = model
        self.scores = scores
        self.adapter: Adapter = find_adapter(model)
        self.sites: list[MoESite] = sorted(self.adapter.sites, key=lambda s: s.layer)
        self.config: RoutingConfig = routing_config(model, self.adapter, model_name=model_name)
        if eos_token_id is None:
            eos_token_id = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        if eos_token_id is None:
            eos_token_id = []
        self._eos = np.array([eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id), np.int64)
        self._stitcher = self._new_stitcher([None] * len(self.sites))
        rank_by_logits = self.adapter.scoring == "sigmoid"  # DeepSeek-V3/K2 return their top-k unsorted
        self._buffer = DeviceBuffer(
            n_sites=len(self.sites), top_k=self.adapter.top_k, n_experts=self.adapter.n_experts,
            selected=rank_by_logits, logits=scores,
        )  # fmt: skip
        self.flush_bytes = flush_bytes
        self._open_rows = 0  # rows the KV cache holds: a later cached forward of this batch appends to them
        self._hooks = CaptureHooks(
            model, self.adapter, self.sites, keep_logits=scores, rank_by_logits=rank_by_logits,
            on_forward=self._on_forward, open_rows=lambda: self._open_rows,
        )  # fmt: skip
        self.shapes: list[dict[int, dict[str, tuple[int, ...]]]] = []  # per forward on meta tensors
        self.forwards = 0

    def _new_stitcher(self, bias: list[np.ndarray | None]) -> RowStitcher:
        return RowStitcher(
            tuple(s.layer for s in self.sites), top_k=self.adapter.top_k, n_experts=self.adapter.n_experts,
            scoring=self.adapter.scoring, bias=bias, scores=self.scores, eos=self._eos,
        )  # fmt: skip

    # ------------------------------------------------------------------ hooks (global state)
    def __enter__(self) -> RoutingRecorder:
        if self._hooks.attached:
            raise WorkbenchError("this RoutingRecorder is already active; use one `with` block at a time")
        self._stitcher.bias = [self._host_bias(site) for site in self.sites]  # once per `with`, not per forward
        self._buffer.split = None  # where the sites' captures live: looked at again on the first forward
        self._hooks.attach()  # hooks are registered here and only here; __exit__ removes every one
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._hooks.detach()

    @property
    def active(self) -> bool:
        return self._hooks.attached

    def _host_bias(self, site: MoESite) -> np.ndarray | None:
        if self.adapter.scoring != "sigmoid":
            return None
        bias = site.selection_bias()
        if bias is not None and bias.is_meta:
            bias = offloaded(site.gate, "e_score_correction_bias")  # a Parameter in K2's remote code
        if bias is None or bias.is_meta:
            return None  # a meta-device run: no values to rank by
        return bias.detach().float().cpu().numpy()

    def _on_forward(self, capture: ForwardCapture) -> None:
        self.forwards += 1
        if capture.on_meta:
            self._check(capture)
            self.shapes.append(
                {
                    self.sites[pos].layer: {
                        "expert_ids": tuple(c.expert_ids.shape),
                        "gate_weights": tuple(c.gate_weights.shape),
                        **({"router_logits": tuple(c.router_logits.shape)} if c.router_logits is not None else {}),
                    }
                    for pos, c in enumerate(capture.layers)
                }
            )
            return
        try:  # on the device: no host copy, no sync; shapes are checked there before anything is kept
            self._buffer.append(capture)
        except (RuntimeError, TypeError):
            self._check(capture)  # names the layer whose capture is wrong
            raise
        if not capture.append:
            self._open_rows = capture.batch
        if self._buffer.nbytes > self.flush_bytes:
            self._flush()

    def _check(self, capture: ForwardCapture) -> None:
        """Every site's capture against the shapes expected (Python ints, no sync); raise naming the first wrong.

        Runs on meta-device forwards and when the buffers refused a forward (the common path checks the
        stacked shapes there, a few comparisons per forward rather than per layer).
        """
        n, k, e = capture.batch * capture.length, self.adapter.top_k, self.adapter.n_experts
        meta = capture.on_meta
        need_key = self._buffer.keep_selected and not meta
        for pos, c in enumerate(capture.layers):
            if (
                c.expert_ids.shape != (n, k)
                or c.gate_weights.shape != (n, k)
                or (c.router_logits is not None and c.router_logits.shape != (n, e))
                or (self.scores and c.router_logits is None and not meta)
                or (need_key and c.selected_logits is None and c.router_logits is None)
            ):
                raise self._shape_error(pos, c, n)

    def _shape_error(self, pos: int, c: RouterCapture, n: int) -> WorkbenchError:
        k, e, where = self.adapter.top_k, self.adapter.n_experts, f"MoE layer {self.sites[pos].layer}"
        if tuple(c.expert_ids.shape) != (n, k) or tuple(c.gate_weights.shape) != (n, k):
            return WorkbenchError(
                f"{where}: captured expert ids {tuple(c.expert_ids.shape)} and weights "
                f"{tuple(c.gate_weights.shape)}, expected ({n}, {k}) for {n} tokens; nothing was recorded"
            )
        if c.router_logits is not None:
            return WorkbenchError(f"{where}: router logits {tuple(c.router_logits.shape)}, expected ({n}, {e})")
        if self.scores:
            return WorkbenchError("router scores were asked for but a router's logits could not be computed")
        return WorkbenchError(f"{where}: the router's logits could not be read, so the rank order is unknown")

    def _flush(self) -> None:
        """Device buffers -> host (one sync) -> rows."""
        if self._buffer.forwards:
            self._stitcher.add(self._buffer.to_host(self.adapter.scoring))

    # ------------------------------------------------------------------ results
    def routing(self, *, reset: bool = False) -> list[Routing]:
        """One ``Routing`` per batch row of every forward/generate since the last reset, in call order.

        A forward whose cache already holds tokens (a decode step) appends to the rows of the call
        that filled it. Raises WorkbenchError after forwards on the meta device (use ``.shapes``).
        """
        self._flush()
        if not len(self._stitcher) and self.shapes:
            raise WorkbenchError("the model ran on the meta device: no routing values exist; see recorder.shapes")
        out = self._stitcher.routing()
        if reset:
            self.reset()
        return out

    def reset(self) -> None:
        """Forget recorded rows (hooks stay registered while inside ``with``)."""
        self._buffer.clear()
        self._stitcher.reset()
        self._open_rows = 0
        self.shapes.clear()


def route_tokens(model: nn.Module, input_ids: Any, *, scores: bool = False) -> Routing:
    """Routing of one teacher-forced sequence (one forward, no padding).

    ``input_ids``: (T,) or (1, T) ids (tensor, array or list). Returns ``Routing`` with
    ``expert_ids`` (T, L, k) for every token.
    """
    ids = torch.as_tensor(np.asarray(input_ids) if not isinstance(input_ids, torch.Tensor) else input_ids)
    if ids.dim() == 1:
        ids = ids[None]  # (1, T)
    if ids.dim() != 2 or ids.shape[0] != 1:
        raise WorkbenchError(f"route_tokens takes one sequence of ids, shape (T,) or (1, T); got {tuple(ids.shape)}")
    device = next((p.device for p in model.parameters() if not p.is_meta), torch.device("cpu"))
    with RoutingRecorder(model, scores=scores) as rec, torch.no_grad():
        model(input_ids=ids.to(device), use_cache=False)
    return rec.routing()[0]
