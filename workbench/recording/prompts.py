"""``record``: prompts through a model with routing hooks into a routing store (what ``workbench record`` runs).

Each prompt becomes one store sequence: segment ``text`` for its prompt tokens and ``completion`` for the
tokens generated after it (greedy decoding, batches left-padded, ``workbench.hooks.batch``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from workbench.errors import ParameterError, WorkbenchError
from workbench.prompts import PromptRecord, encode_prompt, parse_prompts, read_prompts
from workbench.recording.preflight import Log, Preflight, _quiet
from workbench.store.dataset import SequenceRecord, SpanRecord


@dataclass
class RecordSummary:
    """What a recording run wrote: sequences, tokens (of which generated), and where."""

    sequences: int
    tokens: int
    generated_tokens: int
    store: str
    model_name: str = ""
    moe_layers: int = 0
    top_k: int = 0

    def __str__(self) -> str:
        return (
            f"recorded {self.sequences} sequences, {self.tokens} tokens ({self.generated_tokens} generated), "
            f"{self.moe_layers} MoE layers x top-{self.top_k} -> {self.store}"
        )


def to_sequence_record(prompt: PromptRecord, routing: Any, n_prompt: int) -> SequenceRecord:
    """One store sequence from a ``Routing``: spans "text" for the prompt tokens, "completion" after them."""
    n = routing.n_tokens
    spans = [SpanRecord("text", 0, min(n_prompt, n))]
    if n > n_prompt:
        spans.append(SpanRecord("completion", n_prompt, n))
    return SequenceRecord(
        id=prompt.id, domain=prompt.domain, source=prompt.source, token_ids=routing.token_ids,
        expert_ids=routing.expert_ids, gate_weights=routing.gate_weights, router_scores=routing.router_scores,
        generated=routing.generated, spans=spans,
    )  # fmt: skip


def load_prompts(prompts: str | Path | Iterable[PromptRecord | Mapping[str, Any]]) -> list[PromptRecord]:
    """A prompt file (JSON Lines, ``workbench.prompts``) or prompts in memory, checked the same way."""
    if isinstance(prompts, str | Path):
        return read_prompts(prompts)
    return parse_prompts(prompts)


def progress_bar(total: int, desc: str, unit: str, progress: bool | None) -> Any:
    """tqdm's notebook-aware bar: a widget in Jupyter, text on a terminal. ``progress=None``: only on a TTY."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=None if progress is None else not progress)


