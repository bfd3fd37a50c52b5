"""Routing capture by inference engines (vLLM, SGLang) over HTTP, into the same routing store.

``record_from_engine(engine, url, prompts, out, model=...)`` is what ``workbench record --engine``
calls; the per-engine modules hold the wire formats, with the engines' source files cited.
"""

from __future__ import annotations

from workbench.engines.client import EngineClient, EngineError
from workbench.engines.record import ENGINES, record_from_engine

__all__ = ["ENGINES", "EngineClient", "EngineError", "record_from_engine"]
