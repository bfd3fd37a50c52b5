"""Where the workbench may write its outputs (exports, reports), and writing them so nothing is half-written.

Every file the workbench writes for a user (``graph --export``, ``compare --out``, the demo's graphs) goes
through this module:

- ``check_output_file`` / ``check_output_dir`` refuse, before any work, a target that cannot or must not be
  written: a URL (outputs are local files), a place under ``/proc``, ``/sys`` or ``/dev`` (replacing a
  device node or a kernel file is never an export), a missing folder, a folder that refuses new files
  (read-only mount, no permission), and anything inside a routing store or equal to one. A store is
  recognised by its marker files (``zarr.json``, zarr v2's ``.zgroup``/``.zarray``, the workbench's
  writer lock) in the target or any folder above it, so an export can never replace a store's commit
  file or drop a file among its chunks.
- ``atomic_path`` hands out a temporary file next to the target and renames it over the target only when
  the block succeeds, so a failed write leaves the old file (or nothing) behind, never half a file.

Both raise ``OutputPathError`` (a ``WorkbenchError``: the CLI prints one line and exits 2). This module
imports nothing of the workbench but its errors, so every layer may use it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from workbench.errors import WorkbenchError

# Files that mark a folder as a (zarr) routing store. ".workbench-writer.lock" is
# workbench.store.lock.LOCK_NAME, spelled out so this bottom-layer module does not import the store.
STORE_MARKERS = ("zarr.json", ".zgroup", ".zarray", ".workbench-writer.lock")
SYSTEM_TREES = (Path("/proc"), Path("/sys"), Path("/dev"))


class OutputPathError(WorkbenchError):
    """An output path cannot or must not be written (read-only, missing folder, inside a store, ...)."""


def _resolved(path: str | Path) -> Path:
    """``path`` made absolute with symlinks resolved as far as they exist (the rest kept as written)."""
    return Path(os.path.realpath(os.path.abspath(os.fspath(path))))


def find_store(path: str | Path) -> Path | None:
    """The store folder that ``path`` is, or lies inside; None if neither.

    Walks from ``path`` itself up to the filesystem root and returns the outermost folder holding a store
    marker (``STORE_MARKERS``), so ``S/expert_ids/c/0`` names ``S``, not the array folder.
    """
    found = None
    for folder in (p := _resolved(path), *p.parents):
        if folder.is_dir() and any((folder / m).exists() for m in STORE_MARKERS):
            found = folder
    return found


def _check_common(path: str | Path, flag: str) -> Path:
    text = os.fspath(path)
    if "://" in text:
        raise OutputPathError(f"{flag} {text}: outputs are written to local files; give a local path")
    if not text.strip():
        raise OutputPathError(f"{flag} is empty; give a file or folder to write")
    real = _resolved(path)
    for tree in SYSTEM_TREES:
        if real == tree or tree in real.parents:
            raise OutputPathError(f"{flag} {text}: refusing to write under {tree}; choose a normal folder")
    store = find_store(real)
    if store is not None:
        where = "is the routing store" if store == real else f"is inside the routing store {store}"
        raise OutputPathError(f"{flag} {text} {where}; write outputs outside any store folder")
    return real


def _check_writable_folder(folder: Path, shown: str, flag: str, *, probe: bool) -> None:
    if not os.access(folder, os.W_OK | os.X_OK):
        try:  # access() fails on a read-only mount even for root; say which of the two it is
            ro = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
        except OSError:
            ro = False
        why = "is on a read-only file system" if ro else "is not writable (permission denied)"
        raise OutputPathError(f"{flag} {shown}: folder {folder} {why}; choose a writable folder")
    if probe:  # root passes access() on mode bits; only creating a file says for sure
        try:
            fd, tmp = tempfile.mkstemp(prefix=".workbench-probe-", dir=folder)
        except OSError as err:
            raise OutputPathError(
                f"{flag} {shown}: cannot create files in {folder} ({err.strerror}); choose a writable folder"
            ) from None
        os.close(fd)
        os.unlink(tmp)


def check_output_file(path: str | Path, *, flag: str = "output", probe: bool = True) -> Path:
    """Check that the file ``path`` may be written (module docstring); returns it as given, as a Path.

    Parameters
    ----------
    path : str or Path
        The file to write; its folder must exist. An existing file is replaced (atomically) later.
    flag : str
        How the caller names this path in messages (``--export``, ``path``).
    probe : bool
        Also create and remove a temporary file in the folder: the only sure test of writability for root
        and for file systems whose permissions ``access`` does not see.
    """
    real = _check_common(path, flag)
    shown = os.fspath(path)
    if real.is_dir():
        raise OutputPathError(f"{flag} {shown} is a folder; give a file name")
    folder = real.parent
    if not folder.is_dir():
        raise OutputPathError(f"{flag} {shown}: folder {Path(shown).parent} does not exist; create it first")
    _check_writable_folder(folder, shown, flag, probe=probe)
    return Path(path)


def check_output_dir(path: str | Path, *, flag: str = "output", probe: bool = True) -> Path:
    """Check that files may be written into the folder ``path`` (created later, with its parents, if missing)."""
    real = _check_common(path, flag)
    shown = os.fspath(path)
    if real.exists() and not real.is_dir():
        raise OutputPathError(f"{flag} {shown} exists and is not a folder; give a folder")
    existing = real
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise OutputPathError(f"{flag} {shown}: {existing} is a file, so the folder cannot be created")
    _check_writable_folder(existing, shown, flag, probe=probe)
    return Path(path)


@contextlib.contextmanager
def atomic_path(path: str | Path, *, flag: str = "output") -> Iterator[Path]:
    """A temporary file next to ``path`` (same suffix); renamed onto ``path`` only if the block succeeds.

    The target is checked first (``check_output_file`` without the probe: creating the temporary file is
    the probe). Any ``OSError`` while creating, writing or renaming becomes one ``OutputPathError`` line;
    the temporary file is always removed, and an existing ``path`` stays as it was unless the rename ran.
    """
    target = check_output_file(path, flag=flag, probe=False)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=target.suffix or ".tmp", dir=target.parent)
    except OSError as err:
        raise OutputPathError(f"cannot write {target}: {err.strerror}") from None
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the permissions open() would
        yield Path(tmp)
        os.replace(tmp, target)
    except OSError as err:
        raise OutputPathError(f"cannot write {target}: {err.strerror or err}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
