"""The live agent loop: the model generates with the recorder on, K2 tool calls run, results go back.

Each step, as a chat API server would do it: the conversation is rendered with the chat template and a
generation prompt, the model generates one assistant turn (until ``<|im_end|>``) inside a
``RoutingRecorder``, the turn is parsed (``<think>`` reasoning, content, K2 tool-call section), every
call runs in the ToolBox and its result goes back as a ``tool`` message. The loop ends at an answer
without tool calls, after ``max_steps`` steps, or after ``max_malformed`` malformed tool-call sections
in a row (each one is recorded verbatim and answered with a user message naming the problem).

The episode becomes one store sequence: the token stream the model processed (rendered exactly like
``render_as_generated``), with the routing captured live while it generated, and the routing of prompt
tokens from the prefill that read them. Where the template's re-rendering of a generated turn differs
from the generated tokens (e.g. the model wrote a non-canonical tokenization, or text after its tool
section), the re-rendered tokens are what later steps read, so those are kept and routed by the next
pass; ``Episode.rerouted_tokens`` counts them.
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
from workbench.transcripts.replay import cache_kwarg, route_sequence

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


@dataclass
class Episode:
    id: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    steps: list[StepLog]
    stop_reason: str
    record: SequenceRecord
    rerouted_tokens: int = 0


class _Stream:
    """The token stream of the episode so far and the routing recorded for each of its tokens."""

    def __init__(self) -> None:
        self.ids = np.zeros(0, np.int64)
        self.rows: list[tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]] = []  # per token block

    def keep(self, ids: np.ndarray) -> int:
        """Keep the longest prefix shared with ``ids``; return its length."""
        n = min(len(ids), len(self.ids))
        diff = np.nonzero(ids[:n] != self.ids[:n])[0]
        c = int(diff[0]) if len(diff) else n
        out, pos = [], 0
        for block in self.rows:
            m = len(block[0])
            if pos + m <= c:
                out.append(block)
            elif pos < c:
                out.append(tuple(None if a is None else a[: c - pos] for a in block))  # type: ignore[arg-type]
            pos += m
        self.rows, self.ids = out, self.ids[:c]
        return c

    def extend(self, ids: np.ndarray, eids: np.ndarray, w: np.ndarray, s: np.ndarray | None, gen: np.ndarray) -> None:
        self.ids = np.concatenate([self.ids, ids])
        self.rows.append((eids, w, s, gen))

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
        eids = np.concatenate([b[0] for b in self.rows])  # (T, L, k)
        w = np.concatenate([b[1] for b in self.rows])  # (T, L, k)
        s = None if any(b[2] is None for b in self.rows) else np.concatenate([b[2] for b in self.rows])  # type: ignore[misc]
        gen = np.concatenate([b[3] for b in self.rows])  # (T,)
        return eids, w, s, gen


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


def _generate(model: Any, prompt: np.ndarray, stop: list[int], pad: int, *, scores: bool, **gen: Any) -> Any:
    """Generate one turn inside a recorder; returns (new token ids, Routing of prompt + new tokens)."""
    import torch

    from workbench.hooks import RoutingRecorder

    device = next((p.device for p in model.parameters() if not p.is_meta), torch.device("cpu"))
    x = torch.as_tensor(prompt, dtype=torch.long, device=device)[None]  # (1, T)
    with RoutingRecorder(model, scores=scores, eos_token_id=stop) as rec, torch.no_grad():
        out = model.generate(
            input_ids=x, attention_mask=torch.ones_like(x), eos_token_id=stop, pad_token_id=pad,
            return_dict_in_generate=True, **gen,
        )  # fmt: skip
        seq = out.sequences[0]  # (T + n,)
        new = seq[x.shape[1] :].cpu().numpy()
        cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
        if len(new) and cache is not None:  # generate never feeds its last token back: route it too
            mask = torch.ones((1, len(seq)), dtype=torch.long, device=device)
            model(input_ids=seq[None, -1:], attention_mask=mask, use_cache=True, **{cache_kwarg(model): cache})
    (routing,) = rec.routing()
    stops = np.nonzero(np.isin(new, stop))[0]
    if len(stops):
        new = new[: stops[0] + 1]
    return new, routing


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
    gen: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": temperature > 0}
    if temperature > 0:
        gen.update(temperature=temperature, top_p=top_p)
        torch.manual_seed(seed)
    gen.update(generate_kwargs or {})
    stream, logs, malformed_steps = _Stream(), [], set()
    rerouted, bad_in_row, reason = 0, 0, f"reached max_steps {max_steps} without a final answer"
    for step in range(max_steps):
        prompt = render_transcript(tokenizer, messages, tools, add_generation_prompt=True, **kw).token_ids
        before = len(stream.ids)
        kept = stream.keep(prompt)
        rerouted += before - kept
        new, routing = _generate(model, prompt, stop, int(pad), scores=scores, **gen)
        total = len(prompt) + len(new)
        if routing.n_tokens < total or not np.array_equal(routing.token_ids[:total], np.concatenate([prompt, new])):
            raise WorkbenchError(f"step {step}: the recorder saw other tokens than the model was given")
        sl = slice(kept, total)
        flags = np.arange(kept, total) >= len(prompt)
        stream.extend(
            np.concatenate([prompt, new])[sl], routing.expert_ids[sl], routing.gate_weights[sl],
            None if routing.router_scores is None else routing.router_scores[sl], flags,
        )  # fmt: skip
        text = tokenizer.decode(new.tolist(), skip_special_tokens=False)
        turn = parse_assistant_output(text, tuple(tokenizer.convert_ids_to_tokens(stop)))
        log = StepLog(step, text, len(new), turn.tool_calls, error=turn.error)
        messages.append(turn.message())
        if turn.error:
            malformed_steps.add(step)
            bad_in_row += 1
            if bad_in_row >= max_malformed:
                reason = f"stopped: {bad_in_row} malformed tool calls in a row (last: {turn.error})"
                logs.append(log)
                if on_step:
                    on_step(log)
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
            logs.append(log)
            if on_step:
                on_step(log)
            reason = "answered" if new.size and np.isin(new[-1], stop) else "answered (cut at max_new_tokens)"
            break
        logs.append(log)
        if on_step:
            on_step(log)

    messages = normalize_messages(messages)
    final = render_as_generated(tokenizer, messages, tools, **kw)
    before = len(stream.ids)
    kept = stream.keep(final.token_ids)
    rerouted += before - kept
    if kept < len(final.token_ids):  # the tool results of a last step nobody read, or a re-rendered tail
        routed = route_sequence(model, final.token_ids, scores=scores)
        sl = slice(kept, None)
        stream.extend(
            final.token_ids[sl], routed.expert_ids[sl], routed.gate_weights[sl],
            None if routed.router_scores is None else routed.router_scores[sl],
            np.zeros(len(final.token_ids) - kept, bool),
        )  # fmt: skip
    eids, w, s, gen_flags = stream.arrays()
    spans = final.spans()
    for sp in spans:
        if sp.kind == "answer" and sp.step in malformed_steps:
            sp.label = MALFORMED_LABEL
    record = SequenceRecord(
        id=episode_id, domain="agent", source=f"agent: {task[:80]}", token_ids=final.token_ids,
        expert_ids=eids, gate_weights=w, router_scores=s, generated=gen_flags, spans=spans,
    )  # fmt: skip
    return Episode(episode_id, messages, tools, logs, reason, record, rerouted)
