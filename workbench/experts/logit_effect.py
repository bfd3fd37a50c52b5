"""The logit effect of one expert, with a model: direct logit attribution of its output and the loss change
when it is masked, at the tokens routed to it.

Direct logit attribution (DLA). For a token t routed to expert E at MoE layer l, the expert adds
c_t = w_t · f_E(x_t) to the residual stream, where x_t (d,) is the input of layer l's MoE block (the
post-attention-normed hidden state, captured with a forward hook while the token's sequence is re-run),
f_E the expert's own MLP and w_t its gate weight in that run (the weight the model multiplies by, K2's
``routed_scaling_factor`` included). Its direct effect on the logits is the linearised path through the
final RMSNorm and the unembedding W_U (V, d)::

    DLA_t = W_U (γ ⊙ c_t / rms(r_t)),    rms(r_t) = sqrt(mean(r_t²) + ε)

with γ the final norm's weight and r_t the final residual of token t (the final norm's input), the norm's
scale *frozen* at that token's value: the standard DLA linearisation (logit lens, nostalgebraist 2020,
"interpreting GPT: the logit lens"; direct logit attribution, Elhage et al. 2021, "A Mathematical
Framework for Transformer Circuits", §"Direct path" / logit attribution). What is approximated: the norm
is treated as linear (its scale depends on c_t itself), and only the direct path is counted — what later
layers do with c_t (indirect effects) is not. The page averages DLA_t over the routed tokens and lists the
tokens with the largest (promoted) and smallest (suppressed) mean logit, in logit units.

Masking effect. The same windows are re-run with the expert masked (``workbench.ablation.masked_experts``:
its tokens go to their next-best expert), and Δloss_t = CE_masked(t) − CE(t) is the change of the
teacher-forced next-token cross-entropy (nats) at each routed position that has a next token; the page
shows the mean and the count. This is a total effect (direct and indirect), unlike DLA.

This module holds the result and the torch-free parts (the store-vs-model check, the choice of tokens,
the windows); the model runs in ``workbench.expert_logits`` (the apps layer, which may import torch), which
``expert_page(..., model=...)`` loads by name.

Tokens: at most ``max_tokens`` routed tokens of the selection, the highest gate weights first (ids-only
stores: first choices first, then store order). Each needed sequence is re-run once, in windows of at most
the model's context (``max_position_embeddings``): a window ends one token past the first token it has to
cover, so every covered token sees at least min(position, context − 2) tokens before it. Windows run in
right-padded batches of at most ``BATCH_TOKENS`` tokens (batch × longest window); with causal attention
and per-token routing, padding after a token cannot change it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr

from workbench.experts.rows import ExpertPageError, ExpertRows

DEFAULT_TOKENS = 256  # routed tokens re-run (top-N by gate weight)
TOP = 10  # promoted / suppressed tokens listed


class LogitEffectError(ExpertPageError):
    """The logit effect cannot be computed with this model (does not match the store, no final norm...)."""


@dataclass
class LogitToken:
    token_id: int
    text: str  # decoded with the store's vocabulary, whitespace made visible
    logit: float  # mean direct logit attribution over the routed tokens (logit units)


@dataclass
class LogitEffect:
    """The expert's direct logit attribution and masking effect over ``n_tokens`` routed tokens.

    ``mean_dla`` (V,) float32 is the mean DLA vector; ``promoted`` / ``suppressed`` its top / bottom
    ``TOP`` tokens. ``delta_loss`` is the mean Δloss (masked − unmasked, nats/token) over ``n_loss``
    positions (routed tokens with a next token), ``base_loss`` the unmasked mean there.
    """

    n_tokens: int  # routed tokens whose DLA was averaged
    n_routed: int  # routed tokens in the selection (before the cap)
    max_tokens: int
    n_loss: int
    base_loss: float
    delta_loss: float
    promoted: list[LogitToken]
    suppressed: list[LogitToken]
    mean_dla: np.ndarray
    n_windows: int
    notes: list[str] = field(default_factory=list)


def check_matches(ds: xr.Dataset, have: dict[str, Any], model_vocab: int | None) -> None:
    """Refuse (one line) a model config ``have`` (``RoutingConfig.to_attrs()``) and vocabulary size whose
    layers, MoE layers, number of experts, top-k or vocabulary differ from those the store recorded."""
    rec = dict(ds.attrs.get("model", {}) or {})
    keys = ("num_hidden_layers", "moe_layers", "n_routed_experts", "top_k")
    diffs = [f"{k} {rec[k]!r} vs {have[k]!r}" for k in keys
             if k in rec and k in have and list(np.atleast_1d(rec[k])) != list(np.atleast_1d(have[k]))]  # fmt: skip
    vocab = len((ds.attrs.get("tokenizer", {}) or {}).get("vocab", []) or [])
    if model_vocab is not None and vocab > model_vocab:
        diffs.append(f"vocabulary {vocab} vs {model_vocab}")
    if diffs:
        raise LogitEffectError(
            f"model does not match the store (store vs model: {'; '.join(diffs)}); pass the model the store was "
            f"recorded with ({rec.get('model_name', '?')})", param="model",
        )  # fmt: skip


def windows(positions: np.ndarray, n: int, ctx: int) -> list[tuple[int, int, np.ndarray]]:
    """Cover sorted ``positions`` of a length-``n`` sequence with windows [s, e) of at most ``ctx`` tokens."""
    out, i = [], 0
    while i < positions.size:
        end = min(n, int(positions[i]) + 2)
        start = max(0, end - ctx)
        end = min(n, start + ctx)
        inside = positions[(positions >= start) & (positions < end) & ((positions + 1 < end) | (end == n))]
        inside = inside[inside >= positions[i]]
        out.append((start, end, inside))
        i += inside.size
    return out


def chosen_tokens(r: ExpertRows, max_tokens: int) -> np.ndarray:
    """Indices into the routed tokens (N_E,) of the ones to re-run: top gate weights, else first choices."""
    n = int(r.rank.size)
    key = -r.weight if r.weight is not None else r.rank.astype(np.float64)
    return np.sort(np.argsort(key, kind="stable")[: min(max_tokens, n)])
