"""The fixed reduction tree over dask partial results, shared by analysis and reasoning graphs.

Both map-reduce passes of the workbench (``workbench.analysis.engine``: per-chunk metric counts;
``workbench.graph.chunked``: per-block graph counts) reduce their partial results here. The tree
depends only on the number of parts and ``split_every``, never on the scheduler or on which task
finishes first, so the threaded scheduler and a ``dask.distributed`` cluster add floating-point
partials in the same order and agree to the last bit (``tests/test_distributed_analysis.py``).

This module imports nothing from the workbench.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import dask
from dask.delayed import Delayed


def tree_reduce(parts: Sequence[Delayed], combine: Callable[..., Any], split_every: int = 2) -> Delayed:
    """Reduce delayed ``parts`` to one by ``combine``, level by level over groups of consecutive parts.

    Each level replaces every run of ``split_every`` consecutive parts by one task
    ``combine(*run)``; a last run of one part is carried up unchanged. ``combine`` must accept
    2 to ``split_every`` arguments and be associative. Memory per task: ``split_every`` partials plus
    the result, so large partials (graph blocks) use 2 and small ones (metric counts) more.

    Examples
    --------
    >>> import dask
    >>> parts = [dask.delayed(i) for i in range(5)]
    >>> dask.compute(tree_reduce(parts, lambda *xs: sum(xs)))[0]
    10
    """
    if not parts:
        raise ValueError("tree_reduce needs at least one part")
    if split_every < 2:
        raise ValueError(f"split_every must be >= 2, got {split_every}")
    join = dask.delayed(combine, pure=True)
    level = list(parts)
    while len(level) > 1:
        level = [
            join(*level[i : i + split_every]) if len(level[i : i + split_every]) > 1 else level[i]
            for i in range(0, len(level), split_every)
        ]
    return level[0]
