"""Open, append to and check routing stores: the store's public I/O (``workbench.open_store`` and friends).

- ``open_store``: a dask-backed Dataset of the committed state; every chunk it reads is checked
  (``integrity.py``), so a damaged store raises ``StoreDamagedError`` instead of answering with fill values.
  ``workbench.open_store`` is this function with the ``ds.routing`` accessor registered (workbench/accessor.py,
  above the analysis it forwards to).
- ``StoreWriter``: appends sequences from a background thread, one atomic commit at a time (writer.py).
- ``check_appendable``: the writer's refusal checks without opening a writer, so a CLI fails before it
  loads a model.

The commit protocol (what makes a SIGKILL during a write harmless) is described in commit.py.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import xarray as xr

from workbench.errors import StoreError
from workbench.routing_config import RoutingConfig
from workbench.store import schema as S
from workbench.store.commit import open_root, read_root
from workbench.store.integrity import CheckedStore
from workbench.store.location import resolve
from workbench.store.prepare import check_writable
from workbench.store.rows import ARRAYS_KEY
from workbench.store.writer import StoreWriter

__all__ = ["StoreWriter", "check_appendable", "open_store", "read_attrs", "store_size"]


def read_attrs(path_or_url: str | Path, *, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The attributes of a committed store (model, tokenizer, committed counts, ...) without opening arrays."""
    return open_root(path_or_url, storage_options).attrs


def open_store(
    path_or_url: str | Path, *, chunks: Any = "auto", storage_options: dict[str, Any] | None = None
) -> xr.Dataset:
    """Open a routing store as a lazy (dask-backed) Dataset of its last commit.

    Parameters
    ----------
    path_or_url : str or Path
        A store directory or fsspec URL.
    chunks : "auto", dict or None
        Passed to ``xarray.open_zarr``; ``None`` gives numpy-backed lazy arrays instead of dask.
    storage_options : dict, optional
        fsspec options for URLs (credentials, endpoints).

    Returns
    -------
    xr.Dataset
        Dims token, layer, k, (expert), sequence, span; ``ds.routing`` once ``workbench.accessor`` is imported.

    Raises
    ------
    StoreError
        The path does not exist or is not a routing store, or its schema version is unknown.
    StoreDamagedError
        At open (the sequence and layer coordinates are read then) or from any later read, lazy ones
        included: a chunk of the last commit is missing, truncated or fails its checksum.
    """
    loc, root, _ = open_root(path_or_url, storage_options)
    checked = CheckedStore(loc.store, root, loc.where)  # every chunk read is checked (integrity.py)
    if isinstance(chunks, str) and chunks == "auto":
        # dask cannot size string (object) blocks, so the small per-sequence/per-span tables stay one block
        chunks = {S.TOKEN: "auto", S.SEQUENCE: -1, S.SPAN: -1}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr warns that consolidated metadata is not in the v3 spec yet
        ds = xr.open_zarr(checked, consolidated=True, chunks=chunks, zarr_format=3)
    ds.encoding["routing_store"] = checked  # how readers find derived data kept in the store (layer_index.py)
    # The dask name of each lazy array as opened: ``rows.token_rows`` reads a variable straight from its
    # chunks only while it is still this array (not rows selected, rechunked or replaced).
    ds.encoding[ARRAYS_KEY] = {name: v.data.name for name, v in ds.variables.items() if hasattr(v.data, "dask")}
    return ds


def check_appendable(
    path_or_url: str | Path, config: RoutingConfig, storage_options: dict[str, Any] | None = None
) -> None:
    """Raise StoreError if a StoreWriter for ``config`` would refuse this store. A missing path is fine."""
    loc = resolve(path_or_url, storage_options, read_only=True)
    if not loc.exists():
        return
    if not loc.is_dir_or_missing():
        raise StoreError(f"{loc.where} exists and is not a directory; a routing store is a directory (*.zarr)")
    read_root(loc)  # a clear error for unreadable paths
    check_writable(loc, config, None, capture=None, with_scores=False)
    loc.writer_lock().probe()


def store_size(path_or_url: str | Path, storage_options: dict[str, Any] | None = None) -> int:
    """Bytes on disk (or in the object store) of everything under the store."""
    loc = resolve(path_or_url, storage_options, read_only=True)
    if loc.local_dir is not None:
        total = 0
        for dirpath, _, files in os.walk(loc.local_dir):
            total += sum(os.path.getsize(os.path.join(dirpath, f)) for f in files)
        return total
    return int(loc.fs.du(loc.root, total=True))
