"""Test fixtures for engine capture: a tiny model directory and a real local HTTP server that
answers exactly as vLLM (/v1/models, /v1/completions) and SGLang (/generate) answer when started
with --enable-return-routed-experts: base64 of a real ``np.save`` .npy (vLLM) or of a flat int32
buffer (SGLang), one row per token but the last, layers counted over all decoder layers.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

from workbench.engines import sglang as sglang_wire
from workbench.engines import vllm as vllm_wire

VOCAB = ["<pad>", "<s>", "</s>", "<unk>"] + [f"w{i}" for i in range(60)]
N_LAYERS, FIRST_DENSE, TOP_K = 4, 1, 2  # layer 0 dense, MoE layers 1..3, like K2's 1..60


def make_model_dir(root: Path, *, n_experts: int = 16, chat_template: bool = True) -> Path:
    """config.json (DeepSeek-V3 layout) + a real fast tokenizer, no weights: what --model needs."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    root.mkdir(parents=True, exist_ok=True)
    cfg = {
        "architectures": ["DeepseekV3ForCausalLM"],
        "model_type": "deepseek_v3",
        "num_hidden_layers": N_LAYERS,
        "first_k_dense_replace": FIRST_DENSE,
        "moe_layer_freq": 1,
        "n_routed_experts": n_experts,
        "num_experts_per_tok": TOP_K,
        "n_shared_experts": 1,
        "scoring_func": "sigmoid",
        "topk_method": "noaux_tc",
        "n_group": 1,
        "topk_group": 1,
        "norm_topk_prob": True,
        "routed_scaling_factor": 2.827,
        "vocab_size": len(VOCAB),
    }
    (root / "config.json").write_text(json.dumps(cfg))
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    if chat_template:
        fast.chat_template = "{% for m in messages %}<s> {{ m['content'] }} </s> {% endfor %}"
    fast.save_pretrained(str(root))
    return root


def route(tok: int, pos: int, layer: int, rank: int, n_experts: int) -> int:
    """The fake router: a deterministic expert id per (token, position, layer, rank)."""
    return (tok * 31 + pos * 7 + layer * 5 + rank * 3) % n_experts


def routing_rows(tokens: list[int], n_experts: int, n_layers: int = N_LAYERS) -> np.ndarray:
    """(len(tokens) - 1, n_layers, k): the last token has no row; dense layer columns are 0."""
    out = np.zeros((len(tokens) - 1, n_layers, TOP_K), dtype=np.int64)
    for pos, tok in enumerate(tokens[:-1]):
        for layer in range(FIRST_DENSE, n_layers):
            for r in range(TOP_K):
                out[pos, layer, r] = route(tok, pos, layer, r, n_experts)
    return out


def generated_ids(prompt: list[int], n: int) -> list[int]:
    return [4 + (prompt[-1] + j + 1) % 60 for j in range(n)]


