"""``workbench atlas``: a static expert atlas of a store; ``workbench index``: the store's layer index."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

EXAMPLE = """
Examples:

  workbench index runs/k2.zarr                          (build the layer index: fast expert pages)

  workbench atlas runs/suite.zarr --out atlas/          (then open atlas/index.html in a browser)

  workbench atlas runs/suite.zarr --out math-atlas/ --where domain=math --metric domain
"""


def _store_dir(path: Path) -> Path | None:
    """The routing store (a folder whose zarr.json carries a schema_version) holding ``path``, if any."""
    import json

    for folder in (path, *path.parents):
        try:
            doc = json.loads((folder / "zarr.json").read_text())
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and "schema_version" in (doc.get("attributes") or {}):
            return folder
    return None


def check_out(out: str) -> Path:
    """Refuse (one line) an --out that would write into a store or over a folder that is not an atlas."""
    from workbench.errors import WorkbenchError
    from workbench.viz.atlas import is_atlas

    target = Path(out).expanduser().absolute()
    inside = _store_dir(target)
    if inside is not None:
        raise WorkbenchError(
            f"--out {out} is inside the routing store {inside}; write the atlas to a folder outside any store"
        )
    if target.exists() and not target.is_dir():
        raise WorkbenchError(f"--out {out} is a file; give a folder for the atlas (it is created if missing)")
    if target.is_dir() and any(target.iterdir()) and not is_atlas(target):
        raise WorkbenchError(
            f"--out {out} is a folder that is not empty and holds no atlas; choose a new or empty folder "
            "(an earlier atlas folder is replaced)"
        )
    if not target.parent.is_dir():
        raise WorkbenchError(f"cannot write {out}: folder {target.parent} does not exist")
    if not os.access(target.parent, os.W_OK):
        raise WorkbenchError(f"cannot write {out}: folder {target.parent} is not writable")
    return target


def atlas(
    store: Annotated[str, typer.Argument(help="Routing store (directory or fsspec URL).")],
    out: Annotated[str, typer.Option("--out", "-o", help="Folder to write the atlas to (new, empty or an atlas).")],
    where: Annotated[list[str] | None, typer.Option(help="Selection KEY=VALUE, e.g. domain=math (repeatable).")] = None,
    metric: Annotated[str, typer.Option(help="Grid colour at opening: load, lift, domain, weight or first.")] = "load",
    top: Annotated[int, typer.Option(help="Rows per list (contexts, tokens) on each page.")] = 12,
    width: Annotated[int, typer.Option(help="Decoded tokens shown each side of a context's token.")] = 6,
    workers: Annotated[int, typer.Option(help="Processes computing layers in parallel.")] = min(2, os.cpu_count() or 1),
    model: Annotated[
        str | None, typer.Option(help="Not supported: use `workbench expert STORE L:E --model` per expert.")
    ] = None,
) -> None:
    """A static, self-contained expert atlas: a layer x expert grid, a search box and one page per expert."""
    import time

    from workbench.errors import WorkbenchError
    from workbench.experts.atlas_data import atlas_layers
    from workbench.experts.contexts import ORDER_BY_WEIGHT, ORDER_FALLBACK, ORDER_UNRANKED
    from workbench.experts.layer_pages import METRICS
    from workbench.experts.page import describe_selection
    from workbench.rank_order import is_rank_ordered
    from workbench.store import schema as S
    from workbench.store.io import open_store
    from workbench.store.layer_index import build_index, open_index
    from workbench.store.select import layer_indexer, parse_where, token_mask
    from workbench.viz.atlas import write_atlas

    if model is not None:
        raise WorkbenchError(
            "the atlas does not compute logit effects (a model re-run per expert); run without --model and use "
            "`workbench expert STORE L:E --model MODEL` for one expert's logit effect"
        )
    if metric not in METRICS:
        raise WorkbenchError(f"--metric must be one of {', '.join(METRICS)}, got {metric!r}")
    if top < 1 or width < 0 or workers < 1:
        raise WorkbenchError("--top and --workers must be at least 1 and --width at least 0")
    sel = parse_where(where) if where else None
    ds = open_store(store)
    target = check_out(out)
    n_layers = int(ds.sizes[S.LAYER])
    if sel is not None:
        lay = layer_indexer(ds, sel)  # a layer range outside the model: one line, before anything is written
        n_layers = n_layers if isinstance(lay, slice) else len(lay)
    if sel is not None and not token_mask(ds, sel).any():
        raise WorkbenchError(
            "the selection holds no tokens; widen its where clauses or check what the store holds (`workbench info`)"
        )
    t0 = time.perf_counter()
    if open_index(ds) is None:
        typer.echo(f"building the layer index of {store} (once; `workbench index` does this alone)", err=True)
        build_index(store, progress=True)
        ds = open_store(store)
    has_w = bool(ds.attrs.get("has_gate_weights", True))
    ranked = is_rank_ordered(ds.attrs)
    order = ORDER_BY_WEIGHT if has_w else ORDER_FALLBACK if ranked else ORDER_UNRANKED
    notes = []
    if not has_w:
        notes.append(f"this store has no gate weights: contexts are ordered by {order}; the gate-weight "
                     "histogram and the weight metric are left out")  # fmt: skip
    if not ranked:
        notes.append("this store's top-k ids are not in router rank order (an engine capture): ranks are top-k slots")
    n_sel = int(token_mask(ds, sel).sum()) if sel is not None else int(ds.sizes[S.TOKEN])
    meta: dict[str, Any] = {
        "store": store, "selection": describe_selection(sel),
        "model": str(ds.attrs.get("model", {}).get("model_name", "?")),
        "n_experts": int(ds.attrs["model"]["n_routed_experts"]), "top_k": int(ds.sizes[S.K]), "tokens": n_sel,
        "metrics": dict(METRICS), "metric": metric, "notes": notes, "context_order": order, "rank_ordered": ranked,
    }  # fmt: skip
    from tqdm.auto import tqdm

    layers = tqdm(atlas_layers(store, sel, workers=workers, top=top, width=width), total=n_layers,
                  unit="layer", desc="atlas")  # fmt: skip
    record = write_atlas(layers, target, meta)
    typer.echo(
        f"wrote {target}/index.html: {record['experts']:,} expert pages of {record['layers']} layers, "
        f"{record['bytes'] / 1e6:.1f} MB, in {time.perf_counter() - t0:.0f} s"
    )


def index(
    store: Annotated[str, typer.Argument(help="Routing store (directory or fsspec URL).")],
    force: Annotated[bool, typer.Option(help="Rebuild even when the index is up to date.")] = False,
) -> None:
    """Build the store's layer index (a layer-major copy of its routing inside the store) for fast expert pages."""
    from workbench.store.layer_index import build_index

    rec = build_index(store, force=force, progress=True)
    if rec["status"] == "fresh":
        typer.echo(f"{store}: the layer index is up to date (built {rec['built']}); --force rebuilds it")
        return
    shape = f"{rec['tokens']:,} tokens x {rec['layers']} layers"
    typer.echo(f"{store}: layer index built ({shape}) in {rec['seconds']:.0f} s")


def register(app: typer.Typer) -> None:
    app.command("atlas", help=(atlas.__doc__ or "") + "\n" + EXAMPLE)(atlas)
    app.command("index", help=(index.__doc__ or "") + "\n" + EXAMPLE)(index)
