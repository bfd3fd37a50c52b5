"""``record_from_engine``: send prompts to a running vLLM/SGLang server, store the routing it returns.

The same routing store as hook capture, ids only: ``gate_weights`` are NaN (engines return expert
ids, not the weights), ``attrs["capture"]`` is the engine name, ``has_gate_weights`` is false, and
``rank_order`` is false (engines return each token's top-k set unsorted; ``workbench/rank_order.py``).

Order of work, so that bad input writes nothing: read the model's config and tokenizer, tokenize
every prompt, check the store would accept an append (``check_appendable``), send the first prompt
and validate its answer (server reachable, capture flag on, shape matching the model's layers and
top-k). Only then is the store opened; the remaining prompts go out ``concurrency`` at a time (the
engine batches them) and each finished sequence is committed atomically, in prompt order.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from workbench.engines import sglang, vllm
from workbench.engines.align import align_to_tokens, select_moe_layers
from workbench.engines.client import EngineClient, EngineError, EngineParameterError
from workbench.engines.model_info import load_tokenizer, resolve_model_dir, routing_config_from_dir, tokenizer_attrs
from workbench.routing_config import RoutingConfig
from workbench.store.dataset import SequenceRecord

ENGINES = ("vllm", "sglang")


@dataclass
class _Prompt:
    id: str
    domain: str
    source: str
    token_ids: list[int]


def _field(rec: Any, name: str, default: Any = None) -> Any:
    if isinstance(rec, Mapping):
        return rec.get(name, default)
    return getattr(rec, name, default)


def _tokenize(rec: Any, tokenizer: Any, max_new_tokens: int, default_source: str, allow_special: bool) -> _Prompt:
    rid = _field(rec, "id")
    if rid is None:
        raise EngineError(f"a prompt has no id: {str(rec)[:80]}")
    messages = _field(rec, "messages")
    text = _field(rec, "text")
    if messages:
        ends_with_assistant = _field(messages[-1], "role") == "assistant"
        out = tokenizer.apply_chat_template(
            [dict(m) for m in messages],
            tools=_field(rec, "tools") or None,
            tokenize=True,
            add_generation_prompt=max_new_tokens > 0 and not ends_with_assistant,
        )
        ids = out["input_ids"] if isinstance(out, Mapping) else out
    elif text is not None:
        from workbench.prompts import encode_text  # plain text unless allow_special, as with hook capture

        ids = encode_text(tokenizer, str(text), allow_special=allow_special, where=f"prompt {rid!r}")
    else:
        raise EngineError(f"prompt {rid!r} has neither text nor messages")
    if len(ids) == 0:
        raise EngineError(f"prompt {rid!r} tokenizes to no tokens")
    domain = str(_field(rec, "domain", "") or "")
    return _Prompt(str(rid), domain, str(_field(rec, "source") or default_source), [int(t) for t in ids])


def _read_prompts(prompts: str | os.PathLike[str] | Iterable[Any]) -> tuple[list[Any], str]:
    if isinstance(prompts, str | os.PathLike):
        from workbench.prompts import read_prompts  # the JSONL reader shared with hook capture

        return list(read_prompts(Path(prompts))), Path(prompts).name
    return list(prompts), "prompts"


class _Engine:
    """The per-engine request/parse pair behind one interface."""

    def __init__(self, name: str, client: EngineClient, config: RoutingConfig, served_model: str | None) -> None:
        self.name, self.client, self.config = name, client, config
        self.served = served_model
        if name == "vllm" and self.served is None:
            self.served = vllm.served_model(client)

    def call(self, prompt_ids: list[int], max_new_tokens: int, temperature: float) -> tuple[list[int], np.ndarray]:
        if self.name == "vllm":
            path, payload = vllm.request(
                prompt_ids, model=str(self.served), max_new_tokens=max_new_tokens, temperature=temperature
            )
            return vllm.parse(self.client.post_json(path, payload), prompt_ids)
        path, payload = sglang.request(prompt_ids, max_new_tokens=max_new_tokens, temperature=temperature)
        return sglang.parse(self.client.post_json(path, payload), self.config, prompt_ids)


def _to_record(engine: _Engine, p: _Prompt, max_new_tokens: int, temperature: float) -> SequenceRecord:
    output_ids, raw = engine.call(p.token_ids, max_new_tokens, temperature)
    if max_new_tokens == 0:  # teacher-forced: one token was sampled only to run the prompt; keep prompt rows
        output_ids, raw = output_ids[:1], raw[: len(p.token_ids)]
    moe = select_moe_layers(raw, engine.config, engine.name)  # (R, L_moe, k)
    token_ids, expert_ids, generated = align_to_tokens(moe, p.token_ids, output_ids, engine.name, p.id)
    return SequenceRecord(
        id=p.id,
        domain=p.domain,
        source=p.source,
        token_ids=token_ids,
        expert_ids=expert_ids,
        gate_weights=None,  # engines give ids only: the store holds NaN weights
        generated=generated,
    )


def record_from_engine(
    engine: str,
    url: str,
    prompts: str | os.PathLike[str] | Iterable[Any],
    out: str,
    *,
    model: str,
    max_new_tokens: int = 0,
    temperature: float = 0.0,
    served_model: str | None = None,
    timeout: float = 600.0,
    concurrency: int = 8,
    trust_remote_code: bool = False,
    storage_options: dict[str, Any] | None = None,
    progress: bool = True,
    allow_special: bool = False,
) -> dict[str, Any]:
    """Record expert routing captured by a running vLLM or SGLang server into a routing store.

    Parameters
    ----------
    engine : "vllm" | "sglang"
    url : base URL of the server, e.g. ``http://127.0.0.1:8000``.
    prompts : a prompt JSONL path (the format of ``workbench.prompts``) or records with ``id``, ``domain``
        and ``text`` or ``messages`` (+ ``tools``).
    out : store path or fsspec URL; appended to if it exists (same model and routing config only).
    model : local directory (or "k2-mini") with the served model's config.json and tokenizer.
    max_new_tokens : 0 records the prompts teacher-forced; N > 0 also records N decoded tokens
        (all but the last, which no router saw).
    served_model : vLLM model name for requests; default: the first of ``GET /v1/models``.
    concurrency : requests in flight at once (the server batches them).
    allow_special : parse special-token strings in prompt text as special tokens (default: plain text).

    Returns
    -------
    dict with ``sequences``, ``tokens``, ``engine``, ``url``, ``out``.

    Examples
    --------
    >>> record_from_engine("vllm", "http://127.0.0.1:8000", "data/prompts/suite.jsonl",
    ...                    "k2.zarr", model="/models/Kimi-K2-Thinking")  # doctest: +SKIP
    """
    from workbench.store.io import StoreWriter, check_appendable

    if engine not in ENGINES:
        raise EngineError(f"engine {engine!r}: choose one of {', '.join(ENGINES)}", param="engine")
    if max_new_tokens < 0 or concurrency < 1:
        raise EngineParameterError(
            f"{{max_new_tokens}} must be >= 0 and {{concurrency}} >= 1, got {max_new_tokens} and {concurrency}",
            "max_new_tokens",
            "concurrency",
        )
    model_dir = resolve_model_dir(model)
    config = routing_config_from_dir(model_dir, model_name=model if model == "k2-mini" else model_dir.name)
    tokenizer = load_tokenizer(model_dir, trust_remote_code=trust_remote_code)
    records, source = _read_prompts(prompts)
    if not records:
        raise EngineError("no prompts to send")
    todo = [_tokenize(r, tokenizer, max_new_tokens, f"{engine}:{source}", allow_special) for r in records]
    ids = [p.id for p in todo]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise EngineError(f"prompt id {dup!r} appears more than once; ids must be unique in a store")
    check_appendable(out, config, storage_options=storage_options)

    client = EngineClient(url, engine, timeout=timeout)
    try:
        eng = _Engine(engine, client, config, served_model)
        first = _to_record(eng, todo[0], max_new_tokens, temperature)  # validates before anything is written
        writer = StoreWriter(
            out,
            config,
            tokenizer_attrs(tokenizer, model),
            capture=engine,
            with_scores=False,
            has_gate_weights=False,
            storage_options=storage_options,
        )
        done, tokens = 0, 0
        bar = tqdm(total=len(todo), desc=f"{engine} capture", unit="seq", disable=not progress)
        try:
            writer.add(first)
            done, tokens = 1, first.n_tokens
            bar.update(1)
            pool = ThreadPoolExecutor(max_workers=concurrency)
            try:  # requests run `concurrency` at a time; results are committed in prompt order
                futures = [pool.submit(_to_record, eng, p, max_new_tokens, temperature) for p in todo[1:]]
                for fut in futures:
                    rec = fut.result()
                    writer.add(rec)
                    done, tokens = done + 1, tokens + rec.n_tokens
                    bar.update(1)
            finally:
                pool.shutdown(wait=True, cancel_futures=True)  # on error: send nothing more
        except EngineError as err:
            raise EngineError(f"{err} ({done} of {len(todo)} sequences were committed to {out})") from err
        finally:
            bar.close()
            writer.close()
    finally:
        client.close()
    return {"engine": engine, "url": url, "out": out, "sequences": done, "tokens": tokens}
