"""Record a list of prompts with a loaded model into a routing store (what ``workbench record`` runs).

Prompts are tokenised, left-padded into batches and run with ``generate`` (or one forward when
``max_new_tokens`` is 0) inside a ``RoutingRecorder``; each finished sequence goes to the store's
background writer as one ``SequenceRecord``: segment "text" for the prompt tokens, "completion" for
the generated ones.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from workbench.hooks.recorder import RoutingRecorder
from workbench.hooks.routing import Routing

from workbench.errors import WorkbenchError
from workbench.prompts import PromptRecord
from workbench.store.dataset import SequenceRecord, SpanRecord


@dataclass
class RecordSummary:
    """What a recording run wrote."""

    sequences: int
    tokens: int
    generated_tokens: int
    store: str


def encode_prompt(tokenizer: Any, prompt: PromptRecord) -> list[int]:
    """Token ids of a prompt: plain text with the tokenizer's specials, chat prompts via the chat template."""
    if prompt.messages is not None:
        if not getattr(tokenizer, "chat_template", None):
            raise WorkbenchError(f"{prompt.source}: a chat prompt needs a tokenizer with a chat template")
        out = tokenizer.apply_chat_template(
            prompt.messages, tools=prompt.tools, add_generation_prompt=True, tokenize=True
        )
        ids = out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out
    else:
        ids = tokenizer(prompt.text)["input_ids"]
    ids = [int(i) for i in ids]
    if not ids:
        raise WorkbenchError(f"{prompt.source}: prompt {prompt.id!r} encodes to no tokens")
    return ids


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) ids and attention mask, padded on the left so every row's last token is at -1."""
    t = max(len(r) for r in rows)
    ids = torch.full((len(rows), t), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), t), dtype=torch.long)
    for b, r in enumerate(rows):
        ids[b, t - len(r) :] = torch.tensor(r, dtype=torch.long)
        mask[b, t - len(r) :] = 1
    return ids, mask


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that ignore left padding, as ``generate`` forms them: cumsum(mask) - 1, 0 on pads."""
    pos = mask.long().cumsum(-1) - 1  # (B, T)
    return pos.masked_fill(mask == 0, 0)


def _cache_kwarg(model: nn.Module) -> str:
    params = inspect.signature(type(model).forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def run_batch(
    model: nn.Module,
    ids: torch.Tensor,
    mask: torch.Tensor,
    *,
    max_new_tokens: int,
    pad_id: int,
    eos_id: int | list[int] | None,
) -> None:
    """Forward (or generate, then route the last generated token with one more cached step) one batch.

    Must run inside an active ``RoutingRecorder``. Greedy decoding, so a run is reproducible.
    """
    device = next((p.device for p in model.parameters() if not p.is_meta), torch.device("cpu"))
    ids, mask = ids.to(device), mask.to(device)
    with torch.no_grad():
        if max_new_tokens <= 0:
            model(input_ids=ids, attention_mask=mask, position_ids=positions(mask), use_cache=False)
            return
        out = model.generate(  # type: ignore[operator]
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad_id,
            eos_token_id=eos_id,
            return_dict_in_generate=True,
        )
        cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
        seqs = out.sequences  # (B, T + n)
        if cache is None or seqs.shape[1] == ids.shape[1]:
            return
        # generate never runs a forward on its last token: one cached step routes it too.
        full = torch.cat([mask, torch.ones_like(seqs[:, ids.shape[1] :])], dim=1)  # (B, T + n)
        model(
            input_ids=seqs[:, -1:],
            attention_mask=full,
            position_ids=positions(full)[:, -1:],
            use_cache=True,
            **{_cache_kwarg(model): cache},
        )


def to_sequence_record(prompt: PromptRecord, routing: Routing, n_prompt: int) -> SequenceRecord:
    """One store sequence: spans "text" for the prompt tokens and "completion" for the generated ones."""
    n = routing.n_tokens
    spans = [SpanRecord("text", 0, min(n_prompt, n))]
    if n > n_prompt:
        spans.append(SpanRecord("completion", n_prompt, n))
    return SequenceRecord(
        id=prompt.id,
        domain=prompt.domain,
        source=prompt.source,
        token_ids=routing.token_ids,
        expert_ids=routing.expert_ids,
        gate_weights=routing.gate_weights,
        router_scores=routing.router_scores,
        generated=routing.generated,
        spans=spans,
    )


def record_prompts(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[PromptRecord],
    add: Callable[[SequenceRecord], None],
    recorder: RoutingRecorder,
    *,
    batch_size: int = 8,
    max_new_tokens: int = 0,
    progress: Callable[[int], None] | None = None,
) -> RecordSummary:
    """Record ``prompts`` in batches; ``add`` receives each finished SequenceRecord (e.g. ``writer.add``).

    ``recorder`` must be active (inside its ``with``). ``progress(n)`` is called with the number of
    prompts finished in each batch.
    """
    if not recorder.active:
        raise WorkbenchError("record_prompts needs an active RoutingRecorder (call it inside `with recorder:`)")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    pad_id = 0 if pad_id is None else int(pad_id)
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    encoded = [encode_prompt(tokenizer, p) for p in prompts]
    tokens = generated = 0
    for start in range(0, len(prompts), max(1, batch_size)):
        batch = list(range(start, min(start + batch_size, len(prompts))))
        ids, mask = left_pad([encoded[i] for i in batch], pad_id)
        run_batch(model, ids, mask, max_new_tokens=max_new_tokens, pad_id=pad_id, eos_id=eos)
        routes = recorder.routing(reset=True)
        if len(routes) != len(batch):
            raise WorkbenchError(f"recorded {len(routes)} sequences for a batch of {len(batch)}; nothing was written")
        for i, routing in zip(batch, routes, strict=True):
            n_prompt = len(encoded[i])
            if not np.array_equal(routing.token_ids[:n_prompt], np.asarray(encoded[i])):
                raise WorkbenchError(f"{prompts[i].source}: recorded tokens do not match the prompt's tokens")
            add(to_sequence_record(prompts[i], routing, n_prompt))
            tokens += routing.n_tokens
            generated += int(routing.generated.sum())
        if progress is not None:
            progress(len(batch))
    return RecordSummary(len(prompts), tokens, generated, "")
