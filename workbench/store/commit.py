"""The commit protocol of a routing store: what is committed, how a commit happens, how a tail is repaired.

A routing store is appended to while it is being read, and a writer may be killed at any instant. The
*commit point* is the root ``zarr.json``: it holds the group attributes (``committed`` counts) and zarr's
inline consolidated metadata, i.e. the shape of every array as of the last commit. A commit

1. grows the arrays (their own ``<name>/zarr.json``) and writes the new rows' chunks, each key through a
   write-to-temporary-then-rename (zarr's LocalStore does this; ``location.py`` adds it for local fsspec
   URLs), so the tail chunk that also holds committed rows is replaced whole or not at all;
2. writes the root ``zarr.json`` last, again by rename.

Readers (``open_store`` and plain ``xarray.open_zarr``, which prefers consolidated metadata) take every
shape from the root, so rows written after the last commit are invisible: a kill between steps 1 and 2
leaves the previous commit intact. The next writer calls ``repair``, which puts each array's own metadata
back to its committed shape and deletes chunks and ``*.partial`` files that lie wholly past it.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import zarr
from zarr.abc.store import Store
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from workbench.errors import StoreError
from workbench.store import schema as S
from workbench.store.location import StoreLocation, resolve

ROOT_KEY = "zarr.json"


def read_json(store: Store, key: str) -> dict[str, Any] | None:
    """The JSON document at ``key`` or None when it does not exist."""
    buf = sync(store.get(key, prototype=default_buffer_prototype()))
    if buf is None:
        return None
    try:
        doc = json.loads(buf.to_bytes())
    except ValueError as err:
        raise StoreError(f"{key} is not valid JSON ({err}); this is not a routing store") from None
    return doc if isinstance(doc, dict) else None


def write_json(store: Store, key: str, doc: dict[str, Any], *, indent: int | None = None) -> None:
    """Write ``doc`` at ``key`` (by rename, see module docstring); ``indent`` None writes compact JSON."""
    blob = json.dumps(doc, indent=indent, allow_nan=True, default=str).encode()
    sync(store.set(key, default_buffer_prototype().buffer.from_bytes(blob)))


def committed_arrays(root: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Array metadata documents of the last commit, by array name."""
    meta = root.get("consolidated_metadata") or {}
    return dict(meta.get("metadata") or {})


def is_committed_store(root: dict[str, Any] | None) -> bool:
    attrs = (root or {}).get("attributes") or {}
    return bool(root) and "committed" in attrs and "schema_version" in attrs and bool(committed_arrays(root or {}))


def check_root(root: dict[str, Any] | None, where: str) -> dict[str, Any]:
    """The attributes of a committed routing store, or StoreError with one line saying what is wrong."""
    if root is None:
        raise StoreError(f"{where} is not a routing store (no zarr.json); record one with `workbench record`")
    if root.get("node_type") != "group" or root.get("zarr_format") != 3:
        raise StoreError(f"{where} is not a routing store (not a zarr v3 group)")
    attrs = root.get("attributes") or {}
    version = attrs.get("schema_version")
    if version is None:
        raise StoreError(f"{where} is a zarr group but not a routing store (no schema_version attribute)")
    if version not in S.READABLE_VERSIONS:
        raise StoreError(
            f"{where} has routing-store schema version {version!r}; this workbench reads versions "
            f"{', '.join(map(str, S.READABLE_VERSIONS))}: install the workbench version that wrote it, or record "
            "the store again"
        )
    if not is_committed_store(root):
        raise StoreError(f"{where} was never committed (its creation was interrupted); delete it and record again")
    return dict(attrs)


class StoreRoot(NamedTuple):
    """A committed store opened at its root: where it is, its root ``zarr.json`` and that document's attributes."""

    loc: StoreLocation
    root: dict[str, Any]
    attrs: dict[str, Any]


