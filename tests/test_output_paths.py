"""Outputs never go half-written, never under /proc, /sys or /dev, never inside a routing store.

``workbench.outputs`` on its own, then the real CLI (``graph --export``, ``compare --out``) against a real
read-only mount (tmpfs remounted ``ro``, as root; skipped where mounting is not permitted), a folder
without write permission (root without CAP_DAC_OVERRIDE, via ``setpriv``), and paths inside a store:
every case is one line on stderr, exit 2, nothing written, existing files and the store byte-identical.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from graph_helpers import write_store

from workbench.cli.app import main
from workbench.outputs import (
    STORE_MARKERS,
    OutputPathError,
    atomic_path,
    check_output_dir,
    check_output_file,
    find_store,
)

WORKBENCH = str(Path(sys.executable).with_name("workbench"))


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` by relative path (the store's complete state)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def listing(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else b"<dir>" for p in sorted(root.rglob("*"))}


def run_cli(*args: object) -> subprocess.CompletedProcess[str]:
    """The installed entry point in a subprocess (start-up is slow here: used for the headline cases)."""
    return subprocess.run([WORKBENCH, *map(str, args)], capture_output=True, text=True, timeout=600)


def run_main(monkeypatch, capsys, *args: object) -> tuple[int, str, str]:
    """``workbench.cli.app.main`` in-process, exactly as the entry point calls it: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["workbench", *map(str, args)])
    with pytest.raises(SystemExit) as exit_:
        main()
    out = capsys.readouterr()
    return int(exit_.value.code or 0), out.out, out.err


def one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], err


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return write_store(tmp_path_factory.mktemp("outputs") / "hand.zarr")


# --------------------------------------------------------------------------------------- the library


def test_find_store_names_the_store_for_every_path_in_it(store, tmp_path):
    for inside in (
        store,
        store / "zarr.json",
        store / "expert_ids",
        store / "expert_ids" / "c" / "0",
        store / "x" / "y.html",
    ):
        assert find_store(inside) == store.resolve(), inside
    assert find_store(tmp_path / "graph.html") is None and find_store(store.parent / "next-to-it.html") is None
    link = tmp_path / "link"
    link.symlink_to(store / "expert_ids")
    assert find_store(link / "x.html") == store.resolve()  # symlinks are followed


def test_store_markers_include_the_writer_lock():
    from workbench.store.lock import LOCK_NAME

    assert LOCK_NAME in STORE_MARKERS  # spelled out in workbench.outputs, which must not import the store


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("/proc/x.html", "refusing to write under /proc"),
        ("/sys/x.html", "refusing to write under /sys"),
        ("/dev/null", "refusing to write under /dev"),
        ("s3://bucket/x.html", "outputs are written to local files"),
        ("{tmp}/missing/x.html", "folder {tmp}/missing does not exist"),
        ("{tmp}", "is a folder; give a file name"),
        ("{store}/zarr.json", "is inside the routing store {store}"),
        ("{store}/new/x.html", "is inside the routing store {store}"),
    ],
)
def test_check_output_file_refusals(target, message, tmp_path, store):
    target, message = (s.format(tmp=tmp_path, store=store.resolve()) for s in (target, message))
    with pytest.raises(OutputPathError, match=re.escape(message)):
        check_output_file(target, flag="--export")


def test_check_output_dir(tmp_path, store):
    assert check_output_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()  # checking creates nothing
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputPathError, match="exists and is not a folder"):
        check_output_dir(tmp_path / "file")
    with pytest.raises(OutputPathError, match="so the folder cannot be created"):
        check_output_dir(tmp_path / "file" / "sub")
    with pytest.raises(OutputPathError, match="is the routing store"):
        check_output_dir(store, flag="--out")
    with pytest.raises(OutputPathError, match="refusing to write under /proc"):
        check_output_dir("/proc/report", flag="--out")


def test_atomic_path_replaces_only_on_success(tmp_path):
    target = tmp_path / "g.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("writer failed midway")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["g.json"]
    with pytest.raises(OutputPathError, match=r"cannot write .*g\.json: No space left on device"), atomic_path(target):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["g.json"]
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    umask = os.umask(0)
    os.umask(umask)
    assert target.read_text() == "new" and target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_python_api_refuses_to_write_into_a_store(store):
    import networkx as nx
    from workbench.viz.export import export_graph

    before = tree_digest(store)
    g = nx.DiGraph()
    g.add_node("L1:E0", layer=1, expert=0)
    for name in ("zarr.json", "g.graphml", "g.html"):
        with pytest.raises(OutputPathError, match="inside the routing store"):
            export_graph(g, store / name)
    assert tree_digest(store) == before


