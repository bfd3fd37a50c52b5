"""The expert's logit effect computed with a model: re-run its routed tokens, attribute its output to the
logits (direct logit attribution through the frozen final norm) and mask it (``ablation.masked_experts``).

Formulas, sources and what is approximated: ``workbench.experts.logit_effect`` and docs/metrics.md
("Expert pages"). This module is in the apps layer because it runs the model (torch); the data it
returns (``LogitEffect``) and the torch-free parts live in ``workbench.experts``, and ``expert_page``
loads this module by name when given a model (as the view layer's HTML face is registered from above).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import xarray as xr

from workbench.ablation import masked_experts
from workbench.errors import WorkbenchError
from workbench.experts.logit_effect import (
    DEFAULT_TOKENS,
    TOP,
    LogitEffect,
    LogitEffectError,
    LogitToken,
    check_matches,
    chosen_tokens,
    windows,
)
from workbench.experts.rows import ExpertRows, token_tables
from workbench.experts.vocab import text_of, token_texts, visible
from workbench.hooks import find_adapter
from workbench.hooks.adapters import routing_config
from workbench.store import schema as S

BATCH_TOKENS = 4096  # windows per forward pass: batch size × longest window ≤ this (right-padded)


def check_model_matches(ds: xr.Dataset, model: Any) -> None:
    """``check_matches`` for a loaded model (its adapter's routing config and its unembedding's rows)."""
    try:
        adapter = find_adapter(model)
    except WorkbenchError as err:  # an unsupported module tree: one line, not a traceback
        raise LogitEffectError(f"model is not a supported MoE model ({err})", param="model") from err
    check_matches(ds, routing_config(model, adapter).to_attrs(), int(model.get_output_embeddings().weight.shape[0]))


def _parts(model: Any, layer: int) -> tuple[Any, torch.nn.Module, torch.nn.Module, torch.Tensor]:
    """(MoE site of ``layer``, final norm, experts module, unembedding W_U (V, d))."""
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


def logit_effect(ds: xr.Dataset, r: ExpertRows, model: Any, *, max_tokens: int = DEFAULT_TOKENS) -> LogitEffect:
    """The logit effect of expert ``r.expert`` at layer ``r.layer`` over the routed tokens of ``r`` (see module)."""
    if max_tokens < 1:
        raise LogitEffectError(f"max_tokens must be at least 1, got {max_tokens}", param="max_tokens")
    check_model_matches(ds, model)
    site, norm, experts, w_u = _parts(model, r.layer)
    device = w_u.device
    texts = token_texts(ds)
    tables = token_tables(ds)
    tok, seq_of, pos_of = tables[S.TOKEN_ID], tables[S.SEQUENCE_INDEX], tables[S.POSITION]
    routed = np.nonzero(r.routed)[0]
    pick = chosen_tokens(r, max_tokens)
    rows = r.rows[routed[pick]]  # global store rows of the chosen tokens
    if tok.size and int(tok.max()) >= w_u.shape[0]:  # a store without a vocabulary in its attrs: check the ids
        raise LogitEffectError(
            f"model does not match the store: token id {int(tok.max())} is outside the model's vocabulary of "
            f"{w_u.shape[0]}; pass the model the store was recorded with", param="model",
        )  # fmt: skip
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
        jobs += [(ids[start:end], inside - start) for start, end, inside in windows(local, ids.size, ctx)]
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
