"""A CPU-friendly experts forward for training: capacity-padded batched matmuls instead of a loop.

transformers' eager ``DeepseekV3Experts.forward`` runs one small matmul per hit expert (64 experts x
6 layers, forward and backward), which on a 2-core CPU is dominated by per-call overhead. This
implementation gathers every expert's tokens into a padded ``(E, C, H)`` block and does two ``bmm``
calls. It computes the same function (same weights, same routing, same weighted sum); only the
floating-point summation order differs. It is registered in transformers' ``ExpertsInterface`` under
``"padded_bmm"`` and used only while training; saved models keep the default implementation.
"""

from __future__ import annotations

import torch
from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS

NAME = "padded_bmm"


def padded_bmm_experts_forward(
    self: torch.nn.Module, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor
) -> torch.Tensor:
    """Experts forward. ``hidden_states`` (N, H), ``top_k_index`` / ``top_k_weights`` (N, k) -> (N, H)."""
    n_tok, k = top_k_index.shape
    gate_up_proj: torch.Tensor = self.get_parameter("gate_up_proj")  # (E, 2I, H)
    down_proj: torch.Tensor = self.get_parameter("down_proj")  # (E, H, I)
    n_exp = int(gate_up_proj.shape[0])
    flat_e = top_k_index.reshape(-1)  # (N*k,)
    order = torch.argsort(flat_e, stable=True)  # assignments grouped by expert
    sorted_e = flat_e[order]
    counts = torch.bincount(flat_e, minlength=n_exp)  # (E,)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(n_tok * k, device=flat_e.device) - starts[sorted_e]  # position within its expert
    cap = int(counts.max().item())
    token_of = order // k  # (N*k,) source token of each sorted assignment
    flat_pos = sorted_e * cap + slot  # (N*k,) row of each assignment in the (E*C) padded block
    hid = hidden_states.shape[-1]
    block = hidden_states.new_zeros(n_exp * cap, hid).index_copy(0, flat_pos, hidden_states.index_select(0, token_of))
    block = block.view(n_exp, cap, hid)  # (E, C, H)
    gate_up = torch.bmm(block, gate_up_proj.transpose(1, 2))  # (E, C, 2I)
    gate, up = gate_up.chunk(2, dim=-1)
    act = self.act_fn  # type: ignore[operator, union-attr]
    out = torch.bmm(act(gate) * up, down_proj.transpose(1, 2))  # type: ignore[operator]  # (E, C, H)
    weights = top_k_weights.reshape(-1)[order].to(out.dtype)  # (N*k,)
    contrib = out.reshape(n_exp * cap, hid).index_select(0, flat_pos) * weights[:, None]  # (N*k, H)
    final = torch.zeros_like(hidden_states, dtype=out.dtype)
    final.index_add_(0, token_of, contrib)
    return final.to(hidden_states.dtype)


def register() -> str:
    """Register the implementation (idempotent) and return its name for ``config._experts_implementation``."""
    if NAME not in ALL_EXPERTS_FUNCTIONS:
        ALL_EXPERTS_FUNCTIONS.register(NAME, padded_bmm_experts_forward)
    return NAME
