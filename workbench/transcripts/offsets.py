"""Tokenize rendered text and find where each token starts in it (character offsets).

Fast (Rust) tokenizers give offsets directly (``return_offsets_mapping``). Slow tokenizers (real K2
ships a tiktoken-based ``TikTokenTokenizer`` with remote code) do not; for them each token is decoded
on its own (tokens that split one UTF-8 character are decoded together) and the lengths are summed,
which is exact when the pieces concatenate to the text (true for byte-level BPE such as tiktoken);
otherwise we refuse with a clear error rather than guess.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from workbench.prompts import special_strings
from workbench.transcripts.messages import TranscriptError


def tokenize_with_plain(tokenizer: Any, text: str, plain: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Like ``tokenize_with_starts``, with special-token strings inside the ``plain`` character ranges as text.

    The text is tokenized as the tokenizer always does (split at its special tokens, each piece in between
    tokenized on its own), except that a special-token string inside a ``plain`` range is one more piece,
    tokenized as the characters it consists of (``split_special_tokens=True``), the way transformers'
    ``apply_chat_template(sanitize_control_tokens=True)`` treats control tokens in user input. Without such a
    string this is exactly ``tokenize_with_starts(tokenizer, text)``.
    """
    specials = sorted(special_strings(tokenizer), key=len, reverse=True)
    if not specials or not plain:
        return tokenize_with_starts(tokenizer, text)
    pattern = re.compile("|".join(map(re.escape, specials)))
    hits = sorted((m.start(), m.end()) for a, b in plain for m in pattern.finditer(text, a, b))
    if not hits:
        return tokenize_with_starts(tokenizer, text)
    pieces: list[tuple[int, int, bool]] = []  # (start, stop, as text)
    pos = 0
    for a, b in hits:
        if a > pos:
            pieces.append((pos, a, False))
        pieces.append((a, b, True))
        pos = b
    if pos < len(text):
        pieces.append((pos, len(text), False))
    special_ids = {int(i) for i in tokenizer.convert_tokens_to_ids(specials)}
    all_ids, all_starts = [], []
    for a, b, as_text in pieces:
        ids, starts = tokenize_with_starts(tokenizer, text[a:b], plain=as_text)
        if as_text and special_ids.intersection(ids.tolist()):
            raise TranscriptError(
                f"this tokenizer reads {text[a:b]!r} as its special token even with split_special_tokens=True, "
                "so it cannot be tokenized as plain text; remove it from the message"
            )
        all_ids.append(ids)
        all_starts.append(starts + a)
    return np.concatenate(all_ids), np.concatenate(all_starts)


def tokenize_with_starts(tokenizer: Any, text: str, *, plain: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Token ids of ``text`` (no special tokens added: the template writes its own) and char starts.

    Returns ``(token_ids (T,) int64, starts (T,) int64)``; ``starts`` is non-decreasing, so the token
    that covers character ``c`` is ``searchsorted(starts, c, "right") - 1``.
    This is the same tokenization ``apply_chat_template(..., tokenize=True)`` performs; ``plain``: special-token
    strings are read as text (``split_special_tokens=True``). No "longer than the model's maximum length"
    warning from fast tokenizers (``verbose=False``): a transcript longer than the window is windowed by
    ``route_sequence``, not indexed past it.
    """
    split = {"split_special_tokens": True} if plain else {}
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False, **split)
        ids = np.asarray(enc["input_ids"], dtype=np.int64)
        offsets = np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)  # (T, 2)
        starts = offsets[:, 0] if len(offsets) else np.zeros(0, dtype=np.int64)
        return ids, np.maximum.accumulate(starts) if len(starts) else starts
    ids = np.asarray(tokenizer(text, add_special_tokens=False, **split)["input_ids"], dtype=np.int64)
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
