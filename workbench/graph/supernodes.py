"""Supernodes: a readable overview of a K2-sized reasoning graph (60 layers × 384 experts).

At K2's scale the expert graph of a selection has 23,040 nodes and up to ~150k edges per layer pair;
no drawing of it reads. Here the experts of each MoE layer are grouped into a few *supernodes* (as
circuit-tracer's UI groups features), and the flow of tokens between the supernodes of consecutive
layers is counted, so 60 layers become 60 columns of ~8 blocks joined by ribbons.

**Grouping.** Let ``C_l[a, b] = |{t ∈ T : a ∈ K_l(t), b ∈ K_l'(t)}|`` be the transition counts between
consecutive MoE layers l, l' (``workbench.pair_counts``; ``transitions`` in docs/metrics.md). Each routed
expert ``a`` of layer l gets its *flow profile*: where its tokens go, ``P_out(b | a) = C_l[a, b] / Σ_b
C_l[a, b]``, and where they come from, ``P_in(c | a) = C_{l-1}[c, a] / Σ_c C_{l-1}[c, a]``. The profiles
are embedded as ``x_a = [√P_out, √P_in] / √h`` (h = number of halves present), so that the Euclidean
distance between two experts is their Hellinger distance (averaged over the halves), and the experts of
the layer are grouped by Ward's agglomerative clustering (Ward 1963, "Hierarchical grouping to optimize
an objective function"; ``scipy.cluster.hierarchy.linkage``), cut at ``n_supernodes`` groups. Two experts
share a supernode when the tokens routed to them come from and go to the same experts. Ward's method has
no random start, so the grouping is deterministic. Experts no selected token is routed to belong to no
supernode (assignment −1). Supernodes are numbered by tokens, largest first (ties: smallest expert id).

**Flows.** ``F_l[s, u] = Σ_{a ∈ s, b ∈ u} C_l[a, b]``: the k × k token-pair transitions between the
members of supernode s (layer l) and u (layer l'); ``Σ_su F_l[s, u] = |T|·k²``, like every layer pair of
a reasoning graph. A supernode's ``load`` is ``Σ_{a ∈ s} tokens_a / |T|`` (Switch Transformer's expert
load, Fedus et al. 2021, eq. 4, summed over the group; Σ over a layer = k).

**Cost.** One pass over the selection in blocks of tokens on the active dask scheduler (node counts and
the dense E × E transition counts of every layer pair, by the compiled k × k kernel; no gate weights
are read), then 60 Ward clusterings of 384 points. Top tokens of each supernode's heaviest experts come
from an evenly spread sample of at most ``SAMPLE_TOKENS`` tokens.
"""

from __future__ import annotations

import functools
import heapq
from dataclasses import dataclass, field

import dask
import dask.array as da
import numpy as np
import xarray as xr
from numba import njit
from scipy.cluster.hierarchy import fcluster, linkage

from workbench.errors import GraphError
from workbench.graph.build import describe_selection
from workbench.graph.counts import _n_experts, _token_domains, _vocab
from workbench.graph.top_tokens import by_token_id, node_top_token_ids
from workbench.pair_counts import pair_counts
from workbench.store import schema as S
from workbench.store.select import Selection, select
from workbench.tree_reduce import tree_reduce

SAMPLE_TOKENS = 65_536  # tokens read for the top tokens of the heaviest experts
SAMPLE_WINDOWS = 16  # the sample is this many contiguous windows spread evenly over the selection

Partial = tuple[np.ndarray, np.ndarray, np.ndarray]


