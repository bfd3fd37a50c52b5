"""K2 routing workbench: record, compare and graph per-token expert routing of MoE models.

Analysis and graphs import without torch; recording (``workbench.hooks``) needs the ``[model]`` extra.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

# Public names, imported on first use so `import workbench` stays light (no zarr/dask/plotly at import).
_LAZY = {
    "open_store": "workbench.store.io",
    "Selection": "workbench.store.select",
    "parse_where": "workbench.store.select",
    "RoutingConfig": "workbench.routing_config",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'workbench' has no attribute {name!r}")
