"""The live agent loop: the model generates with the recorder on, K2 tool calls run, results go back.

Each step, as a chat API server with prefix caching would do it: the conversation is rendered with the
chat template and a generation prompt, the tokens the model has not read yet (the tool results, the
turn opener) are fed through the model on top of the KV cache kept from the previous steps, and one
assistant turn is generated (until ``<|im_end|>``) inside a ``RoutingRecorder``; the turn is parsed
(``<think>`` reasoning, content, K2 tool-call section), every call runs in the ToolBox and its result goes
back as a ``tool`` message. The loop ends at an answer without tool calls, after ``max_steps`` steps,
after ``max_malformed`` malformed tool-call sections in a row (each one is recorded verbatim and
answered with a user message naming the problem), or when the context window is full.

The episode becomes one store sequence (``workbench.agent.session.CachedStream``): the token stream the
model read, rendered exactly like ``render_as_generated``, each token's routing recorded by the one
forward that read it (a decode step for generated tokens, a cached prefill for the rest), so a step
costs the tokens it adds, not the whole conversation. Where the template's re-rendering of a generated
turn differs from the generated tokens, the re-rendered tokens are what later steps read: the cache is
cropped to the common prefix and those tokens are fed and recorded; ``Episode.rerouted_tokens`` counts
them. Message text that is not the model's own (the task, the system prompt, tool results) is
tokenized as plain text: a ``"<|im_end|>"`` in it never becomes the control token.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from workbench.agent.output import parse_assistant_output
from workbench.agent.tools import ToolBox
from workbench.errors import ParameterError, WorkbenchError
from workbench.store.dataset import SequenceRecord
from workbench.transcripts.as_generated import render_as_generated
from workbench.transcripts.messages import normalize_messages
from workbench.transcripts.render import render_transcript

MALFORMED_LABEL = "malformed tool call"


@dataclass
class StepLog:
    """What happened in one step (one assistant turn)."""

    step: int
    text: str  # the generated turn, special tokens included
    new_tokens: int
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    results: list[str] = field(default_factory=list)
    error: str | None = None  # a malformed tool-call section: why
    reasoning: str | None = None  # the turn's <think> text
    content: str = ""  # the turn's visible text (the answer, when there are no tool calls)


@dataclass
class Episode:
    id: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    steps: list[StepLog]
    stop_reason: str
    record: SequenceRecord
    rerouted_tokens: int = 0
    forwards: int = 0  # model forwards run (prefills and decode steps)

    @property
    def answer(self) -> str | None:
        """The final answer's text, or None when the loop stopped without one."""
        last = self.messages[-1] if self.messages else {}
        if self.stop_reason.startswith("answered") and last.get("role") == "assistant":
            return str(last.get("content") or "")
        return None


def _stop_ids(tokenizer: Any) -> list[int]:
    ids = []
    for t in ("<|im_end|>", tokenizer.eos_token):
        if t:
            i = tokenizer.convert_tokens_to_ids(t)
            if isinstance(i, int) and i >= 0 and i != tokenizer.unk_token_id:
                ids.append(i)
    if not ids:
        raise WorkbenchError("the tokenizer has neither <|im_end|> nor an EOS token to stop a turn at")
    return sorted(set(ids))