@dataclass
class Supernodes:
    """Expert groups per MoE layer of one selection and the token flow between them.

    Shapes: L MoE layers, E experts per layer, K = ``n_groups.max()`` supernodes (padded), D domains.
    """

    layers: np.ndarray  # (L,) real MoE layer indices
    n_experts: int
    top_k: int
    n_tokens: int
    selection: str  # the selection as --where text
    assignment: np.ndarray  # (L, E) int64 supernode of each expert, -1 = no selected token routed there
    n_groups: np.ndarray  # (L,) int64 supernodes per layer
    expert_tokens: np.ndarray  # (L, E) int64 tokens routed to each expert
    domains: tuple[str, ...]
    expert_domain: np.ndarray  # (D, L, E) int64 tokens of each domain routed to each expert
    domain_tokens: np.ndarray  # (D,) int64 selected tokens of each domain
    flows: np.ndarray  # (L-1, K, K) int64 F_l[s, u]
    model: str = ""
    sample_tokens: int = 0  # tokens the top tokens were counted from
    top_tokens: dict[tuple[int, int], list[tuple[str, int]]] = field(default_factory=dict)  # (layer pos, expert)

    @functools.cached_property
    def tokens(self) -> np.ndarray:
        """(L, K) int64 tokens routed to each supernode (a token counts once per member it is routed to)."""
        out = np.zeros((self.layers.size, self.flows.shape[1]), dtype=np.int64)
        for i in range(self.layers.size):
            used = self.assignment[i] >= 0
            np.add.at(out[i], self.assignment[i][used], self.expert_tokens[i][used])
        return out

    @functools.cached_property
    def load(self) -> np.ndarray:
        """(L, K) ``tokens / |T|``; Σ over a layer = k."""
        return self.tokens / max(self.n_tokens, 1)

    def domain_lift(self) -> np.ndarray:
        """(D, L, K) share of each domain among a supernode's tokens over its share of the selection."""
        return self._lift

    @functools.cached_property
    def _lift(self) -> np.ndarray:
        dom = np.zeros((len(self.domains), *self.tokens.shape))
        for i in range(self.layers.size):
            used = self.assignment[i] >= 0
            for d in range(len(self.domains)):
                np.add.at(dom[d, i], self.assignment[i][used], self.expert_domain[d, i][used])
        with np.errstate(invalid="ignore", divide="ignore"):
            share = dom / dom.sum(0, keepdims=True)
            base = self.domain_tokens / max(self.domain_tokens.sum(), 1)
            return np.nan_to_num(share / base[:, None, None])

    def members(self, layer_pos: int, group: int) -> np.ndarray:
        """Expert ids of one supernode, most tokens first (ties: smaller id)."""
        ids = np.flatnonzero(self.assignment[layer_pos] == group)
        return ids[np.lexsort((ids, -self.expert_tokens[layer_pos, ids]))]

    def label(self, layer_pos: int, group: int, n: int = 3) -> str:
        """The supernode named by its ``n`` heaviest experts: ``"E17 E203 E5 +21"``."""
        ids = self.members(layer_pos, group)
        more = f" +{ids.size - n}" if ids.size > n else ""
        return " ".join(f"E{e}" for e in ids[:n]) + more


def supernodes(
    ds: xr.Dataset, selection: Selection | None = None, *, n_supernodes: int = 8, top_experts: int = 12,
    top_tokens: int = 5, block: int | None = None,
) -> Supernodes:  # fmt: skip
    """Group the experts of every MoE layer of ``selection`` into ``n_supernodes`` by their flow
    profiles and count the token flow between supernodes of consecutive layers (module docstring).

    ``top_experts`` heaviest members of each supernode get their ``top_tokens`` most frequent tokens,
    counted on a sample of at most ``SAMPLE_TOKENS`` tokens. Raises ``GraphError`` naming the
    parameter for options out of range or a selection of one layer; ``SelectionError`` as ``select``.
    """
    if not 1 <= n_supernodes <= 64:
        raise GraphError(f"n_supernodes must be between 1 and 64, got {n_supernodes}", param="n_supernodes")
    if top_experts < 0 or top_tokens < 0:
        bad = "top_experts" if top_experts < 0 else "top_tokens"
        raise GraphError(f"{bad} must be >= 0, got {min(top_experts, top_tokens)}", param=bad)
    sub = select(ds, selection or Selection())
    if sub.sizes[S.LAYER] < 2:
        raise GraphError(
            "layers: an overview shows the flow between MoE layers and needs at least two; widen the layer range",
            param="layers",
        )
    ids = da.asarray(sub[S.EXPERT_IDS].data)
    n_experts = _n_experts(ds, lambda: int(ids.max().compute()) + 1)
    names, dom = _token_domains(sub)
    node_tokens, node_domain, pair_cnt = _count(ids, dom, n_experts, len(names), block)
    t, n_layers, k = (int(x) for x in ids.shape)
    c = pair_cnt.reshape(-1, n_experts, n_experts)
    assignment = np.stack(
        [
            group_experts(c[i - 1] if i > 0 else None, c[i] if i < n_layers - 1 else None, node_tokens[i], n_supernodes)
            for i in range(n_layers)
        ]
    )
    n_groups = assignment.max(1) + 1
    kk = int(n_groups.max())
    flows = np.stack([_group_flows(c[i], assignment[i], assignment[i + 1], kk) for i in range(n_layers - 1)])
    out = Supernodes(
        layers=np.asarray(sub[S.LAYER].values).astype(np.int64), n_experts=n_experts, top_k=k, n_tokens=t,
        selection=describe_selection(selection), assignment=assignment, n_groups=n_groups, expert_tokens=node_tokens,
        domains=tuple(names), expert_domain=node_domain, domain_tokens=np.bincount(dom, minlength=len(names)),
        flows=flows, model=str((ds.attrs.get("model") or {}).get("model_name", "")),
    )  # fmt: skip
    if top_experts and top_tokens:
        _add_top_tokens(out, sub, _vocab(ds), top_experts, top_tokens)
    return out


