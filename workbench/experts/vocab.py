"""Readable token strings from the vocabulary a routing store keeps in its attrs (no tokenizer needed).

Byte-level BPE vocabularies (GPT-2, tiktoken, K2) store each byte as a printable stand-in character:
``Ġ`` for a space, ``Ċ`` for a newline, ``ĉ`` for a tab, and so on for all 68 non-printable bytes.
``text_vocab`` (``workbench.store.text``, re-exported here) undoes that table (the real text of each
token); ``visible`` additionally turns whitespace into visible marks (``␣`` space, ``↵`` newline,
``⇥`` tab) for tables where a bare space or line break would be invisible. SentencePiece's ``▁`` is a space.
"""

from __future__ import annotations

from workbench.store.text import store_vocab, text_vocab, token_texts

__all__ = ["store_vocab", "text_of", "text_vocab", "token_texts", "visible"]

_VISIBLE = str.maketrans({" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍"})


def visible(text: str) -> str:
    """``text`` with spaces, newlines and tabs as visible marks (␣ ↵ ⇥), for one token shown alone."""
    return text.translate(_VISIBLE)


def text_of(texts: list[str], token_id: int) -> str:
    """The text of one token id, ``<id>`` for ids outside the vocabulary."""
    return texts[token_id] if 0 <= token_id < len(texts) else f"<{token_id}>"
