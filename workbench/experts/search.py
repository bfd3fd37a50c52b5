"""Search a routing store by text: plain text or a regular expression over the decoded tokens, matching
across token boundaries, mapped back to the token rows it covers.

The store's tokens are decoded and concatenated in row order into one string, with a record separator
between sequences so no match spans two texts, and each match is mapped back to the token rows it covers
(``workbench.store.text``, which also serves the ``match=`` / ``regex=`` selection keys). The decoded
text is built once per opened Dataset, so a second search on the same store only runs the pattern.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

from workbench.errors import SelectionError
from workbench.experts.rows import ExpertPageError
from workbench.store import schema as S
from workbench.store.select import Selection, token_mask
from workbench.store.text import SEP, compile_pattern, match_spans, store_text

__all__ = ["SEP", "SearchHit", "find", "store_text"]
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


def find(
    ds: xr.Dataset, text_or_regex: str, *, regex: bool = False, ignore_case: bool = False, max_hits: int = 100,
    selection: Selection | None = None, width: int = 40,
) -> list[SearchHit]:  # fmt: skip
    """Occurrences of ``text_or_regex`` in the decoded text of the store, in row order (at most ``max_hits``).

    ``regex=False`` searches the literal text; ``regex=True`` compiles it as a Python regular expression
    (a pattern that does not compile raises ``ExpertPageError`` in one line). With ``selection``, only
    matches whose first token is selected are kept. ``width`` characters of context are kept each side.
    """
    try:
        pattern = compile_pattern(text_or_regex, regex=regex, ignore_case=ignore_case)
    except SelectionError as err:
        raise ExpertPageError(str(err)) from None
    full, _, seq = store_text(ds)
    mask = token_mask(ds, selection) if selection is not None else None
    seq_ids = [str(s) for s in np.asarray(ds[S.SEQUENCE].values)]
    domains = [str(d) for d in np.asarray(ds[S.SEQUENCE_DOMAIN].values)]
    kinds = list(ds.attrs.get("segment_kinds", S.SEGMENT_KINDS))
    segment = np.asarray(ds[S.SEGMENT].values)
    position = np.asarray(ds[S.POSITION].values)
    hits: list[SearchHit] = []
    for a, b, first, last in match_spans(ds, pattern):
        if mask is not None and not mask[first]:
            continue
        lo = full.rfind(SEP, max(0, a - width), a)
        hi = full.find(SEP, b, b + width)
        before = full[max(lo + 1, a - width) if lo >= 0 else max(0, a - width) : a]
        after = full[b : hi if hi >= 0 else b + width]
        s = int(seq[first])
        hits.append(
            SearchHit(seq_ids[s], domains[s], kinds[int(segment[first])], first, last + 1, int(position[first]),
                      full[a:b].translate(_LINE), before.translate(_LINE), after.translate(_LINE))
        )  # fmt: skip
        if len(hits) >= max_hits:
            break
    return hits