def group_experts(c_in: np.ndarray | None, c_out: np.ndarray | None, tokens: np.ndarray, n_groups: int) -> np.ndarray:
    """Ward clusters of one layer's experts by their Hellinger-embedded flow profiles (module docstring).

    ``c_in`` (E', E) transitions into this layer, ``c_out`` (E, E'') out of it (None at the ends),
    ``tokens`` (E,) tokens per expert. Returns (E,) int64 group ids 0..n-1 numbered by tokens (largest
    first, ties: smallest expert id); -1 for experts with no tokens.
    """
    active = np.flatnonzero(tokens > 0)
    labels = np.full(tokens.size, -1, dtype=np.int64)
    if active.size == 0:
        return labels
    halves = [m for m in (c_out, None if c_in is None else c_in.T) if m is not None]
    parts = []
    for m in halves:
        rows = m[active].astype(np.float64)
        rows /= np.maximum(rows.sum(1, keepdims=True), 1.0)
        parts.append(np.sqrt(rows))
    x = np.hstack(parts) / np.sqrt(len(parts))  # (A, D) Euclidean distance = mean Hellinger distance · √2
    if active.size <= n_groups:
        raw = np.arange(active.size)
    else:
        raw = fcluster(linkage(x, method="ward"), t=n_groups, criterion="maxclust") - 1
    n = int(raw.max()) + 1
    size = np.bincount(raw, weights=tokens[active], minlength=n)
    first = np.full(n, tokens.size)
    np.minimum.at(first, raw, active)
    order = np.lexsort((first, -size))  # old group ids, heaviest first
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    labels[active] = rank[raw]
    return labels


