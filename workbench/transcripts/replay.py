"""Replay a transcript through a model (teacher forcing) and record the routing of every token.

One transcript is one sequence in the store: rendered as the model processed it (``render_as_generated``),
routed in a single teacher-forced pass, with its segments and tool-loop steps as spans.

Long transcripts (a 300-step K2 session runs to 100k+ tokens):

- *memory*: the pass runs in chunks of ``chunk_tokens`` that carry the KV cache forward, which is the
  same computation as one pass (each token attends to all tokens before it), only with bounded
  activation memory;
- *window*: past the model's context window (``max_position_embeddings``, or ``window``) one pass is not
  possible. The sequence is cut into windows that overlap by half a window: each window after the first
  re-reads the previous half window as fresh context (those tokens' routing is discarded) and records
  the rest. Tokens there are routed with a left context of at least half a window instead of the whole
  history; ``ReplayResult.truncated_context_tokens`` counts them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from workbench.errors import WorkbenchError
from workbench.hooks.batch import cache_kwarg
from workbench.hooks.routing import Routing
from workbench.store.dataset import SequenceRecord
from workbench.transcripts.as_generated import render_as_generated
from workbench.transcripts.messages import Transcript
from workbench.transcripts.render import RenderedTranscript


@dataclass
class RoutedTokens(Routing):
    """The ``Routing`` of a whole sequence (ids (T, L, k), weights (T, L, k), scores (T, L, E) or None), with
    how it was computed: tokens routed with half-window context, and forwards run."""

    truncated_context_tokens: int = 0
    forwards: int = 0


def _cached_pass(model: Any, ids: np.ndarray, rec: Any, chunk: int) -> tuple[Any, int]:
    """One teacher-forced pass over ``ids`` in KV-cached chunks inside the active recorder ``rec``."""
    import torch

    device = next((p.device for p in model.parameters() if not p.is_meta), torch.device("cpu"))
    x = torch.as_tensor(ids, dtype=torch.long, device=device)[None]  # (1, T)
    rec.reset()
    cache, n = None, 0
    name = cache_kwarg(model)
    with torch.no_grad():
        for a in range(0, x.shape[1], chunk):
            out = model(input_ids=x[:, a : a + chunk], use_cache=True, **({name: cache} if cache is not None else {}))
            cache, n = getattr(out, "cache", None) or getattr(out, "past_key_values", None), n + 1
    routes = rec.routing(reset=True)
    if len(routes) != 1 or routes[0].n_tokens != len(ids):
        got = sum(r.n_tokens for r in routes)
        raise WorkbenchError(f"recorded {got} tokens in {len(routes)} rows for a pass over {len(ids)} tokens")
    return routes[0], n


def route_sequence(
    model: Any,
    token_ids: np.ndarray,
    *,
    scores: bool = False,
    chunk_tokens: int = 2048,
    window: int | None = None,
    recorder: Any = None,
) -> RoutedTokens:
    """Routing of every token of one sequence (teacher forced), chunked and windowed as described above."""
    from workbench.hooks import RoutingRecorder

    ids = np.asarray(token_ids, dtype=np.int64)
    t = len(ids)
    if t == 0:
        raise WorkbenchError("cannot route an empty sequence")
    if window is None:
        window = int(getattr(getattr(model, "config", None), "max_position_embeddings", 0) or t)
    if window < 2:
        raise WorkbenchError(f"window must be at least 2 tokens, got {window}")
    chunk = max(1, min(chunk_tokens, window))
    rec = recorder or RoutingRecorder(model, scores=scores, eos_token_id=[])
    parts: list[Routing] = []
    truncated, forwards = 0, 0
    context = window // 2
    with rec:
        start = 0
        while start < t:
            lead = 0 if start == 0 else context  # tokens re-read as context, routing discarded
            stop = min(t, start - lead + window)
            r, n = _cached_pass(model, ids[start - lead : stop], rec, chunk)
            forwards += n
            parts.append(r.window(lead))
            if start > 0:
                truncated += stop - start
            start = stop
    whole = Routing.concat(parts)
    return RoutedTokens(
        whole.expert_ids, whole.gate_weights, whole.router_scores, whole.token_ids, whole.generated, whole.layers,
        truncated_context_tokens=truncated, forwards=forwards,
    )  # fmt: skip


@dataclass
class ReplayResult:
    record: SequenceRecord
    rendered: RenderedTranscript
    truncated_context_tokens: int
    forwards: int


def replay_transcript(
    model: Any,
    tokenizer: Any,
    transcript: Transcript,
    *,
    scores: bool = False,
    chunk_tokens: int = 2048,
    window: int | None = None,
    template_kwargs: dict[str, Any] | None = None,
    recorder: Any = None,
    rendered: RenderedTranscript | None = None,
) -> ReplayResult:
    """Render ``transcript`` as the model processed it (or take ``rendered``, rendered so already) and record
    its routing as one store sequence."""
    if rendered is None:
        rendered = render_as_generated(tokenizer, transcript, **(template_kwargs or {}))
    routed = route_sequence(
        model, rendered.token_ids, scores=scores, chunk_tokens=chunk_tokens, window=window, recorder=recorder
    )
    record = SequenceRecord(
        id=transcript.id,
        domain=transcript.domain,
        source=transcript.source or "transcript",
        token_ids=rendered.token_ids,
        expert_ids=routed.expert_ids,
        gate_weights=routed.gate_weights,
        router_scores=routed.router_scores,
        generated=np.zeros(len(rendered.token_ids), dtype=bool),
        spans=rendered.spans(),
    )
    return ReplayResult(record, rendered, routed.truncated_context_tokens, routed.forwards)
