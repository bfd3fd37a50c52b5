"""Counting a selection's expert pathways: routing in, ``RoutingCounts`` out, pruned as it is counted.

``count_routing`` reads a selection of a routing store; ``count_arrays`` takes plain arrays (the
widgets' preloaded sequences). Both count nodes and every layer pair's edges with the same kernel
(``workbench.graph.tables``), in memory or, for large selections, by dask blocks
(``workbench.graph.chunked``), and prune each layer pair as soon as it is counted
(``workbench.graph.prune``), so only the kept edges are ever stored.

Module order (each imports only those before it): ``ids`` → ``tables`` → ``chunked``, ``prune`` →
``counts`` → ``build`` → ``difference`` → ``export``.
"""

from __future__ import annotations

from collections.abc import Callable

import dask.array as da
import numpy as np
import xarray as xr

from workbench.errors import GraphError
from workbench.graph import chunked as blocks
from workbench.graph.prune import check_pruning, prune_pair
from workbench.graph.read import SelectedRouting, read_selections, selected_rows
from workbench.graph.tables import EdgeTable, RoutingCounts, node_counts
from workbench.store import schema as S
from workbench.store.rows import token_rows
from workbench.store.select import Selection, layer_indexer, select


def count_routing(
    ds: xr.Dataset,
    selection: Selection | None = None,
    *,
    min_count: int | None = None,
    top_edges: int | None = None,
    flow: float | None = None,
    edges: bool = True,
    chunked: bool | None = None,
) -> RoutingCounts:
    """Count nodes and edges of the reasoning graph of ``selection`` (all tokens and layers if None).

    With pruning options (see ``workbench.graph.prune``), each layer pair is pruned as soon as it is
    counted and only its kept edges are stored; node counts and ``flow_totals`` stay complete.

    ``chunked``: count by token blocks on the active dask scheduler (``workbench.graph.chunked``)
    instead of reading the selection into memory; ``None`` chooses it for selections of at least
    ``CHUNKED_MIN_TOKENS`` tokens. Counts are equal either way; weight sums agree to rounding.

    Raises ``SelectionError`` (one line) when the selection is unknown, empty, or its layer range
    lies outside the model; ``GraphError`` for pruning options out of range or expert ids outside
    the model.
    """
    check_pruning(min_count, top_edges, flow)  # refuse bad options before reading anything
    sel = selection or Selection()
    (counts,) = count_selections(
        ds, [sel], min_count=min_count, top_edges=top_edges, flow=flow, edges=edges, chunked=chunked
    )
    return counts


def count_selections(
    ds: xr.Dataset,
    selections: list[Selection],
    *,
    min_count: int | None = None,
    top_edges: int | None = None,
    flow: float | None = None,
    edges: bool = True,
    chunked: bool | None = None,
) -> list[RoutingCounts]:
    """``count_routing`` of each of ``selections``; those counted in memory are read from the store
    together, in one pass (``workbench.graph.read``), so two selections sharing chunks decode them once."""
    check_pruning(min_count, top_edges, flow)
    rows = [selected_rows(ds, sel) for sel in selections]
    by_blocks = [chunked if chunked is not None else r.size >= blocks.CHUNKED_MIN_TOKENS for r in rows]  # call time
    in_memory = [i for i, b in enumerate(by_blocks) if not b]
    read = read_selections(ds, [selections[i] for i in in_memory], rows=[rows[i] for i in in_memory])
    data = dict(zip(in_memory, read, strict=True))
    out = []
    for i, sel in enumerate(selections):
        if i in data:
            out.append(count_selected(ds, data[i], min_count=min_count, top_edges=top_edges, flow=flow, edges=edges))
        else:
            out.append(
                _count_chunked(ds, sel, rows[i], min_count=min_count, top_edges=top_edges, flow=flow, edges=edges)
            )
    return out


