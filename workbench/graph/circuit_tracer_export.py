"""Write a reasoning graph as a circuit-tracer data folder, the one its local server serves.

``circuit_tracer.frontend.local_server.serve(data_dir)`` answers the frontend's requests
``/graph_data/SLUG.json`` and ``/data/graph-metadata.json`` (and any ``/data/PATH``) from files directly
in ``data_dir``; circuit-tracer's own ``create_graph_files`` writes ``SLUG.json`` and
``graph-metadata.json`` there, adding each graph to the metadata's list (the frontend's menu). This
module writes the same folder:

    FOLDER/graph-metadata.json        {"graphs": [metadata of each graph]}   (/data/graph-metadata.json)
    FOLDER/SLUG.json                  the graph (workbench.graph.circuit_tracer) (/graph_data/SLUG.json)
    FOLDER/<model>-experts/F.json     one feature file per expert node        (/data/<model>-experts/F.json)

A new folder is built under a temporary name beside it and renamed when complete; a folder written
before (it holds ``graph-metadata.json``) gets the graph added, or replaced if its slug is there, each
file written atomically and the metadata last, so the menu never lists a graph whose file is missing.
Any other non-empty folder is refused.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import xarray as xr

from workbench.errors import WorkbenchError
from workbench.experts.vocab import text_of, token_texts
from workbench.graph.circuit_tracer import CONTEXT, TokenContext, cantor, circuit_tracer_graph, safe_name
from workbench.graph.circuit_tracer_features import expert_features
from workbench.graph.ids import parse_node_id
from workbench.outputs import OutputPathError, atomic_path, check_output_dir
from workbench.store import schema as S
from workbench.store.select import Selection, token_mask

METADATA = "graph-metadata.json"
SUFFIX = ".ct"


class CircuitTracerExportError(WorkbenchError):
    """A circuit-tracer export folder cannot be written as asked."""


def _finite(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def default_slug(folder: str | Path) -> str:
    """The slug of a graph written to ``folder``: its name without ``.ct``, made URL-safe."""
    name = Path(folder).name
    return safe_name(name[: -len(SUFFIX)] if name.lower().endswith(SUFFIX) else name)


def check_folder(folder: str | Path, *, flag: str = "path") -> Path:
    """Check that ``folder`` may take a circuit-tracer export (before any work); returns it as a Path.

    It must be writable (``workbench.outputs.check_output_dir``) and new, empty, or a folder written by
    this export before (it holds ``graph-metadata.json``).
    """
    target = check_output_dir(folder, flag=flag)
    if target.is_dir() and any(target.iterdir()) and not (target / METADATA).is_file():
        raise CircuitTracerExportError(
            f"{flag} {folder}: a folder that is not empty and holds no {METADATA}; give a new or empty folder, "
            "or one a circuit-tracer export wrote before"
        )
    return target


def token_context(ds: xr.Dataset, selection: Selection) -> TokenContext | None:
    """The surroundings of the one token ``selection`` holds in ``ds`` (None if it holds another number)."""
    rows = np.nonzero(token_mask(ds, selection))[0]
    if rows.size != 1:
        return None
    row = int(rows[0])
    tok = np.asarray(ds[S.TOKEN_ID].values)
    seq = np.asarray(ds[S.SEQUENCE_INDEX].values)
    texts = token_texts(ds)
    lo = row
    while lo > 0 and row - lo < CONTEXT and seq[lo - 1] == seq[row]:
        lo -= 1
    nxt = text_of(texts, int(tok[row + 1])) if row + 1 < tok.size and seq[row + 1] == seq[row] else None
    before = [text_of(texts, int(t)) for t in tok[lo:row]]
    return TokenContext(before, text_of(texts, int(tok[row])), nxt, int(tok[row]))


def _dump(path: Path, data: Any) -> None:
    path.write_text(json.dumps(_finite(data), ensure_ascii=False, allow_nan=False))


def write_circuit_tracer(
    g: nx.DiGraph,
    folder: str | Path,
    *,
    slug: str | None = None,
    ds: xr.Dataset | None = None,
    selection: Selection | None = None,
    feature_selection: Selection | None = None,
) -> Path:
    """Write ``g`` into the circuit-tracer data folder ``folder`` (module docstring); returns the folder.

    Parameters
    ----------
    slug : the graph's name in the frontend's menu and URL (``?slug=``); default: the folder's name
        without ``.ct``
    ds, selection : the store and selection ``g`` was built from. With ``ds``, every expert node gets a
        feature file (its top contexts in the store) and a one-token path gets the tokens before it as
        its prompt; without, the node panel has no examples and the context shows as ``…``
    feature_selection : the tokens the feature files draw contexts from (None: the whole store)

    Open it with circuit-tracer's own server: ``from circuit_tracer.frontend.local_server import serve;
    serve("FOLDER", port=8032)``, then http://localhost:8032/index.html?slug=SLUG.
    """
    target = check_folder(folder)
    existing = target.is_dir() and any(target.iterdir())
    slug = safe_name(slug) if slug is not None else default_slug(target)
    context = None
    if ds is not None and not g.graph.get("model"):  # difference graphs carry no model name: the store's
        g = g.copy()
        g.graph["model"] = str((ds.attrs.get("model") or {}).get("model_name", ""))
    if ds is not None and selection is not None and g.graph.get("n_tokens") == 1:
        context = token_context(ds, selection)
    data = circuit_tracer_graph(g, slug=slug, context=context)
    features: dict[int, dict[str, Any]] = {}
    scan = data["metadata"]["scan"]
    if ds is not None:
        experts = [(layer, e, cantor(layer, e)) for layer, e in map(parse_node_id, g.nodes)]
        features = expert_features(ds, experts, scan, feature_selection)
    feature_dir = scan.removeprefix("./data/")
    if existing:
        return _merge(target, slug, data, features, feature_dir)
    target_parent = target.resolve().parent
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target_parent))
    try:
        _write_files(tmp, slug, data, features, feature_dir, {"graphs": [data["metadata"]]})
        os.chmod(tmp, 0o777 & ~_umask())
        if target.is_dir():
            target.rmdir()  # an empty folder: replaced by the complete one
        os.rename(tmp, target)
    except OSError as err:
        raise OutputPathError(f"cannot write {target}: {err.strerror or err}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write_files(
    root: Path, slug: str, data: dict[str, Any], features: dict[int, dict[str, Any]], feature_dir: str, meta: Any
) -> None:
    if features:
        (root / feature_dir).mkdir(exist_ok=True)
        for f, content in features.items():
            _dump(root / feature_dir / f"{f}.json", content)
    _dump(root / f"{slug}.json", data)
    _dump(root / METADATA, meta)


def _merge(
    target: Path, slug: str, data: dict[str, Any], features: dict[int, dict[str, Any]], feature_dir: str
) -> Path:
    try:
        meta = json.loads((target / METADATA).read_text())
        graphs = [m for m in meta.get("graphs", []) if m.get("slug") != slug]
    except (OSError, ValueError, AttributeError) as err:
        raise CircuitTracerExportError(f"{target / METADATA} cannot be read ({err}); give another folder") from None
    if features:
        (target / feature_dir).mkdir(exist_ok=True)
    for f, content in features.items():
        with atomic_path(target / feature_dir / f"{f}.json", flag="path") as tmp:
            _dump(tmp, content)
    with atomic_path(target / f"{slug}.json", flag="path") as tmp:
        _dump(tmp, data)
    with atomic_path(target / METADATA, flag="path") as tmp:
        _dump(tmp, {**meta, "graphs": [*graphs, data["metadata"]]})
    return target
