"""Routing statistics of a DeepSeek-V3-style model on token windows (reusable eval helpers).

These run the model (they need torch); the store-based analysis metrics live in
``workbench.analysis``. Definitions (natural logarithms, so values are in nats):

- expert usage ``u[l, e]``: number of (token, slot) top-k selections of expert ``e`` in MoE layer ``l``;
- load ratio ``u[l, e] / mean_e u[l, e]``, the quantity DeepSeek-V3's balancing (arXiv:2412.19437,
  §2.1.2) drives towards 1;
- generalised Jensen-Shannon divergence of domain usage distributions ``p_1..p_n`` (Lin 1991,
  "Divergence measures based on the Shannon entropy", eq. 4.1, equal weights):
  ``JSD = H(mean_i p_i) - mean_i H(p_i)``; 0 when all domains use experts alike, at most ``ln n``;
- unigram entropy of a token sample: ``H = -Σ_v p_v ln p_v`` with ``p_v`` the empirical frequency.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

from workbench.minik2.balance import RouterTap, expert_loads


@torch.no_grad()
def expert_usage(model: nn.Module, windows: Iterable[torch.Tensor], n_experts: int) -> np.ndarray:
    """Top-k selection counts ``(L, E)`` over all tokens of ``windows`` (each ``(B, T)`` token ids)."""
    total: torch.Tensor | None = None
    with RouterTap(model) as tap:
        for w in windows:
            tap.clear()
            model(input_ids=w)
            loads = expert_loads(tap.records, n_experts)
            total = loads if total is None else total + loads
    if total is None:
        raise ValueError("no windows given")
    return total.numpy()


def load_ratio(usage: np.ndarray) -> np.ndarray:
    """``(L, E)`` usage / per-layer mean usage."""
    return usage / usage.mean(axis=1, keepdims=True)


def entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def jensen_shannon(dists: list[np.ndarray]) -> float:
    """Generalised JSD (nats) of several distributions over the same support, equal weights."""
    ps = [d / d.sum() for d in dists]
    mean = np.mean(ps, axis=0)
    return entropy(mean) - float(np.mean([entropy(p) for p in ps]))


def layer_jsd(usage_by_domain: dict[str, np.ndarray]) -> list[float]:
    """Per MoE layer, the JSD between the domains' expert-usage distributions."""
    arrays = list(usage_by_domain.values())
    return [jensen_shannon([u[layer] for u in arrays]) for layer in range(arrays[0].shape[0])]


def unigram_entropy(tokens: np.ndarray) -> float:
    """Entropy (nats) of the empirical token distribution of ``tokens``."""
    counts = np.bincount(tokens.astype(np.int64))
    return entropy(counts / counts.sum())


@torch.no_grad()
def mean_token_loss(model: nn.Module, tokens: np.ndarray, seq_len: int, batch: int = 8) -> float:
    """Mean next-token cross-entropy (nats) over contiguous ``seq_len``-token chunks of ``tokens``."""
    n = (len(tokens) - 1) // seq_len
    if n == 0:
        raise ValueError("too few tokens for one chunk")
    x = torch.from_numpy(tokens[: n * seq_len + 1].astype(np.int64))
    inputs = x[:-1].view(n, seq_len)  # (n, T)
    targets = x[1:].view(n, seq_len)  # (n, T)
    total, count = 0.0, 0
    for i in range(0, n, batch):
        logits = model(input_ids=inputs[i : i + batch]).logits.float()  # (b, T, V)
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets[i : i + batch].reshape(-1), reduction="sum"
        )
        total += loss.item()
        count += targets[i : i + batch].numel()
    return total / count


def chunks(tokens: np.ndarray, seq_len: int, n: int, batch: int = 8) -> list[torch.Tensor]:
    """Up to ``n`` contiguous ``(b, seq_len)`` windows of ``tokens``, batched ``batch`` at a time."""
    k = min(n, len(tokens) // seq_len)
    x = torch.from_numpy(tokens[: k * seq_len].astype(np.int64)).view(k, seq_len)
    return [x[i : i + batch] for i in range(0, k, batch)]


def ratio(a: float, b: float) -> float:
    return a / b if b > 0 else math.inf
