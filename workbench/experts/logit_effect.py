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
import torch
import xarray as xr

from workbench.errors import WorkbenchError
from workbench.experts.rows import ExpertPageError, ExpertRows, token_tables
from workbench.experts.vocab import text_of, token_texts, visible
from workbench.store import schema as S

DEFAULT_TOKENS = 256  # routed tokens re-run (top-N by gate weight)
BATCH_TOKENS = 4096  # windows per forward pass: batch size × longest window ≤ this (right-padded)
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


def check_model_matches(ds: xr.Dataset, model: Any) -> None:
    """``check_matches`` for a loaded model (its adapter's routing config and its unembedding's rows)."""
    from workbench.hooks import find_adapter
    from workbench.hooks.adapters import routing_config

    try:
        adapter = find_adapter(model)
    except WorkbenchError as err:  # an unsupported module tree: one line, not a traceback
        raise LogitEffectError(f"model is not a supported MoE model ({err})", param="model") from err
    check_matches(ds, routing_config(model, adapter).to_attrs(), int(model.get_output_embeddings().weight.shape[0]))


def _parts(model: Any, layer: int) -> tuple[Any, torch.nn.Module, torch.nn.Module, torch.Tensor]:
    """(MoE site of ``layer``, final norm, experts module, unembedding W_U (V, d))."""
    from workbench.hooks import find_adapter

    site = {s.layer: s for s in find_adapter(model).sites}[layer]
    norm = getattr(getattr(model, "model", None), "norm", None)
    if site.experts is None or norm is None or not hasattr(norm, "weight"):
        raise LogitEffectError(
            "the logit effect needs a transformers-native MoE (an experts module and a final RMSNorm "
            "model.model.norm); this model's family has none", param="model",
        )  # fmt: skip
    return site, norm, site.experts, model.get_output_embeddings().weight


def expert_output(experts: torch.nn.Module, site: Any, x: torch.Tensor, expert: int) -> torch.Tensor:
    """f_E(x) (N, d): the expert's own MLP on hidden states ``x`` (N, d), through the layer's experts module
    with the expert as the only choice at weight 1."""
    n = x.shape[0]
    idx = torch.full((n, 1), expert, dtype=torch.long, device=x.device)
    w = torch.ones((n, 1), dtype=x.dtype, device=x.device)
    return experts(**{site.experts_params[0]: x, site.index_param: idx, site.weights_param: w})


def _windows(positions: np.ndarray, n: int, ctx: int) -> list[tuple[int, int, np.ndarray]]:
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


def _batches(jobs: list[tuple[np.ndarray, np.ndarray]], budget: int) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    """Consecutive windows grouped so that (windows × longest window) stays within ``budget`` tokens (a window
    longer than the budget runs alone)."""
    out: list[list[tuple[np.ndarray, np.ndarray]]] = []
    cur: list[tuple[np.ndarray, np.ndarray]] = []
    for job in jobs:
        if cur and (len(cur) + 1) * max(len(job[0]), *(len(w) for w, _ in cur)) > budget:
            out.append(cur)
            cur = []
        cur.append(job)
    return out + ([cur] if cur else [])


def _chosen(r: ExpertRows, max_tokens: int) -> np.ndarray:
    """Indices into the routed tokens (N_E,) of the ones to re-run: top gate weights, else first choices."""
    n = int(r.rank.size)
    key = -r.weight if r.weight is not None else r.rank.astype(np.float64)
    return np.sort(np.argsort(key, kind="stable")[: min(max_tokens, n)])


