"""``record_agent``: run the live tool loop on a model and record the episode into a routing store.

The loop itself (generate with the recorder on, parse K2 tool calls, run tools, feed results back) is
``workbench.agent.loop.run_agent``; this adds the shared preflight, so a bad task, tool list, document
set, model or store is refused before the weights load, and the store and transcript writes.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from workbench.errors import ParameterError
from workbench.recording.preflight import Log, Preflight, _quiet


def check_append_target(path: str | Path, param: str) -> None:
    """Refuse a file to append to that cannot be: a missing or read-only folder, a read-only file."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise ParameterError(f"{{{param}}} {path} is a folder; give a .jsonl file to append to", param)
    folder = p.parent if str(p.parent) else Path(".")
    if not folder.is_dir():
        raise ParameterError(f"{{{param}}}: folder {folder} does not exist", param)
    target = p if p.exists() else folder
    if not os.access(target, os.W_OK):
        raise ParameterError(f"{{{param}}} {path}: {target} is not writable (read-only or no permission)", param)


def record_agent(
    model: Any,
    task: str,
    out: str | Path,
    *,
    tokenizer: Any = None,
    tools: Sequence[str] = ("python", "calculator", "search"),
    docs: str | Path | None = None,
    episode_id: str | None = None,
    system: str | None = None,
    max_steps: int = 8,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    timeout: float = 10.0,
    memory_mb: int = 512,
    transcript_out: str | Path | None = None,
    scores: bool = False,
    device_map: str | dict[str, Any] | None = None,
    dtype: str = "fp32",
    trust_remote_code: bool = False,
    on_step: Callable[[Any], None] | None = None,
    generate_kwargs: dict[str, Any] | None = None,
    storage_options: dict[str, Any] | None = None,
    log: Log = _quiet,
) -> Any:
    """Run ``task`` through the tool loop on ``model`` and append the episode to the store ``out``.

    Parameters
    ----------
    tools
        Tool names: ``python`` (sandboxed), ``calculator``, ``search`` (BM25 over ``docs``).
    docs
        Search documents: a folder of .md/.txt files or a .jsonl of ``{title, text}`` (default: bundled).
    episode_id
        The sequence id in the store (default ``agent-<date>-<time>``).
    max_steps, max_new_tokens
        Most assistant turns, and most tokens per turn.
    temperature, top_p, seed
        Sampling (temperature 0: greedy).
    timeout, memory_mb
        The python tool's wall-clock limit (s) and address-space limit (MiB) per run.
    transcript_out
        Also append the episode as one transcript line (JSON Lines), so it can be replayed.
    on_step
        Called with each step's ``StepLog`` as soon as its tools have run.
    generate_kwargs
        Also passed to ``model.generate`` (e.g. a ``logits_processor`` for constrained decoding).
    model, tokenizer, scores, device_map, dtype, trust_remote_code, log
        As in ``workbench.recording.record``.

    Returns
    -------
    workbench.agent.loop.Episode
    """
    from workbench.agent.sandbox import SandboxLimits
    from workbench.agent.tools import make_toolbox

    if not task.strip():
        raise ParameterError("{task} is empty; give the user's task as text", "task")
    if max_steps < 1:
        raise ParameterError(f"{{max_steps}} must be at least 1, got {max_steps}", "max_steps")
    if max_new_tokens < 1:
        raise ParameterError(f"{{max_new_tokens}} must be at least 1, got {max_new_tokens}", "max_new_tokens")
    if timeout <= 0:
        raise ParameterError(f"{{timeout}} must be positive, got {timeout}", "timeout")
    if memory_mb < 64:
        raise ParameterError(f"{{memory_mb}} must be at least 64, got {memory_mb}", "memory_mb")
    limits = SandboxLimits(timeout_s=timeout, cpu_s=int(timeout) + 1, memory_mb=memory_mb)
    toolbox = make_toolbox(list(tools), docs=docs, limits=limits)  # reads and checks the documents
    if transcript_out is not None:
        check_append_target(transcript_out, "transcript_out")
    pf = Preflight(
        model, out, tokenizer=tokenizer, dtype=dtype, device_map=device_map, trust_remote_code=trust_remote_code,
        storage_options=storage_options,
    )  # fmt: skip
    sid = episode_id or f"agent-{time.strftime('%Y%m%d-%H%M%S')}"
    if sid in pf.existing:
        raise ParameterError(f"sequence id {sid!r} is already in {out}; pass another {{episode_id}}", "episode_id")
    tok = pf.tokenizer()
    n_task = len(tok(task, split_special_tokens=True)["input_ids"])
    pf.refuse_too_long("the task", n_task, max_new_tokens, "; shorten the task")
    loaded = pf.load(log)
    from workbench.agent.loop import run_agent
    from workbench.hooks import RoutingRecorder

    config = RoutingRecorder(loaded).config
    pf.check_loaded(config)
    episode = run_agent(
        loaded, tok, task, toolbox, episode_id=sid, system=system, max_steps=max_steps,
        max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed, scores=scores,
        on_step=on_step, generate_kwargs=generate_kwargs,
    )  # fmt: skip
    with pf.writer(config, scores=scores) as writer:
        writer.add(episode.record)
    if transcript_out is not None:
        line = {"id": sid, "domain": "agent", "messages": episode.messages, "tools": episode.tools}
        with open(transcript_out, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(line, ensure_ascii=False) + "\n")
    return episode
