"""``workbench info``: what a routing store holds (model, layers, experts, k, tokens, domains, size on disk),
or, with ``--model``, which experts implementation a model runs on this machine and what was measured."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

EXAMPLE = """
Examples:

  workbench info runs/k2-mini.zarr

  workbench info s3://bucket/k2.zarr --json

  workbench info --model k2-mini          # the experts kernel chosen on this device, with the timings
"""


def summarize(store: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The facts ``workbench info`` prints, as a plain dict (also used by notebooks and tests)."""
    import numpy as np

    from workbench.routing_config import RoutingConfig
    from workbench.store import schema as S
    from workbench.store.io import open_store, store_size
    from workbench.store.layer_index import index_status

    ds = open_store(store, chunks=None, storage_options=storage_options)
    attrs = ds.attrs
    cfg = RoutingConfig.from_attrs(attrs["model"])
    domains = [str(d) for d in np.asarray(ds[S.SEQUENCE_DOMAIN].values)]
    lengths = np.asarray(ds[S.SEQUENCE_LENGTH].values)
    per_domain: dict[str, dict[str, int]] = {}
    for d, n in zip(domains, lengths.tolist(), strict=True):
        row = per_domain.setdefault(d, {"sequences": 0, "tokens": 0})
        row["sequences"] += 1
        row["tokens"] += int(n)
    n_tokens = int(ds.sizes[S.TOKEN])
    size = store_size(store, storage_options)
    ids_size = store_size(f"{store.rstrip('/')}/{S.EXPERT_IDS}", storage_options)
    token_layers = n_tokens * len(cfg.moe_layers)
    layer_index = index_status(ds.encoding["routing_store"].inner, attrs)
    return {
        "store": store,
        "model": cfg.model_name,
        "model_type": cfg.model_type,
        "family": cfg.family,
        "capture": attrs.get("capture"),
        "quantization": cfg.quantization,
        "num_hidden_layers": cfg.num_hidden_layers,
        "moe_layers": [int(x) for x in cfg.moe_layers],
        "n_routed_experts": cfg.n_routed_experts,
        "n_shared_experts": cfg.n_shared_experts,
        "top_k": cfg.top_k,
        "scoring_func": cfg.scoring_func,
        "tokens": n_tokens,
        "generated_tokens": int(np.asarray(ds[S.GENERATED].values).sum()) if n_tokens else 0,
        "sequences": int(ds.sizes[S.SEQUENCE]),
        "spans": int(ds.sizes[S.SPAN]),
        "domains": dict(sorted(per_domain.items())),
        "has_gate_weights": bool(attrs.get("has_gate_weights")),
        "has_router_scores": bool(attrs.get("has_router_scores")),
        "vocab_size": len(attrs.get("tokenizer", {}).get("vocab", [])),
        "size_bytes": size,
        "expert_ids_bytes_per_token_layer": (ids_size / token_layers) if token_layers else None,
        "schema_version": attrs.get("schema_version"),
        "versions": attrs.get("versions", {}),
        "updated": attrs.get("updated"),
        "layer_index": layer_index,
    }


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _layers(moe: list[int]) -> str:
    if moe and moe == list(range(moe[0], moe[-1] + 1)):
        return f"{moe[0]}..{moe[-1]}"
    return ",".join(map(str, moe))


def model_facts(model_name: str, *, experts_impl: str | None = None, remeasure: bool = False) -> dict[str, Any]:
    """Load a model as ``workbench record`` does and say which experts implementation runs, and why."""
    from workbench.experts_kernel import cache_path, choose, installed
    from workbench.hooks import find_adapter
    from workbench.models import load_model

    model, _ = load_model(model_name, experts_impl=experts_impl)
    choice = choose(model, experts_impl, remeasure=True) if remeasure else installed(model)
    adapter = find_adapter(model)
    return {
        "model": model_name,
        "model_type": str(getattr(model.config, "model_type", "")),
        "family": adapter.family,
        "moe_layers": len(adapter.sites),
        "n_routed_experts": adapter.n_experts,
        "top_k": adapter.top_k,
        "experts_implementation": choice.implementation,
        "experts_choice": choice.describe(),
        "experts_seconds": choice.seconds,
        "experts_source": choice.source,
        "experts_cache": str(cache_path()),
    }