def _group_flows(c: np.ndarray, a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    """``F[s, u] = Σ_{a∈s, b∈u} C[a, b]`` for (E, E) counts and group ids ``a``, ``b`` (-1: no tokens, no flow)."""
    ua, ub = a >= 0, b >= 0
    sa = np.zeros((n, a.size), dtype=np.int64)
    sa[a[ua], np.flatnonzero(ua)] = 1
    sb = np.zeros((b.size, n), dtype=np.int64)
    sb[np.flatnonzero(ub), b[ub]] = 1
    return sa @ c.astype(np.int64) @ sb


@njit(nogil=True, cache=True)
def _domain_counts(ids: np.ndarray, dom: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover (compiled)
    """``out[dom[t], l, ids[t, l, j]] += 1`` for every token t, layer l and slot j: (T, L, k), (T,) -> (D, L, E)."""
    t_n, n_layers, k = ids.shape
    for t in range(t_n):
        d = dom[t]
        for layer in range(n_layers):
            for j in range(k):
                out[d, layer, ids[t, layer, j]] += 1


def _block(ids: np.ndarray, dom: np.ndarray, n_experts: int, n_domains: int) -> Partial:
    """One block: node tokens (L, E), per-domain node tokens (D, L, E), transition counts (L-1, E²).

    Both counts run in compiled loops (the k × k kernel and ``_domain_counts``), about a nanosecond an
    incidence, where ``np.bincount`` over node codes costs several."""
    n_layers, k = ids.shape[1], ids.shape[2]
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= n_experts):
        raise GraphError(
            f"expert ids outside 0..{n_experts - 1}: the routing does not match n_experts={n_experts}",
            param="n_experts",
        )
    node_domain = np.zeros((n_domains, n_layers, n_experts), dtype=np.int64)
    _domain_counts(ids, np.asarray(dom, dtype=np.int64), node_domain)
    pair_cnt = np.zeros((max(n_layers - 1, 0), n_experts * n_experts), dtype=np.int64)
    none_w, every, no_sum = np.zeros((0, k)), np.zeros(0, dtype=np.bool_), np.zeros(0)
    for p in range(n_layers - 1):  # strided (T, k) views: ids only, a layer-major copy costs more than it saves
        pair_counts(ids[:, p, :], ids[:, p + 1, :], none_w, none_w, every, n_experts, pair_cnt[p], no_sum)
    return node_domain.sum(0), node_domain, pair_cnt


def _add(*parts: Partial) -> Partial:
    return tuple(sum(xs[1:], xs[0].copy()) for xs in zip(*parts, strict=True))  # type: ignore[return-value]


def _count(ids: da.Array, dom: np.ndarray, n_experts: int, n_domains: int, block: int | None) -> Partial:
    """Sum of ``_block`` over token blocks, by the fixed tree of ``workbench.tree_reduce``.

    Blocks follow the store's token chunks (``block=None``), so no chunk is decompressed twice."""
    one = dask.delayed(_block, pure=True)
    n = int(ids.shape[0])
    if block is None:
        ends = np.cumsum(ids.chunks[0])
        bounds = list(zip([0, *ends[:-1].tolist()], ends.tolist(), strict=True))
    else:
        bounds = [(a, min(a + block, n)) for a in range(0, n, block)]
    parts = [one(ids[a:b], dom[a:b], n_experts, n_domains) for a, b in bounds]
    (total,) = dask.compute(tree_reduce(parts, _add))
    return total  # type: ignore[no-any-return]


def sample_rows(n_tokens: int, size: int = SAMPLE_TOKENS, windows: int = SAMPLE_WINDOWS) -> np.ndarray:
    """Rows of an evenly spread sample: all rows if ``n_tokens <= size``, else ``windows`` contiguous runs."""
    if n_tokens <= size:
        return np.arange(n_tokens)
    width = size // windows
    starts = np.linspace(0, n_tokens - width, windows).astype(np.int64)
    return (starts[:, None] + np.arange(width)[None, :]).ravel()


def _add_top_tokens(sn: Supernodes, sub: xr.Dataset, vocab: list[str], top_experts: int, n: int) -> None:
    """Fill ``sn.top_tokens`` for the ``top_experts`` heaviest members of every supernode, from a sample."""
    rows = sample_rows(sn.n_tokens)
    contiguous = rows.size == sn.n_tokens
    part = sub if contiguous else sub.isel({S.TOKEN: rows})
    ids = np.asarray(part[S.EXPERT_IDS].values)  # (T', L, k)
    tok = np.asarray(part[S.TOKEN_ID].values).astype(np.int64)  # (T',)
    sn.sample_tokens = int(rows.size)
    wanted = np.zeros((sn.layers.size, sn.n_experts), dtype=bool)
    for i in range(sn.layers.size):
        for g in range(int(sn.n_groups[i])):
            wanted[i, sn.members(i, g)[:top_experts]] = True
    nodes = np.flatnonzero(wanted.ravel())  # codes layer_pos·E + expert
    top_ids, top_counts = node_top_token_ids(by_token_id(ids, tok), nodes, sn.n_experts, n)
    for c, row_t, row_c in zip(nodes.tolist(), top_ids.tolist(), top_counts.tolist(), strict=True):
        items = [(vocab[t] if 0 <= t < len(vocab) else f"<{t}>", m) for t, m in zip(row_t, row_c, strict=True) if m]
        if items:  # experts no sampled token reached have no entry
            sn.top_tokens[divmod(c, sn.n_experts)] = items


def heaviest_supernode_paths(sn: Supernodes, n: int = 3) -> list[tuple[list[int], int]]:
    """The ``n`` supernode paths through all layers with the largest summed flow ``Σ_l F_l[s_l, s_l+1]``,
    exactly, by dynamic programming keeping the n best partial paths per supernode. Ties: smaller ids.

    Returns ``[(supernode index per layer, total flow), ...]``, heaviest first.
    """
    if n < 1:
        return []
    best: dict[int, list[tuple[int, tuple[int, ...]]]] = {s: [(0, (s,))] for s in range(int(sn.n_groups[0]))}
    for i in range(sn.flows.shape[0]):
        nxt: dict[int, list[tuple[int, tuple[int, ...]]]] = {}
        for u in range(int(sn.n_groups[i + 1])):
            cands = [(w + int(sn.flows[i, s, u]), (*p, u)) for s, paths in best.items() for w, p in paths]
            nxt[u] = heapq.nsmallest(n, cands, key=lambda c: (-c[0], c[1]))
        best = nxt
    final = heapq.nsmallest(n, (c for paths in best.values() for c in paths), key=lambda c: (-c[0], c[1]))
    return [(list(p), w) for w, p in final]
