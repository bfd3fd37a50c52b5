"""Device side of the recorder: wrappers around the routers' forwards, and what they capture (device tensors).

Capture is global state: it lives on the model's modules, not on any recorder. ``CaptureHooks.attach``
wraps the forwards that see the routing and ``detach`` puts every one back, also after the body of a
``with`` raised. The wrapper is set on the module *instance* (``module.forward = wrapper``), as nnsight
and accelerate do, rather than registered as a forward hook: a module with any hook takes torch's
general ``Module._call_impl`` path (lists of hooks built and walked, results checked) on every call,
while an instance ``forward`` keeps the fast path and costs one Python call. Per decoder forward there
is one wrapper on the decoder (it opens and closes the forward's capture) and **one per MoE layer**:

- transformers 5.x routers that return ``(router_logits, top_k_weights, top_k_index)`` (DeepSeek-V3,
  Mixtral, Qwen3-MoE, OLMoE in 5.24; the MoE block hands the last two to its ``experts`` unchanged):
  the router's wrapper reads all three.
- routers that return logits only (other 5.x releases): on the first forward the router's wrapper sees
  that and wraps that layer's ``experts`` too, which read what reaches the experts; the router's wrapper
  keeps the logits.
- K2's remote code (``MoEGate`` returns ``(topk_idx, topk_weight)``): the gate's wrapper; the logits are
  recomputed from its weight.

Per MoE layer the wrappers keep one ``RouterCapture``, whose fields are the stable capture names:

    RouterCapture.expert_ids       (N, k) int64   hook_expert_indices: the top-k ids that reach the experts
    RouterCapture.gate_weights     (N, k) float   hook_expert_weights: the weights the MoE applies to them
    RouterCapture.selected_logits  (N, k) float   the router's logits of the chosen experts (the rank key of
                                                  routers whose top-k comes unsorted), gathered in the layer
                                                  only for forwards too large to keep every layer's logits
                                                  until the forward ends; else None (gathered at the end)
    RouterCapture.router_logits    (N, E) float   hook_router_logits: all logits, a reference to the router's
                                                  own tensor, held until the forward ends

(N = batch x new tokens of one forward.) The hot path inside each MoE layer only keeps references to
tensors the model made anyway: no op, no ``.cpu()``, ``.item()`` or sync per layer. When the decoder's
forward returns, the finished ``ForwardCapture`` goes to a callback (``hooks/buffer.py`` stacks all its
layers into device buffers with a few ops; ``hooks/stitch.py`` turns those into rows on the host, rarely).
"""

from __future__ import annotations

import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as torch_module
from torch.utils.hooks import RemovableHandle
from workbench.hooks.adapters import Adapter, MoESite

from workbench.errors import WorkbenchError

# A forward whose L layers' (N, E) float32 logits together exceed this keeps only each layer's (N, k) chosen
# logits (one gather in the layer; the logits too with scores) instead of holding every layer's logits
# until the forward ends (decode steps hold them: a few hundred kB).
HOLD_LOGITS_BYTES = 16 << 20


class RouterCapture(NamedTuple):
    """What one MoE layer's router decided in one forward; shapes (N, k) and (N, E), see the module doc."""

    expert_ids: torch.Tensor
    gate_weights: torch.Tensor
    selected_logits: torch.Tensor | None
    router_logits: torch.Tensor | None


