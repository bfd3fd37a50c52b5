"""``workbench mini-k2 corpus|train|eval``: rebuild, train and measure the bundled mini K2."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from workbench.errors import WorkbenchError

DEFAULT_CORPUS = Path("build/minik2/corpus")
DEFAULT_MODEL = Path("data/models/k2-mini")

mini = typer.Typer(
    name="mini-k2",
    help="Rebuild the bundled mini K2: corpus -> tokenizer + model (train) -> quality figures (eval).",
    no_args_is_help=True,
)


@mini.command(
    "corpus",
    epilog="Example:\n\n  workbench mini-k2 corpus --out build/minik2/corpus",
)
def corpus_cmd(
    out: Annotated[Path, typer.Option(help="Directory for the corpus (train/ and heldout/ JSONL).")] = DEFAULT_CORPUS,
    install: Annotated[bool, typer.Option(help="apt-get install missing Debian text packages.")] = True,
) -> None:
    """Build the offline corpus: generated math, stdlib code, fortunes + GCIDE prose, tool episodes."""
    from workbench.minik2.corpus import build_corpus

    manifest = build_corpus(out, install_missing=install)
    typer.echo(json.dumps(manifest["splits"], indent=2))
    typer.echo(f"corpus written to {out}")


@mini.command(
    "train",
    epilog="Example:\n\n  nice workbench mini-k2 train --corpus build/minik2/corpus --out data/models/k2-mini",
)
def train_cmd(
    corpus: Annotated[Path, typer.Option(help="Corpus built by `workbench mini-k2 corpus`.")] = DEFAULT_CORPUS,
    out: Annotated[Path, typer.Option(help="Model directory to (re)write.")] = DEFAULT_MODEL,
    steps: Annotated[int, typer.Option(min=1, help="Optimizer steps (6 x 256 tokens each): the lr schedule.")] = 4400,
    max_minutes: Annotated[
        float, typer.Option(help="Wall-time cap; a slower machine stops there, lr decay included (0: no cap).")
    ] = 57.0,
    seed: Annotated[int, typer.Option(help="Seed for initialisation and batch sampling.")] = 0,
    threads: Annotated[int, typer.Option(min=1, help="torch CPU threads.")] = 2,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 4e-3,
    warmup: Annotated[int, typer.Option(min=0, help="Linear warm-up steps.")] = 20,
    init_from: Annotated[
        Path | None, typer.Option(help="Continue from a model this command wrote (second stage, fresh schedule).")
    ] = None,
) -> None:
    """Train tokenizer and model from scratch with K2's routing and DeepSeek-V3 balancing."""
    from workbench.minik2.train import TrainSettings, train

    if not (corpus / "manifest.json").exists():
        raise WorkbenchError(f"no corpus at {corpus}; build it first: workbench mini-k2 corpus --out {corpus}")
    if init_from is not None and not (init_from / "model.safetensors").exists():
        raise WorkbenchError(f"--init-from {init_from} holds no model.safetensors; give a directory `train` wrote")
    settings = TrainSettings(steps=steps, max_minutes=max_minutes, seed=seed, threads=threads, lr=lr, warmup=warmup)
    summary = train(corpus, out, settings, init_from=init_from)
    typer.echo(json.dumps(summary, indent=2))


@mini.command(
    "eval",
    epilog="Example:\n\n  workbench mini-k2 eval --model data/models/k2-mini --corpus build/minik2/corpus",
)
def eval_cmd(
    model: Annotated[Path, typer.Option(help="Model directory.")] = DEFAULT_MODEL,
    corpus: Annotated[Path, typer.Option(help="Corpus with the held-out split.")] = DEFAULT_CORPUS,
    out: Annotated[Path | None, typer.Option(help="Report JSON (default: MODEL/eval.json).")] = None,
    tool_tasks: Annotated[int, typer.Option(min=1, help="Held-out tool tasks to sample.")] = 100,
    card: Annotated[bool, typer.Option(help="Rewrite MODEL/README.md with the figures.")] = True,
) -> None:
    """Measure held-out loss, balance, specialisation and tool use; write JSON and the model card."""
    from workbench.minik2.card import write_card
    from workbench.minik2.evaluate import evaluate, write_report

    if not (model / "config.json").exists():
        raise WorkbenchError(f"no model at {model}; train one with `workbench mini-k2 train --out {model}`")
    if not (corpus / "manifest.json").exists():
        raise WorkbenchError(f"no corpus at {corpus}; build it first: workbench mini-k2 corpus --out {corpus}")
    report = evaluate(model, corpus, tool_tasks=tool_tasks)
    path = out or model / "eval.json"
    write_report(report, path)
    if card:
        if path != model / "eval.json":
            write_report(report, model / "eval.json")
        write_card(model, corpus)
    typer.echo(json.dumps({"bars": report["bars"], "all_bars_met": report["all_bars_met"]}, indent=2))
    typer.echo(f"report written to {path}")


def register(app: typer.Typer) -> None:
    app.add_typer(mini, name="mini-k2")
