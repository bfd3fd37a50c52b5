"""Offline text sources for the mini K2 corpus: Python standard library source and English prose.

- code: the ``.py`` files of the running interpreter's standard library (tests, IDLE, lib2to3 and
  site-packages excluded), cut into chunks at top-level ``def``/``class`` boundaries.
- language: the Debian ``fortunes`` / ``fortunes-min`` collections (quotations, prose, jokes; ASCII art
  excluded) and the definitions and literary quotations of GCIDE (Debian ``dict-gcide``, the GNU
  Collaborative International Dictionary of English, from Webster's 1913).

The Debian packages are installed with apt when missing and the caller allows it; otherwise
:class:`MissingSourceError` names the package and the command that installs it.
"""

from __future__ import annotations

import gzip
import re
import shutil
import subprocess
import sysconfig
from collections.abc import Iterator
from pathlib import Path

from workbench.errors import WorkbenchError

FORTUNE_DIR = Path("/usr/share/games/fortunes")
GCIDE_DICT = Path("/usr/share/dictd/gcide.dict.dz")
# Fortune files that are pictures or non-English rather than prose.
FORTUNE_SKIP = {"art", "ascii-art", "translate-me"}
STDLIB_SKIP = {"test", "tests", "idlelib", "lib2to3", "site-packages", "dist-packages", "turtledemo", "ensurepip"}


class MissingSourceError(WorkbenchError):
    """A corpus source (a Debian text package) is absent and could not be installed."""


def ensure_debian_packages(install: bool = True) -> None:
    """Make sure ``fortunes`` and ``dict-gcide`` are present, installing them with apt if allowed."""
    missing = []
    if not (FORTUNE_DIR / "fortunes").exists():
        missing += ["fortunes", "fortunes-min"]
    if not GCIDE_DICT.exists():
        missing.append("dict-gcide")
    if not missing:
        return
    if install and shutil.which("apt-get"):
        proc = subprocess.run(
            ["apt-get", "install", "-y", "--no-install-recommends", *missing],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode == 0 and (FORTUNE_DIR / "fortunes").exists() and GCIDE_DICT.exists():
            return
    raise MissingSourceError(
        f"the language corpus needs the Debian packages {', '.join(missing)}; "
        f"install them with `sudo apt-get install -y {' '.join(missing)}` and rerun"
    )


def fortunes() -> Iterator[tuple[str, str]]:
    """Yield ``(key, text)`` per fortune; ``key`` = ``fortune:<file>:<index>`` (stable across runs)."""
    for path in sorted(FORTUNE_DIR.iterdir()):
        if path.suffix or path.name in FORTUNE_SKIP or not path.is_file():
            continue
        raw = path.read_text(encoding="utf-8", errors="replace")
        for i, chunk in enumerate(raw.split("\n%\n")):
            text = chunk.strip("%\n ")
            if len(text) < 40:
                continue
            yield f"fortune:{path.name}:{i}", text


_ENTRY = re.compile(r"^([A-Z][^\n\\]*?) \\([^\n]*?\\)", re.M)
_MARKUP = re.compile(r"[{}?]|\[[^\]]*\]")


def gcide_entries(limit: int | None = None) -> Iterator[tuple[str, str]]:
    """Yield ``(key, text)`` per GCIDE headword: the definitions with line wraps joined.

    The dictionary markup (``{...}`` cross references, ``[...]`` etymologies and source tags, ``?`` for
    Greek, pronunciation between backslashes) is removed so the text reads as plain English.
    """
    with gzip.open(GCIDE_DICT, "rt", encoding="utf-8", errors="replace") as fh:
        raw = fh.read()
    starts = [m.start() for m in _ENTRY.finditer(raw)]
    n = 0
    for a, b in zip(starts, [*starts[1:], len(raw)], strict=True):
        entry = raw[a:b]
        head = entry.split("\\", 1)[0].strip()
        body = entry.split("\\", 2)[-1] if entry.count("\\") >= 2 else entry
        body = _MARKUP.sub("", body)
        paras = [" ".join(p.split()) for p in re.split(r"\n\s*\n", body)]
        paras = [p for p in paras if len(p) > 20]
        if not paras:
            continue
        yield f"gcide:{head}:{a}", f"{head}: " + "\n".join(paras)
        n += 1
        if limit is not None and n >= limit:
            return


def stdlib_files() -> list[Path]:
    """The standard library's ``.py`` files, sorted, without tests and bundled tools."""
    root = Path(sysconfig.get_paths()["stdlib"])
    out = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if any(part in STDLIB_SKIP for part in rel.parts):
            continue
        out.append(path)
    if not out:
        raise MissingSourceError(f"no Python standard library source found under {root}; the code corpus needs it")
    return out


def code_chunks(max_chars: int = 2400) -> Iterator[tuple[str, str]]:
    """Yield ``(key, text)`` chunks of standard library source cut at top-level definitions.

    ``key`` = ``stdlib:<relative path>:<chunk index>``; the held-out split hashes the file part so a
    file lands wholly in one split.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in stdlib_files():
        try:
            src = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        rel = str(path.relative_to(root))
        blocks = re.split(r"\n(?=(?:def |class |@|if __name__))", src)
        buf, i = "", 0
        for block in blocks:
            if buf and len(buf) + len(block) > max_chars:
                yield f"stdlib:{rel}:{i}", buf.strip("\n")
                buf, i = "", i + 1
            buf += block + "\n"
            while len(buf) > 2 * max_chars:  # one very long definition: cut at a line boundary
                cut = buf.rfind("\n", 0, max_chars) + 1 or max_chars
                yield f"stdlib:{rel}:{i}", buf[:cut].strip("\n")
                buf, i = buf[cut:], i + 1
        if buf.strip():
            yield f"stdlib:{rel}:{i}", buf.strip("\n")