@dataclass
class ForwardCapture:
    """What one decoder forward captured: its input layout and, per MoE site (site order), its routing.

    The routing is kept as one list per capture field (``ids[pos]`` is site ``pos``'s ``expert_ids``) so
    that a layer stores three references and the end of the forward stacks each list in one op;
    ``layers`` gives the per-layer ``RouterCapture`` view.
    """

    batch: int
    length: int  # new tokens per row in this forward
    append: bool  # a decode/continuation step (the KV cache already holds tokens)
    input_ids: torch.Tensor | None  # (B, T) or None when the forward got embeddings
    mask: torch.Tensor | None  # (B, T) 1 = real token, for the T new positions
    ids: list[torch.Tensor | None] = field(default_factory=list)  # (N, k) per site; None: not run
    weights: list[torch.Tensor | None] = field(default_factory=list)  # (N, k) per site
    selected: list[torch.Tensor | None] = field(default_factory=list)  # (N, k) per site, gathered in the layer
    logits: list[torch.Tensor | None] = field(default_factory=list)  # (N, E) per site, held references
    large: bool = False  # every layer's logits together exceed HOLD_LOGITS_BYTES: gather the rank key in the layer

    @classmethod
    def of(
        cls, batch: int, length: int, append: bool, input_ids: torch.Tensor | None, mask: torch.Tensor | None,
        layers: list[RouterCapture],
    ) -> ForwardCapture:  # fmt: skip
        """A capture from per-layer ``RouterCapture`` s (site order)."""
        ids, weights, selected, logits = ([c[i] for c in layers] for i in range(4))
        return cls(batch, length, append, input_ids, mask, ids, weights, selected, logits)  # type: ignore[arg-type]

    @property
    def layers(self) -> list[RouterCapture]:
        """One ``RouterCapture`` per site that ran."""
        return [
            RouterCapture(i, w, s, g)
            for i, w, s, g in zip(self.ids, self.weights, self.selected, self.logits, strict=True)
            if i is not None and w is not None
        ]

    @property
    def complete(self) -> bool:
        """Every MoE site captured."""
        # not ``None in self.ids``: that compares None with each tensor through Tensor.__eq__, ~20 µs a layer
        return bool(self.ids) and all(t is not None for t in self.ids)

    @property
    def on_meta(self) -> bool:
        first = self.ids[0] if self.ids else None
        return first is not None and first.is_meta


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
    """The forward wrappers of one model's decoder and MoE sites (see the module docstring).

    ``on_forward(capture)`` is called once per decoder forward in which every MoE site captured;
    ``open_rows()`` says how many rows the KV cache currently holds (decode steps append to them).
    ``keep_logits``: the recorder stores every layer's logits (router scores). ``rank_by_logits``: the
    router's top-k comes unsorted, so each token's chosen logits are needed (the rank key).
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
        self._wrapped: list[tuple[nn.Module, Any, Callable[..., Any]]] = []  # (module, its own forward, ours)
        self._handles: list[RemovableHandle] = []  # routers that had forward hooks at attach: read by one more
        self._live = 0  # bumped by every detach: a wrapper another library wrapped over stays there, inert
        self._pending: ForwardCapture | None = None
        self._logits: dict[int, torch.Tensor] = {}
        self._offloaded: dict[int, torch.Tensor] = {}  # router weights fetched from accelerate's offload
        self._at_experts: set[int] = set()  # sites whose router returns no routing: read at the experts
        self._at_gate: set[int] = set()  # sites whose router returns (logits, weights, ids)
        self._fast: set[int] = set()  # ... already flat, (N, k), (N, k), (N, E): kept by reference as they come

    @property
    def attached(self) -> bool:
        return bool(self._wrapped or self._handles)

    @property
    def n_wrapped(self) -> int:
        """Forwards wrapped now (1 decoder + 1 per MoE layer, +1 per layer read at its experts), less the
        routers read by a forward hook (``n_hooked``)."""
        return len(self._wrapped)

    @property
    def n_hooked(self) -> int:
        """Routers read by a forward hook because other forward hooks were on them at attach (``_read``)."""
        return len(self._handles)

    def attach(self) -> None:
        decoder = decoder_of(self.model, self.sites)
        try:
            self._wrap(decoder, self._decoder_forward)
            for pos, site in enumerate(self.sites):
                make = self._router_forward if site.experts is not None else self._remote_gate_forward
                self._read(site.gate, lambda call, pos=pos, make=make: make(pos, call))  # type: ignore[misc]
        except BaseException:
            self.detach()
            raise

    def _read(self, module: nn.Module, make: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
        """Read a router's output: by wrapping its forward, or by a forward hook where hooks are already on it.

        Forward hooks run after ``forward`` returns, so a wrapper would see the router's output *before*
        hooks that change it (an ablation mask, a steering hook, another tool's intervention). Where the
        router (or every module, through torch's global hooks) has forward hooks at attach, the same
        reading runs as a forward hook registered after them, and sees what they made of the output, as
        registered hooks always did. Without hooks the wrapper keeps torch's fast call path.
        """
        if not (module._forward_hooks or torch_module._global_forward_hooks):
            self._wrap(module, make)
            return

        def hook(mod: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> Any:
            return make(lambda *_a, **_k: output)(mod, *args, **kwargs)

        self._handles.append(module.register_forward_hook(hook, with_kwargs=True))

    def _wrap(self, module: nn.Module, make: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
        """Replace ``module``'s instance ``forward`` by ``make(current forward)``.

        An instance forward already there (accelerate's offload hook, nnsight's controller, a patch) is
        wrapped too, and put back by ``detach``.
        """
        own = module.__dict__.get("forward")
        wrapper = make(own if own is not None else module.forward)
        # a bound method, as the class's forward is (libraries that wrap forwards read ``forward.__func__``),
        # set on the instance: nn.Module.__call__ keeps its fast path
        module.forward = types.MethodType(wrapper, module)
        self._wrapped.append((module, own, wrapper))

    def detach(self) -> None:
        for module, own, wrapper in reversed(self._wrapped):
            current = module.__dict__.get("forward")
            if getattr(current, "__func__", current) is wrapper:
                if own is None:
                    del module.__dict__["forward"]
                else:
                    module.__dict__["forward"] = own
            # else another library wrapped this forward after us: ours stays inside its wrapper, inert
        self._wrapped.clear()
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._live += 1
        self._pending = None
        self._logits.clear()
        self._offloaded.clear()
        self._at_experts.clear()
        self._at_gate.clear()
        self._fast.clear()

    # ------------------------------------------------------------------ the decoder: one capture per forward
    def _decoder_forward(self, call: Callable[..., Any]) -> Callable[..., Any]:
        live = self._live

        def forward(module: nn.Module, *args: Any, **kwargs: Any) -> Any:
            if live != self._live:  # detached, but left inside another library's wrapper
                return call(*args, **kwargs)
            self._begin_forward(args, kwargs)
            out = call(*args, **kwargs)  # an exception leaves the capture unfinished: the next forward drops it
            self._end_forward(out)
            return out

        return forward

    def _begin_forward(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self._pending = None
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
        n_sites = len(self.sites)
        large = batch * length * n_sites * self.adapter.n_experts * 4 > HOLD_LOGITS_BYTES
        empty: list[torch.Tensor | None] = [None] * n_sites
        self._pending = ForwardCapture(batch, length, append, ids, mask, empty, empty[:], empty[:], empty[:], large)
        self._logits.clear()

    def _end_forward(self, output: Any) -> None:
        pending, self._pending = self._pending, None
        self._logits.clear()
        if pending is None or output is None or not pending.complete:
            return  # not every MoE layer ran: nothing half-recorded is kept
        self._on_forward(pending)

    # ------------------------------------------------------------------ the MoE layers: references only
    def _router_forward(self, pos: int, call: Callable[..., Any]) -> Callable[..., Any]:
        live = self._live

        def forward(module: nn.Module, *args: Any, **kwargs: Any) -> Any:
            out = call(*args, **kwargs)
            p = self._pending
            if p is not None and live == self._live:
                if pos in self._fast and not p.large:  # the hot path: three references, nothing else
                    p.logits[pos], p.weights[pos], p.ids[pos] = out
                elif pos in self._at_gate:  # checked on this layer's first forward; the recorder checks shapes
                    self._keep(pos, out[2], out[1], out[0])
                else:
                    self._first_router_call(pos, args, kwargs, out)
            return out

        return forward

    def _first_router_call(self, pos: int, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
        """Where this layer's routing can be read: the router's output, or (logits only) at its experts."""
        top_k, n_experts = self.adapter.top_k, self.adapter.n_experts
        routed = None if pos in self._at_experts else router_routing(out, top_k, n_experts)
        if routed is not None:
            self._at_gate.add(pos)
            logits, weights, ids = routed
            if ids.dim() == weights.dim() == logits.dim() == 2:  # (N, k), (N, k), (N, E): kept as they come
                self._fast.add(pos)
            self._keep(pos, ids, weights, logits)
            return
        logits = out[0] if isinstance(out, tuple) else out
        if not (isinstance(logits, torch.Tensor) and logits.shape[-1] == n_experts and logits.is_floating_point()):
            # a router that returns no logits either: recompute them from its weight
            hidden = args[0] if args else kwargs["hidden_states"]
            weight = self._router_weight(pos, self.sites[pos].gate, hidden)
            if weight is None:
                return
            logits = F.linear(hidden.reshape(-1, hidden.shape[-1]).float(), weight.float())
        self._logits[pos] = logits.reshape(-1, n_experts)  # hook_router_logits (N, E)
        if pos not in self._at_experts:  # first forward: read the routing where it reaches the experts
            self._at_experts.add(pos)
            experts = self.sites[pos].experts
            assert experts is not None
            self._wrap(experts, lambda call: self._experts_forward(pos, call))

    def _experts_forward(self, pos: int, call: Callable[..., Any]) -> Callable[..., Any]:
        site, live = self.sites[pos], self._live

        def forward(module: nn.Module, *args: Any, **kwargs: Any) -> Any:
            if self._pending is not None and live == self._live:
                named = dict(zip(site.experts_params, args, strict=False)) | kwargs
                self._keep(pos, named[site.index_param], named[site.weights_param], self._logits.pop(pos, None))
            return call(*args, **kwargs)

        return forward

    def _remote_gate_forward(self, pos: int, call: Callable[..., Any]) -> Callable[..., Any]:
        gate, live = self.sites[pos].gate, self._live

        def forward(module: nn.Module, *args: Any, **kwargs: Any) -> Any:
            out = call(*args, **kwargs)
            if self._pending is not None and live == self._live:
                hidden = args[0] if args else kwargs["hidden_states"]
                weight = self._router_weight(pos, gate, hidden)
                # The remote MoEGate returns no logits; recomputing them (an (N, H) x (H, E) product, <1% of the
                # layer's FLOPs) gives the rank order and the optional scores.
                logits = (
                    None if weight is None else F.linear(hidden.reshape(-1, hidden.shape[-1]).float(), weight.float())
                )
                self._keep(pos, out[0], out[1], logits)
            return out

        return forward

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

    def _keep(self, pos: int, idx: torch.Tensor, weights: torch.Tensor, logits: torch.Tensor | None) -> None:
        """Keep one layer's routing: views of the router's tensors (plus, for large forwards, the rank key)."""
        p = self._pending
        assert p is not None
        if idx.dim() != 2:
            idx = idx.reshape(-1, idx.shape[-1])  # hook_expert_indices (N, k)
        if weights.dim() != 2:
            weights = weights.reshape(-1, weights.shape[-1])  # hook_expert_weights (N, k)
        if logits is not None and logits.dim() != 2:
            logits = logits.reshape(-1, logits.shape[-1])  # hook_router_logits (N, E)
        p.ids[pos], p.weights[pos] = idx, weights
        if not p.large:  # held until the forward ends; the buffer gathers all layers' rank keys at once
            p.logits[pos] = logits
            return
        # the router made ids and logits on one device (remote code: logits computed where the hidden states are)
        p.selected[pos] = logits.gather(1, idx) if self.rank_by_logits and logits is not None else None  # (N, k)
        p.logits[pos] = logits if self.keep_logits else None


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
    layers_parent = sites[0].name.split(".layers.")[0] if ".layers." in sites[0].name else ""
    if not layers_parent:
        return model
    try:
        return model.get_submodule(layers_parent)
    except AttributeError:
        return model
