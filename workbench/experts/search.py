"""Search a routing store by text: plain text or a regular expression over the decoded tokens, matching
across token boundaries, mapped back to the token rows it covers.

The store's tokens are decoded (``vocab.text_vocab``) and concatenated in row order into one string,
with a record separator (U+001E) between sequences so no match spans two texts; each token's first
character offset is kept, so a match [a, b) covers token rows ``searchsorted(starts, a, "right") - 1`` ..
``searchsorted(starts, b - 1, "right") - 1``. Building the text is vectorised (one object-array gather
and one join); the search itself is Python's ``re``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import xarray as xr

from workbench.experts.rows import ExpertPageError
from workbench.experts.vocab import token_texts
from workbench.store import schema as S
from workbench.store.select import Selection, token_mask

SEP = "\x1e"  # between sequences (not NUL: numpy strips trailing NULs of strings)
_LINE = str.maketrans({"\n": "↵", "\t": "⇥", "\r": "␍"})


@dataclass(frozen=True)
class SearchHit:
    """One match: the token rows [start, stop) it covers, its text and a little context (newlines as ↵)."""

    sequence: str
    domain: str
    segment: str  # segment kind of the first covered token
    start: int  # first global token row covered
    stop: int  # one past the last covered row
    position: int  # position of the first covered token within its sequence
    text: str  # the matched text
    before: str
    after: str

    @property
    def rows(self) -> np.ndarray:
        """Global token rows covered (for ``Selection(tokens=...)`` or highlighting). Shape (n,)."""
        return np.arange(self.start, self.stop)


def store_text(ds: xr.Dataset) -> tuple[str, np.ndarray, np.ndarray]:
    """The store's decoded text, each token row's start offset in it (N,), and each row's sequence (N,).

    Sequences are separated by one ``SEP`` character; a match containing it is dropped.
    """
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


def find(
    ds: xr.Dataset, text_or_regex: str, *, regex: bool = False, ignore_case: bool = False, max_hits: int = 100,
    selection: Selection | None = None, width: int = 40,
) -> list[SearchHit]:  # fmt: skip
    """Occurrences of ``text_or_regex`` in the decoded text of the store, in row order (at most ``max_hits``).

    ``regex=False`` searches the literal text; ``regex=True`` compiles it as a Python regular expression
    (a pattern that does not compile raises ``ExpertPageError`` in one line). With ``selection``, only
    matches whose first token is selected are kept. ``width`` characters of context are kept each side.
    """
    if not text_or_regex:
        raise ExpertPageError("the search text is empty; give some text or a regular expression")
    flags = re.IGNORECASE if ignore_case else 0
    try:
        pattern = re.compile(text_or_regex if regex else re.escape(text_or_regex), flags)
    except re.error as err:
        raise ExpertPageError(f"the regular expression {text_or_regex!r} does not compile: {err}") from None
    full, starts, seq = store_text(ds)
    mask = token_mask(ds, selection) if selection is not None else None
    seq_ids = [str(s) for s in np.asarray(ds[S.SEQUENCE].values)]
    domains = [str(d) for d in np.asarray(ds[S.SEQUENCE_DOMAIN].values)]
    kinds = list(ds.attrs.get("segment_kinds", S.SEGMENT_KINDS))
    segment = np.asarray(ds[S.SEGMENT].values)
    position = np.asarray(ds[S.POSITION].values)
    hits: list[SearchHit] = []
    for m in pattern.finditer(full):
        a, b = m.span()
        if b <= a or SEP in m.group():
            continue
        first = int(np.searchsorted(starts, a, "right") - 1)
        last = int(np.searchsorted(starts, b - 1, "right") - 1)
        if mask is not None and not mask[first]:
            continue
        lo = full.rfind(SEP, max(0, a - width), a)
        hi = full.find(SEP, b, b + width)
        before = full[max(lo + 1, a - width) if lo >= 0 else max(0, a - width) : a]
        after = full[b : hi if hi >= 0 else b + width]
        s = int(seq[first])
        hits.append(
            SearchHit(seq_ids[s], domains[s], kinds[int(segment[first])], first, last + 1, int(position[first]),
                      m.group().translate(_LINE), before.translate(_LINE), after.translate(_LINE))
        )  # fmt: skip
        if len(hits) >= max_hits:
            break
    return hits
