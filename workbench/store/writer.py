"""``StoreWriter``: appends finished sequences to a routing store from a background thread.

The forward pass hands each finished sequence to ``add`` and goes on; a writer thread takes what is queued
(up to about one token chunk at a time), writes it and commits it (see ``commit.py``). Each commit holds
whole sequences only, so a kill at any moment loses at most the sequences not yet committed.
"""

from __future__ import annotations

import contextlib
import errno
import queue
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from workbench.errors import StoreError
from workbench.routing_config import RoutingConfig
from workbench.store import codecs
from workbench.store import schema as S
from workbench.store.commit import commit, read_json, repair
from workbench.store.dataset import SequenceRecord, routing_dataset
from workbench.store.location import resolve
from workbench.store.prepare import WriteState, check_writable, open_for_writing

_STOP = object()
_OFFSET_DIM = {S.TOKEN: "tokens", S.SEQUENCE: "sequences", S.SPAN: "spans"}


def _explain(err: BaseException) -> str:
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        return f"the disk is full or a file-size limit was reached ({err.strerror}); free space and run again"
    return f"{type(err).__name__}: {err}"


class StoreWriter:
    """Append sequences to a routing store (created if missing) without blocking the forward pass.

    Parameters
    ----------
    path_or_url : str or Path
        A directory (``runs/k2.zarr``) or any fsspec URL (``file:///...``, ``memory://...``, ``s3://...``).
    config : RoutingConfig
        The model and routing config; an existing store with another ``config.signature()`` is refused.
    tokenizer : dict
        ``{"name": str, "vocab": [token string by id], "special_tokens": {str: int}}``, kept in the attrs.
    capture : str
        "hooks", "vllm" or "sglang".
    with_scores : bool
        Also store ``router_scores`` (token, layer, expert).
    has_gate_weights : bool
        False when the capture gives ids only (engines); ``gate_weights`` are then NaN.
    max_queue : int
        Sequences that may wait for the writer thread before ``add`` blocks (back-pressure, bounded memory).
    batch_tokens : int or None
        Most tokens per commit (default: four token chunks). The writer commits whatever is queued, up to
        this; with a backlog, bigger commits re-encode the partly filled tail chunk less often.

    Raises
    ------
    StoreError
        Before anything is written: another model/config/schema version, a path that is not a store, or a
        second concurrent writer. From ``add``/``close``: a failed write (the last commit stays intact).
    """

    def __init__(
        self,
        path_or_url: str | Path,
        config: RoutingConfig,
        tokenizer: dict[str, Any],
        *,
        capture: str = "hooks",
        with_scores: bool = False,
        has_gate_weights: bool = True,
        storage_options: dict[str, Any] | None = None,
        max_queue: int = 16,
        batch_tokens: int | None = None,
    ) -> None:
        self.config, self.has_gate_weights, self.with_scores = config, has_gate_weights, with_scores
        self._loc = resolve(path_or_url, storage_options, read_only=False)
        self.where = self._loc.where
        if not self._loc.is_dir_or_missing():
            raise StoreError(f"{self.where} exists and is not a directory; a routing store is a directory (*.zarr)")
        # refuse before the lock file is made, so a refused directory is left exactly as it was
        check_writable(self._loc, config, tokenizer, capture=capture, with_scores=with_scores)
        self._lock = self._loc.writer_lock().acquire()
        try:
            self._state: WriteState = open_for_writing(
                self._loc,
                config,
                tokenizer,
                capture=capture,
                with_scores=with_scores,
                has_gate_weights=has_gate_weights,
            )
        except BaseException:
            self._lock.release()
            raise
        self._store_scores = bool(self._state.attrs.get("has_router_scores"))
        self._pending_ids: set[str] = set()
        self._batch_tokens = batch_tokens or 4 * codecs.token_chunk(len(config.moe_layers), config.top_k)
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_queue)
        self._error: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="workbench-store-writer", daemon=True)
        self._thread.start()

    # -- producer side -----------------------------------------------------------------------------------
    @property
    def committed(self) -> dict[str, int]:
        """Counts of the last commit: {"tokens", "sequences", "spans"}."""
        return dict(self._state.attrs["committed"])

    def add(self, record: SequenceRecord) -> None:
        """Queue one finished sequence; blocks only while ``max_queue`` sequences wait to be written."""
        if self._closed:
            raise StoreError(f"the writer of {self.where} is closed")
        self._raise_if_failed()
        self._validate(record)
        self._pending_ids.add(record.id)
        while True:
            try:
                self._queue.put(record, timeout=0.2)
                return
            except queue.Full:
                self._raise_if_failed()

    def flush(self) -> None:
        """Wait until everything added so far is committed."""
        self._queue.join()
        self._raise_if_failed()

    def close(self) -> None:
        """Commit what is queued, stop the writer thread and release the lock; re-raise a writer error."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join()
        try:
            if self._error is not None:
                # put the arrays' own metadata back to the last commit (best effort: the disk may be full)
                with contextlib.suppress(Exception):
                    repair(self._loc.store, read_json(self._loc.store, "zarr.json") or {})
        finally:
            self._lock.release()
        self._raise_if_failed()

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if et is None:
            self.close()
            return
        with contextlib.suppress(StoreError):  # the caller failed: commit the whole sequences it handed over
            self.close()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            n = self._state.attrs["committed"]["sequences"]
            raise StoreError(
                f"writing {self.where} failed: {_explain(self._error)}; the store keeps the {n} sequences "
                "committed before"
            ) from self._error

    def _validate(self, r: SequenceRecord) -> None:
        L, k, E = len(self.config.moe_layers), self.config.top_k, self.config.n_routed_experts
        if r.n_tokens == 0:
            raise StoreError(f"sequence {r.id!r} has no tokens; nothing to record")
        if not r.id:
            raise StoreError("a sequence id is empty; every sequence needs a non-empty, unique id")
        texts = [r.id, r.domain, r.source, *(sp.label for sp in r.spans)]
        if any("\x00" in str(t) for t in texts):
            raise StoreError(f"sequence {r.id!r}: NUL characters are not allowed in ids, domains, sources or labels")
        if r.expert_ids.shape[1:] != (L, k):
            raise StoreError(
                f"sequence {r.id!r}: routing of shape {r.expert_ids.shape[1:]} does not match the store's model "
                f"({L} MoE layers, top-{k})"
            )
        if r.id in self._state.sequence_ids or r.id in self._pending_ids:
            raise StoreError(f"sequence id {r.id!r} is already in {self.where}; sequence ids must be unique")
        if self.has_gate_weights and r.gate_weights is None:
            raise StoreError(f"sequence {r.id!r} has no gate_weights but the writer was opened with has_gate_weights")
        if self.with_scores and (r.router_scores is None or r.router_scores.shape != (r.n_tokens, L, E)):
            got = None if r.router_scores is None else r.router_scores.shape
            raise StoreError(f"sequence {r.id!r}: router_scores {got}, expected ({r.n_tokens}, {L}, {E})")
        ids = np.asarray(r.expert_ids)
        if ids.size and (ids.min() < 0 or ids.max() >= E):
            raise StoreError(f"sequence {r.id!r}: expert ids outside 0..{E - 1}")

    # -- writer thread -----------------------------------------------------------------------------------
    def _run(self) -> None:
        stop = False
        while not stop:
            batch: list[SequenceRecord] = []
            item = self._queue.get()
            taken = 1
            if item is _STOP:
                stop = True
            else:
                batch.append(item)
                tokens = item.n_tokens
                while tokens < self._batch_tokens:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    taken += 1
                    if item is _STOP:
                        stop = True
                        break
                    batch.append(item)
                    tokens += item.n_tokens
            if batch and self._error is None:
                try:
                    self._append(batch)
                except BaseException as err:  # kept and re-raised in the producer's thread
                    self._error = err
            for _ in range(taken):
                self._queue.task_done()

    def _append(self, batch: list[SequenceRecord]) -> None:
        state = self._state
        done = dict(state.attrs["committed"])
        ds = routing_dataset(
            batch, self.config, token_offset=done["tokens"], sequence_offset=done["sequences"],
            with_scores=self._store_scores,
        )  # fmt: skip
        for name, arr in state.arrays.items():
            if name == S.LAYER:
                continue
            dim = S.DIMS[name][0]
            values = ds[name].values
            if name in (S.SEQUENCE, S.SEQUENCE_DOMAIN, S.SEQUENCE_SOURCE, S.SPAN_LABEL):
                values = np.asarray([str(v) for v in values], dtype=object)
            n = values.shape[0]
            if n == 0:
                continue
            start = done[_OFFSET_DIM[dim]]
            arr.resize((start + n, *arr.shape[1:]))  # (rows, ...) the array's own zarr.json: not yet committed
            arr[start : start + n] = values
        new_attrs = dict(state.attrs)
        new_attrs["committed"] = {
            "tokens": done["tokens"] + ds.sizes[S.TOKEN],
            "sequences": done["sequences"] + ds.sizes[S.SEQUENCE],
            "spans": done["spans"] + ds.sizes[S.SPAN],
        }
        new_attrs["has_gate_weights"] = bool(state.attrs.get("has_gate_weights", True)) and self.has_gate_weights
        new_attrs["updated"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        commit(self._loc.store, new_attrs, state.arrays)  # the commit point
        state.attrs = new_attrs
        state.sequence_ids.update(r.id for r in batch)
