"""Run a batch of token sequences through a model so a ``RoutingRecorder`` sees every token once.

Rows are left-padded with position ids that ignore the padding (as ``generate`` forms them), then run
with ``generate`` (greedy; or one forward when ``max_new_tokens`` is 0) plus one cached step that routes
the last generated token. ``workbench.recording`` drives this per batch of prompts.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
from torch import nn


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) ids and attention mask, padded on the left so every row's last token is at -1."""
    t = max(len(r) for r in rows)
    ids = torch.full((len(rows), t), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), t), dtype=torch.long)
    for b, r in enumerate(rows):
        ids[b, t - len(r) :] = torch.tensor(r, dtype=torch.long)
        mask[b, t - len(r) :] = 1
    return ids, mask


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that ignore left padding, as ``generate`` forms them: cumsum(mask) - 1, 0 on pads."""
    pos = mask.long().cumsum(-1) - 1  # (B, T)
    return pos.masked_fill(mask == 0, 0)


def cache_kwarg(model: nn.Module) -> str:
    """The forward's KV-cache argument: ``cache`` in newer transformers 5.x, ``past_key_values`` before."""
    params = inspect.signature(type(model).forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def run_batch(
    model: nn.Module,
    ids: torch.Tensor,
    mask: torch.Tensor,
    *,
    max_new_tokens: int,
    pad_id: int,
    eos_id: int | list[int] | None,
) -> None:
    """Forward (or generate, then route the last generated token with one more cached step) one batch.

    Must run inside an active ``RoutingRecorder``. Greedy decoding, so a run is reproducible.
    """
    device = next((p.device for p in model.parameters() if not p.is_meta), torch.device("cpu"))
    ids, mask = ids.to(device), mask.to(device)
    with torch.no_grad():
        if max_new_tokens <= 0:
            model(input_ids=ids, attention_mask=mask, position_ids=positions(mask), use_cache=False)
            return
        out = model.generate(  # type: ignore[operator]
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad_id,
            eos_token_id=eos_id,
            return_dict_in_generate=True,
        )
        cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
        seqs = out.sequences  # (B, T + n)
        if cache is None or seqs.shape[1] == ids.shape[1]:
            return
        # generate never runs a forward on its last token: one cached step routes it too.
        full = torch.cat([mask, torch.ones_like(seqs[:, ids.shape[1] :])], dim=1)  # (B, T + n)
        model(
            input_ids=seqs[:, -1:],
            attention_mask=full,
            position_ids=positions(full)[:, -1:],
            use_cache=True,
            **{cache_kwarg(model): cache},
        )
