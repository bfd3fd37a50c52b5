"""K2-shaped synthetic routing with realistic structure, written through ``StoreWriter`` into real stores.

For benchmarks and for tests anywhere in the workbench that need a routing store without a model. The
generator is a small latent model of what routing analyses of real MoE models report:

- **skewed per-layer load**: each layer has a Zipf-like expert popularity (exponent ``zipf``, experts in a
  random order per layer), as in the expert-load histograms of OLMoE (Muennighoff et al. 2024, §4) and
  Mixtral (Jiang et al. 2024, §5);
- **domain specialisation**: each domain boosts its own small set of experts per layer (OLMoE §4.1 finds
  domain-specialised experts, DeepSeek-V3 §2.1.2 keeps them with its bias-based balancing);
- **token-level specialisation and layer-to-layer correlation**: a token starts in a latent cluster fixed by
  its token id (vocabulary specialisation, OLMoE §4.2) and moves through layers as a Markov chain that stays
  in its cluster with probability ``stay``; each (layer, cluster) has its own expert preferences, so the
  expert set at layer l predicts the one at l+1 (Mixtral §5 reports such consecutive-token/layer affinity);
- **rank order without repetition**: the k experts of a token are drawn one after another without
  replacement (Plackett-Luce, i.e. the law of a top-k of Gumbel-perturbed logits), and the gate weights are
  DeepSeek-V3/K2's normalised sigmoid scores times ``routed_scaling_factor``.

It is not a model of any particular checkpoint: use it to exercise code paths and measure speed and size.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numba
import numpy as np
from tqdm.auto import tqdm

from workbench.routing_config import RoutingConfig
from workbench.store.dataset import SequenceRecord, SpanRecord
from workbench.store.writer import StoreWriter

DEFAULT_DOMAINS = ("math", "code", "language", "agent")
_TABLE = 2048  # resolution of the sampling tables (probabilities are multiples of 1/_TABLE)


def synthetic_config(
    n_layers: int = 60, n_experts: int = 384, k: int = 8, model_name: str = "synthetic-k2"
) -> RoutingConfig:
    """A DeepSeek-V3/K2-style routing config (layer 0 dense, MoE layers 1..n_layers)."""
    return RoutingConfig(
        model_name=model_name, model_type="deepseek_v3", family="synthetic", num_hidden_layers=n_layers + 1,
        moe_layers=tuple(range(1, n_layers + 1)), n_routed_experts=n_experts, top_k=k, n_shared_experts=1,
        scoring_func="sigmoid", topk_method="noaux_tc", norm_topk_prob=True, routed_scaling_factor=2.827,
    )  # fmt: skip


def synthetic_tokenizer(vocab_size: int = 32768) -> dict[str, Any]:
    vocab = ["<s>", "</s>", *(f"tok{i}" for i in range(2, vocab_size))]
    return {"name": f"synthetic-{vocab_size}", "vocab": vocab, "special_tokens": {"<s>": 0, "</s>": 1}}


@numba.njit(cache=True)
def _draw_distinct(flat: np.ndarray, rows: np.ndarray, k: int, seed: int) -> np.ndarray:  # pragma: no cover
    """Draw from table ``rows[i]`` until k distinct experts are found (sampling without replacement). (N, k)."""
    np.random.seed(seed)
    out = np.empty((rows.shape[0], k), np.int16)
    for i in range(rows.shape[0]):
        base, c = rows[i] * _TABLE, 0
        while c < k:
            e = flat[base + np.random.randint(0, _TABLE)]
            seen = False
            for j in range(c):
                if out[i, j] == e:
                    seen = True
                    break
            if not seen:
                out[i, c] = e
                c += 1
    return out


class SyntheticRouter:
    """Samples (expert_ids, gate_weights) for token ids of one domain. See the module docstring.

    Shapes: ``route(token_ids (T,), domain)`` returns ``expert_ids (T, L, k) int16``, ``gate_weights (T, L, k)``.
    """

    def __init__(
        self, n_layers: int, n_experts: int, k: int, *, domains: tuple[str, ...] = DEFAULT_DOMAINS,
        n_clusters: int = 16, zipf: float = 0.9, domain_boost: float = 1.5, cluster_spread: float = 1.5,
        stay: float = 0.8, seed: int = 0,
    ) -> None:  # fmt: skip
        if k > n_experts:
            raise ValueError(f"top-{k} of {n_experts} experts is impossible")
        self.L, self.E, self.k, self.C, self.stay = n_layers, n_experts, k, n_clusters, stay
        self.domains = tuple(domains)
        rng = np.random.default_rng(seed)
        ranks = np.argsort(rng.random((n_layers, n_experts)), axis=1) + 1  # (L, E) popularity rank per layer
        base = -zipf * np.log(ranks)  # (L, E)
        dom = np.zeros((len(domains), n_layers, n_experts))
        n_special = max(2, n_experts // 16)  # experts each domain prefers per layer (24 of 384 for K2)
        for d in range(len(domains)):
            for layer in range(n_layers):
                dom[d, layer, rng.choice(n_experts, n_special, replace=False)] = domain_boost
        clus = rng.normal(0.0, cluster_spread, (n_clusters, n_layers, n_experts))
        logits = base[None, None] + clus[None] + dom[:, None]  # (D, C, L, E)
        p = np.exp(logits - logits.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        self._flat = self._tables(p.reshape(-1, n_experts)).reshape(-1)  # (D * C * L * _TABLE,)
        self._rng = np.random.default_rng(seed + 1)

    @staticmethod
    def _tables(p: np.ndarray) -> np.ndarray:
        """Rows of ``_TABLE`` expert ids in which expert e appears about p[e] * _TABLE times."""
        out = np.empty((p.shape[0], _TABLE), dtype=np.int16)
        for i, row in enumerate(p):
            want = row * (_TABLE - row.size)
            counts = np.floor(want).astype(np.int64) + 1  # every expert keeps a slot: k distinct always exist
            short = _TABLE - counts.sum()
            counts[np.argsort(want - np.floor(want))[::-1][:short]] += 1  # largest remainders
            out[i] = np.repeat(np.arange(row.size, dtype=np.int16), counts)
        return out

    def _draw_k(self, rows: np.ndarray) -> np.ndarray:
        """k distinct experts per entry of ``rows`` (N,) (row indices into the flat tables), in draw order."""
        return _draw_distinct(self._flat, rows.astype(np.int64), self.k, int(self._rng.integers(2**31)))

    def route(self, token_ids: np.ndarray, domain: str) -> tuple[np.ndarray, np.ndarray]:
        d = self.domains.index(domain)
        t = len(token_ids)
        z = np.empty((t, self.L), dtype=np.int64)  # (T, L) latent cluster per token and layer
        z[:, 0] = (np.asarray(token_ids, dtype=np.int64) * 2654435761 % 2**32) % self.C  # fixed by the token id
        move = self._rng.random((t, self.L)) > self.stay
        jump = self._rng.integers(1, self.C, (t, self.L))
        for layer in range(1, self.L):
            z[:, layer] = np.where(move[:, layer], (z[:, layer - 1] + jump[:, layer]) % self.C, z[:, layer - 1])
        rows = (d * self.C + z) * self.L + np.arange(self.L)  # (T, L) row of table[d, z, layer]
        ids = self._draw_k(rows.reshape(-1)).reshape(t, self.L, self.k)  # (T, L, k)
        x = -np.sort(-self._rng.normal(1.0, 1.2, (t, self.L, self.k)), axis=-1)  # descending logits (T, L, k)
        s = 1.0 / (1.0 + np.exp(-x))
        weights = (s / s.sum(-1, keepdims=True) * 2.827).astype(np.float32)
        return ids, weights

    def scores(self, ids: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Full router scores (T, L, E) whose top-k is ``ids`` (sigmoid-like values in (0, 1))."""
        t = ids.shape[0]
        chosen = weights / weights.max(-1, keepdims=True) * 0.9  # (T, L, k)
        out = self._rng.random((t, self.L, self.E), dtype=np.float32) * chosen.min(-1, keepdims=True) * 0.95
        np.put_along_axis(out, ids.astype(np.int64), chosen, axis=-1)
        return out


