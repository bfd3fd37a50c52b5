"""``workbench ablate``: do the chosen experts matter? Mask them and compare the loss change with random masks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

EXAMPLE = """
Examples:

  workbench ablate --model k2-mini --experts 3:17,3:42,5:8 --prompts data/prompts/suite.jsonl

  workbench ablate --model k2-mini --experts-from report/specific_experts.csv --domain math --top 1 \\
      --prompts data/prompts/suite.jsonl --draws 10 --out ablate-math/

Masked experts are excluded from selection (each token takes its next-best expert); the loss is the
teacher-forced cross-entropy per domain (nats/token). Random masks use as many experts per layer as
the targeted mask, never the targeted ones.
"""


def experts_from_table(path: Path, domain: str | None, top: int) -> list[tuple[int, int]]:
    """(layer, expert) pairs of rank <= ``top`` for ``domain`` from a compare ``specific_experts.csv``."""
    import pandas as pd

    from workbench.ablation import AblationError

    try:
        table = pd.read_csv(path)
    except (OSError, ValueError) as err:
        raise AblationError(f"cannot read {path}: {err}") from None
    numeric = pd.api.types.is_numeric_dtype
    group_col = next((c for c in table.columns if c not in ("layer", "rank", "expert") and not numeric(table[c])), None)
    if group_col is None or not {"layer", "rank", "expert"} <= set(table.columns):
        raise AblationError(f"{path} is not a specific_experts.csv written by `workbench compare`")
    if domain is None:
        raise AblationError(f"--experts-from needs --domain (one of {', '.join(sorted(set(table[group_col])))})")
    rows = table[(table[group_col] == domain) & (table["rank"] <= top)]
    if rows.empty:
        raise AblationError(f"no {group_col} {domain!r} in {path}; it has {', '.join(sorted(set(table[group_col])))}")
    return sorted({(int(r.layer), int(r.expert)) for r in rows.itertuples()})


def _print(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(
        title=f"Masking {len(result['experts'])} experts ({', '.join(result['experts'][:8])}"
        f"{', ...' if len(result['experts']) > 8 else ''}) vs {result['draws']} random masks of the same size"
    )
    for col in ("domain", "loss", "masked", "Δ targeted", "Δ random", "sd", "z", "p (rank)"):
        t.add_column(col, justify="left" if col == "domain" else "right")
    for d, v in result["domains"].items():
        t.add_row(
            d,
            f"{v['base']:.4f}",
            f"{v['targeted']:.4f}",
            f"{v['delta']:+.4f}",
            f"{v['random_mean']:+.4f}",
            f"{v['random_std']:.4f}",
            f"{v['z']:.2f}",
            f"{v['rank_p']:.2f}",
        )
    Console().print(t)
    Console().print("[dim]loss: teacher-forced cross-entropy, nats per predicted token[/dim]")
    Console().print(
        f"[dim]p (rank) = (1 + #random Δ ≥ Δ) / (1 + draws): with {result['draws']} draws the smallest possible p is "
        f"{result['min_rank_p']:.3g}, whatever z says; raise --draws for a smaller one[/dim]"
    )


def ablate(
    model: Annotated[str, typer.Option(help="k2-mini or a local checkpoint directory.")],
    prompts: Annotated[Path, typer.Option(help="Prompt file (JSON Lines with id, domain, text or messages).")],
    experts: Annotated[str | None, typer.Option(help="Experts to mask: LAYER:EXPERT,... (real layer indices).")] = None,
    experts_from: Annotated[
        Path | None, typer.Option(help="Take the experts from a `workbench compare` specific_experts.csv.")
    ] = None,
    domain: Annotated[str | None, typer.Option(help="With --experts-from: whose specific experts.")] = None,
    top: Annotated[int, typer.Option(help="With --experts-from: experts of rank <= TOP per layer.")] = 1,
    draws: Annotated[
        int, typer.Option(help="Random masks of the same size; p (rank) cannot go below 1/(DRAWS+1).")
    ] = 20,  # workbench.ablation.DEFAULT_DRAWS (not imported here: it pulls in torch); fewest draws for p < 0.05
    seed: Annotated[int, typer.Option(help="Seed of the random masks.")] = 0,
    domains: Annotated[str | None, typer.Option(help="Only prompts of these domains (comma-separated).")] = None,
    max_tokens: Annotated[int, typer.Option(help="Truncate each prompt to this many tokens (and the context).")] = 1024,
    dtype: Annotated[str, typer.Option(help="fp32 or bf16.")] = "fp32",
    device_map: Annotated[str | None, typer.Option(help="e.g. auto (accelerate).")] = None,
    trust_remote_code: Annotated[bool, typer.Option(help="Load the checkpoint's own modeling code (K2).")] = False,
    out: Annotated[Path | None, typer.Option(help="Folder for ablation.json.")] = None,
    allow_special: Annotated[
        bool,
        typer.Option("--allow-special", help='Parse special-token strings in prompt text (e.g. "<|im_end|>").'),
    ] = False,
) -> None:
    """Mask chosen experts and report the per-domain loss change against masking random experts."""
    from rich.progress import Progress

    from workbench.ablation import AblationError, check_experts, parse_experts
    from workbench.ablation import ablate as run_ablate
    from workbench.models import (
        check_weights,
        context_length,
        load_model,
        load_tokenizer,
        planned_routing_config,
        resolve_model_path,
    )
    from workbench.prompts import encode_prompt, read_prompts

    if (experts is None) == (experts_from is None):
        raise AblationError("give exactly one of --experts LAYER:EXPERT,... or --experts-from specific_experts.csv")
    if draws < 2:
        raise AblationError("--draws must be at least 2 (the random control needs a spread)")
    chosen = parse_experts(experts) if experts is not None else experts_from_table(experts_from, domain, top)  # type: ignore[arg-type]
    records = read_prompts(prompts)
    if domains:
        wanted = {d.strip() for d in domains.split(",") if d.strip()}
        unknown = wanted - {r.domain for r in records}
        if unknown:
            raise AblationError(f"no prompt of domain {', '.join(sorted(unknown))} in {prompts}")
        records = [r for r in records if r.domain in wanted]
    if out is not None and out.exists() and not out.is_dir():
        raise AblationError(f"--out {out} exists and is not a folder")
    planned = planned_routing_config(model, trust_remote_code=trust_remote_code)  # config only, no weights
    check_experts(planned.moe_layers, planned.n_routed_experts, planned.top_k, chosen)
    if max_tokens < 2:
        raise AblationError(f"--max-tokens must be at least 2 (the loss needs a token to predict), got {max_tokens}")
    max_tokens = min(max_tokens, context_length(model) or max_tokens)  # never past the model's context window
    tokenizer = load_tokenizer(model, trust_remote_code=trust_remote_code)
    encoded = [(r.id, r.domain, encode_prompt(tokenizer, r, allow_special=allow_special)[:max_tokens]) for r in records]
    check_weights(resolve_model_path(model))
    lm, _ = load_model(
        model, dtype=dtype, device_map=device_map, trust_remote_code=trust_remote_code, tokenizer=tokenizer
    )
    with Progress(transient=True) as bar:
        task = bar.add_task("forward passes", total=2 + draws)
        result = run_ablate(lm, encoded, chosen, draws=draws, seed=seed, progress=lambda: bar.advance(task))
    result |= {"model": str(model), "prompts": str(prompts), "n_prompts": len(encoded)}
    _print(result)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "ablation.json").write_text(json.dumps(result, indent=2))


def register(app: typer.Typer) -> None:
    app.command("ablate", help=(ablate.__doc__ or "") + "\n" + EXAMPLE)(ablate)