class FakeEngine(ThreadingHTTPServer):
    """engine: "vllm" | "sglang"; mode: ok | no_capture | http500 | fail_after_2 | slow | bad_layers |
    bad_k | bad_ids | legacy_lists | retokenized | no_echo. ``requests`` logs every JSON body received."""

    daemon_threads = True

    def __init__(self, engine: str, n_experts: int, mode: str = "ok", tokenizer: Any = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.engine, self.n_experts, self.mode = engine, n_experts, mode
        self.tokenizer = tokenizer  # renders /v1/chat/completions messages, as the server's chat template would
        self.requests: list[dict[str, Any]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: FakeEngine

    def log_message(self, *args: Any) -> None:  # keep test output quiet
        pass

    def _send(self, code: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.server.engine == "vllm" and self.path == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": "tiny-k2", "object": "model"}]})
        else:
            self._send(404, {"detail": "Not Found"})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        srv = self.server
        srv.requests.append(body)
        if srv.mode == "http500" or (srv.mode == "fail_after_2" and len(srv.requests) > 2):
            self._send(500, {"error": {"message": "CUDA out of memory", "type": "InternalServerError"}})
            return
        if srv.mode == "slow":
            time.sleep(3.0)
        if srv.engine == "vllm" and self.path == "/v1/completions":
            self._send(200, self._vllm(body))
        elif srv.engine == "vllm" and self.path == "/v1/chat/completions" and srv.tokenizer is not None:
            self._send(200, self._vllm_chat(body))
        elif srv.engine == "sglang" and self.path == "/generate":
            self._send(200, self._sglang(body))
        else:
            self._send(404, {"detail": "Not Found"})

    def _rows(self, prompt: list[int], n_new: int) -> tuple[list[int], np.ndarray]:
        srv = self.server
        out = generated_ids(prompt, n_new)
        rows = routing_rows(prompt + out, srv.n_experts)
        if srv.mode == "bad_layers":  # a server running a model with one more layer
            rows = np.concatenate([rows, rows[:, :1]], axis=1)
        elif srv.mode == "bad_k":
            rows = np.concatenate([rows, rows[:, :, :1]], axis=2)
        elif srv.mode == "bad_ids":
            rows[0, 1, 0] = -1
        return out, rows

    def _vllm(self, body: dict[str, Any]) -> dict[str, Any]:
        """``CompletionResponse`` as vLLM serialises it (``entrypoints/openai/completion/protocol.py``):
        ``prompt_token_ids``, ``token_ids`` and ``routed_experts`` sit in each choice, the ids only
        when the request set ``return_token_ids``."""
        prompt = list(body["prompt"])
        out, rows = self._rows(prompt, int(body["max_tokens"]))
        mode, want_ids = self.server.mode, bool(body.get("return_token_ids"))
        echoed = list(prompt)
        if mode == "retokenized":  # a server that re-tokenized the prompt (e.g. text in, other tokenizer)
            echoed = [echoed[0]] + [4 + (t + 1) % 60 for t in echoed[1:]]
        choice: dict[str, Any] = {
            "index": 0,
            "text": " ".join(VOCAB[t] for t in out),
            "logprobs": None,
            "finish_reason": "length",
            "stop_reason": None,
            "token_ids": out if want_ids else None,
            "prompt_logprobs": None,
            "prompt_token_ids": (None if mode == "no_echo" else echoed) if want_ids else None,
            "routed_experts": None,
        }
        resp: dict[str, Any] = {
            "id": "cmpl-1",
            "object": "text_completion",
            "created": 1780000000,
            "model": body["model"],
            "choices": [choice],
            "service_tier": None,
            "system_fingerprint": None,
            "usage": {
                "prompt_tokens": len(prompt),
                "total_tokens": len(prompt) + len(out),
                "completion_tokens": len(out),
                "prompt_tokens_details": None,
            },
            "kv_transfer_params": None,
        }
        if mode == "no_capture":
            pass
        elif mode == "legacy_lists":  # vLLM 0.21: int16 JSON lists, prompt rows at response level
            resp["prompt_routed_experts"] = rows[: len(prompt)].tolist()
            choice["routed_experts"] = rows[len(prompt) :].tolist()
        else:  # vLLM >= 0.3x: base64 .npy, smallest unsigned dtype holding an expert id
            dtype = np.uint8 if self.server.n_experts <= 256 else np.uint16
            choice["routed_experts"] = vllm_wire.encode_routed_experts(rows.astype(dtype))
        return resp

    def _vllm_chat(self, body: dict[str, Any]) -> dict[str, Any]:
        """``ChatCompletionResponse`` (``entrypoints/openai/chat_completion/protocol.py``): unlike completions,
        ``prompt_token_ids`` sits at response level; ``token_ids`` and ``routed_experts`` per choice. vLLM 0.21
        (``legacy_lists``) put ``prompt_routed_experts`` at response level too."""
        out_ids = self.server.tokenizer.apply_chat_template(body["messages"], add_generation_prompt=True)
        prompt = [int(t) for t in (out_ids["input_ids"] if hasattr(out_ids, "keys") else out_ids)]
        out, rows = self._rows(prompt, int(body.get("max_completion_tokens") or body.get("max_tokens") or 16))
        want_ids = bool(body.get("return_token_ids"))
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": " ".join(VOCAB[t] for t in out), "reasoning": None},
            "logprobs": None,
            "finish_reason": "length",
            "stop_reason": None,
            "token_ids": out if want_ids else None,
            "routed_experts": None,
        }
        resp: dict[str, Any] = {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1780000000,
            "model": body["model"],
            "choices": [choice],
            "service_tier": None,
            "system_fingerprint": None,
            "usage": {"prompt_tokens": len(prompt), "total_tokens": len(prompt) + len(out),
                      "completion_tokens": len(out), "prompt_tokens_details": None},
            "prompt_logprobs": None,
            "prompt_token_ids": prompt if want_ids else None,
            "prompt_text": None,
            "kv_transfer_params": None,
        }  # fmt: skip
        if self.server.mode == "legacy_lists":
            resp["prompt_routed_experts"] = rows[: len(prompt)].tolist()
            choice["routed_experts"] = rows[len(prompt) :].tolist()
        elif self.server.mode != "no_capture":
            dtype = np.uint8 if self.server.n_experts <= 256 else np.uint16
            choice["routed_experts"] = vllm_wire.encode_routed_experts(rows.astype(dtype))
        return resp

    def _sglang(self, body: dict[str, Any]) -> dict[str, Any]:
        prompt = list(body["input_ids"])
        out, rows = self._rows(prompt, int(body["sampling_params"]["max_new_tokens"]))
        meta: dict[str, Any] = {
            "id": "req-1",
            "prompt_tokens": len(prompt) + (1 if self.server.mode == "retokenized" else 0),
            "completion_tokens": len(out),
            "cached_tokens": 0,
            "finish_reason": {"type": "length", "length": len(out)},
        }
        if self.server.mode != "no_capture" and body.get("return_routed_experts"):
            meta["routed_experts"] = sglang_wire.encode_routed_experts(rows)
        return {"text": " ".join(VOCAB[t] for t in out), "output_ids": out, "meta_info": meta}


@contextmanager
def fake_engine(engine: str, n_experts: int = 16, mode: str = "ok", tokenizer: Any = None) -> Iterator[FakeEngine]:
    srv = FakeEngine(engine, n_experts, mode, tokenizer)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
