"""The overview on real routing: the bundled mini K2 recorded on the bundled prompt suite.

Records data/prompts/suite.jsonl with `workbench record --model k2-mini` and checks what docs/overview.md
shows of it: in the last MoE layer every domain (math, code, language) has a supernode whose share of
that domain's tokens is at least a third of the way from the selection's mix to pure,
``(share − base) / (1 − base) ≥ 1/3`` (so a majority domain, which can never reach a lift of 1.5, is
held to the same standard), and the flows are the recorded transitions (Σ = |T|·k²).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from workbench.graph.supernodes import supernodes
from workbench.store.io import open_store

pytestmark = pytest.mark.slow


def test_supernodes_of_the_mini_k2_separate_the_domains(suite_store: Path) -> None:
    sn = supernodes(open_store(suite_store))
    assert set(sn.domains) == {"math", "code", "language"}
    assert np.all(sn.flows.sum((1, 2)) == sn.n_tokens * sn.top_k**2)
    base = sn.domain_tokens / sn.domain_tokens.sum()  # (D,)
    share = sn.domain_lift()[:, -1, : int(sn.n_groups[-1])] * base[:, None]  # (D, K) in the last layer
    gain = ((share - base[:, None]) / (1 - base[:, None])).max(1)
    assert np.all(gain >= 1 / 3), dict(zip(sn.domains, gain.round(2), strict=True))