def record_batches(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[PromptRecord],
    encoded: Sequence[list[int]],
    add: Callable[[SequenceRecord], None],
    recorder: Any,
    *,
    batch_size: int,
    max_new_tokens: int,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[int, int]:
    """Run ``encoded`` prompts in batches inside the active ``recorder``; ``add`` each finished sequence.

    Returns (tokens, generated tokens). ``on_batch(n)`` is called with each batch's number of prompts.
    """
    from workbench.hooks.batch import left_pad, run_batch

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    pad_id = 0 if pad_id is None else int(pad_id)
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    tokens = generated = 0
    for start in range(0, len(prompts), batch_size):
        batch = range(start, min(start + batch_size, len(prompts)))
        ids, mask = left_pad([encoded[i] for i in batch], pad_id)
        run_batch(model, ids, mask, max_new_tokens=max_new_tokens, pad_id=pad_id, eos_id=eos)
        routes = recorder.routing(reset=True)
        if len(routes) != len(batch):
            raise WorkbenchError(f"recorded {len(routes)} sequences for a batch of {len(batch)}")
        for i, routing in zip(batch, routes, strict=True):
            n_prompt = len(encoded[i])
            if not np.array_equal(routing.token_ids[:n_prompt], np.asarray(encoded[i])):
                raise WorkbenchError(f"{prompts[i].source}: recorded tokens do not match the prompt's tokens")
            add(to_sequence_record(prompts[i], routing, n_prompt))
            tokens += routing.n_tokens
            generated += int(routing.generated.sum())
        if on_batch is not None:
            on_batch(len(batch))
    return tokens, generated


def record(
    model: Any,
    prompts: str | Path | Iterable[PromptRecord | Mapping[str, Any]],
    out: str | Path,
    *,
    tokenizer: Any = None,
    scores: bool = False,
    max_new_tokens: int = 0,
    batch_size: int = 8,
    device_map: str | dict[str, Any] | None = None,
    dtype: str = "fp32",
    trust_remote_code: bool = False,
    allow_special: bool = False,
    progress: bool | None = True,
    storage_options: dict[str, Any] | None = None,
    log: Log = _quiet,
) -> RecordSummary:
    """Record per-token expert routing of ``model`` on ``prompts`` into the routing store ``out``.

    Parameters
    ----------
    model
        "k2-mini", a local checkpoint directory, or a model already loaded (``workbench.models.load_model``;
        pass its ``tokenizer`` too): a notebook records with the model it holds, without loading it again.
    prompts
        A JSON Lines prompt file (``workbench.prompts``) or a list of prompt dicts ``{id, domain, text}`` /
        ``{id, domain, messages, tools}`` or ``PromptRecord``s.
    out
        Routing store to create or append to (directory or fsspec URL).
    scores
        Also store the full router scores (token, layer, expert).
    max_new_tokens
        Tokens to generate (greedy) and record after each prompt; 0 records the prompts only.
    batch_size
        Prompts per forward / ``generate`` batch.
    device_map, dtype, trust_remote_code
        As in ``workbench.models.load_model``.
    allow_special
        Parse special-token strings in prompt text (e.g. ``"<|im_end|>"``) as special tokens; by default
        they are plain text (``workbench.prompts``).
    progress
        Show tqdm's notebook-aware progress bar, one step per prompt (None: only on a terminal).
    log
        Called with status lines ("loading ..."); silent by default.

    Returns
    -------
    RecordSummary

    Raises
    ------
    WorkbenchError
        Before any weight is read: bad prompt lines (``file:line``), a prompt longer than the model's
        context window, a model that is missing, not an MoE or has damaged weights, a store that would
        refuse this model or already holds a prompt id, an ``out`` that cannot be written.
    """
    if max_new_tokens < 0:
        raise ParameterError(f"{{max_new_tokens}} must be 0 or more, got {max_new_tokens}", "max_new_tokens")
    if batch_size < 1:
        raise ParameterError(f"{{batch_size}} must be at least 1, got {batch_size}", "batch_size")
    records = load_prompts(prompts)  # 1. every prompt, line by line
    pf = Preflight(
        model, out, tokenizer=tokenizer, dtype=dtype, device_map=device_map, trust_remote_code=trust_remote_code,
        storage_options=storage_options,
    )  # fmt: skip
    pf.refuse_clashes((r.id for r in records), "prompt id(s) are")
    tok = pf.tokenizer()
    encoded = [encode_prompt(tok, r, allow_special=allow_special) for r in records]
    for r, ids in zip(records, encoded, strict=True):
        pf.refuse_too_long(
            f"prompt {r.id!r} ({r.source})" if r.source else f"prompt {r.id!r}", len(ids), max_new_tokens,
            "; shorten it, or record it with replay, which windows long sequences",
        )  # fmt: skip
    loaded = pf.load(log)
    from workbench.hooks import RoutingRecorder

    recorder = RoutingRecorder(loaded, scores=scores)
    pf.check_loaded(recorder.config)
    with (
        pf.writer(recorder.config, scores=scores) as writer,
        recorder,
        progress_bar(len(records), "record", "prompt", progress) as bar,
    ):
        tokens, generated = record_batches(
            loaded, tok, records, encoded, writer.add, recorder, batch_size=batch_size,
            max_new_tokens=max_new_tokens, on_batch=bar.update,
        )  # fmt: skip
    cfg = recorder.config
    return RecordSummary(len(records), tokens, generated, str(out), cfg.model_name, len(cfg.moe_layers), cfg.top_k)
