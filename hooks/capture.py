"""Device side of the recorder: the forward hooks and what they capture, as references to device tensors.

Hooks are global state: they live on the model's modules, not on any recorder. ``CaptureHooks.attach``
registers them and ``detach`` removes every handle, also after the body of a ``with`` raised. Per
decoder forward there are two hooks on the decoder (its inputs; its end) and **one per MoE layer**:

- transformers 5.x routers that return ``(router_logits, top_k_weights, top_k_index)`` (DeepSeek-V3,
  Mixtral, Qwen3-MoE, OLMoE in 5.24; the MoE block hands the last two to its ``experts`` unchanged): a
  forward hook on the router reads all three.
- routers that return logits only (other 5.x releases): on the first forward the router's hook sees
  that and adds a forward pre-hook on that layer's ``experts``, which reads what reaches the experts;
  the router's hook keeps the logits.
- K2's remote code (``MoEGate`` returns ``(topk_idx, topk_weight)``): a forward hook on the gate; the
  logits are recomputed from its weight.

Per MoE layer the hooks keep one ``RouterCapture``, whose fields are the stable capture names:

    RouterCapture.expert_ids       (N, k) int64   hook_expert_indices: the top-k ids that reach the experts
    RouterCapture.gate_weights     (N, k) float   hook_expert_weights: the weights the MoE applies to them
    RouterCapture.selected_logits  (N, k) float   the router's logits of the chosen experts (rank key), or
                                                  None where the router returns its top-k ranked already
    RouterCapture.router_logits    (N, E) float   hook_router_logits: all logits (kept only with scores)

(N = batch x new tokens of one forward.) The hot path inside each MoE layer only keeps references to
tensors the model made anyway, plus one (N, k) gather of the chosen logits for routers whose top-k
comes unsorted (DeepSeek-V3/K2): no ``.cpu()``, ``.item()`` or sync per layer. When the decoder's
forward returns, the finished ``ForwardCapture`` goes to a callback (``hooks/buffer.py`` stacks it into
device buffers; ``hooks/stitch.py`` turns those into rows on the host, rarely).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.hooks import RemovableHandle
from workbench.hooks.adapters import Adapter, MoESite

from workbench.errors import WorkbenchError


class RouterCapture(NamedTuple):
    """What one MoE layer's router decided in one forward; shapes (N, k) and (N, E), see the module doc."""

    expert_ids: torch.Tensor
    gate_weights: torch.Tensor
    selected_logits: torch.Tensor | None
    router_logits: torch.Tensor | None


@dataclass
class ForwardCapture:
    """What one decoder forward captured: its input layout and one ``RouterCapture`` per MoE site."""

    batch: int
    length: int  # new tokens per row in this forward
    append: bool  # a decode/continuation step (the KV cache already holds tokens)
    input_ids: torch.Tensor | None  # (B, T) or None when the forward got embeddings
    mask: torch.Tensor | None  # (B, T) 1 = real token, for the T new positions
    layers: dict[int, RouterCapture] = field(default_factory=dict)  # site position -> capture

    @property
    def on_meta(self) -> bool:
        return bool(self.layers) and self.layers[0].expert_ids.is_meta


