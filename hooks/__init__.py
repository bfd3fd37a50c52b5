"""Record per-token expert routing of MoE models by wrapping their routers' forwards (needs the ``[model]`` extra).

Modules: ``adapters`` (find the MoE layers of a family), ``capture`` (the device side: wrapped forwards
and their ``RouterCapture``), ``buffer`` (device buffers), ``stitch`` (host side: rank, split rows, drop
padding), ``recorder`` (the ``RoutingRecorder`` context manager joining them), ``routing`` (``Routing``, what a row is),
``batch`` (run left-padded batches with ``generate``). Recording into a store: ``workbench.recording``.

>>> from workbench.hooks import RoutingRecorder              # doctest: +SKIP
>>> with RoutingRecorder(model, scores=True) as rec:
...     model.generate(**batch, max_new_tokens=32)
>>> rec.routing()[0].expert_ids.shape                         # (T, L, k)
"""

from __future__ import annotations

from workbench.hooks.adapters import SUPPORTED, Adapter, MoESite, UnsupportedModelError, find_adapter, routing_config
from workbench.hooks.capture import RouterCapture
from workbench.hooks.recorder import RoutingRecorder, route_tokens
from workbench.hooks.routing import Routing

__all__ = [
    "SUPPORTED",
    "Adapter",
    "MoESite",
    "RouterCapture",
    "Routing",
    "RoutingRecorder",
    "UnsupportedModelError",
    "find_adapter",
    "route_tokens",
    "routing_config",
]
