"""Expert pathways of a set of token rows for the widgets, through the library's one counting core.

A widget preloads one sequence's routing into memory once; every click then counts the rows it
selects with ``workbench.graph.count_arrays`` (the same kernel and the same ``RoutingCounts`` as
``reasoning_graph`` and ``workbench graph``), with no xarray or dask on the interactive path. The
figure draws the strongest edges per layer pair, pruned as they are counted by the rule of
``workbench.graph.prune`` (deterministic ties, docs/graphs.md); the export counts the rows again
unpruned and is ``counts_to_graph`` written by ``workbench.graph.export``,
so a widget's GraphML is the library's reasoning graph of the same tokens: on an ids-only store its
edge weights are token counts, as in ``workbench graph``.
"""

from __future__ import annotations

import networkx as nx
import numpy as np
import xarray as xr

from workbench.graph.build import counts_to_graph
from workbench.graph.counts import count_arrays
from workbench.graph.tables import RoutingCounts

from .sequence_data import SequenceData


def store_vocab(ds: xr.Dataset) -> list[str]:
    """The store's token vocabulary (id -> text), for the top tokens of exported nodes; [] if absent."""
    return list((ds.attrs.get("tokenizer") or {}).get("vocab", []))


def pathway_counts(
    data: SequenceData, rows: np.ndarray, vocab: list[str] | None = None, *, top_edges: int | None = None
) -> RoutingCounts:
    """Nodes and the consecutive-layer edges of the token ``rows`` (positions within ``data``'s sequence).

    One domain (the sequence's), so each node's ``share_<domain>`` is 1. ``top_edges``: keep only the
    strongest edges of each layer pair (strength = weight: Σ gate products, or the token count for
    ids-only routing; ties to the smaller (source, target) expert ids); None keeps every edge.
    """
    rows = np.asarray(rows, dtype=np.int64)
    return count_arrays(
        data.expert_ids[rows],
        data.gate_weights[rows],
        layers=data.layers,
        n_experts=data.n_experts,
        token_domains=((data.domain,), np.zeros(rows.size, dtype=np.int64)),
        token_ids=data.token_ids[rows],
        vocab=vocab,
        top_edges=top_edges,
    )


def pathway_graph(counts: RoutingCounts, *, title: str = "", top_tokens: int = 5) -> nx.DiGraph:
    """The reasoning graph of ``counts`` (every edge), as ``workbench.graph.reasoning_graph`` builds it."""
    return counts_to_graph(
        counts, top_tokens=top_tokens, graph_attrs={"title": title, "selection": title, "pruning": "none"}
    )
