"""``workbench agent``: argument parsing and printing around ``workbench.recording.record_agent`` (the live tool loop,
recorded with its segments and steps)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from workbench.agent.loop import StepLog

WIDTH = 100  # characters of model or tool text per printed line

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
    """Run a live tool loop (generate, parse K2 tool calls, run tools, feed results back) and record it.

    Each step is printed as it ends (thinking, calls, results) on stderr; the final answer goes to stdout.
    """
    from rich.console import Console

    from workbench.cli.params import cli_flags
    from workbench.recording import record_agent

    console = Console(stderr=True)

    def say(line: str) -> None:  # user and model text: never read as rich markup
        console.print(line, markup=False, highlight=False, soft_wrap=True)

    def show(log: StepLog) -> None:
        for line in step_lines(log):
            say(line)

    names = [n.strip() for n in tools.split(",") if n.strip()]
    with cli_flags(episode_id="--id"):
        episode = record_agent(
            model, task, out, tools=names, docs=docs, episode_id=episode_id, system=system, max_steps=max_steps,
            max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed, timeout=timeout,
            memory_mb=memory_mb, transcript_out=transcript_out, scores=scores, device_map=device_map, dtype=dtype,
            trust_remote_code=trust_remote_code, on_step=show,
            log=console.print,
        )  # fmt: skip
    n_gen = int(episode.record.generated.sum()) if episode.record.generated is not None else 0
    say(
        f"{episode.stop_reason}; {len(episode.steps)} steps, {episode.record.n_tokens} tokens ({n_gen} generated) "
        f"-> {out} as {episode.id!r}"
    )
    if episode.answer is None:
        say("no final answer")
    else:
        typer.echo(episode.answer)  # the answer on stdout, whole: `workbench agent ... > answer.txt`


def one_line(text: str, width: int = WIDTH) -> str:
    """``text`` on one line: whitespace runs as one space, cut to ``width`` characters with an ellipsis."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def step_lines(log: StepLog) -> list[str]:
    """What one step did, a line per item: thinking summary, each call and its result (two lines at most), or the
    answer; user and model text shown literally."""
    lines = [f"step {log.step} ({log.new_tokens} tokens)"]
    if log.reasoning:
        lines.append("  thinking: " + one_line(log.reasoning))
    if log.error:
        lines.append("  malformed tool call: " + one_line(log.error))
    for i, call in enumerate(log.tool_calls):
        fn = call["function"]
        lines.append(f"  call {fn['name']}: " + one_line(str(fn["arguments"])))
        if i < len(log.results):
            rows = [r for r in log.results[i].splitlines() if r.strip()] or ["(empty)"]
            lines.append("    -> " + one_line(rows[0]))
            if len(rows) > 1:
                more = f" (+{len(rows) - 2} lines)" if len(rows) > 2 else ""
                lines.append("       " + one_line(rows[1], WIDTH - len(more)) + more)
    if not log.tool_calls and not log.error:
        lines.append("  answer: " + one_line(log.content))
    return lines


def register(app: typer.Typer) -> None:
    app.command("agent", help=(agent.__doc__ or "") + "\n" + EXAMPLE)(agent)
