"""``ds.routing``: the workbench's methods on a routing Dataset (xarray accessor, not a subclass).

Importing this module registers the accessor; ``workbench.open_store`` does that for you.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from workbench.routing_config import RoutingConfig
from workbench.store import schema as S
from workbench.store.select import Selection, parse_where, select


@xr.register_dataset_accessor("routing")
class RoutingAccessor:
    """Routing-store methods. ``ds.routing.select(domain="math")``, ``ds.routing.config``, ..."""

    def __init__(self, ds: xr.Dataset) -> None:
        self._ds = ds

    @property
    def config(self) -> RoutingConfig:
        """The model identity and routing config the store was recorded with."""
        return RoutingConfig.from_attrs(self._ds.attrs["model"])

    @property
    def vocab(self) -> list[str]:
        """Token strings by id (from the store, so no tokenizer or model is needed)."""
        return list(self._ds.attrs.get("tokenizer", {}).get("vocab", []))

    def decode(self, token_ids: Any) -> list[str]:
        """Token strings for ids; unknown ids become ``<id>``."""
        vocab = self.vocab
        return [vocab[i] if 0 <= i < len(vocab) else f"<{i}>" for i in np.asarray(token_ids).tolist()]

    @property
    def has_gate_weights(self) -> bool:
        return bool(self._ds.attrs.get("has_gate_weights", True))

    def select(
        self,
        selection: Selection | None = None,
        *,
        where: list[str] | str | None = None,
        **keys: Any,
    ) -> xr.Dataset:
        """Restrict to tokens/layers. Keys as in Selection (``domains=("math",)``) or ``where="domain=math"``."""
        sel = parse_where(where, selection or Selection())
        if keys:
            sel = sel.merged(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in keys.items()})
        return select(self._ds, sel)

    @property
    def segment_kinds(self) -> list[str]:
        return list(self._ds.attrs.get("segment_kinds", S.SEGMENT_KINDS))
