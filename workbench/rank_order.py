"""Whether a routing store's ``expert_ids[..., k]`` columns are in the router's rank order.

Hook capture (``hooks/``) writes each token's top-k in the order the router's ``torch.topk`` returns
them, highest score first, so column k = 0 is the first choice. Engine capture does not promise that
order (see docs/engines.md, "Rank order"):

- vLLM: ``grouped_topk`` and ``fused_topk_bias`` in
  ``vllm/model_executor/layers/fused_moe/router/grouped_topk_router.py`` /
  ``fused_topk_bias_router.py`` take ``torch.topk(..., sorted=use_sorted)`` with
  ``use_sorted = envs.VLLM_BATCH_INVARIANT`` (off by default);
- SGLang: ``grouped_topk`` / ``biased_grouped_topk_impl`` in ``python/sglang/srt/layers/moe/topk.py``
  take ``sorted=(True if num_fused_shared_experts > 0 else False)``.

An engine store therefore holds each token's top-k *set* in an unspecified order: set-based metrics
(load, entropy, co-activation over all pairs, any-of-top-k agreement, transitions) are exact, metrics
that read k = 0 as the first choice or pair neighbouring ranks are not.

The store attribute is ``rank_order`` (bool), written when a store is created. Stores written before
it existed carry none; they are read by their ``capture`` attribute: ``vllm`` and ``sglang`` stores are
unordered, every other capture (``hooks``, ``synthetic``) is in rank order.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

ENGINE_CAPTURES: Final = ("vllm", "sglang")

UNORDERED_NOTE: Final = (
    "expert ids of this store are not in router rank order (engine capture), so the first choice is unknown"
)


def rank_order_for_capture(capture: str | None) -> bool:
    """True when a capture of this kind writes top-k ids in router rank order (hooks, synthetic)."""
    return capture not in ENGINE_CAPTURES


def is_rank_ordered(attrs: Mapping[str, Any]) -> bool:
    """A store's ``rank_order`` attribute; for stores that predate it, what its ``capture`` implies."""
    value = attrs.get("rank_order")
    if value is None:
        return rank_order_for_capture(attrs.get("capture"))
    return bool(value)
