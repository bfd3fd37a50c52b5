"""Causal check of expert usage: mask chosen experts and measure the per-domain loss change.

Usage statistics are associational. ``ablate`` masks experts *at selection time* — their selection
scores are excluded, so each affected token is routed to its next-best expert instead (the model
keeps k experts per token) — and measures the change in teacher-forced cross-entropy per domain,
against masking the same number of *random* experts in the same layers (several draws, with spread).
If "the math experts" matter for math, the targeted loss increase on math exceeds the random ones.

How experts are excluded, per router family (hooks/adapters.py):

- DeepSeek-V3 / K2 (transformers ``DeepseekV3TopkRouter`` and the remote ``MoEGate``, ``noaux_tc``):
  the selection bias ``e_score_correction_bias`` of the masked experts is set to -inf for the run, so
  their selection score ``sigmoid(logit) + bias`` is -inf before group and top-k selection; gate
  weights of the chosen experts still come from the unbiased scores, exactly as in the model.
- softmax top-k routers (Mixtral, Qwen3-MoE, OLMoE): a forward hook on the router recomputes the
  selection with the masked experts' probabilities at -inf, then renormalises the chosen weights when
  the router does (``norm_topk_prob``; Mixtral always).

Both are undone on exit, even after an exception.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from workbench.errors import WorkbenchError
from workbench.hooks import find_adapter
from workbench.hooks.adapters import Adapter, MoESite


class AblationError(WorkbenchError):
    """The asked ablation cannot be run (unknown layer/expert, too many experts masked, router family)."""


def parse_experts(experts: str) -> list[tuple[int, int]]:
    """``"3:17,3:42,5:8"`` -> [(3, 17), (3, 42), (5, 8)] (layer = the model's real layer index)."""
    out: list[tuple[int, int]] = []
    for item in (t.strip() for t in experts.split(",")):
        if not item:
            continue
        layer, sep, expert = item.partition(":")
        try:
            if not sep:
                raise ValueError
            out.append((int(layer), int(expert)))
        except ValueError:
            raise AblationError(
                f"experts takes LAYER:EXPERT pairs like 3:17,5:8; got {item!r}", param="experts"
            ) from None
    if not out:
        raise AblationError("experts is empty; give LAYER:EXPERT pairs like 3:17,5:8", param="experts")
    return sorted(set(out))


def check_experts(
    layers: Sequence[int], n_experts: int, top_k: int, experts: Sequence[tuple[int, int]]
) -> dict[int, list[int]]:
    """Group experts by layer, refusing unknown layers/experts or leaving fewer than k experts in a layer.

    ``layers`` are the model's MoE layer indices (``RoutingConfig.moe_layers`` or the adapter's sites), so a
    CLI can check before loading any weight (``workbench.models.planned_routing_config``).
    """
    by_layer: dict[int, list[int]] = {}
    for layer, expert in experts:
        if layer not in layers:
            raise AblationError(
                f"layer {layer} is not an MoE layer of this model; MoE layers: {min(layers)}..{max(layers)}"
            )
        if not 0 <= expert < n_experts:
            raise AblationError(f"expert {expert} does not exist; this model has experts 0..{n_experts - 1}")
        by_layer.setdefault(layer, []).append(expert)
    for layer, chosen in by_layer.items():
        if n_experts - len(chosen) < top_k:
            raise AblationError(
                f"masking {len(chosen)} experts in layer {layer} leaves fewer than top-{top_k} to choose from"
            )
    return by_layer


def _check(adapter: Adapter, experts: Sequence[tuple[int, int]]) -> dict[int, list[int]]:
    return check_experts([site.layer for site in adapter.sites], adapter.n_experts, adapter.top_k, experts)


def _softmax_hook(gate: nn.Module, mask: torch.Tensor) -> Any:
    renorm = bool(getattr(gate, "norm_topk_prob", True))  # Mixtral's router always renormalises
    k = int(gate.top_k)  # type: ignore[arg-type]

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> Any:
        logits = output[0]  # (N, E)
        probs = torch.softmax(logits.float(), dim=-1)
        choice = probs.masked_fill(mask.to(probs.device), float("-inf"))
        _, idx = torch.topk(choice, k, dim=-1)  # (N, k)
        vals = probs.gather(1, idx)
        if renorm:
            vals = vals / vals.sum(dim=-1, keepdim=True)
        return (logits, vals.to(output[1].dtype), idx.to(output[2].dtype), *output[3:])

    return hook


@contextlib.contextmanager
def masked_experts(model: nn.Module, experts: Sequence[tuple[int, int]]) -> Iterator[None]:
    """Within the block, the given (layer, expert) pairs cannot be selected by the router."""
    adapter = find_adapter(model)
    by_layer = _check(adapter, experts)
    sites: dict[int, MoESite] = {site.layer: site for site in adapter.sites}
    restore: list[tuple[torch.Tensor, torch.Tensor]] = []
    handles: list[Any] = []
    try:
        for layer, chosen in by_layer.items():
            site = sites[layer]
            idx = torch.tensor(chosen, dtype=torch.long)
            if adapter.scoring == "sigmoid":
                bias = site.selection_bias()
                if bias is None:
                    raise AblationError(
                        f"layer {layer}: this DeepSeek-style router has no selection bias to mask through"
                    )
                restore.append((bias, bias.detach().clone()))
                with torch.no_grad():
                    bias[idx.to(bias.device)] = float("-inf")
            else:
                mask = torch.zeros(adapter.n_experts, dtype=torch.bool)
                mask[idx] = True
                handles.append(site.gate.register_forward_hook(_softmax_hook(site.gate, mask)))
        yield
    finally:
        for handle in handles:
            handle.remove()
        with torch.no_grad():
            for bias, saved in restore:
                bias.copy_(saved)


@dataclass
class PromptLoss:
    id: str
    domain: str
    nll_sum: float  # summed next-token cross-entropy (nats)
    n_tokens: int  # predicted tokens (T - 1)


def prompt_losses(model: nn.Module, encoded: Sequence[tuple[str, str, list[int]]]) -> list[PromptLoss]:
    """Teacher-forced next-token cross-entropy of each (id, domain, token ids)."""
    device = next((p.device for p in model.parameters() if not p.is_meta), torch.device("cpu"))
    out = []
    with torch.no_grad():
        for pid, domain, ids in encoded:
            if len(ids) < 2:
                continue
            x = torch.tensor([ids], device=device)
            logits = model(input_ids=x, use_cache=False).logits[0, :-1].float()  # (T-1, V)
            nll = torch.nn.functional.cross_entropy(logits, x[0, 1:], reduction="sum")
            out.append(PromptLoss(pid, domain, float(nll), len(ids) - 1))
    return out


def domain_loss(losses: Sequence[PromptLoss]) -> dict[str, float]:
    """Token-weighted mean cross-entropy per domain (nats/token)."""
    tot: dict[str, list[float]] = {}
    for pl in losses:
        acc = tot.setdefault(pl.domain, [0.0, 0.0])
        acc[0] += pl.nll_sum
        acc[1] += pl.n_tokens
    return {d: s / n for d, (s, n) in sorted(tot.items()) if n > 0}


def random_like(by_layer: dict[int, list[int]], n_experts: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """As many random experts per layer as ``by_layer`` masks there, never one of the targeted experts."""
    out = []
    for layer, chosen in sorted(by_layer.items()):
        pool = np.setdiff1d(np.arange(n_experts), chosen)
        out += [(layer, int(e)) for e in rng.choice(pool, size=len(chosen), replace=False)]
    return out


DEFAULT_DRAWS = 20  # the smallest rank p is 1 / (draws + 1): 20 draws are the fewest that allow p < 0.05


def smallest_rank_p(draws: int) -> float:
    """The smallest ``rank_p`` ``draws`` random masks can give, 1 / (draws + 1) (all random Δ below Δ)."""
    return 1.0 / (draws + 1)


def ablate(
    model: nn.Module,
    encoded: Sequence[tuple[str, str, list[int]]],
    experts: Sequence[tuple[int, int]],
    *,
    draws: int = DEFAULT_DRAWS,
    seed: int = 0,
    progress: Any = None,
) -> dict[str, Any]:
    """Per-domain loss: unmasked, targeted experts masked, and ``draws`` random same-size masks.

    Returns a JSON-ready dict with, per domain: ``base`` loss, ``targeted`` loss and ``delta``
    (targeted − base), ``random_deltas`` (one per draw), their ``random_mean``/``random_std``,
    ``z`` = (delta − random_mean) / random_std and ``rank_p`` = (1 + #{random delta ≥ delta}) / (1 + draws),
    the share of random masks hurting at least as much (small = the targeted experts matter more).
    ``min_rank_p`` = 1 / (draws + 1) is the smallest ``rank_p`` the draws allow (0.25 for 3 draws, whatever
    ``z`` says): a Monte Carlo permutation p-value (Phipson & Smyth 2010, "Permutation p-values should
    never be zero", Stat. Appl. Genet. Mol. Biol. 9(1)).
    """
    adapter = find_adapter(model)
    by_layer = _check(adapter, experts)
    rng = np.random.default_rng(seed)
    tick = progress or (lambda: None)
    base = domain_loss(prompt_losses(model, encoded))
    tick()
    with masked_experts(model, experts):
        targeted = domain_loss(prompt_losses(model, encoded))
    tick()
    random_masks, random_losses = [], []
    for _ in range(draws):
        mask = random_like(by_layer, adapter.n_experts, rng)
        with masked_experts(model, mask):
            random_losses.append(domain_loss(prompt_losses(model, encoded)))
        random_masks.append([f"{layer}:{e}" for layer, e in mask])
        tick()
    domains: dict[str, Any] = {}
    for d in base:
        delta = targeted[d] - base[d]
        rd = np.array([r[d] - base[d] for r in random_losses])
        std = float(rd.std(ddof=1)) if rd.size > 1 else math.nan
        mean = float(rd.mean()) if rd.size else math.nan
        domains[d] = {
            "base": base[d],
            "targeted": targeted[d],
            "delta": delta,
            "random_deltas": rd.tolist(),
            "random_mean": mean,
            "random_std": std,
            "z": (delta - mean) / std if std and std > 0 else math.nan,
            "rank_p": float((1 + (rd >= delta).sum()) / (1 + rd.size)) if rd.size else math.nan,
        }
    return {
        "experts": [f"{layer}:{e}" for layer, e in sorted(experts)],
        "family": adapter.family,
        "draws": draws,
        "min_rank_p": smallest_rank_p(draws),
        "seed": seed,
        "random_masks": random_masks,
        "units": "nats per predicted token (teacher-forced cross-entropy)",
        "domains": domains,
    }
