"""A small routing store with planted structure for the expert-page tests.

Byte-level vocabulary (``Ġ`` = space, ``Ċ`` = newline); 3 MoE layers, 8 experts, top-2. Expert 5 of
layer 2 takes every ``Ġcat`` token (weight 0.9, first choice) and every 4th token of math sequences
(weight 0.5, first choice); its second choice is always expert 2; on its tokens, layer 1's first choice
is expert 3 and layer 3's is expert 6. No other token is routed to expert 5 at layer 2, nor to experts
3 / 6 / 2 at the other layers' first places unless planted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from workbench.routing_config import RoutingConfig
from workbench.store.dataset import SequenceRecord, SpanRecord
from workbench.store.io import open_store
from workbench.store.writer import StoreWriter

VOCAB = ["<s>", "Ġthe", "Ġcat", "Ġs", "at", "Ċ", "Ġon", "Ġmat", "1", "+", "2", "=", "Ġdef", "Ġf", "():", "Ġdog"]
CAT, THE, S_, AT = 2, 1, 3, 4
N_EXPERTS, K, PLANT = 8, 2, 5
DOMAINS = ("math", "code", "language")


def planted_config() -> RoutingConfig:
    return RoutingConfig(
        model_name="planted-moe", model_type="deepseek_v3", family="deepseek_v3", num_hidden_layers=4,
        moe_layers=(1, 2, 3), n_routed_experts=N_EXPERTS, top_k=K, n_shared_experts=1, scoring_func="sigmoid",
        topk_method="noaux_tc", norm_topk_prob=True, routed_scaling_factor=1.0,
    )  # fmt: skip


def planted_records(n_seq: int = 12, length: int = 60, weights: bool = True) -> list[SequenceRecord]:
    rng = np.random.default_rng(7)
    out = []
    others = [e for e in range(N_EXPERTS) if e not in (PLANT, 2, 3, 6)]
    for i in range(n_seq):
        domain = DOMAINS[i % 3]
        tok = rng.integers(5, len(VOCAB), length)
        tok[rng.random(length) < 0.1] = CAT
        if i == 0:  # a repeated template: " the cat sat" eight times (near-duplicates to collapse)
            tok[: 8 * 4] = np.tile([THE, CAT, S_, AT], 8)
        ids = np.empty((length, 3, K), dtype=np.int16)
        for t in range(length):
            for layer in range(3):
                ids[t, layer] = rng.choice(others, K, replace=False)
        w = np.tile(np.array([0.3, 0.2], dtype=np.float32), (length, 3, 1))
        pos = np.arange(length)
        plant = (tok == CAT) | ((domain == "math") & (pos % 4 == 1) & (tok != CAT))
        ids[plant, 1] = [PLANT, 2]
        ids[plant, 0, 0] = 3
        ids[plant, 2, 0] = 6
        w[plant, 1, 0] = np.where(tok[plant] == CAT, 0.9, 0.5)
        cut = length // 2
        out.append(
            SequenceRecord(
                id=f"{domain}-{i}", domain=domain, source="planted", token_ids=tok, expert_ids=ids,
                gate_weights=w if weights else None, generated=pos >= cut,
                spans=[SpanRecord("user", 0, cut), SpanRecord("answer", cut, length)],
            )
        )  # fmt: skip
    return out


def planted_store(path: Path, weights: bool = True, capture: str = "hooks"):
    """Write the planted store at ``path`` and open it (lazy xarray Dataset); ``capture="vllm"`` marks
    its top-k ids as unordered, as an engine capture's are."""
    tokenizer = {"name": "planted", "vocab": VOCAB, "special_tokens": {"<s>": 0}}
    with StoreWriter(path, planted_config(), tokenizer, capture=capture, has_gate_weights=weights) as writer:
        for rec in planted_records(weights=weights):
            writer.add(rec)
    return open_store(path)
