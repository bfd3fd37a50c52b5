"""Transcript + graph: a tool-loop transcript next to the reasoning graph of what is selected in it.

Left, the transcript (``TranscriptView``: segments coloured by kind, tokens hoverable and clickable,
a step slider, a search box); right, the expert pathways of the selected step, segment, token or
search hits (``GraphPane``) with an export button, the card of a clicked expert or the token list of a
clicked edge (``ExpertCard``), and the last clicked token's own path (``TokenPathFigure``).

Linking: a click on a node (or a cell of the token path) shows that expert's card over the current
selection and highlights, in the transcript, the selected tokens routed to it; a click on an edge
lists and highlights the selected tokens that took that transition. The search box runs
``workbench.experts.find`` over this transcript; *Graph hits* makes the hits' tokens the selection.

The sequence's routing is read from the store once, when the widget is built; a selection then
costs one numpy aggregation and one figure update (``benchmarks/bench_widgets.py`` measures it in
Python, ``benchmarks/bench_browser_latency.py`` in the browser).
"""

from __future__ import annotations

import contextlib
import html
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import ipywidgets as widgets
import numpy as np
import xarray as xr

from workbench.errors import WorkbenchError
from workbench.experts import find
from workbench.experts.vocab import text_vocab
from workbench.graph.tables import RoutingCounts
from workbench.store import schema as S
from workbench.store.select import Selection

from .expert_card import ExpertCard, card_page, edge_html
from .graph_pane import GraphPane
from .linking import edge_positions, edge_top_tokens, node_positions
from .pathways import pathway_counts, store_vocab
from .sequence_data import SequenceData, as_dataset, load_sequence, sequence_ids
from .token_path import TokenPathFigure, token_title
from .transcript_view import TranscriptView


def _lowest_priority() -> None:
    """Run the background thread at nice 19 where the OS allows it per thread (Linux), so on a busy
    machine the user's clicks get the CPU first."""
    with contextlib.suppress(AttributeError, OSError):  # not Linux, or not permitted: an ordinary thread
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


# One background thread for all widgets: it counts each newly loaded transcript's *All* selection while
# the user looks at the first step (the counting kernel releases the GIL), so a first *All* click is served
# from the cache instead of recounting the whole transcript (~1-4 s on a K2-sized one).
_BACKGROUND = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wb-widget-all", initializer=_lowest_priority)
# A background job starts this long after it is queued: meanwhile the kernel sends the new transcript and
# graph to the browser, which a count in another thread (holding the GIL between its numpy calls) slows.
BACKGROUND_PAUSE_S = 0.4
T = TypeVar("T")


def _paused(fn: Callable[..., T], *args: Any) -> T:
    time.sleep(BACKGROUND_PAUSE_S)
    return fn(*args)


Counted = tuple[RoutingCounts, list[str] | None]  # drawn counts, top tokens of their edges
CountKey = tuple[str, str, int, int]  # (sequence id, selection kind, index, top_edges)
Wire = dict[str, Any]  # a transcript's TranscriptView traits, its buffers packed (TranscriptView.sequence_traits)


