"""``workbench agent``: run a live tool loop on a model and record every step's routing with its segments."""

from __future__ import annotations

from typing import Annotated

import typer

EXAMPLE = """
Examples:

  workbench agent --model k2-mini --task "What is 17 * 23 + 4?" --tools calculator,python --out runs/agent.zarr

  workbench agent --model k2-mini --task "Look up routing entropy" --tools search --max-steps 4 \\
      --out runs/agent.zarr --id search-1 --transcript-out runs/agent.jsonl --temperature 0.7
"""


def agent(
    model: Annotated[str, typer.Option(help='"k2-mini" or a local checkpoint directory.')],
    task: Annotated[str, typer.Option(help="The user's task (first user message).")],
    out: Annotated[str, typer.Option(help="Routing store to create or append to.")],
    tools: Annotated[str, typer.Option(help="Comma-separated tools: python, calculator, search.")] = (
        "python,calculator,search"
    ),
    max_steps: Annotated[int, typer.Option(help="Most assistant turns (tool-loop steps).")] = 8,
    max_new_tokens: Annotated[int, typer.Option(help="Most tokens per assistant turn.")] = 256,
    temperature: Annotated[float, typer.Option(help="Sampling temperature (0: greedy).")] = 0.0,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass, with --temperature.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Random seed for sampling.")] = 0,
    episode_id: Annotated[str | None, typer.Option("--id", help="Sequence id in the store.")] = None,
    system: Annotated[str | None, typer.Option(help="System prompt (default: the template's).")] = None,
    docs: Annotated[str | None, typer.Option(help="Search documents: folder of .md/.txt or a .jsonl.")] = None,
    timeout: Annotated[float, typer.Option(help="python tool: wall-clock limit per run, seconds.")] = 10.0,
    memory_mb: Annotated[int, typer.Option(help="python tool: address-space limit, MiB.")] = 512,
    transcript_out: Annotated[
        str | None, typer.Option(help="Also append the episode as a transcript line (JSONL) for replay.")
    ] = None,
    scores: Annotated[bool, typer.Option("--scores", help="Also store full router scores.")] = False,
    device_map: Annotated[str | None, typer.Option(help='accelerate device map, e.g. "auto".')] = None,
    dtype: Annotated[str, typer.Option(help="fp32 or bf16.")] = "fp32",
    trust_remote_code: Annotated[bool, typer.Option("--trust-remote-code", help="Run the checkpoint's code.")] = False,
) -> None:
    """Run a live tool loop (generate, parse K2 tool calls, run tools, feed results back) and record it."""
    import json
    import time
    from pathlib import Path

    from rich.console import Console

    from workbench.agent.sandbox import SandboxLimits
    from workbench.agent.tools import make_toolbox
    from workbench.errors import StoreError, WorkbenchError
    from workbench.models import DTYPES, load_model, planned_routing_config, tokenizer_attrs
    from workbench.store.io import check_appendable, open_store

    console = Console(stderr=True)
    if dtype not in DTYPES:
        raise WorkbenchError(f"unknown --dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    if not task.strip():
        raise WorkbenchError("--task is empty; give the user's task as text")
    if max_steps < 1 or max_new_tokens < 1:
        raise WorkbenchError("--max-steps and --max-new-tokens must be at least 1")
    if timeout <= 0 or memory_mb < 64:
        raise WorkbenchError("--timeout must be positive and --memory-mb at least 64")
    names = [n.strip() for n in tools.split(",") if n.strip()]
    toolbox = make_toolbox(names, docs=docs, limits=SandboxLimits(timeout_s=timeout, cpu_s=int(timeout) + 1,
                                                                   memory_mb=memory_mb))  # fmt: skip
    planned = planned_routing_config(model, trust_remote_code=trust_remote_code)
    check_appendable(out, planned)
    try:
        existing = set(map(str, open_store(out).sequence.values))
    except StoreError:
        existing = set()
    sid = episode_id or f"agent-{time.strftime('%Y%m%d-%H%M%S')}"
    if sid in existing:
        raise WorkbenchError(f"sequence id {sid!r} is already in {out}; pass another --id")
    if transcript_out and not Path(transcript_out).parent.is_dir():
        raise WorkbenchError(f"--transcript-out: folder {Path(transcript_out).parent} does not exist")

    console.print(f"loading {model} ({dtype}) ...")
    loaded, tokenizer = load_model(model, dtype=dtype, device_map=device_map, trust_remote_code=trust_remote_code)
    from workbench.agent.loop import run_agent
    from workbench.hooks import RoutingRecorder
    from workbench.store.io import StoreWriter

    config = RoutingRecorder(loaded).config
    if config.signature() != planned.signature():
        raise WorkbenchError(
            f"the loaded model's routing config differs from its config.json ({config.describe_difference(planned)})"
        )

    def show(log):  # type: ignore[no-untyped-def]
        calls = ", ".join(f"{c['function']['name']}({c['function']['arguments'][:60]})" for c in log.tool_calls)
        what = f"error: {log.error}" if log.error else (f"calls {calls}" if calls else "answer")
        console.print(f"step {log.step}: {log.new_tokens} tokens, {what}")
        for r in log.results:
            console.print(f"  -> {r[:120]!r}")

    episode = run_agent(
        loaded, tokenizer, task, toolbox, episode_id=sid, system=system, max_steps=max_steps,
        max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed, scores=scores, on_step=show,
    )  # fmt: skip
    with StoreWriter(out, config, tokenizer_attrs(tokenizer, name=config.model_name), with_scores=scores) as writer:
        writer.add(episode.record)
    if transcript_out:
        line = {"id": sid, "domain": "agent", "messages": episode.messages, "tools": episode.tools}
        with open(transcript_out, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(line, ensure_ascii=False) + "\n")
    n_gen = int(episode.record.generated.sum()) if episode.record.generated is not None else 0
    console.print(
        f"{episode.stop_reason}; {len(episode.steps)} steps, {episode.record.n_tokens} tokens ({n_gen} generated) "
        f"-> {out} as {sid!r}"
    )


def register(app: typer.Typer) -> None:
    app.command("agent", help=(agent.__doc__ or "") + "\n" + EXAMPLE)(agent)
