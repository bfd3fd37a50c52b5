"""The transcript pane: tokens coloured by segment kind, hoverable and clickable, with a step slider.

An anywidget whose front end is transcript.js. Python holds only the synced traits below; per-token
arrays travel as binary buffers (``bytes`` traits, sent by ipywidgets as raw buffers), never as JSON
lists, so a 300-step transcript of ~50k tokens is a few hundred kB on the wire.

The front end writes two traits back, ``selection`` and ``query`` (the search box); whoever owns the
view (``TranscriptGraphWidget``) observes them and answers with ``highlight`` (tokens behind a clicked
node or edge) and ``hit_start`` / ``hit_stop`` (the search hits).
"""

from __future__ import annotations

import pathlib
from typing import Any

import anywidget
import numpy as np
import traitlets as t

from .sequence_data import SequenceData

SELECTION_KINDS = ("all", "step", "segment", "token", "search")

_HERE = pathlib.Path(__file__).parent


def pack_text(pieces: list[str]) -> tuple[bytes, bytes]:
    """UTF-8 of all pieces concatenated, and int32 byte offsets (T+1,) where each piece starts and ends."""
    encoded = [p.encode("utf-8") for p in pieces]
    offsets = np.zeros(len(encoded) + 1, dtype="<i4")
    offsets[1:] = np.cumsum([len(b) for b in encoded])
    return b"".join(encoded), offsets.tobytes()


def _buf(arr: np.ndarray, dtype: str) -> bytes:
    return np.ascontiguousarray(arr, dtype=dtype).tobytes()


