"""Tokenize rendered text and find where each token starts in it (character offsets).

Fast (Rust) tokenizers give offsets directly (``return_offsets_mapping``). Slow tokenizers (real K2
ships a tiktoken-based ``TikTokenTokenizer`` with remote code) do not; for them each token is decoded
on its own and the lengths are summed, which is exact when the decoded pieces concatenate to the text
(true for byte-level BPE on text whose characters are not split across tokens); otherwise we refuse
with a clear error rather than guess.
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
    pieces = [tokenizer.decode([int(i)], skip_special_tokens=False) for i in ids]
    if "".join(pieces) != text:
        raise TranscriptError(
            "this (slow) tokenizer's tokens do not decode piece by piece to the rendered text, so token spans "
            "cannot be located exactly; load the model's fast tokenizer (tokenizer.json) instead"
        )
    lengths = np.fromiter((len(p) for p in pieces), dtype=np.int64, count=len(pieces))
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) if len(ids) else lengths
    return ids, starts
