"""Tokenize rendered text and find where each token starts in it (character offsets).

Fast (Rust) tokenizers give offsets directly (``return_offsets_mapping``). Slow tokenizers (real K2
ships a tiktoken-based ``TikTokenTokenizer`` with remote code) do not; for them each token is decoded
on its own (tokens that split one UTF-8 character are decoded together) and the lengths are summed,
which is exact when the pieces concatenate to the text (true for byte-level BPE such as tiktoken);
otherwise we refuse with a clear error rather than guess.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from workbench.transcripts.messages import TranscriptError


def tokenize_with_starts(tokenizer: Any, text: str) -> tuple[np.ndarray, np.ndarray]:
    """Token ids of ``text`` (no special tokens added: the template writes its own) and char starts.

    Returns ``(token_ids (T,) int64, starts (T,) int64)``; ``starts`` is non-decreasing, so the token
    that covers character ``c`` is ``searchsorted(starts, c, "right") - 1``.
    This is the same tokenization ``apply_chat_template(..., tokenize=True)`` performs.
    """
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = np.asarray(enc["input_ids"], dtype=np.int64)
        offsets = np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)  # (T, 2)
        starts = offsets[:, 0] if len(offsets) else np.zeros(0, dtype=np.int64)
        return ids, np.maximum.accumulate(starts) if len(starts) else starts
    ids = np.asarray(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=np.int64)
    starts = np.zeros(len(ids), dtype=np.int64)
    pieces: list[str] = []
    pos = 0
    group: list[int] = []  # tokens that together decode to whole characters (UTF-8 split across tokens)
    for i in range(len(ids)):
        group.append(i)
        piece = tokenizer.decode([int(ids[j]) for j in group], skip_special_tokens=False)
        if piece.endswith("\ufffd") and len(group) < 4 and i + 1 < len(ids):
            continue
        starts[group] = pos
        pieces.append(piece)
        pos += len(piece)
        group = []
    if "".join(pieces) != text:
        raise TranscriptError(
            "this (slow) tokenizer's tokens do not decode piece by piece to the rendered text, so token spans "
            "cannot be located exactly; load the model's fast tokenizer (tokenizer.json) instead"
        )
    return ids, starts
