"""Checks on a checkpoint's config.json that must run before transformers is asked to load it.

Kimi K2 checkpoints (K2 Instruct, K2 Thinking) declare ``"model_type": "kimi_k2"`` with an ``auto_map``
pointing at the DeepSeek-V3 code shipped next to the weights (``configuration_deepseek.py``,
``modeling_deepseek.py``). transformers 5.x registers no ``kimi_k2`` model type, so ``AutoConfig``
can only build such a config by running that code, which it does only with ``trust_remote_code=True``;
without it transformers fails with a long message about custom code. ``require_trust_remote_code``
says in one line what to add instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError


class RemoteCodeRequired(WorkbenchError):
    """The checkpoint's model type exists only as code shipped with it (``auto_map``)."""


def _registered(model_type: str) -> bool:
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    return model_type in CONFIG_MAPPING


def require_trust_remote_code(model_dir: str | Path, *, trust_remote_code: bool) -> None:
    """Refuse (one line) a checkpoint whose config needs its own code when ``trust_remote_code`` is False.

    Parameters
    ----------
    model_dir : a local checkpoint directory holding ``config.json``.
    trust_remote_code : the caller's setting (the CLI flag ``--trust-remote-code``).

    Raises
    ------
    RemoteCodeRequired
        When ``config.json``'s ``model_type`` is not one transformers registers (``CONFIG_MAPPING``),
        the config has an ``auto_map`` (code shipped with the checkpoint), and ``trust_remote_code`` is
        False. A missing or unreadable config.json is left to the loader's own checks.
    """
    if trust_remote_code:
        return
    try:
        cfg: Any = json.loads((Path(model_dir) / "config.json").read_text())
    except (OSError, ValueError):
        return
    if not isinstance(cfg, dict):
        return
    model_type, auto_map = cfg.get("model_type"), cfg.get("auto_map")
    if not isinstance(model_type, str) or not auto_map or _registered(model_type):
        return
    raise RemoteCodeRequired(
        f"model {model_dir}: model_type {model_type!r} is not built into transformers and its config.json loads "
        "code shipped with the checkpoint (auto_map); pass trust_remote_code=True (--trust-remote-code) if you "
        "trust that code"
    )