def read_root(loc: StoreLocation) -> dict[str, Any] | None:
    """The root ``zarr.json`` of ``loc`` (None when there is none), or StoreError when the path cannot hold one.

    A path that is a file, or a root document the operating system refuses to read (permission denied, a
    path component that is not a directory), is one line saying so rather than an OSError traceback.
    """
    if not loc.is_dir_or_missing():
        raise StoreError(f"{loc.where} is a file, not a routing store (a routing store is a *.zarr directory)")
    try:
        return read_json(loc.store, ROOT_KEY)
    except (NotADirectoryError, IsADirectoryError, PermissionError) as err:
        raise StoreError(f"{loc.where} cannot be read as a routing store ({err.strerror})") from None


def open_root(
    path_or_url: str | Path, storage_options: dict[str, Any] | None = None, *, read_only: bool = True
) -> StoreRoot:
    """Resolve a store and read its committed root: the first step of every reader (and of the index build).

    Raises
    ------
    StoreError
        The path does not exist, is a file or cannot be read, or is not a committed routing store of a
        schema version this workbench reads (``check_root``).
    """
    loc = resolve(path_or_url, storage_options, read_only=read_only)
    if not loc.exists():
        raise StoreError(f"no routing store at {loc.where}: the path does not exist")
    root = read_root(loc)
    attrs = check_root(root, loc.where)
    assert root is not None  # check_root refuses None
    return StoreRoot(loc, root, attrs)


def array_document(arr: zarr.Array) -> dict[str, Any]:
    """The array's metadata exactly as zarr serialises it to ``<name>/zarr.json``."""
    buf = arr.metadata.to_buffer_dict(default_buffer_prototype())[ROOT_KEY]
    return dict(json.loads(buf.to_bytes()))


def commit(store: Store, attrs: dict[str, Any], arrays: dict[str, zarr.Array]) -> None:
    """Write the root ``zarr.json`` (attributes + consolidated metadata of ``arrays``): the commit point."""
    root = {
        "attributes": attrs,
        "zarr_format": 3,
        "consolidated_metadata": {
            "kind": "inline",
            "must_understand": False,
            "metadata": {name: array_document(arr) for name, arr in sorted(arrays.items())},
        },
        "node_type": "group",
    }
    write_json(store, ROOT_KEY, root)  # compact: it holds the tokenizer vocabulary


async def _list(store: Store, prefix: str) -> list[str]:
    return [key async for key in store.list_prefix(prefix)]


def repair(store: Store, root: dict[str, Any]) -> list[str]:
    """Undo what a killed or failed writer left past the last commit. Returns the keys it changed.

    Each array's own ``zarr.json`` goes back to its committed document; chunks whose first row lies at or
    past the committed length along the first dim, and leftover ``*.partial`` temporaries, are deleted.
    """
    changed: list[str] = []
    keys = sync(_list(store, ""))
    for key in keys:
        if key.endswith(".partial"):
            sync(store.delete(key))
            changed.append(key)
    for name, doc in committed_arrays(root).items():
        key = f"{name}/{ROOT_KEY}"
        if read_json(store, key) != doc:
            write_json(store, key, doc, indent=zarr.config.get("json_indent"))  # byte-identical to zarr's own
            changed.append(key)
        length = int(doc["shape"][0])
        chunk0 = int(doc["chunk_grid"]["configuration"]["chunk_shape"][0])
        for ck in keys:
            if not ck.startswith(f"{name}/c/") or ck.endswith(".partial"):
                continue
            first = int(ck[len(name) + 3 :].split("/")[0]) * chunk0
            if first >= length:
                sync(store.delete(ck))
                changed.append(ck)
    return changed


def open_arrays(store: Store, names: list[str]) -> dict[str, zarr.Array]:
    """The arrays a writer appends to, configured to write every chunk (``codecs.ARRAY_CONFIG``)."""
    from workbench.store.codecs import ARRAY_CONFIG

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {name: zarr.open_array(store, path=name, zarr_format=3).with_config(ARRAY_CONFIG) for name in names}
