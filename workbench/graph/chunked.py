"""Reasoning-graph counts of large selections: block-wise passes on dask, memory bounded.

The in-memory path (``RoutingCounts``) reads the whole selection (ids, gate weights as float64, a
node-code copy): about 15 GB for 1M K2 tokens. Here the selection is cut into blocks of
``BLOCK_TOKENS`` selected tokens and counted on whatever scheduler is active: threads in-process, or
a dask distributed cluster (``--scheduler``), whose workers read their own rows.

**Counts** (nodes, gate sums, per-domain counts, each layer pair's dense E × E edge counts and weight
sums). The result is defined as the fixed binary tree of ``workbench.tree_reduce`` over the blocks'
partial sums, every block's sums added in row order from 0 (``block_kernels.block_counts``), so
in-process and cluster runs agree to the last bit (``tests/test_distributed_analysis.py``). One task
counts an aligned run of 2^h blocks (``task_blocks``: at least two tasks per counting thread) and
folds their partials with a stack (``fold``), which performs exactly that run's subtree of the tree;
the tasks' results then go up the same tree, so the sums are those of the tree over single blocks.
A task reuses its buffers: a stack of at most h + 1 weight partials (K2: 59 pairs × 384² × 8 B = 70 MB
each), one int64 count array, and its read buffers (``Held``: one block's ids and weights as stored).

**Top tokens** of the kept nodes: one task per group of nodes (``node_groups``: at least one per
counting thread, and small enough that the group's table of distinct token ids × nodes stays under
``TOP_TABLE_BYTES``; cells of the smallest unsigned type that holds the most frequent id's count,
``count_dtype``: one byte for a few million tokens) reads every block's ids and adds into its table
(``block_kernels.node_token_counts``), then reads each node's ``n`` most frequent tokens off it.

Reading (``BlockRows``): on a store's own Dataset (``open_store``) each task reads its rows straight
from the store's chunks into reused buffers (``workbench.store.rows``, every chunk checked), whole rows
as stored, the kernels taking the selected rows and layers by index; otherwise the tasks compute their
rows from the Dataset's dask arrays. Edge top tokens are not computed here (empty ``top_tokens``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import dask
import numpy as np
from dask.base import tokenize

from workbench.analysis.engine import n_chains
from workbench.graph import block_kernels as K
from workbench.graph.tables import RoutingCounts
from workbench.store.rows import TokenRows, borrow, spans
from workbench.tree_reduce import tree_reduce

BLOCK_TOKENS = 65_536  # selected tokens per block: the leaves of the reduction tree
CHUNKED_MIN_TOKENS = 65_536  # selections at least this large use this path (auto mode)
TOKEN_SHIFT = 2**32  # (node code, token id) packed as node * 2^32 + token in one int64 (``top_per_node``)
TOP_TABLE_BYTES = 256 << 20  # most bytes of one node group's (distinct token ids × nodes) table

Partial = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]  # node_domain, node_gate, pair_cnt, pair_w


@dataclass(frozen=True, eq=False)
class BlockRows:
    """A selection's routing as the tasks read it: the store's own chunks (``TokenRows``, whole stored rows;
    ``rows`` the selected global rows, ascending, or ``first`` alone when they are ``first, first + 1, …``)
    or a Dataset's dask arrays, rows and layers already selected (``rows`` None, ``first`` -1). ``lay``
    (L,): positions of the selected layers in a row as read. Pickles (small for a contiguous selection)."""

    ids: Any  # TokenRows | dask array (T, L, k)
    weights: Any  # TokenRows | dask array | None
    lay: np.ndarray
    rows: np.ndarray | None = None
    first: int = -1

    @staticmethod
    def of_store(ids: TokenRows, weights: TokenRows | None, lay: np.ndarray, rows: np.ndarray) -> BlockRows:
        """Readers of the store's own chunks for the selected global ``rows`` (ascending)."""
        if rows.size and int(rows[-1]) - int(rows[0]) + 1 == rows.size:  # contiguous: no row list to ship
            return BlockRows(ids, weights, lay, None, int(rows[0]))
        return BlockRows(ids, weights, lay, np.ascontiguousarray(rows, dtype=np.int64))

    def __dask_tokenize__(self) -> str:
        return tokenize("BlockRows", self.ids, self.weights, self.lay, self.rows, self.first)

    def selected(self, lo: int, hi: int) -> np.ndarray:
        """Global rows of the selected tokens ``lo:hi`` (store readers only)."""
        if self.rows is None:
            return np.arange(self.first + lo, self.first + hi, dtype=np.int64)
        return self.rows[lo:hi]

    @contextmanager
    def read(
        self, lo: int, hi: int, weights: bool, held: Held | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray | None, np.ndarray]]:
        """Selected tokens ``lo:hi``: ``(ids (R, L_read, k), gate weights (R, L_read, k) as stored or None,
        where (hi - lo,) their rows)``; buffers valid inside the ``with`` only (``held``: the task's, reused
        by its next block)."""
        if not isinstance(self.ids, TokenRows):
            ids = np.ascontiguousarray(self.ids[lo:hi].compute(scheduler="sync"))
            w = self.weights[lo:hi].compute(scheduler="sync") if weights and self.weights is not None else None
            yield ids, (np.ascontiguousarray(w) if w is not None else None), np.arange(hi - lo, dtype=np.int64)
            return
        sel = self.selected(lo, hi)
        runs = spans(sel, self.ids.layout.chunks[0])
        n = sum(b - a for a, b in runs)
        starts = np.array([a for a, _ in runs], dtype=np.int64)
        offset = np.concatenate([[0], np.cumsum([b - a for a, b in runs])]).astype(np.int64)
        run = np.searchsorted(starts, sel, side="right") - 1
        where = sel - starts[run] + offset[run]
        with ExitStack() as stack:
            held = held or Held(stack)
            ids = _read_runs(self.ids, runs, held.take("ids", (n, *self.ids.row_shape), self.ids.dtype))
            w = None
            if weights and self.weights is not None:
                w = _read_runs(self.weights, runs, held.take("w", (n, *self.weights.row_shape), self.weights.dtype))
            yield ids, w, where


