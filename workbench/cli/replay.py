"""``workbench replay``: record the routing of whole chat transcripts (teacher forced) into a routing store.

Checked before any weight is read: every transcript line (line number and field), the model directory
and its MoE family, that the store accepts this model, and that no transcript id is already stored.
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
) -> None:
    """Replay chat transcripts through a model in one teacher-forced pass each; store segments and steps."""
    from rich.console import Console
    from tqdm import tqdm

    from workbench.errors import StoreError, WorkbenchError
    from workbench.models import DTYPES, load_model, planned_routing_config, tokenizer_attrs
    from workbench.store.io import check_appendable, open_store
    from workbench.transcripts.messages import read_transcripts

    console = Console(stderr=True)
    if dtype not in DTYPES:
        raise WorkbenchError(f"unknown --dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    if chunk_tokens < 1:
        raise WorkbenchError(f"--chunk-tokens must be at least 1, got {chunk_tokens}")
    kwargs = parse_template_kwargs(template_kwarg)
    items = read_transcripts(transcripts)  # 1. every line, before the model
    planned = planned_routing_config(model, trust_remote_code=trust_remote_code)  # 2. the model directory
    check_appendable(out, planned)  # 3. the store accepts this model
    try:
        existing = set(map(str, open_store(out).sequence.values))
    except StoreError:
        existing = set()
    clash = sorted(existing.intersection(t.id for t in items))
    if clash:
        raise WorkbenchError(f"transcript id(s) already in {out}: {', '.join(clash[:5])}; use another --out or new ids")

    console.print(f"loading {model} ({dtype}) ...")
    loaded, tokenizer = load_model(model, dtype=dtype, device_map=device_map, trust_remote_code=trust_remote_code)
    if getattr(tokenizer, "chat_template", None) is None:
        raise WorkbenchError(f"the tokenizer of {model} has no chat template; transcripts cannot be rendered")
    from workbench.hooks import RoutingRecorder
    from workbench.store.io import StoreWriter
    from workbench.transcripts.as_generated import render_as_generated
    from workbench.transcripts.replay import replay_transcript

    for t in items:  # 4. every transcript renders with this template, before anything is written
        render_as_generated(tokenizer, t, **kwargs)
    recorder = RoutingRecorder(loaded, scores=scores, eos_token_id=[])
    if recorder.config.signature() != planned.signature():
        diff = recorder.config.describe_difference(planned)
        raise WorkbenchError(f"the loaded model's routing config differs from its config.json ({diff})")
    tokens = truncated = 0
    dropped: list[str] = []
    with (
        StoreWriter(out, recorder.config, tokenizer_attrs(tokenizer, name=recorder.config.model_name),
                    capture="hooks", with_scores=scores) as writer,
        tqdm(total=len(items), desc="replay", unit="transcript", disable=None) as bar,
    ):  # fmt: skip
        for t in items:
            res = replay_transcript(
                loaded, tokenizer, t, scores=scores, chunk_tokens=chunk_tokens, window=window,
                template_kwargs=kwargs, recorder=recorder,
            )  # fmt: skip
            writer.add(res.record)
            tokens += res.record.n_tokens
            truncated += res.truncated_context_tokens
            dropped += [f"{t.id}: {what}" for what in res.rendered.not_rendered]
            bar.update(1)
    console.print(f"replayed {len(items)} transcripts, {tokens} tokens -> {out}")
    if truncated:
        console.print(f"{truncated} tokens lay beyond the context window and were routed with half-window context")
    if dropped:
        console.print(f"the chat template leaves out (as the model saw it): {'; '.join(dropped[:5])}")


def register(app: typer.Typer) -> None:
    app.command("replay", help=(replay.__doc__ or "") + "\n" + EXAMPLE)(replay)