def run_agent(
    model: Any,
    tokenizer: Any,
    task: str,
    toolbox: ToolBox,
    *,
    episode_id: str = "agent-0",
    system: str | None = None,
    max_steps: int = 8,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    scores: bool = False,
    max_malformed: int = 2,
    template_kwargs: dict[str, Any] | None = None,
    generate_kwargs: dict[str, Any] | None = None,
    on_step: Callable[[StepLog], None] | None = None,
) -> Episode:
    """Run one task through the tool loop and return the episode with its routing as a SequenceRecord.

    ``generate_kwargs`` go to ``model.generate`` as well (e.g. a ``logits_processor`` for constrained
    decoding); ``on_step`` is called with each step's log as soon as its tools have run.
    """
    import torch

    from workbench.agent.session import CachedStream
    from workbench.hooks import RoutingRecorder

    if not task.strip():
        raise ParameterError("{task} is empty; give the user's task as text", "task")
    if max_steps < 1:
        raise ParameterError(f"{{max_steps}} must be at least 1, got {max_steps}", "max_steps")
    kw = dict(template_kwargs or {})
    tools = toolbox.declarations()
    messages: list[dict[str, Any]] = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": task}
    ]
    stop = _stop_ids(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop[0]
    window = int(getattr(getattr(model, "config", None), "max_position_embeddings", 0) or 0) or None
    gen: dict[str, Any] = {"do_sample": temperature > 0}
    if temperature > 0:
        gen.update(temperature=temperature, top_p=top_p)
        torch.manual_seed(seed)
    gen.update(generate_kwargs or {})
    logs: list[StepLog] = []
    malformed_steps: set[int] = set()
    bad_in_row, reason = 0, f"reached max_steps {max_steps} without a final answer"

    def done(log: StepLog) -> None:
        logs.append(log)
        if on_step:
            on_step(log)

    with RoutingRecorder(model, scores=scores, eos_token_id=[]) as rec:
        stream = CachedStream(model, rec)
        for step in range(max_steps):
            prompt = render_transcript(tokenizer, messages, tools, add_generation_prompt=True, plain_text=True, **kw)
            room = max_new_tokens if window is None else min(max_new_tokens, window - len(prompt.token_ids))
            if room < 1:
                n = len(prompt.token_ids)
                reason = f"stopped: the conversation fills the context window ({n} of {window} tokens)"
                break
            new = stream.generate(prompt.token_ids, stop, int(pad), max_new_tokens=room, **gen)
            text = tokenizer.decode(new.tolist(), skip_special_tokens=False)
            turn = parse_assistant_output(text, tuple(tokenizer.convert_ids_to_tokens(stop)))
            log = StepLog(step, text, len(new), turn.tool_calls, error=turn.error, reasoning=turn.reasoning,
                          content=turn.content)  # fmt: skip
            messages.append(turn.message())
            if turn.error:
                malformed_steps.add(step)
                bad_in_row += 1
                if bad_in_row >= max_malformed:
                    reason = f"stopped: {bad_in_row} malformed tool calls in a row (last: {turn.error})"
                    done(log)
                    break
                messages.append(
                    {"role": "user", "content": f"Your tool call could not be parsed ({turn.error}). "
                     "Write a valid K2 tool call with JSON arguments, or answer."}
                )  # fmt: skip
            elif turn.tool_calls:
                bad_in_row = 0
                for call in turn.tool_calls:
                    result = toolbox.run(call["function"]["name"], call["function"]["arguments"])
                    log.results.append(result)
                    # Moonshot's tool-call guidance for K2 appends {"role": "tool", "tool_call_id", "name", "content"};
                    # K2's template opens the turn with `name` (role_name = message.get('name') or message['role'])
                    name = call["function"]["name"]
                    messages.append({"role": "tool", "tool_call_id": call["id"], "name": name, "content": result})
            else:
                reason = "answered" if new.size and np.isin(new[-1], stop) else "answered (cut at max_new_tokens)"
                done(log)
                break
            done(log)

        messages = normalize_messages(messages)
        final = render_as_generated(tokenizer, messages, tools, plain_text=True, **kw)
        stream.feed(final.token_ids)  # the last turn's end and the tool results no generation read yet
    routing = stream.routing()
    spans = final.spans()
    for sp in spans:
        if sp.kind == "answer" and sp.step in malformed_steps:
            sp.label = MALFORMED_LABEL
    record = SequenceRecord(
        id=episode_id, domain="agent", source=f"agent: {task[:80]}", token_ids=final.token_ids,
        expert_ids=routing.expert_ids, gate_weights=routing.gate_weights, router_scores=routing.router_scores,
        generated=routing.generated, spans=spans,
    )  # fmt: skip
    return Episode(episode_id, messages, tools, logs, reason, record, stream.rerouted, stream.forwards)
