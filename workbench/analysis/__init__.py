"""Routing metrics over a routing store: pure functions of a Dataset (+ Selection), no torch.

Each metric reads the store chunk by chunk (dask) and states its formula and source in its docstring
and in docs/metrics.md. Each is also a method of the ``ds.routing`` accessor.
"""

from workbench.analysis.divergence import domain_divergence, jsd_bits
from workbench.analysis.inputs import MetricInputError
from workbench.analysis.load import expert_load, routing_entropy
from workbench.analysis.pairs import agreement_baselines, coactivation, consecutive_agreement, transitions
from workbench.analysis.specialization import (
    domain_specialization,
    specific_experts,
    top_vocab,
    vocab_specialization,
)

__all__ = [
    "MetricInputError",
    "agreement_baselines",
    "coactivation",
    "consecutive_agreement",
    "domain_divergence",
    "domain_specialization",
    "expert_load",
    "jsd_bits",
    "routing_entropy",
    "specific_experts",
    "top_vocab",
    "transitions",
    "vocab_specialization",
]
