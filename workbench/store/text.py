"""A store's tokens as text: the vocabulary kept in its attrs decoded (no tokenizer needed), the decoded
text of every sequence, and the token rows a text or regular-expression match covers.

Byte-level BPE vocabularies (GPT-2, tiktoken, K2) store each byte as a printable stand-in character:
``Ġ`` for a space, ``Ċ`` for a newline, ``ĉ`` for a tab, and so on for all 68 non-printable bytes.
``text_vocab`` undoes that table (the real text of each token); SentencePiece's ``▁`` is a space.

``store_text`` concatenates the decoded tokens in row order into one string, with a record separator
(U+001E) between sequences so no match spans two texts, and keeps each token's first character offset,
so a match [a, b) covers token rows ``searchsorted(starts, a, "right") - 1`` ..
``searchsorted(starts, b - 1, "right") - 1``. It is built once per opened Dataset (``store.cache``):
one object-array gather and one join, vectorised; matching is Python's ``re``. The text search
(``workbench.experts.find``) and the ``match=`` / ``regex=`` selection keys both stand on it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cache
from typing import Any

import numpy as np
import xarray as xr

from workbench.errors import SelectionError
from workbench.store import schema as S
from workbench.store.cache import cached

SEP = "\x1e"  # between sequences (not NUL: numpy strips trailing NULs of strings)


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


def store_vocab(ds: xr.Dataset) -> list[str]:
    """The raw vocabulary kept in the store's attrs (token string by id); empty when none was stored."""
    tok: dict[str, Any] = ds.attrs.get("tokenizer", {}) or {}
    return [str(v) for v in tok.get("vocab", [])]


def token_texts(ds: xr.Dataset) -> list[str]:
    """``text_vocab`` of the store's vocabulary (the real text of each token id), once per Dataset."""
    return cached(ds, "token_texts", lambda: text_vocab(store_vocab(ds)))


def store_text(ds: xr.Dataset) -> tuple[str, np.ndarray, np.ndarray]:
    """The store's decoded text, each token row's start offset in it (N,), and each row's sequence (N,).

    Sequences are separated by one ``SEP`` character; a match containing it is dropped. Built once per
    Dataset.
    """
    return cached(ds, "store_text", lambda: _build_text(ds))


def _build_text(ds: xr.Dataset) -> tuple[str, np.ndarray, np.ndarray]:
    texts = np.asarray(token_texts(ds) or [""], dtype=object)
    tok = np.asarray(ds[S.TOKEN_ID].values).astype(np.int64)
    seq = np.asarray(ds[S.SEQUENCE_INDEX].values).astype(np.int64)
    known = (tok >= 0) & (tok < texts.size)
    pieces = texts[np.clip(tok, 0, texts.size - 1)]  # (N,) object
    if not known.all():
        pieces[~known] = np.array([f"<{t}>" for t in tok[~known]], dtype=object)
    new_seq = np.ones(tok.size, dtype=bool)
    new_seq[1:] = seq[1:] != seq[:-1]
    pieces[new_seq] = SEP + pieces[new_seq]
    lengths = np.fromiter((len(p) for p in pieces), dtype=np.int64, count=tok.size)
    starts = np.cumsum(lengths) - lengths + new_seq  # skip the separator
    return "".join(pieces.tolist()), starts, seq


def compile_pattern(text: str, *, regex: bool = False, ignore_case: bool = False) -> re.Pattern[str]:
    """``text`` as a compiled pattern (escaped unless ``regex``); a one-line ``SelectionError`` for empty text
    or a regular expression that does not compile."""
    if not text:
        raise SelectionError("the search text is empty; give some text or a regular expression")
    try:
        return re.compile(text if regex else re.escape(text), re.IGNORECASE if ignore_case else 0)
    except re.error as err:
        raise SelectionError(f"the regular expression {text!r} does not compile: {err}") from None


def match_spans(ds: xr.Dataset, pattern: re.Pattern[str]) -> Iterator[tuple[int, int, int, int]]:
    """Each non-empty match within one sequence, in text order: (a, b, first row, last row) (rows inclusive)."""
    full, starts, _ = store_text(ds)
    for m in pattern.finditer(full):
        a, b = m.span()
        if b <= a or SEP in m.group():
            continue
        yield a, b, int(np.searchsorted(starts, a, "right") - 1), int(np.searchsorted(starts, b - 1, "right") - 1)


def match_mask(ds: xr.Dataset, pattern: re.Pattern[str]) -> np.ndarray:
    """(N,) bool: the token rows covered by any match of ``pattern`` (vectorised over the matches)."""
    full, starts, _ = store_text(ds)
    spans = [m.span() for m in pattern.finditer(full) if m.end() > m.start() and SEP not in m.group()]
    n = starts.size
    if not spans:
        return np.zeros(n, dtype=bool)
    arr = np.asarray(spans, dtype=np.int64)
    first = np.searchsorted(starts, arr[:, 0], "right") - 1
    last = np.searchsorted(starts, arr[:, 1] - 1, "right") - 1
    edges = np.zeros(n + 1, dtype=np.int64)
    np.add.at(edges, first, 1)
    np.add.at(edges, last + 1, -1)
    return np.cumsum(edges[:-1]) > 0
