"""``workbench record``: argument parsing and printing around ``workbench.recording.record`` (or, with
``--engine``, ``workbench.engines.record_from_engine``). Everything is checked there, before the weights load.
"""

from __future__ import annotations

from typing import Annotated

import typer

EXAMPLE = """
Examples:

  workbench record --model k2-mini --prompts data/prompts/suite.jsonl --out runs/mini.zarr --max-new-tokens 32

  workbench record --model ckpt/K2 --trust-remote-code --dtype bf16 --device-map auto --prompts p.jsonl --out k2.zarr

  workbench record --engine vllm --url http://127.0.0.1:8000 --model k2-mini --prompts p.jsonl --out vllm.zarr
"""


def record(
    model: Annotated[str, typer.Option(help='"k2-mini" or a local checkpoint directory.')],
    prompts: Annotated[str, typer.Option(help="JSONL prompt file: {id, domain, text} or {id, domain, messages}.")],
    out: Annotated[str, typer.Option(help="Routing store to create or append to (directory or fsspec URL).")],
    scores: Annotated[bool, typer.Option("--scores", help="Also store full router scores (token, layer, expert).")] = (
        False
    ),
    max_new_tokens: Annotated[int, typer.Option(help="Tokens to generate per prompt (0: prompt only).")] = 0,
    batch_size: Annotated[int, typer.Option(help="Prompts per forward/generate batch.")] = 8,
    device_map: Annotated[
        str | None, typer.Option(help='accelerate device map: "auto" or a JSON file of module -> device.')
    ] = None,
    dtype: Annotated[str, typer.Option(help="fp32 or bf16.")] = "fp32",
    trust_remote_code: Annotated[
        bool, typer.Option("--trust-remote-code", help="Run the checkpoint's own modeling code (K2 remote code).")
    ] = False,
    engine: Annotated[
        str | None, typer.Option(help="Capture by a running inference server instead: vllm or sglang.")
    ] = None,
    url: Annotated[str | None, typer.Option(help="The engine's base URL, with --engine.")] = None,
    served_model: Annotated[
        str | None, typer.Option(help="With --engine: the model name the server serves (default: asked from it).")
    ] = None,
    timeout: Annotated[float, typer.Option(help="With --engine: seconds to wait for each answer.")] = 600.0,
    concurrency: Annotated[int, typer.Option(help="With --engine: requests in flight at once.")] = 8,
    allow_special: Annotated[
        bool,
        typer.Option("--allow-special", help='Parse special-token strings in prompt text (e.g. "<|im_end|>").'),
    ] = False,
) -> None:
    """Record per-token expert routing of a model on a prompt file into a routing store."""
    from rich.console import Console

    from workbench.cli.params import cli_flags
    from workbench.errors import WorkbenchError

    console = Console(stderr=True)
    if engine is None:
        if url is not None:
            raise WorkbenchError("--url is only used with --engine vllm|sglang")
        from workbench.recording import record as run

        with cli_flags():
            summary = run(
                model, prompts, out, scores=scores, max_new_tokens=max_new_tokens, batch_size=batch_size,
                device_map=device_map, dtype=dtype, trust_remote_code=trust_remote_code, allow_special=allow_special,
                progress=None, log=console.print,
            )  # fmt: skip
        console.print(str(summary))
        return
    if not url:
        raise WorkbenchError("--engine needs --url, the inference server's base URL (e.g. http://127.0.0.1:8000)")
    if scores:
        raise WorkbenchError("--scores needs hooks on the model; an engine's capture gives expert ids only")
    from workbench.engines import record_from_engine

    result = record_from_engine(
        engine, url, prompts, out, model=model, max_new_tokens=max_new_tokens, trust_remote_code=trust_remote_code,
        served_model=served_model, timeout=timeout, concurrency=concurrency, allow_special=allow_special,
    )  # fmt: skip
    console.print(f"recorded via {engine}: {result}")


def register(app: typer.Typer) -> None:
    app.command("record", help=(record.__doc__ or "") + "\n" + EXAMPLE)(record)