# ------------------------------------------------------------------------------- the CLI, in a store


def test_graph_export_onto_the_store_commit_file_is_refused_before_any_work(store):
    before = tree_digest(store)
    res = run_cli("graph", store, "--export", store / "zarr.json")
    one_line_error(res.returncode, res.stderr, f"is inside the routing store {store.resolve()}")
    assert res.stdout == ""  # refused before counting: no graph summary was printed
    assert tree_digest(store) == before


@pytest.mark.parametrize(
    "args",
    [
        ["graph", "{s}", "--export", "{s}/expert_ids/x.html"],
        ["graph", "{s}", "--export", "ok.graphml", "--export", "{s}/new/x.graphml"],  # one bad target stops all
        ["graph", "{s}", "--export", "{s}/sequence/zarr.json", "--format", "cytoscape"],
        ["compare", "{s}", "--out", "{s}"],
        ["compare", "{s}", "--out", "{s}/report"],
        ["compare", "{s}", "--out", "{s}/expert_ids"],
    ],
)
def test_outputs_inside_a_store_are_refused(args, store, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    before = tree_digest(store)
    code, out, err = run_main(monkeypatch, capsys, *(a.format(s=store) for a in args))
    one_line_error(code, err, "routing store")
    assert out == "" and list(tmp_path.iterdir()) == []
    assert tree_digest(store) == before


# ------------------------------------------------------------------------- the CLI, read-only targets


@pytest.fixture
def readonly_dir(tmp_path) -> Iterator[Path]:
    """A real read-only mount (tmpfs, remounted ro) holding an old export and an old report folder."""
    mnt = tmp_path / f"ro-{uuid.uuid4().hex[:8]}"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a read-only mount needs root and mount(8)")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {made.stderr.strip()}")
    try:
        (mnt / "g.html").write_text("old export")
        (mnt / "report").mkdir()
        (mnt / "report" / "report.html").write_text("old report")
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True, capture_output=True)
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_read_only_mount_export_and_report(readonly_dir, store, monkeypatch, capsys):
    before = listing(readonly_dir)
    res = run_cli("graph", store, "--export", readonly_dir / "g.html")  # the headline case, real process
    one_line_error(res.returncode, res.stderr, "is on a read-only file system")
    cases = [
        ["graph", store, "--export", readonly_dir / "new.graphml"],
        ["compare", store, "--out", readonly_dir / "report"],
        ["compare", store, "--out", readonly_dir / "new" / "deeper"],
    ]
    for args in cases:
        code, out, err = run_main(monkeypatch, capsys, *args)
        one_line_error(code, err, "is on a read-only file system")
        assert out == ""
    assert listing(readonly_dir) == before


def test_folder_without_write_permission(store, tmp_path):
    """Root ignores mode bits; without CAP_DAC_OVERRIDE (setpriv) it is held to them like any user."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv(1) to drop CAP_DAC_OVERRIDE")
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "g.svg").write_text("old")
    locked.chmod(0o555)
    drop = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]
    for args in (["graph", store, "--export", locked / "g.svg"], ["compare", store, "--out", locked / "report"]):
        res = subprocess.run([*drop, WORKBENCH, *map(str, args)], capture_output=True, text=True, timeout=600)
        one_line_error(res.returncode, res.stderr, "is not writable (permission denied)")
    assert listing(locked) == {"g.svg": b"old"}


# ------------------------------------------------------------------------ the CLI, other bad targets


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("/proc/x.html", "--export /proc/x.html: refusing to write under /proc"),
        ("/dev/null", "--export /dev/null: refusing to write under /dev"),
        ("missing/x.html", "--export missing/x.html: folder missing does not exist"),
        ("x.docx", "cannot export 'x.docx': unsupported file type"),
        ("https://example.org/x.html", "outputs are written to local files"),
    ],
)
def test_graph_bad_export_targets(target, message, store, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "keep.html").write_text("old")
    code, out, err = run_main(monkeypatch, capsys, "graph", store, "--export", "keep.html", "--export", target)
    one_line_error(code, err, message)
    assert out == "" and listing(tmp_path) == {"keep.html": b"old"}  # nothing written, the old file intact


@pytest.mark.parametrize(
    ("target", "message"),
    [("/proc/report", "--out /proc/report: refusing to write under /proc"), ("f.txt", "exists and is not a folder")],
)
def test_compare_bad_out_targets(target, message, store, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "f.txt").write_text("old")
    code, out, err = run_main(monkeypatch, capsys, "compare", store, "--out", target)
    one_line_error(code, err, message)
    assert out == "" and listing(tmp_path) == {"f.txt": b"old"}
