"""SGLang: request routed experts from the native ``/generate`` endpoint and decode them.

Server: ``python -m sglang.launch_server --model-path MODEL --enable-return-routed-experts``;
each request also sets ``"return_routed_experts": true``.

Wire format (SGLang ``srt/managers/detokenizer_manager.py::_extract_routed_experts`` and
``srt/layers/moe/routed_experts_capturer.py``): ``meta_info.routed_experts`` is
``base64(int32 array.tobytes())``, a *flat* little-endian int32 buffer of logical shape
``(prompt + generated - 1, num_hidden_layers, top_k)``: layers are counted over all decoder layers,
K2's dense layer 0 included (its columns hold no routing). Fused shared experts are cut off
before encoding, so the last axis is ``num_experts_per_tok``. By default the rows cover
``[0, seqlen - 1)``; ``routed_experts_start_len`` would skip a prefix (this client never sets it).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import numpy as np

from workbench.engines.client import EngineError
from workbench.routing_config import RoutingConfig

NAME = "sglang"
SERVER_FLAG = "--enable-return-routed-experts"


def decode_routed_experts(b64: str, config: RoutingConfig, rows: int | None = None) -> np.ndarray:
    """``base64(int32 bytes)`` -> (rows, layers, k).

    The buffer carries no shape. With ``rows`` known (prompt + generated - 1), the layer count is
    read off the size, so a server running another model is named by its layer count; without it,
    all decoder layers are assumed, then MoE layers only.
    """
    try:
        flat = np.frombuffer(base64.b64decode(b64, validate=True), dtype="<i4")  # (rows * layers * k,)
    except (binascii.Error, ValueError) as err:
        raise EngineError(f"sglang routed_experts is not base64 of an int32 buffer: {err}") from err
    k = config.top_k
    if rows is not None and rows > 0 and flat.size % (rows * k) == 0:
        return flat.reshape(rows, flat.size // (rows * k), k)  # (rows, layers, k); layers checked later
    for n_layers in (config.num_hidden_layers, len(config.moe_layers)):
        if flat.size % (n_layers * k) == 0:
            return flat.reshape(-1, n_layers, k)  # (rows, layers, k)
    raise EngineError(
        f"sglang routed_experts holds {flat.size} ids, not a multiple of {config.num_hidden_layers} layers x "
        f"top-{k} for the model {config.model_name}: is the server running the same model?"
    )


def encode_routed_experts(arr: np.ndarray) -> str:
    """What the server does: ``base64(int32 bytes)``, shape dropped. Used by tests and tools."""
    return base64.b64encode(np.ascontiguousarray(arr, dtype="<i4").tobytes()).decode("utf-8")


def request(prompt_ids: list[int], *, max_new_tokens: int, temperature: float) -> tuple[str, dict]:
    """The ``/generate`` call for one token-id prompt."""
    payload = {
        "input_ids": list(map(int, prompt_ids)),
        "sampling_params": {"max_new_tokens": max(1, int(max_new_tokens)), "temperature": float(temperature)},
        "return_routed_experts": True,
    }
    return "/generate", payload


def parse(resp: Any, config: RoutingConfig, prompt_ids: list[int]) -> tuple[list[int], np.ndarray]:
    """-> (generated token ids, raw routing (rows, layers, k)); rows = prompt + generated - 1."""
    if isinstance(resp, list):  # a batch answer; this client sends one prompt per request
        resp = resp[0] if resp else {}
    if not isinstance(resp, dict) or "meta_info" not in resp:
        raise EngineError("sglang answer has no meta_info: not a /generate response")
    output_ids = resp.get("output_ids")
    if output_ids is None:
        raise EngineError("sglang answer has no output_ids: start the server without --skip-tokenizer-init quirks")
    routed = resp["meta_info"].get("routed_experts")
    if routed is None:
        raise EngineError(f"the sglang server returned no routed experts: restart it with {SERVER_FLAG}")
    if not isinstance(routed, str):
        raise EngineError(f"sglang meta_info.routed_experts is a {type(routed).__name__}, expected a base64 string")
    n_prompt = resp["meta_info"].get("prompt_tokens")
    if n_prompt is not None and int(n_prompt) != len(prompt_ids):
        raise EngineError(
            f"sglang routed {n_prompt} prompt tokens but {len(prompt_ids)} were sent: the server re-tokenized "
            "the prompt; serve the same model and tokenizer as the local model directory"
        )
    rows = len(prompt_ids) + len(output_ids) - 1
    return [int(t) for t in output_ids], decode_routed_experts(routed, config, rows)