class TranscriptGraphWidget(widgets.VBox):
    """A transcript and the reasoning graph of its selected step, segment or token.

    Parameters
    ----------
    store : xarray.Dataset | str | Path
        A routing store (Dataset from ``workbench.open_store`` or its path/URL), e.g. one written by
        ``workbench replay`` or ``workbench agent``.
    sequence : str, optional
        Which transcript (sequence id); default the first. A dropdown switches between them.
    step : int, optional
        Step to select at start; default the first tool-loop step (or the whole sequence if none).
    top_edges : int
        Edges drawn per layer pair in the graph (exports keep all).
    height : int
        Pixel height of both panes.
    prefetch_all : bool
        Count the whole transcript (the *All* selection) in a background thread as soon as a
        transcript is loaded, so the first *All* click does not wait for it; and, before that, read the
        next transcript of the picker from the store there too, with its view traits packed and its
        first step counted, so switching to it does not wait for the store or the count (one more
        transcript in memory: ~75 MB for 38k tokens at K2's shape).

    Examples
    --------
    >>> from workbench import open_store                      # doctest: +SKIP
    >>> TranscriptGraphWidget(open_store("tools.zarr"))        # doctest: +SKIP
    """

    def __init__(
        self,
        store: xr.Dataset | str | Path,
        *,
        sequence: str | None = None,
        step: int | None = None,
        top_edges: int = 24,
        height: int = 560,
        prefetch_all: bool = True,
    ) -> None:
        self._ds = as_dataset(store)
        self.prefetch_all = prefetch_all
        self._prefetched: dict[CountKey, Future[Counted]] = {}
        self._reading: dict[str, Future[SequenceData]] = {}  # transcripts read in the background
        # what the background read of a transcript prepared besides its arrays: its packed traits and its
        # first selection's counts (the latest read only; replaced whole, never changed in place)
        self._ready: dict[str, tuple[Wire, CountKey, Counted]] = {}
        self._vocab = store_vocab(self._ds)  # top tokens of exported nodes
        self._texts = text_vocab(self._vocab)  # decoded, for cards and edge hovers
        self.keep_transcripts = 3  # loaded transcripts kept in memory for switching back
        self._loaded: dict[str, SequenceData] = {}
        self._wire: dict[str, Wire] = {}  # packed traits of the loaded transcripts: switching back re-sends them
        self.keep_counts = 64  # counted selections kept (their drawn edges and hover tokens)
        self._counted: dict[CountKey, Counted] = {}
        self.data: SequenceData = self._load(sequence) if sequence is not None else load_sequence(self._ds)
        self._loaded[self.data.sequence_id] = self.data
        self.max_hits = 1000  # search hits kept per query
        self._hit_rows = np.zeros(0, dtype=np.int64)  # positions covered by the current search hits
        self.last_update_s = 0.0  # seconds the last selection took in Python (aggregate + restyle)
        self._path_token: int | None = None  # position the token-path figure shows
        self.picker = widgets.Dropdown(
            options=sequence_ids(self._ds), value=self.data.sequence_id, description="transcript"
        )
        self.view = TranscriptView(**self._wire_of(self.data), height=height - 70)
        self.graph = GraphPane(top_edges=top_edges, height=height - 60)
        self.token_path = TokenPathFigure(height=300)
        self.card = ExpertCard()
        self.view.layout = widgets.Layout(width="42%")
        right = widgets.VBox([self.graph, self.card, self.token_path.plot], layout=widgets.Layout(width="58%"))
        super().__init__([self.picker, widgets.HBox([self.view, right])])
        self.graph.on_node(self.show_expert)
        self.graph.on_edge(self.show_edge)
        self.token_path.on_expert(self.show_expert)
        self.view.observe(self._selection_changed, names="selection")
        self.view.observe(self._query_changed, names="query")
        self.picker.observe(self._sequence_changed, names="value")
        self._start(step)

    # -- thin public methods -------------------------------------------------------------------
    @property
    def selection(self) -> dict[str, Any]:
        """The current selection, as the transcript pane holds it (``{"kind": ..., "index": ...}``)."""
        return dict(self.view.selection)

    def select(self, kind: str, index: int = -1) -> None:
        """Select a ``step``, a ``segment`` (span row), a ``token`` (position) or ``all``."""
        self.view.select(kind, index)

    def export(self, path: str | Path, fmt: str | None = None) -> Path:
        """Write the current graph (png, svg or graphml); see ``GraphPane.export``."""
        return self.graph.export(path, fmt)

    def show_expert(self, layer_index: int, expert: int) -> None:
        """The card of ``expert`` at layer index ``layer_index`` over the current selection, and its tokens
        highlighted in the transcript (what a click on its node does)."""
        t0 = time.perf_counter()
        d = self.data
        rows = self.selected_rows()
        sel_text = self._describe(self.selection, rows)
        model = str(self._ds.attrs.get("model", {}).get("model_name", ""))
        page = card_page(d, rows, layer_index, expert, self._texts, model=model, selection=sel_text)
        self.card.show_page(page)
        hit = node_positions(d, rows, layer_index, expert)
        self.view.set_highlight(hit, f"{hit.size} selected tokens through L{int(d.layers[layer_index])}:E{expert}")
        self.last_update_s = time.perf_counter() - t0

    def show_edge(self, pair: int, src: int, dst: int) -> None:
        """List and highlight the selected tokens that took the edge ``src`` (layer index ``pair``) ->
        ``dst`` (layer index ``pair + 1``) (what a click on the edge does)."""
        t0 = time.perf_counter()
        d = self.data
        hit = edge_positions(d, self.selected_rows(), pair, src, dst)
        a, b = int(d.layers[pair]), int(d.layers[pair + 1])
        self.card.show_html(edge_html(a, src, b, dst, hit, d, self._texts))
        self.view.set_highlight(hit, f"{hit.size} selected tokens took L{a}:E{src} → L{b}:E{dst}")
        self.last_update_s = time.perf_counter() - t0

    def search(self, text: str, *, regex: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Find ``text`` (or a regular expression) in this transcript's decoded text, across token
        boundaries (``workbench.experts.find``); show and return the hits as token positions
        ``(starts, stops)``. A pattern that does not compile raises ``ExpertPageError``."""
        d = self.data
        hits = find(
            self._ds, text, regex=regex, max_hits=self.max_hits, selection=Selection(sequences=(d.sequence_id,))
        )
        i = sequence_ids(self._ds).index(d.sequence_id)
        start = int(self._ds[S.SEQUENCE_START].values[i])
        starts = np.array([h.start - start for h in hits], dtype=np.int64)
        stops = np.array([h.stop - start for h in hits], dtype=np.int64)
        self._hit_rows = np.unique(
            np.concatenate([np.arange(a, b) for a, b in zip(starts, stops, strict=True)] or [starts])
        )
        more = " (the first ones)" if len(hits) >= self.max_hits else ""
        self.view.set_hits(starts, stops, f"{len(hits)} hits{more} for {text!r}")
        return starts, stops

    def selected_rows(self, selection: dict[str, Any] | None = None) -> np.ndarray:
        """Token positions (within the sequence) that ``selection`` (default: the current one) covers."""
        sel = self.selection if selection is None else selection
        kind, index = sel["kind"], int(sel["index"])
        d = self.data
        if kind == "all":
            return np.arange(d.n_tokens)
        if kind == "step":
            rows = np.nonzero(d.step == index)[0]
            if rows.size == 0:
                raise WorkbenchError(f"no tool-loop step {index} in {d.sequence_id!r}; steps are {_steps(d)}")
            return rows
        if kind == "segment":
            if not 0 <= index < d.span_start.size:
                raise WorkbenchError(f"no segment {index} in {d.sequence_id!r} (it has {d.span_start.size})")
            return np.arange(d.span_start[index], d.span_stop[index])
        if kind == "token":
            if not 0 <= index < d.n_tokens:
                raise WorkbenchError(f"token {index} is outside {d.sequence_id!r} (0..{d.n_tokens - 1})")
            return np.array([index])
        if kind == "search":
            if self._hit_rows.size == 0:
                raise WorkbenchError("no search hits to graph: search for a text in the box above the transcript first")
            return self._hit_rows
        raise WorkbenchError(f"unknown selection kind {kind!r}; use all, step, segment, token or search")

    def pathways(self, selection: dict[str, Any] | None = None) -> RoutingCounts:
        """Expert pathways of ``selection`` (default: the current one), counted by ``workbench.graph``."""
        return pathway_counts(self.data, self.selected_rows(selection), self._vocab)

    # -- internals -----------------------------------------------------------------------------
    def _start(self, step: int | None) -> None:
        self.view.select(*(("step", step) if step is not None else _first_selection(self.data)))
        if self.graph.pathways is None:  # the trait held that value already: draw it anyway
            self._update()
        # after the first graph (what the user sees first); the next transcript's read first, as the shorter
        # job (~0.2 s at K2's shape, against 1-4 s for counting All): a switch soon after opening need not wait
        # for the count
        self._prefetch_next()
        self._prefetch_all()

    def _describe(self, sel: dict[str, Any], rows: np.ndarray) -> str:
        d = self.data
        kind, index = sel["kind"], int(sel["index"])
        if kind == "step":
            kinds = sorted({d.segment_kinds[int(c)] for c in np.unique(d.segment[rows])})
            what = f"step {index} ({', '.join(kinds)})"
        elif kind == "segment":
            label = d.span_label[index]
            what = f"{d.segment_kinds[int(d.span_kind[index])]} segment" + (f" {label}" if label else "")
            what += f" of step {int(d.span_step[index])}" if d.span_step[index] >= 0 else ""
        elif kind == "token":
            what = f"token {index} {d.token_text[index]!r}"
        elif kind == "search":
            what = f"search hits ({self.view.search_status})"
        else:
            what = "whole transcript"
        return f"{d.sequence_id}: {what} · {rows.size} tokens"

    def _update(self) -> None:
        t0 = time.perf_counter()
        sel = self.selection
        rows = self.selected_rows(sel)
        d = self.data
        key = (d.sequence_id, sel["kind"], int(sel["index"]), self.graph.top_edges)
        cached = self._counted.pop(key, None) if sel["kind"] != "search" else None
        if cached is None and key in self._prefetched:  # counted (or being counted) in the background
            cached = self._prefetched.pop(key).result()
        p, tops = cached if cached is not None else self._count(d, rows, self.graph.top_edges)
        self._counted[key] = (p, tops)  # the same selection again (e.g. All) is not counted twice
        while len(self._counted) > self.keep_counts:
            self._counted.pop(next(iter(self._counted)))
        vocab = self._vocab
        self.graph.show(
            p, title=self._describe(sel, rows), all_edges=lambda: pathway_counts(d, rows, vocab),
            edge_tokens=lambda *_: tops,
        )  # fmt: skip
        if self.view.highlight:  # the highlighted tokens belonged to the previous selection
            self.view.set_highlight(np.zeros(0, dtype=np.int64), "")
        if sel["kind"] == "token" or self._path_token is None:  # the token path follows token clicks only
            pos = int(rows[0])
            self.token_path.show(
                d.expert_ids[pos], d.gate_weights[pos], d.layers, title=token_title(d, pos), rank_ordered=d.rank_ordered
            )
            self._path_token = pos
        self.last_update_s = time.perf_counter() - t0

    def _count(self, d: SequenceData, rows: np.ndarray, top_edges: int) -> Counted:
        """The drawn (pruned) counts of ``rows`` and the top tokens of their edges (None over the hover budget)."""
        p = pathway_counts(d, rows, self._vocab, top_edges=top_edges)
        return p, edge_top_tokens(d, rows, p.edges.pair, p.edges.src, p.edges.dst, self._texts)

    def _prefetch_all(self) -> None:
        """Count this transcript's *All* in the background thread (once per transcript and ``top_edges``)."""
        d = self.data
        key = (d.sequence_id, "all", -1, self.graph.top_edges)
        if not self.prefetch_all or key in self._counted or key in self._prefetched:
            return
        self._prefetched[key] = _BACKGROUND.submit(_paused, self._count, d, np.arange(d.n_tokens), self.graph.top_edges)
        while len(self._prefetched) > self.keep_transcripts:  # transcripts dropped from memory
            self._prefetched.pop(next(iter(self._prefetched)))

    def _prefetch_next(self) -> None:
        """Read the picker's next transcript in the background thread (before the *All* count: it runs one
        job at a time), unless it is in memory or being read; only the latest such guess is kept."""
        ids = [str(x) for x in self.picker.options]
        cur = self.data.sequence_id
        nxt = ids[(ids.index(cur) + 1) % len(ids)] if cur in ids else cur
        if self.prefetch_all and nxt not in self._loaded and nxt not in self._reading:
            self._reading = {nxt: _BACKGROUND.submit(_paused, self._read_ahead, nxt, self.graph.top_edges)}

    def _read_ahead(self, sequence: str, top_edges: int) -> SequenceData:
        """Read ``sequence`` (in the background thread) and prepare what showing it sends: its packed traits
        and the counts of the selection it opens on (its first step), kept in ``_ready`` for ``_load``."""
        data = load_sequence(self._ds, sequence)
        wire = TranscriptView.sequence_traits(data)
        kind, index = _first_selection(data)
        rows = np.nonzero(data.step == index)[0] if kind == "step" else np.arange(data.n_tokens)
        self._ready = {sequence: (wire, (sequence, kind, index, top_edges), self._count(data, rows, top_edges))}
        return data

    def _selection_changed(self, _change: dict) -> None:
        try:
            self._update()
        except WorkbenchError as err:  # e.g. a stale selection after switching transcripts
            self.graph.status.value = f"<span style='color:#b00'>{html.escape(str(err))}</span>"

    def _query_changed(self, change: dict) -> None:
        q = change["new"]
        try:
            self.search(str(q.get("text", "")), regex=bool(q.get("regex", False)))
        except WorkbenchError as err:  # a bad pattern: one line in the search bar
            self._hit_rows = np.zeros(0, dtype=np.int64)
            self.view.set_hits(np.zeros(0), np.zeros(0), str(err))

    def _sequence_changed(self, change: dict) -> None:
        self.data = self._load(change["new"])
        self._hit_rows = np.zeros(0, dtype=np.int64)
        # The transcript first, then the graph and the token path (_start). Sending the graph first shows its
        # title ~100 ms sooner but the transcript ~130 ms later, and the whole view no sooner (measured
        # interleaved in Chromium, docs/widgets.md): the browser handles the messages one after the other.
        with self.view.hold_sync():  # one message: the new transcript (buffers packed once), no hits, no highlight
            for name, value in self._wire_of(self.data).items():
                setattr(self.view, name, value)
            self.view.set_hits(np.zeros(0), np.zeros(0), "")
            self.view.set_highlight(np.zeros(0, dtype=np.int64), "")
        self.card.clear()
        self.graph.pathways = None
        self._path_token = None
        self._start(None)

    def _wire_of(self, data: SequenceData) -> Wire:
        """``data``'s packed view traits, built once per loaded transcript (switching back re-sends them)."""
        wire = self._wire.get(data.sequence_id)
        if wire is None:
            wire = self._wire[data.sequence_id] = TranscriptView.sequence_traits(data)
        return wire

    def _load(self, sequence: str) -> SequenceData:
        """The sequence's arrays, from a small cache of the last transcripts shown (switching back is free),
        or from the background read of the picker's next one, with what it prepared (``_read_ahead``)."""
        hit = self._loaded.pop(sequence, None)
        reading = self._reading.pop(sequence, None)
        if reading is not None and reading.cancel():  # still queued behind another job: read it now instead
            reading = None
        if hit is None and reading is not None:  # read (or being read) in the background
            hit = reading.result()
            ready = self._ready.get(sequence)
            if ready is not None:
                wire, key, counted = ready
                self._wire[sequence] = wire
                self._counted.setdefault(key, counted)
        data = hit if hit is not None else load_sequence(self._ds, sequence)
        self._loaded[sequence] = data
        while len(self._loaded) > self.keep_transcripts:
            self._loaded.pop(next(iter(self._loaded)))
        for gone in [s for s in self._wire if s not in self._loaded]:
            del self._wire[gone]
        return data


def _first_selection(d: SequenceData) -> tuple[str, int]:
    """What a transcript opens on: its first tool-loop step, or the whole of it when it has none."""
    steps = d.steps
    return ("step", int(steps[0])) if steps.size else ("all", -1)


def _steps(d: SequenceData) -> str:
    s = d.steps
    return f"{int(s[0])}..{int(s[-1])}" if s.size else "none"
