"""Opening a store's root (``commit.open_root``), shared by every reader and the index build: a path the
operating system will not read as a store is one ``StoreError`` line (CLI: ``error: ...``, exit 2), never an
OSError traceback, and nothing is written.

The two real conditions: a regular file where the store directory should be, and a root ``zarr.json`` that
cannot be read (permission denied). Root reads any file, so the second runs its commands in a child process
whose capability bounding set lacks CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (``setpriv``), where a mode-000
file is unreadable even to its owner, as it is for any other user.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from graph_helpers import write_store

from workbench.errors import StoreError
from workbench.store.io import open_store, read_attrs
from workbench.store.layer_index import build_index
from workbench.store.verify import verify_store

WORKBENCH = str(Path(sys.executable).with_name("workbench"))
OPENERS: dict[str, Callable[[Path], Any]] = {
    "read_attrs": read_attrs,
    "open_store": open_store,
    "verify_store": verify_store,
    "build_index": build_index,
}


def tree(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` with its bytes (``path`` itself when it is a file)."""
    if path.is_file():
        return {"": path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def one_error_line(r: subprocess.CompletedProcess[str], *needles: str) -> None:
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.stderr, r.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def intact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_store(tmp_path_factory.mktemp("root") / "hand.zarr")


@pytest.mark.parametrize("name", OPENERS)
def test_a_file_where_the_store_should_be(tmp_path: Path, name: str) -> None:
    path = tmp_path / "f.zarr"
    path.write_text("not a store\n")
    with pytest.raises(StoreError, match=r"f\.zarr is a file, not a routing store \(a routing store is a \*\.zarr"):
        OPENERS[name](path)
    assert path.read_text() == "not a store\n"


@pytest.mark.parametrize("command", ["verify", "index", "info"])
def test_a_file_where_the_store_should_be_cli(tmp_path: Path, command: str) -> None:
    path = tmp_path / "f.zarr"
    path.write_text("not a store\n")
    r = subprocess.run([WORKBENCH, command, str(path)], capture_output=True, text=True, timeout=600)
    one_error_line(r, str(path), "is a file, not a routing store")
    assert path.read_text() == "not a store\n"


def _unprivileged() -> list[str]:
    """The command prefix that runs a child without root's permission to read any file ([] when not root)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: cannot make a file unreadable")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search"]


@pytest.fixture
def unreadable(intact: Path, tmp_path: Path) -> Iterator[tuple[Path, list[str], dict[str, bytes]]]:
    """A copy of the intact store whose root zarr.json is mode 000, the prefix that makes it unreadable,
    and the store's bytes before (read while it was still readable)."""
    store = tmp_path / "locked.zarr"
    shutil.copytree(intact, store)
    before = tree(store)
    (store / "zarr.json").chmod(0)
    prefix = _unprivileged()
    probe = subprocess.run([*prefix, sys.executable, "-c", f"open({str(store / 'zarr.json')!r}).read()"],
                           capture_output=True, text=True, timeout=600)  # fmt: skip
    if probe.returncode == 0:
        pytest.skip("this process can read a mode-000 file (capabilities cannot be dropped here)")
    assert "PermissionError" in probe.stderr, probe.stderr
    yield store, prefix, before
    (store / "zarr.json").chmod(0o644)


def test_an_unreadable_root_is_one_store_error_from_every_opener(unreadable) -> None:
    store, prefix, before = unreadable
    code = (
        "import json, sys\n"
        "from workbench.errors import StoreError\n"
        "from workbench.store.io import open_store, read_attrs\n"
        "from workbench.store.layer_index import build_index\n"
        "from workbench.store.verify import verify_store\n"
        "out = {}\n"
        "for f in (read_attrs, open_store, verify_store, build_index):\n"
        "    try:\n"
        "        f(sys.argv[1])\n"
        "        out[f.__name__] = 'no error'\n"
        "    except StoreError as err:\n"
        "        out[f.__name__] = str(err)\n"
        "print(json.dumps(out))\n"
    )
    r = subprocess.run([*prefix, sys.executable, "-c", code, str(store)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    messages = json.loads(r.stdout)
    assert set(messages) == set(OPENERS)
    for name, message in messages.items():
        assert message == f"{store} cannot be read as a routing store (Permission denied)", (name, message)
    (store / "zarr.json").chmod(0o644)
    assert tree(store) == before  # the index build wrote nothing, not even its lock


@pytest.mark.parametrize("command", ["verify", "index"])
def test_an_unreadable_root_cli(unreadable, command: str) -> None:
    store, prefix, before = unreadable
    r = subprocess.run([*prefix, WORKBENCH, command, str(store)], capture_output=True, text=True, timeout=600)
    one_error_line(r, f"{store} cannot be read as a routing store (Permission denied)")
    (store / "zarr.json").chmod(0o644)
    assert tree(store) == before