class TranscriptView(anywidget.AnyWidget):
    """A transcript shown token by token. Build it with ``TranscriptView.from_sequence(data)``.

    Traits (all synced; buffers are little-endian)
    ----------------------------------------------
    sequence_id : str, default ""
        Id of the shown sequence.
    segment_kinds : list[str], default []
        Segment kind names by code (the store's ``segment_kinds``).
    token_text : bytes, default b""
        UTF-8 of every token's display string, concatenated.
    token_offsets : bytes, default b""
        int32 (T+1,) byte offsets into ``token_text``.
    token_ids : bytes, default b""
        int32 (T,) token ids (shown on hover).
    token_segment : bytes, default b""
        int8 (T,) segment code of each token.
    token_step : bytes, default b""
        int32 (T,) tool-loop step of each token, -1 outside steps.
    span_start, span_stop : bytes, default b""
        int32 (S,) token positions of each segment span, sorted by start.
    span_kind : bytes, default b""
        int8 (S,) segment code of each span.
    span_step : bytes, default b""
        int32 (S,) step of each span.
    span_labels : list[str], default []
        Label of each span, e.g. ``functions.calculator:0``.
    steps : bytes, default b""
        int32 sorted distinct steps (≥ 0), what the slider walks through.
    selection : dict, default {"kind": "all", "index": -1}
        What is selected: kind ``all`` (index -1), ``step`` (a step number), ``segment`` (a span row),
        ``token`` (a position in the sequence) or ``search`` (the tokens of the current search hits,
        index -1). Written by clicks, the slider and the search box's *Graph hits* button.
    height : int, default 520
        Pixel height of the scrolling transcript body.
    highlight : bytes, default b""
        int32 sorted positions to highlight (the selected tokens behind a clicked node or edge).
    highlight_label : str, default ""
        What the highlight is, e.g. ``12 tokens through L3:E5`` (shown in the status line).
    query : dict, default {"text": "", "regex": False, "n": 0}
        The search box (written by the browser; ``n`` counts submissions so a repeat is a change).
    hit_start, hit_stop : bytes, default b""
        int32 (H,) token positions [start, stop) of each search hit, in text order.
    search_status : str, default ""
        One line about the last search (hits, or what was wrong with it).
    """

    _esm = _HERE / "transcript.js"
    _css = _HERE / "transcript.css"

    sequence_id = t.Unicode("").tag(sync=True)
    segment_kinds = t.List(t.Unicode(), default_value=[]).tag(sync=True)
    token_text = t.Bytes(b"").tag(sync=True)
    token_offsets = t.Bytes(b"").tag(sync=True)
    token_ids = t.Bytes(b"").tag(sync=True)
    token_segment = t.Bytes(b"").tag(sync=True)
    token_step = t.Bytes(b"").tag(sync=True)
    span_start = t.Bytes(b"").tag(sync=True)
    span_stop = t.Bytes(b"").tag(sync=True)
    span_kind = t.Bytes(b"").tag(sync=True)
    span_step = t.Bytes(b"").tag(sync=True)
    span_labels = t.List(t.Unicode(), default_value=[]).tag(sync=True)
    steps = t.Bytes(b"").tag(sync=True)
    selection = t.Dict(default_value={"kind": "all", "index": -1}).tag(sync=True)
    height = t.Int(520).tag(sync=True)
    highlight = t.Bytes(b"").tag(sync=True)
    highlight_label = t.Unicode("").tag(sync=True)
    query = t.Dict(default_value={"text": "", "regex": False, "n": 0}).tag(sync=True)
    hit_start = t.Bytes(b"").tag(sync=True)
    hit_stop = t.Bytes(b"").tag(sync=True)
    search_status = t.Unicode("").tag(sync=True)

    def __init__(self, **kwargs: Any) -> None:
        unknown = sorted(k for k in kwargs if not self.has_trait(k) or k.startswith("_"))
        if unknown:
            raise TypeError(f"TranscriptView got unknown keyword argument(s): {', '.join(unknown)}")
        super().__init__(**kwargs)

    @t.validate("selection")
    def _check_selection(self, proposal: dict[str, Any]) -> dict[str, Any]:
        value = dict(proposal["value"])
        kind = value.get("kind")
        if kind not in SELECTION_KINDS:
            raise t.TraitError(f"selection kind must be one of {SELECTION_KINDS}, got {kind!r}")
        value["index"] = int(value.get("index", -1))
        return value

    @classmethod
    def from_sequence(cls, data: SequenceData, *, height: int = 520) -> TranscriptView:
        """A view of one loaded sequence (see ``sequence_data.load_sequence``)."""
        return cls(**cls.sequence_traits(data), height=height)

    @staticmethod
    def sequence_traits(data: SequenceData) -> dict[str, Any]:
        """The trait values that show ``data`` (set them on a live view to switch sequences in place)."""
        text, offsets = pack_text(data.token_text)
        return {
            "sequence_id": data.sequence_id,
            "segment_kinds": list(data.segment_kinds),
            "token_text": text,
            "token_offsets": offsets,
            "token_ids": _buf(data.token_ids, "<i4"),
            "token_segment": _buf(data.segment, "i1"),
            "token_step": _buf(data.step, "<i4"),
            "span_start": _buf(data.span_start, "<i4"),
            "span_stop": _buf(data.span_stop, "<i4"),
            "span_kind": _buf(data.span_kind, "i1"),
            "span_step": _buf(data.span_step, "<i4"),
            "span_labels": list(data.span_label),
            "steps": _buf(data.steps, "<i4"),
        }

    def select(self, kind: str, index: int = -1) -> None:
        """Select programmatically, as a click would (``view.select("step", 12)``)."""
        self.selection = {"kind": kind, "index": int(index)}

    def search(self, text: str, *, regex: bool = False) -> None:
        """Submit ``text`` to the search box, as typing it and pressing Enter would."""
        n = int(str(dict(self.query).get("n", 0))) + 1
        self.query = {"text": text, "regex": bool(regex), "n": n}

    def set_highlight(self, positions: np.ndarray, label: str) -> None:
        """Highlight the tokens at ``positions`` (within the sequence) with a status line ``label``."""
        with self.hold_sync():
            self.highlight = _buf(np.unique(np.asarray(positions, dtype=np.int64)), "<i4")
            self.highlight_label = label

    def set_hits(self, starts: np.ndarray, stops: np.ndarray, status: str) -> None:
        """Show search hits (token positions [start, stop) each) and a status line."""
        with self.hold_sync():
            self.hit_start = _buf(starts, "<i4")
            self.hit_stop = _buf(stops, "<i4")
            self.search_status = status

    @property
    def highlighted(self) -> np.ndarray:
        """The highlighted positions, (m,) int32."""
        return np.frombuffer(self.highlight, dtype="<i4")

    @property
    def hits(self) -> tuple[np.ndarray, np.ndarray]:
        """The search hits as (starts, stops) token positions, each (H,) int32."""
        return np.frombuffer(self.hit_start, dtype="<i4"), np.frombuffer(self.hit_stop, dtype="<i4")
