"""DeepSeek-V3 load balancing as K2 trains with it, which transformers does not implement.

1. Auxiliary-loss-free balancing (DeepSeek-V3 technical report, arXiv:2412.19437, §2.1.2): after each
   training step, each routed expert's selection bias ``b_i`` (``e_score_correction_bias``, added to the
   sigmoid score for top-k *selection only*) moves by ``γ`` against its load's deviation:
   ``b_i ← b_i - γ · sign(load_i - mean_j load_j)``.
2. The complementary sequence-wise balance loss (same report, eqs. 17-20), per sequence of T tokens:
   ``L_bal = α Σ_i f_i P_i`` with ``f_i = N_r / (K_r T) Σ_t 1[i ∈ TopK(t)]`` and
   ``P_i = (1/T) Σ_t s_{i,t} / Σ_j s_{j,t}`` (``s`` the sigmoid scores), summed over MoE layers.

:class:`RouterTap` captures each MoE layer's router outputs during a forward pass (forward hooks that
remove themselves on exit, even after an exception).
"""

from __future__ import annotations

from types import TracebackType

import torch
from torch import nn


class RouterTap:
    """Context manager recording ``(router_logits (N, E), topk_indices (N, k))`` per MoE layer per forward."""

    def __init__(self, model: nn.Module) -> None:
        self.gates = [m for m in model.modules() if type(m).__name__.endswith("TopkRouter")]
        if not self.gates:
            raise ValueError("model has no DeepSeek-V3 style TopkRouter modules")
        self.records: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _hook(self, module: nn.Module, args: object, output: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> None:
        router_logits, _weights, topk_indices = output
        self.records.append((router_logits, topk_indices))

    def __enter__(self) -> RouterTap:
        # Global state: hooks on every router of the model, removed in __exit__.
        self._handles = [g.register_forward_hook(self._hook) for g in self.gates]
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def clear(self) -> None:
        self.records = []


def expert_loads(records: list[tuple[torch.Tensor, torch.Tensor]], n_experts: int) -> torch.Tensor:
    """Tokens routed to each expert per layer: ``(L, E)`` int64 counts from captured top-k indices."""
    return torch.stack([torch.bincount(idx.reshape(-1), minlength=n_experts) for _, idx in records])


@torch.no_grad()
def update_correction_bias(gates: list[nn.Module], loads: torch.Tensor, gamma: float) -> torch.Tensor:
    """Apply ``b_i -= γ · sign(load_i - mean load)`` to every gate; return the per-layer max/mean load ratio.

    Parameters
    ----------
    gates : the routers in layer order (each has ``e_score_correction_bias`` (E,)).
    loads : ``(L, E)`` expert loads of the step just taken.
    gamma : the bias update speed γ.
    """
    loads = loads.float()
    mean = loads.mean(dim=1, keepdim=True)  # (L, 1)
    step = torch.sign(loads - mean) * gamma  # (L, E)
    for gate, delta in zip(gates, step, strict=True):
        bias = gate.get_buffer("e_score_correction_bias")  # (E,)
        bias.sub_(delta.to(bias.dtype))
    return loads.max(dim=1).values / mean.squeeze(1).clamp_min(1e-9)


def sequence_balance_loss(
    records: list[tuple[torch.Tensor, torch.Tensor]], batch: int, top_k: int, alpha: float
) -> torch.Tensor:
    """DeepSeek-V3's sequence-wise balance loss, summed over layers and averaged over sequences."""
    total = torch.zeros(())
    for logits, idx in records:
        n_experts = logits.shape[-1]
        scores = torch.sigmoid(logits.float()).view(batch, -1, n_experts)  # (B, T, E)
        seq_len = scores.shape[1]
        p = (scores / scores.sum(-1, keepdim=True)).mean(1)  # (B, E)
        hits = torch.zeros(batch, n_experts).scatter_add_(
            1, idx.view(batch, -1), torch.ones(batch, seq_len * top_k)
        )  # (B, E) selections per sequence
        f = hits * n_experts / (top_k * seq_len)
        total = total + (f * p).sum(-1).mean()
    return alpha * total
