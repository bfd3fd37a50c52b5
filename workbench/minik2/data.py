"""Token streams per domain and the seeded batch sampler used by training and eval.

Each domain's documents are tokenised once (text documents as they are, tool episodes rendered with
K2's chat template), each followed by ``[EOS]``, and concatenated into one stream with the start
offset of every document. A batch row is ``seq_len + 1`` tokens starting at a random document start
of a domain drawn by the mixture weights (or, for chat documents, half the time at a user turn).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workbench.minik2.chat_template import render_training_text
from workbench.minik2.corpus import read_documents

TEXT_DOMAINS = ("math", "code", "language")


@dataclass
class DomainStream:
    """One domain: ``tokens`` (n,) int32, ``starts`` (docs,) document offsets, ``turns`` user-turn offsets."""

    domain: str
    tokens: np.ndarray
    starts: np.ndarray
    turns: np.ndarray  # offsets of <|im_user|> (chat documents), so windows can also open at the question


def document_texts(
    corpus: Path, split: str, domain: str, tokenizer: Any, limit: int | None = None, seed: int = 0
) -> list[str]:
    """The domain's documents as text; with ``limit``, a seeded random sample of that many (order kept)."""
    docs = read_documents(corpus, split, domain)
    if limit is not None and len(docs) > limit:
        keep = np.sort(np.random.default_rng(seed).choice(len(docs), size=limit, replace=False))
        docs = [docs[i] for i in keep]
    if domain == "tools":
        return [render_training_text(tokenizer, d["messages"], d["tools"]) for d in docs]
    return [d["text"] for d in docs]


def build_stream(texts: list[str], tokenizer: Any, domain: str) -> DomainStream:
    eos = tokenizer.convert_tokens_to_ids("[EOS]")
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    lengths = np.array([len(x) + 1 for x in ids], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    tokens = np.fromiter((t for x in ids for t in (*x, eos)), dtype=np.int32, count=int(lengths.sum()))
    turns = np.flatnonzero(tokens == tokenizer.convert_tokens_to_ids("<|im_user|>"))
    return DomainStream(domain, tokens, starts, turns)


def load_streams(
    corpus: Path, split: str, tokenizer: Any, domains: tuple[str, ...], limit: int | None = None, seed: int = 0
) -> dict[str, DomainStream]:
    return {d: build_stream(document_texts(corpus, split, d, tokenizer, limit, seed), tokenizer, d) for d in domains}


class BatchSampler:
    """Seeded batches ``(B, seq_len + 1)`` from several domain streams with mixture ``weights``."""

    def __init__(self, streams: dict[str, DomainStream], weights: dict[str, float], seq_len: int, seed: int) -> None:
        self.streams = streams
        self.names = list(weights)
        w = np.array([weights[n] for n in self.names], dtype=np.float64)
        self.p = w / w.sum()
        self.seq_len = seq_len
        self.rng = np.random.default_rng(seed)

    def window(self, stream: DomainStream, start: int) -> np.ndarray:
        n = self.seq_len + 1
        idx = (start + np.arange(n)) % len(stream.tokens)  # wrap at the stream end
        return stream.tokens[idx]

    def sample(self, batch: int) -> tuple[torch.Tensor, list[str]]:
        doms = self.rng.choice(len(self.names), size=batch, p=self.p)
        rows, names = [], []
        for d in doms:
            s = self.streams[self.names[d]]
            # chat documents: half the windows open at a user turn, so the assistant's tool calls fit in
            # the window even after a long tool_declare turn
            if len(s.turns) and self.rng.random() < 0.5:
                start = int(s.turns[self.rng.integers(len(s.turns))])
            else:
                start = int(s.starts[self.rng.integers(len(s.starts))])
            rows.append(self.window(s, start))
            names.append(self.names[d])
        return torch.from_numpy(np.stack(rows).astype(np.int64)), names


def fixed_windows(stream: DomainStream, seq_len: int, n: int) -> torch.Tensor:
    """The first ``n`` document-aligned windows of ``stream`` (deterministic, for eval): ``(n, seq_len + 1)``."""
    n = min(n, len(stream.starts))
    rows = [stream.tokens[(int(stream.starts[i]) + np.arange(seq_len + 1)) % len(stream.tokens)] for i in range(n)]
    return torch.from_numpy(np.stack(rows).astype(np.int64))