def count_selected(
    ds: xr.Dataset,
    data: SelectedRouting,
    *,
    min_count: int | None = None,
    top_edges: int | None = None,
    flow: float | None = None,
    edges: bool = True,
) -> RoutingCounts:
    """``count_routing`` of a selection already read into memory (``workbench.graph.read``) from ``ds``."""
    ids = data.expert_ids
    counts = count_arrays(
        ids,
        data.gate_weights,
        layers=data.layers,
        n_experts=_n_experts(ds, lambda: int(ids.max(initial=-1)) + 1),
        token_domains=(data.domains, data.token_domain),
        token_ids=data.token_ids,
        vocab=_vocab(ds),
        weighted=bool(ds.attrs.get("has_gate_weights", True)),
        min_count=min_count,
        top_edges=top_edges,
        flow=flow,
        edges=edges,
    )
    counts.positions = data.positions
    return counts


def count_arrays(
    ids: np.ndarray,
    weights: np.ndarray | None,
    *,
    layers: np.ndarray,
    n_experts: int,
    token_domains: tuple[tuple[str, ...], np.ndarray] | None = None,
    token_ids: np.ndarray | None = None,
    vocab: list[str] | None = None,
    weighted: bool = True,
    min_count: int | None = None,
    top_edges: int | None = None,
    flow: float | None = None,
    edges: bool = True,
) -> RoutingCounts:
    """``count_routing`` on plain arrays: ``ids`` (T, L, k) expert ids, ``weights`` (T, L, k) or None.

    Weights that are None or hold any NaN (an engine capture with ids only) make the counts
    unweighted: every edge weight is then its token count, and mean gate weights are undefined.
    ``token_domains`` = (domain names, (T,) index of each token's domain); default one domain "all".
    ``edges=False`` counts nodes only (``pair_edges()`` still yields the edges, pair by pair).
    """
    check_pruning(min_count, top_edges, flow)
    t, _, k = ids.shape
    if t and (int(ids.min()) < 0 or int(ids.max()) >= n_experts):
        raise _ids_outside(n_experts)
    weighted = weighted and weights is not None and not bool(np.isnan(weights).any())
    w = np.asarray(weights, dtype=np.float64) if weighted and weights is not None else None
    names, dom = token_domains if token_domains is not None else (("all",), np.zeros(t, dtype=np.int64))
    node_tokens, node_gate, node_domain = node_counts(ids, w, dom, n_experts, len(names))
    counts = RoutingCounts(
        layers=np.asarray(layers, dtype=np.int64),
        n_experts=n_experts,
        top_k=k,
        n_tokens=t,
        weighted=w is not None,
        node_tokens=node_tokens,
        node_gate=node_gate,
        domains=tuple(names),
        node_domain=node_domain,
        expert_ids=ids,
        token_ids=token_ids if token_ids is not None else np.zeros(t, dtype=np.int64),
        vocab=vocab or [],
        gate_weights=w,
    )
    if edges:
        collect_edges(counts, min_count=min_count, top_edges=top_edges, flow=flow)
    return counts


def collect_edges(
    counts: RoutingCounts,
    *,
    min_count: int | None = None,
    top_edges: int | None = None,
    flow: float | None = None,
) -> None:
    """Fill ``counts.edges`` and ``flow_totals`` from ``pair_edges()``, pruning each pair as it comes."""
    check_pruning(min_count, top_edges, flow)
    pruning = bool(min_count) or top_edges is not None or flow is not None
    parts: list[tuple[np.ndarray, ...]] = []
    for p, codes, cnt, wsum in counts.pair_edges():
        counts.flow_totals[p] = float(wsum.sum())
        if pruning:
            kept = prune_pair(cnt, wsum, counts.flow_totals[p], min_count=min_count, top_edges=top_edges, flow=flow)
            codes, cnt, wsum = codes[kept], cnt[kept], wsum[kept]
        src, dst = np.divmod(codes, counts.n_experts)
        parts.append((np.full(codes.size, p, dtype=np.int64), src, dst, cnt, wsum))
    counts.edges = EdgeTable(*(np.concatenate(col) for col in zip(*parts, strict=True))) if parts else EdgeTable.empty()


