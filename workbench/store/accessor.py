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

    # Metrics of workbench.analysis. Each takes a Selection and/or ``where="domain=math"`` clauses plus the
    # metric's own keywords; the analysis package is imported on first use (keeps this module light).
    def _metric(self, name: str, selection: Selection | None, where: list[str] | str | None, kw: Any) -> Any:
        from workbench import analysis

        sel = parse_where(where, selection or Selection()) if where is not None else selection
        return getattr(analysis, name)(self._ds, sel, **kw)

    def expert_load(
        self, selection: Selection | None = None, *, where: list[str] | str | None = None, **kw: Any
    ) -> xr.Dataset:
        """Expert load per layer (counts, shares, DeepSeek-V3 relative load); see ``workbench.analysis.expert_load``."""
        return self._metric("expert_load", selection, where, kw)

    def routing_entropy(
        self, selection: Selection | None = None, *, where: list[str] | str | None = None, **kw: Any
    ) -> xr.Dataset:
        """Routing entropy per layer; see ``workbench.analysis.routing_entropy``."""
        return self._metric("routing_entropy", selection, where, kw)

    def domain_specialization(
        self, selection: Selection | None = None, *, where: list[str] | str | None = None, **kw: Any
    ) -> xr.Dataset:
        """OLMoE domain specialisation DS(E, D); see ``workbench.analysis.domain_specialization``."""
        return self._metric("domain_specialization", selection, where, kw)

    def vocab_specialization(
        self, selection: Selection | None = None, *, where: list[str] | str | None = None, **kw: Any
    ) -> xr.Dataset:
        """OLMoE vocabulary specialisation; see ``workbench.analysis.vocab_specialization``."""
        return self._metric("vocab_specialization", selection, where, kw)

    def coactivation(
        self, selection: Selection | None = None, *, where: list[str] | str | None = None, **kw: Any
    ) -> xr.Dataset:
        """Expert co-activation within a layer; see ``workbench.analysis.coactivation``."""
        return self._metric("coactivation", selection, where, kw)

    def consecutive_agreement(
        self, selection: Selection | None = None, *, where: list[str] | str | None = None, **kw: Any
    ) -> xr.Dataset:
        """Mixtral consecutive-token agreement; see ``workbench.analysis.consecutive_agreement``."""
        return self._metric("consecutive_agreement", selection, where, kw)

    def transitions(
        self, selection: Selection | None = None, *, where: list[str] | str | None = None, **kw: Any
    ) -> xr.Dataset:
        """Inter-layer transitions P(e' at l+1 | e at l); see ``workbench.analysis.transitions``."""
        return self._metric("transitions", selection, where, kw)

    def domain_divergence(
        self, selection: Selection | None = None, *, where: list[str] | str | None = None, **kw: Any
    ) -> xr.Dataset:
        """JSD between domains, bootstrap CIs, permutation test; see ``workbench.analysis.domain_divergence``."""
        return self._metric("domain_divergence", selection, where, kw)

    def specific_experts(
        self, selection: Selection | None = None, *, where: list[str] | str | None = None, **kw: Any
    ) -> Any:
        """The most domain-specific experts per layer (a DataFrame); see ``workbench.analysis.specific_experts``."""
        return self._metric("specific_experts", selection, where, kw)
