"""``replay``: chat transcripts through a model, teacher forced, into a routing store (``workbench replay``).

Each transcript becomes one sequence, rendered as the model processed it (``render_as_generated``) and
routed in one teacher-forced pass (KV-cached chunks; windows past the context, see
``workbench.transcripts.replay``), with its segments and tool-loop steps as spans. Every transcript is
rendered with the tokenizer before the weights load, and that render is the one routed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.errors import ParameterError, WorkbenchError
from workbench.prompts import PromptFileError, refuse_special_strings
from workbench.recording.preflight import Log, Preflight, _quiet
from workbench.recording.prompts import progress_bar
from workbench.transcripts.messages import Transcript, TranscriptError, read_transcripts, transcript_from_dict


@dataclass
class ReplaySummary:
    """What a replay wrote, and what a reader of the store should know about it."""

    sequences: int
    tokens: int
    store: str
    truncated_context_tokens: int = 0  # tokens routed with half-window context (beyond the context window)
    not_rendered: list[str] = field(default_factory=list)  # "id: what" the chat template leaves out
    window: int | None = None  # the context window the replay cut long transcripts at (tokens)

    def truncation_note(self) -> str | None:
        """One line on what half-window context means for the results, or None when no token had it."""
        if not self.truncated_context_tokens:
            return None
        w = f"{self.window}-token" if self.window else "model's"
        half = f"{self.window // 2}+" if self.window else "half a window of"
        return (
            f"{self.truncated_context_tokens} tokens lay past the {w} context window: they were routed with only the "
            f"previous {half} tokens as context (overlapping windows), not the whole history, so their routing may "
            "differ from full-context routing"
        )

    def __str__(self) -> str:
        return f"replayed {self.sequences} transcripts, {self.tokens} tokens -> {self.store}"


def load_transcripts(transcripts: str | Path | Iterable[Transcript | Mapping[str, Any]]) -> list[Transcript]:
    """A transcript file (JSON Lines) or transcripts in memory (``Transcript``s or dicts of the line format)."""
    if isinstance(transcripts, str | Path):
        return read_transcripts(transcripts)
    out: list[Transcript] = []
    seen: set[str] = set()
    for i, t in enumerate(transcripts):
        item = t if isinstance(t, Transcript) else transcript_from_dict(dict(t), where=f"transcripts[{i}]")
        if item.id in seen:
            raise TranscriptError(f"transcripts[{i}]: id {item.id!r} appears twice; ids must be unique")
        seen.add(item.id)
        out.append(item)
    if not out:
        raise TranscriptError("no transcripts given")
    return out


def replay(
    model: Any,
    transcripts: str | Path | Iterable[Transcript | Mapping[str, Any]],
    out: str | Path,
    *,
    tokenizer: Any = None,
    scores: bool = False,
    chunk_tokens: int = 2048,
    window: int | None = None,
    template_kwargs: dict[str, Any] | None = None,
    device_map: str | dict[str, Any] | None = None,
    dtype: str = "fp32",
    trust_remote_code: bool = False,
    allow_special: bool = False,
    progress: bool | None = True,
    storage_options: dict[str, Any] | None = None,
    log: Log = _quiet,
) -> ReplaySummary:
    """Replay chat transcripts through ``model`` in one teacher-forced pass each, into the store ``out``.

    Parameters
    ----------
    model
        "k2-mini", a checkpoint directory, or a loaded model (pass its ``tokenizer``).
    transcripts
        A JSON Lines transcript file (docs/transcripts.md) or a list of transcript dicts / ``Transcript``s.
    chunk_tokens
        Tokens per forward; the KV cache is carried, so this is the same computation as one pass.
    window
        Context window (default: the model's ``max_position_embeddings``); longer transcripts are cut into
        half-overlapping windows, and ``ReplaySummary.truncated_context_tokens`` counts the tokens routed
        with half-window context.
    template_kwargs
        Chat-template variables, e.g. ``{"thinking": True}``.
    allow_special
        Read special-token strings inside message text (e.g. ``"<|im_end|>"`` in a tool result) as the
        special tokens the template's output parses them as; by default such a transcript is refused.
    scores, device_map, dtype, trust_remote_code, progress, log
        As in ``workbench.recording.record``.
    """
    if chunk_tokens < 1:
        raise ParameterError(f"{{chunk_tokens}} must be at least 1, got {chunk_tokens}", "chunk_tokens")
    if window is not None and window < 2:
        raise ParameterError(f"{{window}} must be at least 2 tokens, got {window}", "window")
    items = load_transcripts(transcripts)  # 1. every line, before the model
    pf = Preflight(
        model, out, tokenizer=tokenizer, dtype=dtype, device_map=device_map, trust_remote_code=trust_remote_code,
        storage_options=storage_options,
    )  # fmt: skip
    pf.refuse_clashes((t.id for t in items), "transcript id(s) are")
    tok = pf.tokenizer()
    if getattr(tok, "chat_template", None) is None:
        raise WorkbenchError(f"the tokenizer of {pf.name} has no chat template; transcripts cannot be rendered")
    from workbench.transcripts.as_generated import render_as_generated

    kwargs = dict(template_kwargs or {})
    rendered = []
    for t in items:  # every transcript renders with this template, before any weight is read
        where = f"transcript {t.id!r}" + (f" ({Path(t.source).name})" if t.source else "")
        if not allow_special:
            try:
                refuse_special_strings(tok, t.messages, "messages", where)
            except PromptFileError as err:
                raise TranscriptError(str(err)) from None
        rendered.append(render_as_generated(tok, t, **kwargs))
    loaded = pf.load(log)
    from workbench.hooks import RoutingRecorder
    from workbench.transcripts.replay import replay_transcript

    recorder = RoutingRecorder(loaded, scores=scores, eos_token_id=[])
    pf.check_loaded(recorder.config)
    limit = window or int(getattr(getattr(loaded, "config", None), "max_position_embeddings", 0) or 0) or None
    summary = ReplaySummary(len(items), 0, str(out), window=limit)
    with (
        pf.writer(recorder.config, scores=scores) as writer,
        progress_bar(len(items), "replay", "transcript", progress) as bar,
    ):
        for t, r in zip(items, rendered, strict=True):
            res = replay_transcript(
                loaded, tok, t, scores=scores, chunk_tokens=chunk_tokens, window=window, recorder=recorder,
                rendered=r,
            )  # fmt: skip
            writer.add(res.record)
            summary.tokens += res.record.n_tokens
            summary.truncated_context_tokens += res.truncated_context_tokens
            summary.not_rendered += [f"{t.id}: {what}" for what in r.not_rendered]
            bar.update(1)
    return summary
