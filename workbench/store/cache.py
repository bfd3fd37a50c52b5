"""Per-Dataset memo: values derived from an opened store, kept as long as that Dataset object lives.

A Dataset from ``open_store`` is a snapshot of one commit, so anything derived from it (the per-token
tables, the decoded text) stays valid for its lifetime. Pages, searches and the atlas ask for the same
tables again and again; ``cached`` computes each once per Dataset and forgets it when the Dataset is
garbage-collected (a weak reference; Datasets are not hashable, so the key is the object's id).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_MEMO: dict[int, tuple[weakref.ref[Any], dict[str, Any]]] = {}


def cached(obj: Any, name: str, build: Callable[[], T]) -> T:
    """``build()`` once per (``obj``, ``name``); later calls with the same live object return the first result."""
    key = id(obj)
    entry = _MEMO.get(key)
    if entry is None or entry[0]() is not obj:

        def forget(_ref: weakref.ref[Any], key: int = key) -> None:
            _MEMO.pop(key, None)

        entry = (weakref.ref(obj, forget), {})
        _MEMO[key] = entry
    memo = entry[1]
    if name not in memo:
        memo[name] = build()
    return memo[name]  # type: ignore[no-any-return]
