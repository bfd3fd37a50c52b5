"""``RoutingRecorder``: a context manager that records per-token expert routing of a model.

Hooks are global state: they live on the model's modules, not on the recorder. They are registered
in ``RoutingRecorder.__enter__`` (and only there) and every one of them is removed in ``__exit__``,
also when the body raised. Capture names are stable and greppable:

    hook_expert_indices   (N, k) int64   the top-k ids that reach the experts (N = batch x tokens)
    hook_expert_weights   (N, k) float   the weights the MoE applies to each chosen expert
    hook_router_logits    (N, E) float   the router's logits (kept only with ``scores=True``)

The hot path (inside each MoE layer) only keeps references to tensors the model made anyway, plus
one (N, k) gather of the chosen logits. No ``.cpu()``, ``.item()`` or sync per layer: when the
decoder's forward returns, everything is copied to the host with ``non_blocking=True`` (pinned
memory) and synchronised once per forward (once per device), then ranked, split per row and
stripped of padding on the host.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.hooks import RemovableHandle
from workbench.hooks.adapters import Adapter, MoESite, find_adapter, routing_config
from workbench.hooks.routing import Routing, rank_key, scores_from_logits, to_rank_order

from workbench.errors import WorkbenchError
from workbench.routing_config import RoutingConfig


@dataclass
class _Row:
    """The growing record of one batch row across a prefill and its decode steps."""

    ids: list[np.ndarray] = field(default_factory=list)  # (t, L, k) chunks
    weights: list[np.ndarray] = field(default_factory=list)  # (t, L, k)
    scores: list[np.ndarray] = field(default_factory=list)  # (t, L, E)
    tokens: list[np.ndarray] = field(default_factory=list)  # (t,)
    generated: list[np.ndarray] = field(default_factory=list)  # (t,)
    finished: bool = False  # an EOS was fed by a decode step: later tokens are padding


@dataclass
class _Pending:
    """What one decoder forward captured so far (device tensors, references only)."""

    batch: int
    length: int
    append: bool  # a decode/continuation step (cache already holds tokens)
    input_ids: torch.Tensor | None
    mask: torch.Tensor | None  # (B, T) 1 = real token, for the T new positions
    layers: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]] = field(
        default_factory=dict
    )  # site position -> (hook_expert_indices, hook_expert_weights, selected logits (N, k), logits (N, E))


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
        self._handles: list[RemovableHandle] = []
        self._pending: _Pending | None = None
        self._logits: dict[int, torch.Tensor] = {}
        self._bias: list[np.ndarray | None] = []
        self._offloaded: dict[int, torch.Tensor] = {}  # router weights fetched from accelerate's offload
        self._rows: list[_Row] = []
        self._open: list[int] = []  # indices into _rows of the rows the cache currently holds
        self.shapes: list[dict[int, dict[str, tuple[int, ...]]]] = []  # per forward on meta tensors
        self.forwards = 0

    # ------------------------------------------------------------------ hooks (global state)
    def __enter__(self) -> RoutingRecorder:
        if self._handles:
            raise WorkbenchError("this RoutingRecorder is already active; use one `with` block at a time")
        self._bias = [self._host_bias(site) for site in self.sites]
        decoder = _decoder(self.model, self.sites)
        try:
            # Hooks are registered here and only here; __exit__ removes every handle in self._handles.
            self._handles.append(decoder.register_forward_pre_hook(self._begin_forward, with_kwargs=True))
            self._handles.append(decoder.register_forward_hook(self._end_forward, always_call=True))
            for pos, site in enumerate(self.sites):
                if site.experts is not None:
                    self._handles.append(site.gate.register_forward_hook(self._gate_logits_hook(pos)))
                    self._handles.append(
                        site.experts.register_forward_pre_hook(self._experts_pre_hook(pos), with_kwargs=True)
                    )
                else:
                    self._handles.append(site.gate.register_forward_hook(self._remote_gate_hook(pos, site)))
        except BaseException:
            self._remove_hooks()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._remove_hooks()

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._pending = None
        self._logits.clear()
        self._offloaded.clear()

    @property
    def active(self) -> bool:
        return bool(self._handles)

    def _host_bias(self, site: MoESite) -> np.ndarray | None:
        if self.adapter.scoring != "sigmoid":
            return None
        bias = site.selection_bias()
        if bias is not None and bias.is_meta:
            bias = _offloaded(site.gate, "e_score_correction_bias")  # a Parameter in K2's remote code
        if bias is None or bias.is_meta:
            return None  # a meta-device run: no values to rank by
        return bias.detach().float().cpu().numpy()  # once per `with`, not per forward

    def _begin_forward(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        embeds = kwargs.get("inputs_embeds")
        source = input_ids if isinstance(input_ids, torch.Tensor) else embeds
        if not isinstance(source, torch.Tensor):
            return  # neither ids nor embeddings: not a forward the recorder understands
        shape = source.shape[:2]  # (B, T)
        batch, length = int(shape[0]), int(shape[1])
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
        append = past > 0 and len(self._open) == batch
        self._pending = _Pending(
            batch, length, append, input_ids if isinstance(input_ids, torch.Tensor) else None, mask
        )
        self._logits.clear()

    def _gate_logits_hook(self, pos: int) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            logits = output[0] if isinstance(output, tuple) else output
            n_experts = self.adapter.n_experts
            if not (isinstance(logits, torch.Tensor) and logits.shape[-1] == n_experts and logits.is_floating_point()):
                # a router that returns no logits (other 5.x versions): recompute them from its weight
                hidden = args[0]
                weight = self._router_weight(pos, module, hidden)
                if weight is None:
                    return
                logits = F.linear(hidden.reshape(-1, hidden.shape[-1]).float(), weight.float())
            self._logits[pos] = logits.reshape(-1, n_experts)  # hook_router_logits (N, E)

        return hook

    def _experts_pre_hook(self, pos: int) -> Any:
        site = self.sites[pos]

        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            if self._pending is None:
                return
            named = dict(zip(site.experts_params, args, strict=False)) | kwargs
            self._capture(pos, named[site.index_param], named[site.weights_param], self._logits.pop(pos, None))

        return hook

    def _remote_gate_hook(self, pos: int, site: MoESite) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            if self._pending is None:
                return
            idx, weights = output[0], output[1]
            hidden = args[0]
            logits = None
            weight = self._router_weight(pos, module, hidden)
            if weight is not None:
                # The remote MoEGate returns no logits; recomputing them (an (N, H) x (H, E) product, <1% of
                # the layer's FLOPs) gives the rank order and the optional scores.
                logits = F.linear(hidden.reshape(-1, hidden.shape[-1]).float(), weight.float())
            self._capture(pos, idx, weights, logits)

        return hook

    def _router_weight(self, pos: int, module: nn.Module, hidden: torch.Tensor) -> torch.Tensor | None:
        """The router's (E, H) weight where ``hidden`` lives; offloaded (meta) weights come from accelerate's
        weights map once and are kept. None when there is nothing to compute with (meta-device runs)."""
        weight = _weight(module)
        if hidden.is_meta or not weight.is_meta:
            return None if hidden.is_meta else weight
        if pos not in self._offloaded:
            stored = _offloaded(module, "weight")
            if stored is None:
                return None
            self._offloaded[pos] = stored.to(hidden.device)
        return self._offloaded[pos]

    def _capture(self, pos: int, idx: torch.Tensor, weights: torch.Tensor, logits: torch.Tensor | None) -> None:
        assert self._pending is not None
        k = idx.shape[-1]
        idx = idx.reshape(-1, k)  # hook_expert_indices (N, k)
        weights = weights.reshape(-1, k)  # hook_expert_weights (N, k)
        selected = logits.gather(1, idx.to(logits.device)) if logits is not None else None  # (N, k)
        self._pending.layers[pos] = (idx, weights, selected, logits if self.scores else None)

    def _end_forward(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        pending, self._pending = self._pending, None
        self._logits.clear()
        if pending is None or output is None or len(pending.layers) != len(self.sites):
            return  # the forward raised before every MoE layer ran: nothing half-recorded is kept
        self.forwards += 1
        first = pending.layers[0][0]
        if first.is_meta:
            self.shapes.append(
                {
                    self.sites[pos].layer: {
                        "expert_ids": tuple(ids.shape),
                        "gate_weights": tuple(w.shape),
                        **({"router_logits": tuple(lg.shape)} if lg is not None else {}),
                    }
                    for pos, (ids, w, _, lg) in pending.layers.items()
                }
            )
            return
        self._collect(pending)

    # ------------------------------------------------------------------ host side, once per forward
    def _collect(self, pending: _Pending) -> None:
        n_sites = len(self.sites)
        host = [_to_host(pending.layers[pos]) for pos in range(n_sites)]
        ids_t = pending.input_ids.to("cpu", non_blocking=True) if pending.input_ids is not None else None
        mask_t = pending.mask.to("cpu", non_blocking=True) if pending.mask is not None else None
        _synchronize(pending, host)  # the one sync of this forward

        b, t = pending.batch, pending.length
        ids = np.stack([h[0].numpy() for h in host], axis=1)  # (N, L, k)
        weights = np.stack([h[1].float().numpy() for h in host], axis=1)  # (N, L, k)
        if host[0][2] is not None and all(h[2] is not None for h in host):
            keys = np.stack(
                [
                    rank_key(_np(h[2]), h[0].numpy(), self.adapter.scoring, self._bias[pos])
                    for pos, h in enumerate(host)
                ],
                axis=1,
            )  # (N, L, k)
        else:
            keys = None
        ids, weights = to_rank_order(ids, weights, keys)
        ids = ids.reshape(b, t, n_sites, -1).astype(np.int16)  # (B, T, L, k)
        weights = weights.reshape(b, t, n_sites, -1).astype(np.float32)  # (B, T, L, k)
        scores = None
        if self.scores:
            if any(h[3] is None for h in host):
                raise WorkbenchError("router scores were asked for but a router's logits could not be computed")
            scores = np.stack([scores_from_logits(_np(h[3]), self.adapter.scoring) for h in host], axis=1).reshape(
                b, t, n_sites, -1
            )  # (B, T, L, E)
        tokens = ids_t.numpy().astype(np.int64) if ids_t is not None else np.full((b, t), -1, np.int64)  # (B, T)
        keep = mask_t.numpy().astype(bool) if mask_t is not None else np.ones((b, t), bool)  # (B, T)

        if not pending.append:
            self._open = list(range(len(self._rows), len(self._rows) + b))
            self._rows.extend(_Row() for _ in range(b))
        decode = pending.append and t == 1
        for row_b, row_i in enumerate(self._open):
            row = self._rows[row_i]
            sel = keep[row_b] & (not row.finished)
            if decode and row.finished:
                continue
            row.ids.append(ids[row_b][sel])
            row.weights.append(weights[row_b][sel])
            if scores is not None:
                row.scores.append(scores[row_b][sel])
            row.tokens.append(tokens[row_b][sel])
            row.generated.append(np.full(int(sel.sum()), decode))
            if decode and sel.any() and np.isin(tokens[row_b][sel], self._eos).any():
                row.finished = True

    # ------------------------------------------------------------------ results
    def routing(self, *, reset: bool = False) -> list[Routing]:
        """One ``Routing`` per batch row of every forward/generate since the last reset, in call order.

        A forward whose cache already holds tokens (a decode step) appends to the rows of the call
        that filled the cache. Raises WorkbenchError after forwards on the meta device (use ``.shapes``).
        """
        if not self._rows and self.shapes:
            raise WorkbenchError("the model ran on the meta device: no routing values exist; see recorder.shapes")
        n_sites, k, n_exp = len(self.sites), self.adapter.top_k, self.adapter.n_experts
        layers = tuple(s.layer for s in self.sites)
        out = []
        for row in self._rows:

            def cat(parts: list[np.ndarray], shape: tuple[int, ...], dtype: Any) -> np.ndarray:
                return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(shape, dtype)

            out.append(
                Routing(
                    expert_ids=cat(row.ids, (0, n_sites, k), np.int16),
                    gate_weights=cat(row.weights, (0, n_sites, k), np.float32),
                    router_scores=cat(row.scores, (0, n_sites, n_exp), np.float32) if self.scores else None,
                    token_ids=cat(row.tokens, (0,), np.int64),
                    generated=cat(row.generated, (0,), bool),
                    layers=layers,
                )
            )
        if reset:
            self.reset()
        return out

    def reset(self) -> None:
        """Forget recorded rows (hooks stay registered while inside ``with``)."""
        self._rows.clear()
        self._open.clear()
        self.shapes.clear()


def _offloaded(module: nn.Module, name: str) -> torch.Tensor | None:
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


def _decoder(model: nn.Module, sites: list[MoESite]) -> nn.Module:
    """The module whose forward runs every decoder layer once (``model.model`` for *ForCausalLM)."""
    names = [name for name, _ in model.named_modules()]
    layers_parent = sites[0].name.split(".layers.")[0] if ".layers." in sites[0].name else ""
    if layers_parent in names:
        return model.get_submodule(layers_parent) if layers_parent else model
    return model


def _np(t: torch.Tensor | None) -> np.ndarray:
    assert t is not None
    return t.float().numpy()


def _to_host(
    captured: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Start non-blocking device->host copies (into pinned memory for CUDA sources)."""
    return tuple(t.detach().to("cpu", non_blocking=True) if t is not None else None for t in captured)  # type: ignore[return-value]


def _synchronize(pending: _Pending, host: list[Any]) -> None:
    devices = {t.device for layer in pending.layers.values() for t in layer if t is not None}
    for device in devices:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elif device.type not in ("cpu", "meta") and hasattr(torch, device.type):
            getattr(torch, device.type).synchronize(device)


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
