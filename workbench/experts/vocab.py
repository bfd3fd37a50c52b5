"""Readable token strings from the vocabulary a routing store keeps in its attrs (no tokenizer needed).

Byte-level BPE vocabularies (GPT-2, tiktoken, K2) store each byte as a printable stand-in character:
``Ġ`` for a space, ``Ċ`` for a newline, ``ĉ`` for a tab, and so on for all 68 non-printable bytes.
``text_vocab`` undoes that table (the real text of each token); ``shown_vocab`` additionally turns
whitespace into visible marks (``␣`` space, ``↵`` newline, ``⇥`` tab) for tables where a bare space or
line break would be invisible. SentencePiece's ``▁`` is treated as a space.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import xarray as xr

_VISIBLE = str.maketrans({" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍"})


@cache
def _byte_decoder() -> dict[str, int]:
    """Inverse of the byte-to-printable-character table of byte-level BPE (GPT-2, tokenizers' ByteLevel).

    Printable Latin-1 bytes map to themselves; the other 68 bytes map to code points from 256 up, in
    byte order.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table: dict[str, int] = {chr(b): b for b in printable}
    extra = 0
    for b in range(256):
        if b not in printable:
            table[chr(256 + extra)] = b
            extra += 1
    return table


def text_vocab(vocab: list[str]) -> list[str]:
    """The text each vocabulary entry stands for (byte-level BPE and SentencePiece markers undone).

    A vocabulary is treated as byte-level when its entries use the ByteLevel space marker ``Ġ``;
    pieces that are not valid UTF-8 alone (half of a multi-byte character) show as U+FFFD, and
    entries outside the byte alphabet (special tokens such as ``<|im_end|>``) are kept as they are.
    """
    if any("Ġ" in v for v in vocab[:5000]):
        dec = _byte_decoder()
        out = []
        for v in vocab:
            if all(c in dec for c in v):
                out.append(bytes(dec[c] for c in v).decode("utf-8", errors="replace"))
            else:
                out.append(v)
        return out
    if any("▁" in v for v in vocab[:5000]):
        return [v.replace("▁", " ") for v in vocab]
    return list(vocab)


def visible(text: str) -> str:
    """``text`` with spaces, newlines and tabs as visible marks (␣ ↵ ⇥), for one token shown alone."""
    return text.translate(_VISIBLE)


def store_vocab(ds: xr.Dataset) -> list[str]:
    """The raw vocabulary kept in the store's attrs (token string by id); empty when none was stored."""
    tok: dict[str, Any] = ds.attrs.get("tokenizer", {}) or {}
    return [str(v) for v in tok.get("vocab", [])]


def token_texts(ds: xr.Dataset) -> list[str]:
    """``text_vocab`` of the store's vocabulary (the real text of each token id)."""
    return text_vocab(store_vocab(ds))


def text_of(texts: list[str], token_id: int) -> str:
    """The text of one token id, ``<id>`` for ids outside the vocabulary."""
    return texts[token_id] if 0 <= token_id < len(texts) else f"<{token_id}>"
