"""The expert atlas: a static, self-contained site of every expert's page that opens from file://.

Layout of the folder ``write_atlas`` makes::

    index.html           layer x expert grid coloured by a metric (with its key), and a search box
    expert.html          one page template; ``expert.html#L30:E17`` shows that expert
    data/meta.js         the store, selection, model shape, metrics and notes
    data/grid.js         every expert's metric values (the grid)
    data/L030-B00.js ... the pages (``layer_pages``) of a block of BLOCK experts of one layer
    data/search-00.js .. per expert: its top tokens, their lifts, context snippets; SEARCH_SHARD experts a
                         file, loaded one after another on the first search (results grow as they come)
    atlas.json           what built it (the marker that lets a later build replace this folder)

Browsers refuse ``fetch()`` on file://, so data travels as scripts (``<script src>`` calling
``atlasLayer(...)`` etc.): a page loads only its block's shard (about 150 kB for K2's layers). The
folder is built next to its target and renamed into place, so a failed build leaves nothing half-written
and an earlier atlas stays until the new one is complete.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from workbench.viz.atlas_html import EXPERT_HTML, INDEX_HTML

MARKER = "atlas.json"
BLOCK = 32  # experts per page shard
SEARCH_SHARD = 2048  # experts per search shard


def _js(call: str, data: Any) -> str:
    return f"{call}({json.dumps(data, ensure_ascii=False, separators=(',', ':'), allow_nan=False)});\n"


def _search_record(layer: int, page: dict[str, Any]) -> list[Any]:
    """[layer, expert, tokens (lift order, then frequent), their lifts, contexts (token in ±24 characters)]."""
    tokens: list[str] = []
    lifts: list[float | None] = []
    for row in page["lift"][:10] + page["freq"][:6]:
        if row[0] not in tokens:
            tokens.append(row[0])
            lifts.append(row[5])
    snippets = [f"{c[0][-16:]}\u2039{c[1]}\u203a{c[2][:16]}" for c in page["ctx"][:4]]
    return [layer, page["e"], "\u241f".join(tokens), lifts, "\u241f".join(snippets)]


def write_atlas(layers: Iterable[dict[str, Any]], out: str | Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Write the atlas of ``layers`` (``atlas_data.atlas_layers``) into folder ``out``; returns its record.

    ``meta`` holds what the index shows about the store (see ``workbench.cli.atlas``). The caller checks
    ``out`` first (``check_out``); the folder is replaced only once the new atlas is complete.
    """
    t0 = time.perf_counter()
    target = Path(out).absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; an atlas is meant to be shared
    try:
        data = tmp / "data"
        data.mkdir()
        grid: dict[str, list[list[float | None]]] = {}
        layer_ids: list[int] = []
        search: list[list[Any]] = []
        for lp in layers:
            layer_ids.append(int(lp["layer"]))
            for metric, values in lp["grid"].items():
                grid.setdefault(metric, []).append(values)
            for b in range(0, len(lp["experts"]), BLOCK):
                shard = {"layer": lp["layer"], "tokens": lp["tokens"], "block": b // BLOCK,
                         "experts": lp["experts"][b : b + BLOCK]}  # fmt: skip
                (data / f"L{lp['layer']:03d}-B{b // BLOCK:02d}.js").write_text(_js("atlasLayer", shard), "utf-8")
            search.extend(_search_record(lp["layer"], p) for p in lp["experts"] if p["n"])
        shards = [search[i : i + SEARCH_SHARD] for i in range(0, len(search), SEARCH_SHARD)] or [[]]
        for i, part in enumerate(shards):
            (data / f"search-{i:02d}.js").write_text(_js("atlasSearch", part), encoding="utf-8")
        meta = dict(meta, layers=layer_ids, block=BLOCK, search_shards=len(shards),
                    built=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))  # fmt: skip
        (data / "meta.js").write_text(_js("atlasMeta", meta), encoding="utf-8")
        (data / "grid.js").write_text(_js("atlasGrid", grid), encoding="utf-8")
        (tmp / "index.html").write_text(INDEX_HTML, encoding="utf-8")
        (tmp / "expert.html").write_text(EXPERT_HTML, encoding="utf-8")
        size = sum(p.stat().st_size for p in tmp.rglob("*") if p.is_file())
        record = {"atlas": 1, "store": meta.get("store"), "selection": meta.get("selection"), "built": meta["built"],
                  "layers": len(layer_ids), "experts": len(layer_ids) * int(meta.get("n_experts", 0)),
                  "bytes": size, "seconds": round(time.perf_counter() - t0, 2)}  # fmt: skip
        (tmp / MARKER).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        _swap(tmp, target)
        return record
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap(new: Path, target: Path) -> None:
    """Move ``new`` to ``target``; an earlier atlas there goes only once ``new`` is in place."""
    if not target.exists():
        new.rename(target)
        return
    old = target.with_name(f".{target.name}.old-{int(time.time())}")
    target.rename(old)
    new.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def is_atlas(folder: Path) -> bool:
    """Whether ``folder`` holds an atlas this module wrote (its marker file parses)."""
    try:
        return json.loads((folder / MARKER).read_text()).get("atlas") == 1
    except (OSError, ValueError, AttributeError):
        return False
