"""``workbench record``: run a model on a prompt file with routing hooks and append to a routing store.

Everything that can be checked is checked before the model's weights are read: the prompts file
(line by line), the model directory and that it is an MoE of a supported family (built on the meta
device from config.json), and that the store accepts this model (same routing signature, known
schema version, no other writer, no sequence id already present).
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
) -> None:
    """Record per-token expert routing of a model on a prompt file into a routing store."""
    from rich.console import Console

    from workbench.errors import WorkbenchError

    console = Console(stderr=True)
    if max_new_tokens < 0:
        raise WorkbenchError(f"--max-new-tokens must be 0 or more, got {max_new_tokens}")
    if batch_size < 1:
        raise WorkbenchError(f"--batch-size must be at least 1, got {batch_size}")
    if engine is not None:
        if not url:
            raise WorkbenchError("--engine needs --url, the inference server's base URL (e.g. http://127.0.0.1:8000)")
        if scores:
            raise WorkbenchError("--scores needs hooks on the model; an engine's capture gives expert ids only")
        from workbench.engines import record_from_engine

        result = record_from_engine(
            engine,
            url,
            prompts,
            out,
            model=model,
            max_new_tokens=max_new_tokens,
            trust_remote_code=trust_remote_code,
            served_model=served_model,
            timeout=timeout,
            concurrency=concurrency,
        )
        console.print(f"recorded via {engine}: {result}")
        return
    if url is not None:
        raise WorkbenchError("--url is only used with --engine vllm|sglang")
    _record_with_hooks(
        console,
        model=model,
        prompts_path=prompts,
        out=out,
        scores=scores,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        device_map=device_map,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
    )


def _record_with_hooks(
    console: object,
    *,
    model: str,
    prompts_path: str,
    out: str,
    scores: bool,
    max_new_tokens: int,
    batch_size: int,
    device_map: str | None,
    dtype: str,
    trust_remote_code: bool,
) -> None:
    from rich.console import Console
    from tqdm import tqdm

    from workbench.errors import StoreError, WorkbenchError
    from workbench.models import DTYPES, load_model, planned_routing_config, resolve_device_map, tokenizer_attrs
    from workbench.prompts import read_prompts
    from workbench.store.io import check_appendable, open_store

    assert isinstance(console, Console)
    if dtype not in DTYPES:
        raise WorkbenchError(f"unknown --dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    records = read_prompts(prompts_path)  # 1. the prompts, line by line
    placement = resolve_device_map(device_map)  # a placement file is read before the slow load
    planned = planned_routing_config(model, trust_remote_code=trust_remote_code)  # 2. model dir, MoE family
    check_appendable(out, planned)  # 3. the store accepts this model, no other writer
    try:
        existing = set(map(str, open_store(out).sequence.values))
    except StoreError:
        existing = set()  # no store yet (check_appendable already refused anything unusable)
    clash = sorted(existing.intersection(r.id for r in records))
    if clash:
        shown = ", ".join(clash[:5]) + (" ..." if len(clash) > 5 else "")
        raise WorkbenchError(f"{len(clash)} prompt id(s) are already in {out} ({shown}); use another --out or new ids")

    console.print(f"loading {model} ({dtype}) ...")
    loaded, tokenizer = load_model(model, dtype=dtype, device_map=placement, trust_remote_code=trust_remote_code)
    from workbench.hooks import RoutingRecorder
    from workbench.hooks.batch import record_prompts
    from workbench.store.io import StoreWriter

    recorder = RoutingRecorder(loaded, scores=scores)
    if recorder.config.signature() != planned.signature():
        raise WorkbenchError(
            "the loaded model's routing config differs from its config.json "
            f"({recorder.config.describe_difference(planned)}); nothing was written"
        )
    tok_attrs = tokenizer_attrs(tokenizer, name=recorder.config.model_name)
    with (
        StoreWriter(out, recorder.config, tok_attrs, capture="hooks", with_scores=scores) as writer,
        recorder,
        tqdm(total=len(records), desc="record", unit="prompt", disable=None) as bar,
    ):
        summary = record_prompts(
            loaded,
            tokenizer,
            records,
            writer.add,
            recorder,
            batch_size=batch_size,
            max_new_tokens=max_new_tokens,
            progress=bar.update,
        )
    console.print(
        f"recorded {summary.sequences} sequences, {summary.tokens} tokens ({summary.generated_tokens} generated), "
        f"{len(recorder.config.moe_layers)} MoE layers x top-{recorder.config.top_k} -> {out}"
    )


def register(app: typer.Typer) -> None:
    app.command("record", help=(record.__doc__ or "") + "\n" + EXAMPLE)(record)