def router_routing(output: Any, top_k: int, n_experts: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """``(logits (.., E), weights (.., k), ids (.., k))`` when a router's output carries its routing, else None."""
    if not (isinstance(output, tuple) and len(output) == 3):
        return None
    logits, weights, ids = output
    if not all(isinstance(t, torch.Tensor) for t in output):
        return None
    if ids.is_floating_point() or not weights.is_floating_point() or ids.shape != weights.shape:
        return None
    if ids.shape[-1] != top_k or logits.shape[-1] != n_experts or not logits.is_floating_point():
        return None
    return logits, weights, ids


class CaptureHooks:
    """The forward hooks of one model's MoE sites (see the module docstring).

    ``on_forward(capture)`` is called once per decoder forward in which every MoE site captured;
    ``open_rows()`` says how many rows the KV cache currently holds (decode steps append to them).
    ``rank_by_logits``: keep each token's chosen logits (the rank key of routers whose top-k is unsorted).
    """

    def __init__(
        self,
        model: nn.Module,
        adapter: Adapter,
        sites: list[MoESite],
        *,
        keep_logits: bool,
        rank_by_logits: bool,
        on_forward: Callable[[ForwardCapture], None],
        open_rows: Callable[[], int],
    ) -> None:
        self.model, self.adapter, self.sites, self.keep_logits = model, adapter, sites, keep_logits
        self.rank_by_logits = rank_by_logits
        self._on_forward, self._open_rows = on_forward, open_rows
        self._handles: list[RemovableHandle] = []
        self._pending: ForwardCapture | None = None
        self._logits: dict[int, torch.Tensor] = {}
        self._offloaded: dict[int, torch.Tensor] = {}  # router weights fetched from accelerate's offload
        self._at_experts: set[int] = set()  # sites whose router returns no routing: read at the experts
        self._at_gate: set[int] = set()  # sites whose router returns (logits, weights, ids)

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    @property
    def n_hooks(self) -> int:
        """Hooks registered now (2 on the decoder + 1 per MoE layer, +1 per layer read at its experts)."""
        return len(self._handles)

    def attach(self) -> None:
        decoder = decoder_of(self.model, self.sites)
        try:
            self._handles.append(decoder.register_forward_pre_hook(self._begin_forward, with_kwargs=True))
            self._handles.append(decoder.register_forward_hook(self._end_forward, always_call=True))
            for pos, site in enumerate(self.sites):
                hook = self._gate_hook(pos) if site.experts is not None else self._remote_gate_hook(pos)
                self._handles.append(site.gate.register_forward_hook(hook))
        except BaseException:
            self.detach()
            raise

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._pending = None
        self._logits.clear()
        self._offloaded.clear()
        self._at_experts.clear()
        self._at_gate.clear()

    def _begin_forward(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        embeds = kwargs.get("inputs_embeds")
        source = input_ids if isinstance(input_ids, torch.Tensor) else embeds
        if not isinstance(source, torch.Tensor):
            return  # neither ids nor embeddings: not a forward the recorder understands
        batch, length = int(source.shape[0]), int(source.shape[1])
        mask = kwargs.get("attention_mask")
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        past = 0
        if isinstance(mask, torch.Tensor) and mask.dim() == 2:
            past = int(mask.shape[1]) - length  # generate passes the mask of past + new tokens
            mask = mask[:, -length:]
        else:
            mask = None
        if past == 0 and cache is not None and hasattr(cache, "get_seq_length"):
            past = int(cache.get_seq_length())  # a shape for DynamicCache: no device sync
        append = past > 0 and self._open_rows() == batch
        ids = input_ids if isinstance(input_ids, torch.Tensor) else None
        self._pending = ForwardCapture(batch, length, append, ids, mask)
        self._logits.clear()

    def _gate_hook(self, pos: int) -> Any:
        top_k, n_experts = self.adapter.top_k, self.adapter.n_experts

        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            if self._pending is None:
                return
            if pos in self._at_gate:  # checked on this layer's first forward; the recorder checks shapes each time
                self._capture(pos, output[2], output[1], output[0])
                return
            routed = None if pos in self._at_experts else router_routing(output, top_k, n_experts)
            if routed is not None:
                self._at_gate.add(pos)
                logits, weights, ids = routed
                self._capture(pos, ids, weights, logits)
                return
            logits = output[0] if isinstance(output, tuple) else output
            if not (isinstance(logits, torch.Tensor) and logits.shape[-1] == n_experts and logits.is_floating_point()):
                # a router that returns no logits either: recompute them from its weight
                hidden = args[0]
                weight = self._router_weight(pos, module, hidden)
                if weight is None:
                    return
                logits = F.linear(hidden.reshape(-1, hidden.shape[-1]).float(), weight.float())
            self._logits[pos] = logits.reshape(-1, n_experts)  # hook_router_logits (N, E)
            if pos not in self._at_experts:  # first forward: read the routing where it reaches the experts
                self._at_experts.add(pos)
                experts = self.sites[pos].experts
                assert experts is not None
                self._handles.append(experts.register_forward_pre_hook(self._experts_pre_hook(pos), with_kwargs=True))

        return hook

    def _experts_pre_hook(self, pos: int) -> Any:
        site = self.sites[pos]

        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            if self._pending is None:
                return
            named = dict(zip(site.experts_params, args, strict=False)) | kwargs
            self._capture(pos, named[site.index_param], named[site.weights_param], self._logits.pop(pos, None))

        return hook

    def _remote_gate_hook(self, pos: int) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            if self._pending is None:
                return
            hidden = args[0]
            weight = self._router_weight(pos, module, hidden)
            # The remote MoEGate returns no logits; recomputing them (an (N, H) x (H, E) product, <1% of the
            # layer's FLOPs) gives the rank order and the optional scores.
            logits = None if weight is None else F.linear(hidden.reshape(-1, hidden.shape[-1]).float(), weight.float())
            self._capture(pos, output[0], output[1], logits)

        return hook

    def _router_weight(self, pos: int, module: nn.Module, hidden: torch.Tensor) -> torch.Tensor | None:
        """The router's (E, H) weight where ``hidden`` lives; offloaded (meta) weights come from accelerate's
        weights map once and are kept. None when there is nothing to compute with (meta-device runs)."""
        weight = _weight(module)
        if hidden.is_meta or not weight.is_meta:
            return None if hidden.is_meta else weight
        if pos not in self._offloaded:
            stored = offloaded(module, "weight")
            if stored is None:
                return None
            self._offloaded[pos] = stored.to(hidden.device)
        return self._offloaded[pos]

    def _capture(self, pos: int, idx: torch.Tensor, weights: torch.Tensor, logits: torch.Tensor | None) -> None:
        """Keep one layer's routing (views of the router's tensors; a gather of the rank key where needed)."""
        assert self._pending is not None
        if idx.dim() != 2:
            idx = idx.reshape(-1, idx.shape[-1])  # hook_expert_indices (N, k)
        if weights.dim() != 2:
            weights = weights.reshape(-1, weights.shape[-1])  # hook_expert_weights (N, k)
        if logits is not None and logits.dim() != 2:
            logits = logits.reshape(-1, logits.shape[-1])  # hook_router_logits (N, E)
        # the router made ids and logits on one device (remote code: logits computed where the hidden states are)
        selected = logits.gather(1, idx) if self.rank_by_logits and logits is not None else None  # (N, k)
        self._pending.layers[pos] = RouterCapture(idx, weights, selected, logits if self.keep_logits else None)

    def _end_forward(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        pending, self._pending = self._pending, None
        self._logits.clear()
        if pending is None or output is None or len(pending.layers) != len(self.sites):
            return  # the forward raised before every MoE layer ran: nothing half-recorded is kept
        self._on_forward(pending)


def offloaded(module: nn.Module, name: str) -> torch.Tensor | None:
    """A parameter accelerate offloaded (meta in the module), read from its hook's weights map."""
    weights_map = getattr(getattr(module, "_hf_hook", None), "weights_map", None)
    if weights_map is None:
        return None
    try:
        value = weights_map[name]
    except KeyError:
        return None
    return value if isinstance(value, torch.Tensor) else None


def _weight(module: nn.Module) -> torch.Tensor:
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor):
        raise WorkbenchError(f"router {type(module).__name__} has no weight tensor to compute its logits from")
    return weight


def decoder_of(model: nn.Module, sites: list[MoESite]) -> nn.Module:
    """The module whose forward runs every decoder layer once (``model.model`` for *ForCausalLM)."""
    names = [name for name, _ in model.named_modules()]
    layers_parent = sites[0].name.split(".layers.")[0] if ".layers." in sites[0].name else ""
    if layers_parent in names:
        return model.get_submodule(layers_parent) if layers_parent else model
    return model