def _spans(domain: str, n: int, rng: np.random.Generator) -> tuple[list[SpanRecord], np.ndarray]:
    """Segment spans and the generated mask of a sequence of n tokens."""
    prompt = max(1, int(n * rng.uniform(0.1, 0.3)))
    gen = np.zeros(n, dtype=bool)
    gen[prompt:] = True
    if domain != "agent" or n < 40:
        think = prompt + (n - prompt) // 2
        spans = [SpanRecord("user", 0, prompt), SpanRecord("think", prompt, think), SpanRecord("answer", think, n)]
        return [s for s in spans if s.stop > s.start], gen
    spans = [SpanRecord("system", 0, prompt // 2), SpanRecord("user", prompt // 2, prompt)]
    cuts = np.linspace(prompt, n, 4 * 3 + 2).astype(int)
    kinds = ["think", "tool_call", "tool_result"] * 4 + ["answer"]
    for i, kind in enumerate(kinds):
        step = i // 3 if kind != "answer" else -1
        label = f"functions.python:{step}" if kind == "tool_call" else ""
        if cuts[i + 1] > cuts[i]:
            spans.append(SpanRecord(kind, int(cuts[i]), int(cuts[i + 1]), step, label))
            if kind == "tool_result":
                gen[cuts[i] : cuts[i + 1]] = False
    return spans, gen


def synthetic_records(
    n_tokens: int, n_layers: int = 60, n_experts: int = 384, k: int = 8, *, seed: int = 0,
    domains: tuple[str, ...] = DEFAULT_DOMAINS, vocab_size: int = 32768, mean_length: int = 600,
    with_scores: bool = False, zipf: float = 0.9,
) -> Iterator[SequenceRecord]:  # fmt: skip
    """Sequences totalling exactly ``n_tokens`` tokens, domains in turn, lengths log-normal around ``mean_length``."""
    router = SyntheticRouter(n_layers, n_experts, k, domains=domains, zipf=zipf, seed=seed)
    rng = np.random.default_rng(seed + 2)
    vocab_rank = rng.permutation(vocab_size - 2) + 2  # Zipf over a shuffled vocabulary
    left, i = n_tokens, 0
    while left > 0:
        n = int(np.clip(rng.lognormal(np.log(mean_length), 0.6), 16, 8 * mean_length))
        n = left if left - n < 16 else n
        domain = domains[i % len(domains)]
        token_ids = vocab_rank[np.minimum(rng.zipf(1.2, n), vocab_size - 2) - 1]
        ids, weights = router.route(token_ids, domain)
        spans, gen = _spans(domain, n, rng)
        yield SequenceRecord(
            id=f"syn-{seed}-{i:06d}", domain=domain, source="synthetic", token_ids=token_ids, expert_ids=ids,
            gate_weights=weights, router_scores=router.scores(ids, weights) if with_scores else None,
            generated=gen, spans=spans,
        )  # fmt: skip
        left -= n
        i += 1


def synthetic_store(
    path: str | Path, n_tokens: int = 1_000_000, n_layers: int = 60, n_experts: int = 384, k: int = 8,
    seed: int = 0, *, domains: tuple[str, ...] = DEFAULT_DOMAINS, vocab_size: int = 32768, mean_length: int = 600,
    with_scores: bool = False, zipf: float = 0.9, storage_options: dict[str, Any] | None = None,
    progress: bool = True,
) -> str:  # fmt: skip
    """Write a synthetic routing store (appends if one with the same synthetic config exists). Returns path."""
    config = synthetic_config(n_layers, n_experts, k)
    records = synthetic_records(
        n_tokens, n_layers, n_experts, k, seed=seed, domains=domains, vocab_size=vocab_size,
        mean_length=mean_length, with_scores=with_scores, zipf=zipf,
    )  # fmt: skip
    writer = StoreWriter(path, config, synthetic_tokenizer(vocab_size), capture="synthetic", with_scores=with_scores,
                         storage_options=storage_options)  # fmt: skip
    with writer, tqdm(total=n_tokens, unit="tok", desc="synthetic routing", disable=not progress) as bar:
        for rec in records:
            writer.add(rec)
            bar.update(rec.n_tokens)
    return str(path)
