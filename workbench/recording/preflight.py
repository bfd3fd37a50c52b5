"""The one preflight every recording runs (prompts, transcripts, the live agent) before it writes anything.

Order, cheapest refusal first, so bad input never costs a model load and never leaves a half-written store:

1. the input (prompt or transcript lines, checked by the caller before ``Preflight`` is made);
2. the planned routing config: the model directory, its MoE family, built on the meta device from
   config.json (no weight read), and the weights files' headers (a truncated download is named);
3. the target: ``out`` can be written (a read-only or missing location is refused here, not by an
   ``OSError`` after the model loaded), the store would accept an append (same routing signature, known
   schema, no other writer) and no id to record is already in it;
4. the tokenizer alone, so the caller can tokenize and measure every input against the context window;
5. the model's weights (``load``), then its routing signature against the planned one;
6. the store writer (``writer``).

A model already loaded (a notebook's) skips the loading steps; its routing config is read from it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from workbench.errors import ParameterError, StoreError, WorkbenchError
from workbench.routing_config import RoutingConfig

Log = Callable[[str], None]


def _quiet(message: str) -> None:
    """The default ``log``: say nothing (the CLI passes its console's print)."""


def local_path(out: str | Path) -> Path | None:
    """The local directory a store path or ``file://`` URL names; None for remote URLs."""
    text = str(out)
    if text.startswith("file://"):
        return Path(text[len("file://") :])
    if "://" in text:
        return None
    return Path(text).expanduser().absolute()


def check_out_writable(out: str | Path, param: str = "out") -> None:
    """Refuse an ``out`` location this process cannot write (read-only file system, no permission, a
    parent that is a file or cannot hold directories). Probes by creating and removing one temporary
    directory in the nearest existing ancestor of a new store; nothing stays behind."""
    path = local_path(out)
    if path is None:
        return
    if path.exists():
        if path.is_dir() and not os.access(path, os.W_OK):
            raise ParameterError(
                f"{{{param}}} {out}: the directory is not writable (read-only or no permission)", param
            )
        return  # a file: the store's own check names it
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ParameterError(f"{{{param}}} {out}: {ancestor} is a file, not a folder", param)
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".workbench-probe-", dir=ancestor))
    except OSError as err:
        raise ParameterError(
            f"{{{param}}} {out}: cannot create it in {ancestor} ({err.strerror}); choose a writable location", param
        ) from None


class Preflight:
    """Steps 2-6 of the module docstring for one recording run.

    Parameters
    ----------
    model
        "k2-mini", a checkpoint directory, or a model already loaded (then ``tokenizer`` is required).
    out
        The routing store to create or append to (directory or fsspec URL).
    tokenizer, dtype, device_map, trust_remote_code
        As in ``workbench.models.load_model``.
    """

    def __init__(
        self,
        model: Any,
        out: str | Path,
        *,
        tokenizer: Any = None,
        dtype: str = "fp32",
        device_map: str | dict[str, Any] | None = None,
        trust_remote_code: bool = False,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        from workbench.models import (
            DTYPES,
            check_weights,
            context_length,
            planned_routing_config,
            resolve_device_map,
            resolve_model_path,
        )

        if dtype not in DTYPES:
            raise ParameterError(f"unknown {{dtype}} {dtype!r}; use one of {', '.join(DTYPES)}", "dtype")
        self.out, self.storage_options = str(out), storage_options
        self.dtype, self.trust_remote_code = dtype, trust_remote_code
        self.device_map = resolve_device_map(device_map)  # a placement file is read before the slow load
        self._model: Any = None
        self._tokenizer: Any = tokenizer
        if isinstance(model, str | Path):
            self.name = str(model)
            self.path: Path | None = resolve_model_path(model)
            self.planned: RoutingConfig = planned_routing_config(model, trust_remote_code=trust_remote_code)
            check_weights(self.path)
            self.context = context_length(self.path)
        else:
            from workbench.hooks import find_adapter, routing_config

            if tokenizer is None:
                raise ParameterError("a loaded model needs its {tokenizer} (load_model returns both)", "tokenizer")
            self._model, self.path = model, None
            self.planned = routing_config(model, find_adapter(model))
            self.name = self.planned.model_name
            value = getattr(getattr(model, "config", None), "max_position_embeddings", None)
            self.context = int(value) if isinstance(value, int) and value > 0 else None
        check_out_writable(out)
        from workbench.store.io import check_appendable, open_store

        check_appendable(out, self.planned, storage_options)
        try:
            self.existing = {str(s) for s in open_store(out, storage_options=storage_options).sequence.values}
        except StoreError:
            self.existing = set()  # no store yet (check_appendable already refused anything unusable)

    def refuse_clashes(self, ids: Iterable[str], what: str = "id(s)") -> None:
        """Refuse ids already in the store, before anything loads."""
        clash = sorted(self.existing.intersection(ids))
        if clash:
            shown = ", ".join(clash[:5]) + (" ..." if len(clash) > 5 else "")
            raise ParameterError(
                f"{len(clash)} {what} already in {self.out} ({shown}); use another {{out}} or new ids", "out"
            )

    def tokenizer(self) -> Any:
        """The tokenizer alone (loaded once), to tokenize and measure inputs before the weights load."""
        if self._tokenizer is None:
            from workbench.models import load_tokenizer

            assert self.path is not None
            self._tokenizer = load_tokenizer(self.path, trust_remote_code=self.trust_remote_code)
        return self._tokenizer

    def refuse_too_long(self, where: str, n_tokens: int, extra: int = 0, hint: str = "") -> None:
        """Refuse an input of ``n_tokens`` (+ ``extra`` to generate) longer than the model's context window."""
        if self.context is not None and n_tokens + extra > self.context:
            plus = f" + {extra:,} to generate" if extra else ""
            raise WorkbenchError(
                f"{where}: {n_tokens:,} tokens{plus} do not fit {self.name}'s context window of {self.context:,} "
                f"tokens (max_position_embeddings){hint}"
            )

    def load(self, log: Log = _quiet) -> Any:
        """The model (loaded once, in eval mode)."""
        if self._model is None:
            from workbench.models import load_model

            log(f"loading {self.name} ({self.dtype}) ...")
            self._model, self._tokenizer = load_model(
                self.name, dtype=self.dtype, device_map=self.device_map, trust_remote_code=self.trust_remote_code,
                tokenizer=self._tokenizer,
            )  # fmt: skip
        return self._model

    def check_loaded(self, config: RoutingConfig) -> None:
        """The loaded model's routing config must be the one planned from config.json."""
        if config.signature() != self.planned.signature():
            raise WorkbenchError(
                "the loaded model's routing config differs from its config.json "
                f"({config.describe_difference(self.planned)}); nothing was written"
            )

    def writer(self, config: RoutingConfig, *, scores: bool) -> Any:
        """Open the store's writer (creates the store when missing)."""
        from workbench.models import tokenizer_attrs
        from workbench.store.io import StoreWriter

        try:
            return StoreWriter(
                self.out, config, tokenizer_attrs(self.tokenizer(), name=config.model_name), capture="hooks",
                with_scores=scores, storage_options=self.storage_options,
            )  # fmt: skip
        except OSError as err:
            raise ParameterError(
                f"{{out}} {self.out}: cannot be written ({err.strerror or err}); choose a writable location", "out"
            ) from None
