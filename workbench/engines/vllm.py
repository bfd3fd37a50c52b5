"""vLLM: request routed experts over the OpenAI completions API and decode them.

Server: ``vllm serve MODEL --enable-return-routed-experts`` (Model Runner V2, prefix caching on,
no pipeline parallelism; see docs/engines.md). There is no per-request switch: every answer of
such a server carries routing.

Wire format (vLLM ``entrypoints/openai/completion/serving.py``, ``serve_tokens`` ``serving.py``):
``choices[i].routed_experts`` is ``base64(np.save(ndarray))``, a ``.npy`` byte stream of shape
``(prompt + generated - 1, num_hidden_layers, top_k)`` whose dtype is the smallest unsigned type
that holds an expert id (``uint8`` for <= 256 experts, ``uint16`` above: K2's 384 experts give
``uint16``; ``model_executor/layers/fused_moe/routed_experts_capturer.py``). vLLM 0.21 sent
nested JSON lists instead, split into ``prompt_routed_experts`` (response level) and per-choice
generated rows; both forms are read here. The echoed prompt ids and the generated ids sit in each
choice too (``CompletionResponseChoice.prompt_token_ids`` / ``token_ids``, ``completion/protocol.py``,
set when the request has ``return_token_ids``); the echo is checked against our tokenization.
"""

from __future__ import annotations

import base64
import binascii
import io
from typing import Any

import numpy as np

from workbench.engines.client import EngineClient, EngineError

NAME = "vllm"
SERVER_FLAG = "--enable-return-routed-experts"


def decode_routed_experts(b64: str) -> np.ndarray:
    """``base64(.npy)`` -> ndarray (rows, layers, k), as vLLM encodes ``routed_experts``."""
    try:
        buf = io.BytesIO(base64.b64decode(b64, validate=True))
        arr = np.load(buf, allow_pickle=False)
    except (binascii.Error, ValueError, OSError) as err:
        raise EngineError(f"vllm routed_experts is not a base64 .npy payload: {err}") from err
    if not np.issubdtype(arr.dtype, np.integer):
        raise EngineError(f"vllm routed_experts has dtype {arr.dtype}, expected an integer type")
    return arr


def encode_routed_experts(arr: np.ndarray) -> str:
    """The inverse of ``decode_routed_experts`` (what the server does); used by tests and tools."""
    buf = io.BytesIO()
    np.save(buf, arr)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def served_model(client: EngineClient) -> str:
    """The first model id from ``GET /v1/models`` (the name requests must use)."""
    models = client.get_json("/v1/models")
    try:
        return str(models["data"][0]["id"])
    except (KeyError, IndexError, TypeError) as err:
        raise EngineError(f"vllm server at {client.url} lists no model in /v1/models") from err


def request(prompt_ids: list[int], *, model: str, max_new_tokens: int, temperature: float) -> tuple[str, dict]:
    """The ``/v1/completions`` call for one token-id prompt (token ids in, token ids back)."""
    payload = {
        "model": model,
        "prompt": list(map(int, prompt_ids)),
        "max_tokens": max(1, int(max_new_tokens)),
        "temperature": float(temperature),
        "return_token_ids": True,
        "skip_special_tokens": False,
    }
    return "/v1/completions", payload


def check_prompt_echo(echoed: Any, prompt_ids: list[int]) -> None:
    """Refuse (one line) an answer whose echoed prompt ids differ from the ids that were sent.

    vLLM puts the echo in each choice (``CompletionResponseChoice.prompt_token_ids``, set when the
    request has ``return_token_ids``); vLLM 0.21's chat answers had it at response level. The
    routing rows are aligned to *our* tokenization, so any difference makes them wrong.
    """
    if echoed is None:
        raise EngineError(
            "vllm answer has no choices[0].prompt_token_ids: this vLLM ignores return_token_ids, "
            "so the prompt it routed cannot be checked; upgrade it"
        )
    echoed = [int(t) for t in echoed]
    if echoed != list(prompt_ids):
        at = next((i for i, (a, b) in enumerate(zip(echoed, prompt_ids, strict=False)) if a != b), None)
        where = f"first difference at token {at}" if at is not None else f"{len(echoed)} ids echoed"
        raise EngineError(
            f"vllm echoed other prompt token ids than were sent ({len(prompt_ids)} sent, {where}): the "
            "server re-tokenized the prompt; serve the same model and tokenizer as the local model directory"
        )


def parse(resp: dict[str, Any], prompt_ids: list[int]) -> tuple[list[int], np.ndarray]:
    """-> (generated token ids, raw routing (rows, layers, k)) for the first choice."""
    try:
        choice = resp["choices"][0]
    except (KeyError, IndexError, TypeError) as err:
        raise EngineError("vllm answer has no choices[0]: not an OpenAI completions response") from err
    output_ids = choice.get("token_ids")
    if output_ids is None:
        raise EngineError("vllm answer has no choices[0].token_ids: this vLLM ignores return_token_ids; upgrade it")
    routed = choice.get("routed_experts")
    if routed is None:
        raise EngineError(
            f"the vllm server returned no routed experts: restart it with {SERVER_FLAG} "
            "(and VLLM_USE_V2_MODEL_RUNNER=1 if it falls back to the V1 runner)"
        )
    if isinstance(routed, str):
        raw = decode_routed_experts(routed)
    else:  # vLLM 0.21: JSON lists, prompt rows at response level, generated rows per choice
        prompt_rows = resp.get("prompt_routed_experts") or []
        try:
            raw = np.asarray(list(prompt_rows) + list(routed), dtype=np.int64)
        except ValueError as err:
            raise EngineError(f"vllm routed_experts lists are ragged: {err}") from err
        if raw.ndim != 3:
            raise EngineError(f"vllm routed_experts lists have shape {raw.shape}, expected (tokens, layers, k)")
    echoed = choice.get("prompt_token_ids")  # completions: per choice; chat: response level
    check_prompt_echo(resp.get("prompt_token_ids") if echoed is None else echoed, prompt_ids)
    return [int(t) for t in output_ids], raw
