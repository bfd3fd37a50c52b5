"""CPU-friendly experts forwards for training and eval instead of transformers' per-expert loop.

transformers' eager ``DeepseekV3Experts.forward`` runs one small matmul per hit expert (64 experts x
6 layers, forward and backward), which on a 2-core CPU is dominated by per-call overhead. Two faster
implementations compute the same function (same weights, same routing, same weighted sum; only the
floating-point summation order differs):

- ``"grouped_mm"``: transformers' own, on ``torch._grouped_mm`` (assignments sorted by expert, one
  grouped matmul per projection, no padding). Used when this torch build runs it on CPU.
- ``"padded_bmm"`` (here): every expert's tokens gathered into a padded ``(E, C, H)`` block, two
  ``bmm`` calls. The fallback; padding costs ``max load / mean load`` extra work once routing is uneven.

:func:`register` picks one; it is used only while training and evaluating, and saved models keep
transformers' default implementation.
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


def grouped_mm_runs_on_cpu() -> bool:
    """Whether ``torch._grouped_mm`` exists and runs forward and backward on CPU in fp32 (torch >= 2.9)."""
    if not hasattr(torch, "_grouped_mm"):
        return False
    try:
        x = torch.randn(5, 4, requires_grad=True)  # rows of 16 bytes: the kernel's stride rule
        w = torch.randn(2, 8, 4, requires_grad=True)
        y = torch._grouped_mm(x, w.transpose(1, 2), offs=torch.tensor([2, 5], dtype=torch.int32))
        y.backward(torch.ones_like(y).contiguous())
        ref = torch.cat([x[:2] @ w[0].T, x[2:] @ w[1].T])
        return bool(torch.allclose(y, ref, atol=1e-5))
    except (RuntimeError, NotImplementedError):
        return False


def register(prefer_grouped: bool = True) -> str:
    """Pick the implementation (registering the fallback, idempotent); return its name for
    ``config._experts_implementation``."""
    if prefer_grouped and "grouped_mm" in ALL_EXPERTS_FUNCTIONS and grouped_mm_runs_on_cpu():
        return "grouped_mm"
    if NAME not in ALL_EXPERTS_FUNCTIONS:
        ALL_EXPERTS_FUNCTIONS.register(NAME, padded_bmm_experts_forward)
    return NAME
