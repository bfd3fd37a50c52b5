"""Run a compressed-tensors INT4 checkpoint (Kimi K2 Thinking) without ever decompressing it whole.

With K2's remote code every routed expert is three ``nn.Linear``; compressed-tensors loads them
packed (``weight_packed`` int32 + ``weight_scale`` bf16 per group of 32) and registers
``ct_decompress_hook``, a forward pre-hook on the model that decompresses **every** quantized module
in place on the first forward. For K2 that turns 594 GB of packed weights into 2,053 GB of bf16,
more than 8 x H200 hold (docs/scaling.md, "Loading pitfalls").

:class:`StreamDecompression` removes that hook and instead gives each packed ``Linear`` a forward
pre-hook that builds its bf16 ``weight`` with compressed-tensors' own per-module decompression
(``BaseCompressor.decompress`` of the module's state, which leaves the packed tensors untouched) and a
forward hook that drops it again. So

- the packed weights stay the only resident copy; the transient memory is the projections running
  at that moment (K2: one 2048 x 7168 projection = 29 MB of bf16);
- only experts the router picked are decompressed: K2's MoE code calls an expert only when tokens
  were routed to it;
- the function is the same as after full decompression: the same dequantized values, computed by
  the same code (tests/test_int4_stream.py compares logits and routing).

The price is time: every call dequantizes its projection again. That suits recording prompts and
transcripts (one forward per chunk); for long generation use an engine (docs/engines.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle


@dataclass
class StreamStats:
    """What streaming did: calls decompressed, distinct modules touched, peak bytes live at once."""

    decompressions: int = 0
    modules_touched: set[str] = field(default_factory=set)
    live_bytes: int = 0
    peak_live_bytes: int = 0
    packed_modules: int = 0


def packed_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Modules compressed-tensors holds packed (status COMPRESSED with a ``weight_packed``), by name."""
    found: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        status = getattr(module, "quantization_status", None)
        if (
            status is not None
            and str(getattr(status, "value", status)) == "compressed"
            and hasattr(module, "weight_packed")
        ):
            found[name] = module
    return found


def _compressor(module: Any) -> Any:
    from compressed_tensors.compressors.base import BaseCompressor
    from compressed_tensors.config import CompressionFormat

    scheme = module.quantization_scheme
    fmt = scheme.format or CompressionFormat.pack_quantized
    return BaseCompressor.get_value_from_registry(CompressionFormat(fmt).value)


def decompressed_weight(module: Any) -> torch.Tensor:
    """The bf16 weight compressed-tensors would put in ``module`` on decompression; ``module`` is unchanged."""
    from compressed_tensors.utils.module import get_direct_state_dict

    state = get_direct_state_dict(module)
    out = _compressor(module).decompress(state, module.quantization_scheme)
    return out["weight"]


class StreamDecompression:
    """Decompress each packed projection only while it runs. Use as a context manager or keep it
    installed (``workbench.models.load_model`` does) and call :meth:`remove` to restore the model.

    >>> with StreamDecompression(model) as stream:        # doctest: +SKIP
    ...     model(input_ids)                               # never more than the running projection in bf16
    >>> stream.stats.peak_live_bytes
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.stats = StreamStats()
        self._handles: list[RemovableHandle] = []
        self._ct_hook: Any = None
        self._installed = False
        self._modules = packed_modules(model)
        self.stats.packed_modules = len(self._modules)

    def install(self) -> StreamDecompression:
        if self._installed:
            return self
        handle = getattr(self.model, "ct_decompress_hook", None)
        if handle is not None:  # keep the function to put it back on remove()
            self._ct_hook = self.model._forward_pre_hooks.get(handle.id)
            handle.remove()
            delattr(self.model, "ct_decompress_hook")
        for name, module in self._modules.items():
            self._handles.append(module.register_forward_pre_hook(self._before(name)))
            self._handles.append(module.register_forward_hook(self._after))
        self._installed = True
        return self

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        for module in self._modules.values():
            module._parameters.pop("weight", None)
        if self._ct_hook is not None and not hasattr(self.model, "ct_decompress_hook"):
            model: Any = self.model  # nn.Module's __setattr__ types only tensors and modules
            model.ct_decompress_hook = model.register_forward_pre_hook(self._ct_hook)
        self._ct_hook = None
        self._installed = False

    def __enter__(self) -> StreamDecompression:
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def _before(self, name: str) -> Any:
        def hook(module: nn.Module, args: Any) -> None:
            weight = decompressed_weight(module)
            module._parameters["weight"] = nn.Parameter(weight, requires_grad=False)
            s = self.stats
            s.decompressions += 1
            s.modules_touched.add(name)
            s.live_bytes += weight.numel() * weight.element_size()
            s.peak_live_bytes = max(s.peak_live_bytes, s.live_bytes)

        return hook

    def _after(self, module: nn.Module, args: Any, output: Any) -> None:
        weight = module._parameters.pop("weight", None)
        if weight is not None:
            self.stats.live_bytes -= weight.numel() * weight.element_size()