def logit_effect(ds: xr.Dataset, r: ExpertRows, model: Any, *, max_tokens: int = DEFAULT_TOKENS) -> LogitEffect:
    """The logit effect of expert ``r.expert`` at layer ``r.layer`` over the routed tokens of ``r`` (see module)."""
    from workbench.ablation import masked_experts

    if max_tokens < 1:
        raise LogitEffectError(f"max_tokens must be at least 1, got {max_tokens}", param="max_tokens")
    check_model_matches(ds, model)
    site, norm, experts, w_u = _parts(model, r.layer)
    device = w_u.device
    texts = token_texts(ds)
    tables = token_tables(ds)
    tok, seq_of, pos_of = tables[S.TOKEN_ID], tables[S.SEQUENCE_INDEX], tables[S.POSITION]
    routed = np.nonzero(r.routed)[0]
    pick = _chosen(r, max_tokens)
    rows = r.rows[routed[pick]]  # global store rows of the chosen tokens
    ctx = int(getattr(model.config, "max_position_embeddings", 0) or 4096)
    eps = float(getattr(norm, "variance_epsilon", getattr(norm, "eps", 1e-6)))
    gamma = torch.as_tensor(norm.weight).detach().float()
    sums = torch.zeros(w_u.shape[0], dtype=torch.float64, device=device)
    base, delta, n_dla, n_windows, missed = [], [], 0, 0, 0
    captured: dict[str, Any] = {}

    def on_experts(_m: Any, args: Any, kwargs: Any) -> None:
        named = dict(zip(site.experts_params, args, strict=False)) | kwargs
        captured["x"] = named[site.experts_params[0]].detach()
        captured["idx"], captured["w"] = named[site.index_param].detach(), named[site.weights_param].detach()

    def on_norm(_m: Any, args: Any) -> None:
        captured["resid"] = args[0].detach()

    order = np.argsort(seq_of, kind="stable")
    bounds = np.searchsorted(seq_of[order], np.arange(int(seq_of.max(initial=-1)) + 2))
    needed = np.unique(seq_of[rows])
    jobs: list[tuple[np.ndarray, np.ndarray]] = []  # (window's token ids, chosen tokens' indices in it)
    for s in needed:
        srows = order[bounds[s] : bounds[s + 1]]
        srows = srows[np.argsort(pos_of[srows], kind="stable")]
        ids = tok[srows]
        local = np.sort(np.searchsorted(pos_of[srows], pos_of[rows[seq_of[rows] == s]]))
        jobs += [(ids[start:end], inside - start) for start, end, inside in _windows(local, ids.size, ctx)]
    pad = int(getattr(model.config, "pad_token_id", None) or 0)
    for batch in _batches(jobs, BATCH_TOKENS):
        width = max(len(w) for w, _ in batch)
        x_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        for b, (w, _) in enumerate(batch):
            x_ids[b, : len(w)] = torch.from_numpy(w)  # right padding: causal attention keeps pads out of real tokens
        x_ids = x_ids.to(device)
        bi = torch.as_tensor(np.concatenate([np.full(len(at), b) for b, (_, at) in enumerate(batch)]), device=device)
        ti = torch.as_tensor(np.concatenate([at for _, at in batch]), device=device)
        h1 = experts.register_forward_pre_hook(on_experts, with_kwargs=True)
        h2 = norm.register_forward_pre_hook(on_norm)
        try:
            with torch.no_grad():
                logits = model(input_ids=x_ids, use_cache=False).logits
        finally:
            h1.remove()
            h2.remove()
        flat = bi * width + ti  # the experts module sees (B·T, d)
        hit = captured["idx"][flat] == r.expert  # (n, k): the re-run's routing of these tokens
        ok = hit.any(dim=1)
        missed += int((~ok).sum())
        with torch.no_grad():
            gate = (captured["w"][flat] * hit).sum(dim=1)[ok].float()  # (n,)
            out = expert_output(experts, site, captured["x"][flat][ok], r.expert).float()  # (n, d)
            resid = captured["resid"][bi, ti][ok].float()  # (n, d)
            rms = torch.sqrt(resid.pow(2).mean(dim=-1, keepdim=True) + eps)
            dla = (gate[:, None] * out * gamma / rms) @ w_u.float().T  # (n, V)
        sums += dla.double().sum(dim=0)
        n_dla += int(ok.sum())
        lengths = torch.as_tensor([len(w) for w, _ in batch], device=device)
        nxt = ti + 1 < lengths[bi]  # positions whose next token is in the window
        if nxt.any():
            bn, tn = bi[nxt], ti[nxt]
            target = x_ids[bn, tn + 1]
            ce = torch.nn.functional.cross_entropy(logits[bn, tn].float(), target, reduction="none")
            with masked_experts(model, [(r.layer, r.expert)]), torch.no_grad():
                masked = model(input_ids=x_ids, use_cache=False).logits[bn, tn].float()
            ce_m = torch.nn.functional.cross_entropy(masked, target, reduction="none")
            base += ce.tolist()
            delta += (ce_m - ce).tolist()
        n_windows += len(batch)
    mean = (sums / max(n_dla, 1)).float().cpu().numpy()
    top = np.argsort(-mean, kind="stable")

    def listed(ix: np.ndarray) -> list[LogitToken]:
        return [LogitToken(int(i), visible(text_of(texts, int(i))), float(mean[i])) for i in ix]

    notes = [f"DLA over the {n_dla} routed tokens with the highest gate weights (cap {max_tokens})"
             if r.weight is not None else f"DLA over {n_dla} routed tokens (no gate weights in the store: "
             f"first choices first, cap {max_tokens})"]  # fmt: skip
    if n_windows > needed.size:
        notes.append(f"sequences longer than the model's context ({ctx} tokens) were re-run in windows: "
                     f"{n_windows} windows for {needed.size} sequences")  # fmt: skip
    if missed:
        notes.append(f"{missed} chosen token(s) were not routed to this expert when re-run; left out")
    return LogitEffect(
        n_tokens=n_dla, n_routed=int(routed.size), max_tokens=max_tokens, n_loss=len(delta),
        base_loss=float(np.mean(base)) if base else float("nan"),
        delta_loss=float(np.mean(delta)) if delta else float("nan"),
        promoted=listed(top[:TOP]), suppressed=listed(top[::-1][:TOP]), mean_dla=mean,
        n_windows=n_windows, notes=notes,
    )  # fmt: skip