def _count_chunked(
    ds: xr.Dataset,
    sel: Selection,
    rows: np.ndarray,
    *,
    min_count: int | None,
    top_edges: int | None,
    flow: float | None,
    edges: bool,
) -> RoutingCounts:
    """``count_routing`` of a large selection (global ``rows``) by token blocks (``workbench.graph.chunked``)."""
    sub = select(ds, sel)
    ids = da.asarray(sub[S.EXPERT_IDS].data)
    n_experts = _n_experts(ds, lambda: int(ids.max().compute()) + 1)
    has_w = bool(ds.attrs.get("has_gate_weights", True))
    names, dom = _token_domains(sub)
    reader = _block_rows(ds, sub, sel, rows, has_w)  # the counting pass and, ids only, the top-token pass
    node_tokens, node_gate, node_domain, pair_cnt, pair_w = blocks.chunked_counts(
        reader, dom, int(rows.size), n_experts, len(names)
    )
    t, n_layers, k = (int(x) for x in ids.shape)
    if t and int(node_tokens.sum()) != t * n_layers * k:
        raise _ids_outside(n_experts)
    weighted = has_w and pair_w is not None and not bool(np.isnan(node_gate).any())  # ids-only captures: NaN
    counts = blocks.ChunkedRoutingCounts(
        layers=np.asarray(sub[S.LAYER].values).astype(np.int64),
        n_experts=n_experts,
        top_k=k,
        n_tokens=t,
        weighted=weighted,
        node_tokens=node_tokens,
        node_gate=node_gate if weighted else np.zeros_like(node_gate),
        domains=tuple(names),
        node_domain=node_domain,
        expert_ids=np.zeros((0, n_layers, k), dtype=np.int16),
        token_ids=np.asarray(sub[S.TOKEN_ID].data[:512]),
        vocab=_vocab(ds),
        pair_cnt=pair_cnt,
        pair_w=pair_w if weighted else None,
        reader=reader,
        lazy_tokens=da.asarray(sub[S.TOKEN_ID].data),
    )
    if edges:
        collect_edges(counts, min_count=min_count, top_edges=top_edges, flow=flow)
    return counts


def _block_rows(ds: xr.Dataset, sub: xr.Dataset, sel: Selection, rows: np.ndarray, weights: bool) -> blocks.BlockRows:
    """How the block tasks read the selection: straight from the store's chunks (whole rows, the selected
    ``rows`` and layers by index) where ``ds`` is a store's own, else from ``sub``'s dask arrays."""
    ids_rows = token_rows(ds, S.EXPERT_IDS)
    w_rows = token_rows(ds, S.GATE_WEIGHTS) if weights else None
    if ids_rows is not None and (w_rows is not None or not weights):
        lay = np.arange(ds.sizes[S.LAYER], dtype=np.int64)[layer_indexer(ds, sel)]
        return blocks.BlockRows.of_store(ids_rows, w_rows, lay, rows)
    w = da.asarray(sub[S.GATE_WEIGHTS].data) if weights else None
    return blocks.BlockRows(da.asarray(sub[S.EXPERT_IDS].data), w, np.arange(sub.sizes[S.LAYER], dtype=np.int64))


def _n_experts(ds: xr.Dataset, from_ids: Callable[[], int]) -> int:
    """The model's routed experts per layer, else (stores without a model config) from the ids."""
    model = ds.attrs.get("model") or {}
    return int(model.get("n_routed_experts") or from_ids())


def _vocab(ds: xr.Dataset) -> list[str]:
    return list((ds.attrs.get("tokenizer") or {}).get("vocab", []))


def _ids_outside(n_experts: int) -> GraphError:
    return GraphError(
        f"expert ids outside 0..{n_experts - 1}: the routing does not match n_experts={n_experts} "
        "(the model's n_routed_experts)",
        param="n_experts",
    )


def _token_domains(sub: xr.Dataset) -> tuple[tuple[str, ...], np.ndarray]:
    """Domain names present and the domain index of each selected token. Shape (T,)."""
    seq_domain = np.array([str(d) for d in sub[S.SEQUENCE_DOMAIN].values], dtype=object)
    names = tuple(sorted(set(seq_domain.tolist())))
    code_of_seq = np.array([names.index(d) for d in seq_domain], dtype=np.int64)
    seq_idx = np.asarray(sub[S.SEQUENCE_INDEX].values, dtype=np.int64)
    return names, code_of_seq[seq_idx] if seq_idx.size else np.zeros(0, dtype=np.int64)
