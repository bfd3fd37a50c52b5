"""``ds.routing``: the workbench's methods on a routing Dataset (an xarray accessor, not a subclass).

The accessor sits above the analysis and graph packages, which it forwards to, so the store layer
below them never imports upward (docs/architecture.md). Importing this module registers it;
``workbench.open_store`` (the store's opener, re-exported here) and ``import workbench`` followed by
any use of ``workbench.open_store`` do that for you. A Dataset opened otherwise (``xarray.open_zarr``)
gets ``.routing`` once this module is imported.

Every forwarder has the real signature of the function it calls, less the Dataset and plus ``where``
(``inspect.signature(ds.routing.expert_load)`` lists ``by``, ``where``, ...), and its docstring, as
xarray's plot accessor does with ``functools.wraps``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import numpy as np
import xarray as xr

from workbench.routing_config import RoutingConfig
from workbench.store import schema as S
from workbench.store.io import open_store
from workbench.store.select import Selection, parse_where, select

__all__ = ["RoutingAccessor", "open_store"]

_WHERE = inspect.Parameter("where", inspect.Parameter.KEYWORD_ONLY, default=None, annotation="list[str] | str | None")


def _merged(selection: Selection | None, where: list[str] | str | None) -> Selection | None:
    """``selection`` narrowed by ``where`` clauses (``"domain=math"``); ``None`` stays ``None`` (all tokens)."""
    return parse_where(where, selection or Selection()) if where is not None else selection


def _forward(func: Callable[..., Any]) -> Callable[..., Any]:
    """An accessor method calling ``func(ds, selection, **kw)``, with ``func``'s signature and docs.

    ``func`` takes the Dataset first and an optional ``selection`` second (all metrics and
    ``reasoning_graph`` do); the method drops the Dataset and adds the keyword ``where``.
    """
    params = list(inspect.signature(func).parameters.values())
    if len(params) < 2 or params[1].name != "selection":
        raise TypeError(f"{func.__qualname__} must take (ds, selection, ...) to be an accessor method")
    first = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD), params[1]]
    # Everything after ``selection`` is passed by keyword (the method's own calling convention).
    named = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params[2:] if p.kind is not p.VAR_KEYWORD]
    var_kw = [p for p in params[2:] if p.kind is p.VAR_KEYWORD]

    @functools.wraps(func)
    def method(self: RoutingAccessor, selection: Selection | None = None, *, where: Any = None, **kw: Any) -> Any:
        return func(self._ds, _merged(selection, where), **kw)

    method.__signature__ = inspect.signature(func).replace(  # type: ignore[attr-defined]
        parameters=[*first, _WHERE, *(p for p in named if p.name != "where"), *var_kw]
    )
    return method


def _from_analysis(name: str) -> Callable[..., Any]:
    from workbench import analysis
    from workbench.analysis import compare

    return getattr(compare if name == "compare" else analysis, name)


def _from_graph(name: str) -> Callable[..., Any]:
    from workbench.graph import build

    return getattr(build, name)


def _from_supernodes(name: str) -> Callable[..., Any]:
    from workbench.graph import supernodes

    return getattr(supernodes, name)


class _Forwarder:
    """A class attribute that becomes ``_forward(load(name))`` on first access.

    The analysis and graph packages (numba, networkx: seconds to import) load when a method is first
    looked up (``ds.routing.expert_load``, ``inspect.signature``), not when a store is opened. Their
    imports are function-level, so the import checks still see this module's dependencies.
    """

    def __init__(self, load: Callable[[str], Callable[..., Any]], name: str) -> None:
        self.load, self.name = load, name

    @functools.cached_property
    def method(self) -> Callable[..., Any]:
        return _forward(self.load(self.name))

    def __get__(self, obj: object, owner: type | None = None) -> Callable[..., Any]:
        return self.method if obj is None else self.method.__get__(obj, owner)


@xr.register_dataset_accessor("routing")
class RoutingAccessor:
    """Routing-store methods: ``ds.routing.select(domains=("math",))``, ``ds.routing.expert_load(by="domain")``,
    ``ds.routing.graph(where="domain=math", top_edges=12)``, ``ds.routing.config``, ...

    Each metric and ``graph`` takes a ``Selection`` and/or ``where="domain=math"`` clauses (narrowing
    the selection) plus the function's own keywords; see ``workbench.analysis`` and ``workbench.graph``.
    """

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
        """False for an ids-only store (an engine capture): metrics that need gate weights refuse it."""
        return bool(self._ds.attrs.get("has_gate_weights", True))

    @property
    def segment_kinds(self) -> list[str]:
        """Names of the segment codes (``think``, ``tool_call``, ...) in the ``segment`` variable."""
        return list(self._ds.attrs.get("segment_kinds", S.SEGMENT_KINDS))

    def select(
        self,
        selection: Selection | None = None,
        *,
        where: list[str] | str | None = None,
        **keys: Any,
    ) -> xr.Dataset:
        """The Dataset restricted to tokens/layers (lazy where ``ds`` is dask-backed).

        Keys as in ``Selection`` (``domains=("math",)``, ``layers=(1, 4)``) or ``where="domain=math"``.
        """
        sel = parse_where(where, selection or Selection())
        if keys:
            sel = sel.merged(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in keys.items()})
        return select(self._ds, sel)

    # The metrics of workbench.analysis (formulas and sources in their docstrings and docs/metrics.md).
    expert_load = _Forwarder(_from_analysis, "expert_load")
    routing_entropy = _Forwarder(_from_analysis, "routing_entropy")
    domain_specialization = _Forwarder(_from_analysis, "domain_specialization")
    vocab_specialization = _Forwarder(_from_analysis, "vocab_specialization")
    coactivation = _Forwarder(_from_analysis, "coactivation")
    consecutive_agreement = _Forwarder(_from_analysis, "consecutive_agreement")
    transitions = _Forwarder(_from_analysis, "transitions")
    domain_divergence = _Forwarder(_from_analysis, "domain_divergence")
    specific_experts = _Forwarder(_from_analysis, "specific_experts")
    compare = _Forwarder(_from_analysis, "compare")

    # The reasoning graph of the selection (workbench.graph.reasoning_graph, a networkx DiGraph; docs/graphs.md).
    graph = _Forwarder(_from_graph, "reasoning_graph")
    # Supernodes per layer and their flows: the K2-scale overview (workbench.graph.supernodes; docs/overview.md).
    overview = _Forwarder(_from_supernodes, "supernodes")

    def expert(
        self, layer: int, expert: int, selection: Selection | None = None, *, where: list[str] | str | None = None,
        **kw: Any,
    ) -> Any:  # fmt: skip
        """The expert page of ``L{layer}:E{expert}`` over the selection (``workbench.experts.expert_page``:
        top contexts, lift-ranked tokens, domain and segment shares, histograms, neighbours; docs/experts.md).
        Keywords as ``expert_page`` (``top``, ``width``, ``min_count``, ...); it shows as HTML in Jupyter."""
        from workbench.experts.page import expert_page
        from workbench.viz import expert_page as _html  # noqa: F401  (gives the page its Jupyter HTML face)

        return expert_page(self._ds, layer, expert, _merged(selection, where), **kw)

    def find(
        self, text: str, selection: Selection | None = None, *, where: list[str] | str | None = None, **kw: Any
    ) -> Any:
        """Where ``text`` (or a regular expression with ``regex=True``) occurs in the decoded tokens, across
        token boundaries (``workbench.experts.find``): a list of hits with sequence, token rows and context."""
        from workbench.experts.search import find

        return find(self._ds, text, selection=_merged(selection, where), **kw)
