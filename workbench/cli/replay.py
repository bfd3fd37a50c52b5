"""``workbench replay``: argument parsing and printing around ``workbench.recording.replay`` (whole chat
transcripts, teacher forced, into a routing store; everything is checked there before the weights load).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

EXAMPLE = """
Examples:

  workbench replay --model k2-mini --transcripts data/transcripts/tool_loops.jsonl --out runs/loops.zarr

  workbench replay --model ./ckpt/Kimi-K2-Thinking --trust-remote-code --dtype bf16 --device-map auto \\
      --transcripts sessions.jsonl --out k2-sessions.zarr --chunk-tokens 4096
"""


def parse_template_kwargs(items: list[str] | None) -> dict[str, Any]:
    """``KEY=VALUE`` pairs for the chat template; VALUE is read as JSON when it parses (true, 3, "x")."""
    import json

    from workbench.errors import WorkbenchError

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise WorkbenchError(f"--template-kwarg needs KEY=VALUE (e.g. thinking=true), got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def replay(
    model: Annotated[str, typer.Option(help='"k2-mini" or a local checkpoint directory.')],
    transcripts: Annotated[str, typer.Option(help="JSONL of chat transcripts {id, domain, messages, tools}.")],
    out: Annotated[str, typer.Option(help="Routing store to create or append to (directory or fsspec URL).")],
    scores: Annotated[bool, typer.Option("--scores", help="Also store full router scores.")] = False,
    chunk_tokens: Annotated[int, typer.Option(help="Tokens per forward (KV cache carried: same as one pass).")] = 2048,
    window: Annotated[
        int | None, typer.Option(help="Context window (default: the model's max_position_embeddings).")
    ] = None,
    template_kwarg: Annotated[
        list[str] | None, typer.Option(help="Chat-template variable KEY=VALUE (repeatable), e.g. thinking=true.")
    ] = None,
    device_map: Annotated[str | None, typer.Option(help='accelerate device map, e.g. "auto".')] = None,
    dtype: Annotated[str, typer.Option(help="fp32 or bf16.")] = "fp32",
    trust_remote_code: Annotated[
        bool, typer.Option("--trust-remote-code", help="Run the checkpoint's own modeling code (K2 remote code).")
    ] = False,
    allow_special: Annotated[
        bool,
        typer.Option("--allow-special", help='Read special-token strings in messages (e.g. "<|im_end|>") as tokens.'),
    ] = False,
) -> None:
    """Replay chat transcripts through a model in one teacher-forced pass each; store segments and steps."""
    from rich.console import Console

    from workbench.cli.params import cli_flags
    from workbench.recording import replay as run

    console = Console(stderr=True)
    with cli_flags(template_kwargs="--template-kwarg"):
        summary = run(
            model, transcripts, out, scores=scores, chunk_tokens=chunk_tokens, window=window,
            template_kwargs=parse_template_kwargs(template_kwarg), device_map=device_map, dtype=dtype,
            trust_remote_code=trust_remote_code, allow_special=allow_special, progress=None, log=console.print,
        )  # fmt: skip
    console.print(str(summary))
    note = summary.truncation_note()
    if note:
        console.print(note, markup=False, highlight=False, soft_wrap=True)
    if summary.not_rendered:
        console.print(f"the chat template leaves out (as the model saw it): {'; '.join(summary.not_rendered[:5])}")


def register(app: typer.Typer) -> None:
    app.command("replay", help=(replay.__doc__ or "") + "\n" + EXAMPLE)(replay)
