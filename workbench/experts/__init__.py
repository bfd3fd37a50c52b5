"""What an expert does: expert pages (``expert_page``) and text search over a routing store (``find``).

See docs/experts.md for the guide and docs/metrics.md ("Expert pages") for the formulas.
"""

from workbench.experts.logit_effect import LogitEffect, LogitEffectError
from workbench.experts.page import ExpertPage, expert_page
from workbench.experts.rows import ExpertPageError
from workbench.experts.search import SearchHit, find

__all__ = ["ExpertPage", "ExpertPageError", "LogitEffect", "LogitEffectError", "SearchHit", "expert_page", "find"]