def info(
    store: Annotated[str | None, typer.Argument(help="Routing store (directory or fsspec URL).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the facts as JSON.")] = False,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="Instead of a store: a model (k2-mini or a checkpoint directory); shows the "
            "experts implementation chosen for this device and the measured times.",
        ),
    ] = None,
    experts_impl: Annotated[
        str | None, typer.Option("--experts-impl", help="With --model: install this implementation (or auto).")
    ] = None,
    remeasure: Annotated[
        bool, typer.Option("--remeasure", help="With --model: measure again, ignore the cache.")
    ] = False,
) -> None:
    """Show what a routing store holds: model, MoE layers, experts, top-k, tokens, sequences per domain, size."""
    from workbench.errors import WorkbenchError

    if (store is None) == (model is None):
        raise WorkbenchError("give a routing store, or --model NAME for a model's experts kernel (not both)")
    if model is not None:
        m = model_facts(model, experts_impl=experts_impl, remeasure=remeasure)
        if as_json:
            typer.echo(json.dumps(m, indent=2))
            return
        typer.echo(
            f"model       {m['model']} ({m['model_type']}, adapter {m['family']}): {m['moe_layers']} MoE layers, "
            f"{m['n_routed_experts']} experts, top-{m['top_k']}\n"
            f"experts     {m['experts_choice']}\n"
            f"cache       {m['experts_cache']} (WORKBENCH_EXPERTS_IMPL overrides; --remeasure measures again)"
        )
        return
    assert store is not None
    s = summarize(store)
    if as_json:
        typer.echo(json.dumps(s, indent=2))
        return
    moe = s["moe_layers"]
    bpt = s["expert_ids_bytes_per_token_layer"]
    lines = [
        f"store       {s['store']}",
        f"model       {s['model']} ({s['model_type']}, adapter {s['family']}, captured by {s['capture']})"
        + (f", {s['quantization']}" if s["quantization"] else ""),
        f"layers      {len(moe)} MoE layers ({_layers(moe)}) of {s['num_hidden_layers']}",
        f"experts     {s['n_routed_experts']} routed + {s['n_shared_experts']} shared, top-{s['top_k']} "
        f"({s['scoring_func']})",
        f"tokens      {s['tokens']:,} ({s['generated_tokens']:,} generated)",
        f"sequences   {s['sequences']:,} ({s['spans']:,} segment spans)",
    ]
    width = max((len(d) for d in s["domains"]), default=0)
    for d, row in s["domains"].items():
        lines.append(f"  {d:<{width}}  {row['sequences']:>8,} sequences {row['tokens']:>12,} tokens")
    lines += [
        f"routing     gate weights {'yes' if s['has_gate_weights'] else 'no'}, router scores "
        f"{'yes' if s['has_router_scores'] else 'no'}; vocabulary of {s['vocab_size']:,} tokens",
        f"size        {_human(s['size_bytes'])} on disk"
        + (f"; expert_ids {bpt:.2f} bytes per token-layer (raw {2 * s['top_k']})" if bpt is not None else ""),
        f"schema      v{s['schema_version']}, written with zarr {s['versions'].get('zarr', '?')}, "
        f"workbench {s['versions'].get('k2-routing-workbench', '?')}; last commit {s['updated']}",
    ]
    lines.append(_index_line(s["store"], s["layer_index"]))
    typer.echo("\n".join(lines))


def _index_line(store: str, index: dict[str, Any]) -> str:
    """What the layer index means for expert pages, and the command that makes or refreshes it."""
    if index["status"] == "fresh":
        return f"index       layer index up to date (built {index['built']}): expert pages read it"
    if index["status"] == "stale":
        return (
            f"index       layer index stale (built {index['built']}, the store changed since): expert pages "
            f"read the token-major chunks; `workbench index {store}` rebuilds it"
        )
    return f"index       no layer index: `workbench index {store}` builds one for fast expert pages"


def register(app: typer.Typer) -> None:
    app.command("info", help=(info.__doc__ or "") + "\n" + EXAMPLE)(info)