class Held:
    """Buffers one task keeps across its blocks: each kind is borrowed (``workbench.store.rows.borrow``) once
    and reused while large enough, so a task faults in its read buffers once, not once per block (two
    threads' ids and weights of a K2 block, 4 × 63 MB, overflow what the shared pool keeps idle)."""

    def __init__(self, stack: ExitStack) -> None:
        self._stack = stack
        self._bufs: dict[str, np.ndarray] = {}

    def take(self, key: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        n = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        buf = self._bufs.get(key)
        if buf is None or buf.size < n:  # a larger block (selections with gaps): borrow another
            buf = self._bufs[key] = self._stack.enter_context(borrow((n,), np.uint8))
        return buf[:n].view(dtype).reshape(shape)


def _gates(w: np.ndarray | None, like: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Gate weights as the kernels take them: float16 as its uint16 bits with ``HALF_TO_FLOAT`` (numba has no
    float16), other floats as they are with no table; ids only: no rows."""
    if w is None:
        return np.zeros((0, *like.shape[1:]), np.float32), None
    if w.dtype == np.float16:
        return w.view(np.uint16), K.HALF_TO_FLOAT
    return w, None


def _read_runs(reader: TokenRows, runs: list[tuple[int, int]], buf: np.ndarray) -> np.ndarray:
    """Rows of ``runs`` (whole stored rows), one after another into ``buf``; returns it."""
    at = 0
    for a, b in runs:
        reader.read_into(a, b, buf[at : at + b - a])
        at += b - a
    return buf


def block_bounds(n_tokens: int, block: int | None = None) -> list[tuple[int, int]]:
    """``[a, b)`` ranges of selected tokens, ``block`` each (default ``BLOCK_TOKENS``, read at call time)."""
    size = block or BLOCK_TOKENS
    return [(a, min(a + size, n_tokens)) for a in range(0, n_tokens, size)]


def task_blocks(n_blocks: int, chains: int) -> list[range]:
    """Aligned runs of 2^h consecutive blocks, one per counting task: the largest h that leaves at least
    ``2 · chains`` tasks (so the threads stay busy to the end), at least one block each."""
    h = 0
    while (n_blocks >> (h + 1)) >= 2 * chains:
        h += 1
    size = 1 << h
    return [range(i, min(i + size, n_blocks)) for i in range(0, n_blocks, size)]


def fold(leaves: Iterator[Any], add: Any) -> Any:
    """The ``tree_reduce(split_every=2)`` of ``leaves`` (an aligned run), computed with a stack.

    A new leaf merges with the top of the stack while both cover as many leaves (``add(left, right)``);
    at the end the stack is merged from the top. For a run starting at a multiple of its power-of-two
    length this is exactly the run's subtree of ``tree_reduce`` (``tests/test_graph_chunked.py``).
    Holds at most log2(leaves) + 1 partials."""
    stack: list[tuple[Any, int]] = []
    for x in leaves:
        size = 1
        while stack and stack[-1][1] == size:
            x, size = add(stack.pop()[0], x), size * 2
        stack.append((x, size))
    while len(stack) > 1:
        right, (left, size) = stack.pop()[0], stack.pop()
        stack.append((add(left, right), size))
    return stack[0][0]


def count_task(
    reader: BlockRows, bounds: list[tuple[int, int]], dom: np.ndarray, n_experts: int, n_domains: int
) -> Partial:
    """The counts of one task's blocks (``bounds``, selected tokens; ``dom`` their domain codes), reduced by
    ``fold``: integer counts into one array, the floating-point partials (a block's own sums) by the tree."""
    n_layers = int(reader.lay.size)
    pairs, ee = max(n_layers - 1, 0), n_experts * n_experts
    weighted = reader.weights is not None
    pair_cnt = np.zeros((pairs, ee), np.int64)
    node_domain = np.zeros((n_domains, n_layers, n_experts), np.int64)
    spare: list[tuple[np.ndarray, np.ndarray]] = []  # float partials free for the next block

    def leaf(a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        w_part, gate = (
            spare.pop() if spare else (np.empty((pairs if weighted else 0, ee)), np.empty((n_layers, n_experts)))
        )
        with reader.read(a, b, weights=True, held=held) as (ids, w, where):
            w_in, table = _gates(w, ids)
            d = np.ascontiguousarray(dom[a - bounds[0][0] : b - bounds[0][0]])
            if not K.block_counts(
                ids, w_in, table, where, d, reader.lay, n_experts, pair_cnt, w_part, node_domain, gate
            ):
                w_part[:] = 0.0  # ids outside 0..E-1: the caller refuses the routing by the node total
        return w_part, gate

    def add(x: tuple[np.ndarray, np.ndarray], y: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        np.add(x[0], y[0], out=x[0])  # in place: the left operand's buffers become the sum
        np.add(x[1], y[1], out=x[1])
        spare.append(y)
        return x

    with ExitStack() as stack:
        held = Held(stack)
        w_sum, gate_sum = fold((leaf(a, b) for a, b in bounds), add)
    return node_domain, gate_sum, pair_cnt, (w_sum if weighted else None)


def _add(*parts: Partial) -> Partial:
    """Sum of partials (a node of the reduction tree), into the first where it may be written."""
    out = [x if x is None or x.flags.writeable else x.copy() for x in parts[0]]
    for p in parts[1:]:
        for i, x in enumerate(p):
            if x is not None:
                out[i] += x  # type: ignore[operator]
    return tuple(out)  # type: ignore[return-value]


def chunked_counts(
    reader: BlockRows, dom: np.ndarray, n_tokens: int, n_experts: int, n_domains: int, block: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """``(node_tokens (L, E), node_gate (L, E), node_domain (D, L, E), pair_cnt (L-1, E²), pair_w (L-1, E²)
    or None without weights)`` of the selection, by the tree over blocks (module docstring)."""
    bounds = block_bounds(n_tokens, block)
    src = dask.delayed(reader, pure=True, traverse=False)
    count = dask.delayed(count_task, pure=True)
    dom = np.asarray(dom, dtype=np.min_scalar_type(max(n_domains - 1, 0)))  # the codes the tasks are sent
    tasks = []
    for run in task_blocks(len(bounds), n_chains()):
        b = [bounds[i] for i in run]
        tasks.append(count(src, b, np.ascontiguousarray(dom[b[0][0] : b[-1][1]]), n_experts, n_domains))
    (total,) = dask.compute(tree_reduce(tasks, _add))
    node_domain, node_gate, pair_cnt, pair_w = total
    return node_domain.sum(axis=0), node_gate, node_domain, pair_cnt, pair_w


def count_dtype(most: int) -> np.dtype[Any]:
    """The smallest unsigned integer type that holds ``most`` (a (token id, node) count is at most the
    token id's frequency in the selection): uint8 for nearly all ids of a few million tokens."""
    for dt in (np.uint8, np.uint16, np.uint32):
        if most <= np.iinfo(dt).max:
            return np.dtype(dt)
    return np.dtype(np.int64)


def node_groups(nodes: np.ndarray, n_distinct: int, chains: int, itemsize: int = 4) -> list[np.ndarray]:
    """``nodes`` cut into consecutive groups: at least ``chains`` (if there are as many nodes) and enough
    that each group's table (distinct tokens × group, ``itemsize`` bytes a cell) stays under ``TOP_TABLE_BYTES``."""
    per_node = max(n_distinct, 1) * itemsize
    n = max(min(chains, nodes.size), -(-nodes.size * per_node // TOP_TABLE_BYTES), 1)
    return [g for g in np.array_split(nodes, n) if g.size]


def top_tokens_task(
    reader: BlockRows, bounds: list[tuple[int, int]], rank: np.ndarray, token_of: np.ndarray, nodes: np.ndarray,
    n_experts: int, n: int, dtype: np.dtype[Any],
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Top ``n`` token ids and counts (N, n) of ``nodes`` (codes ``layer_pos·E + expert``) over every block,
    counted in a (distinct token ids × nodes) table of ``dtype`` (``count_dtype``: no cell can wrap)."""
    lut = np.full(int(reader.lay.size) * n_experts, -1, dtype=np.int32)
    lut[nodes] = np.arange(nodes.size)
    p0, p1 = (int(nodes.min()) // n_experts, int(nodes.max()) // n_experts + 1) if nodes.size else (0, 0)
    table = np.zeros((token_of.size, nodes.size), dtype)
    with ExitStack() as stack:
        held = Held(stack)
        for a, b in bounds:
            with reader.read(a, b, weights=False, held=held) as (ids, _, where):
                K.node_token_counts(ids, where, rank[a:b], reader.lay, p0, p1, lut, n_experts, table)
    top_tok = np.full((nodes.size, n), -1, dtype=np.int64)
    top_cnt = np.zeros((nodes.size, n), dtype=np.int64)
    K.top_of_counts(table, token_of, top_tok, top_cnt)
    return top_tok, top_cnt


def chunked_node_tokens(
    reader: BlockRows, token_ids: np.ndarray, nodes: np.ndarray, n_experts: int, n: int, block: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Each of ``nodes``' ``n`` most frequent token ids and their counts, (N, n) each, as ``top_per_node``."""
    token_of, rank, freq = np.unique(np.asarray(token_ids, dtype=np.int64), return_inverse=True, return_counts=True)
    dtype = count_dtype(int(freq.max(initial=0)))
    bounds = block_bounds(int(token_ids.size), block)
    src = dask.delayed(reader, pure=True, traverse=False)
    ranks = dask.delayed(np.ascontiguousarray(rank, dtype=np.min_scalar_type(token_of.size)), pure=True, traverse=False)
    task = dask.delayed(top_tokens_task, pure=True)
    groups = node_groups(np.asarray(nodes, dtype=np.int64), token_of.size, n_chains(), dtype.itemsize)
    parts = dask.compute(*[task(src, bounds, ranks, token_of, g, n_experts, n, dtype) for g in groups])
    if not parts:
        return np.full((0, n), -1, dtype=np.int64), np.zeros((0, n), dtype=np.int64)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


@dataclass
class ChunkedRoutingCounts(RoutingCounts):
    """``RoutingCounts`` of a selection counted by blocks: edges already summed into dense (L-1, E²)
    arrays, and the selection's rows kept readable (``reader``, ``lazy_tokens``) for the top-token pass."""

    pair_cnt: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((0, 0), dtype=np.int64))
    pair_w: np.ndarray | None = field(repr=False, default=None)  # None when ids only
    reader: BlockRows | None = field(repr=False, default=None)
    lazy_tokens: Any = field(repr=False, default=None)  # dask (T,) token ids of the selected tokens

    def pair_edges(self) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
        """For each layer pair p: ``(p, codes src*E+dst (sorted), counts, weights)`` from the summed blocks."""
        for p in range(self.pair_cnt.shape[0]):
            nz = np.flatnonzero(self.pair_cnt[p])
            cnt = self.pair_cnt[p, nz]
            use_w = self.weighted and self.pair_w is not None
            yield p, nz, cnt, (self.pair_w[p, nz] if use_w else cnt.astype(np.float64))  # type: ignore[index]

    def pair_dense(self) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
        """For each layer pair p: ``(p, counts (E²,), weight sums (E²,) or None if ids only)``, summed blocks."""
        use_w = self.weighted and self.pair_w is not None
        for p in range(self.pair_cnt.shape[0]):
            yield p, self.pair_cnt[p], (self.pair_w[p] if use_w else None)  # type: ignore[index]

    def node_top_ids(self, nodes: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """As ``RoutingCounts.node_top_ids``, by a second pass over the blocks for the ``nodes`` only."""
        assert self.reader is not None
        tokens = np.asarray(self.lazy_tokens)
        return chunked_node_tokens(self.reader, tokens, np.asarray(nodes, dtype=np.int64), self.n_experts, n)


def top_per_node(
    codes: np.ndarray, counts: np.ndarray, shift: int, nodes: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """From distinct codes ``node * shift + token`` and their ``counts``: each of ``nodes``' ``n`` most
    frequent token ids and counts, (N, n) each (``nodes`` distinct), by count descending, ties by the smaller token id;
    unused slots id −1, count 0."""
    group, tok = np.divmod(codes, shift)
    order = np.lexsort((tok, -counts, group))  # by group, then count desc, then token id
    group, tok, counts = group[order], tok[order], counts[order]
    first = np.flatnonzero(np.concatenate([[True], group[1:] != group[:-1]]))  # start of each group's run
    rank = np.arange(group.size) - np.repeat(first, np.diff(np.append(first, group.size)))
    keep = rank < n
    sorter = np.argsort(nodes)
    row = sorter[np.searchsorted(nodes, group[keep], sorter=sorter)]  # nodes are distinct
    top_tok = np.full((nodes.size, n), -1, dtype=np.int64)
    top_cnt = np.zeros((nodes.size, n), dtype=np.int64)
    top_tok[row, rank[keep]] = tok[keep]
    top_cnt[row, rank[keep]] = counts[keep]
    return top_tok, top_cnt
