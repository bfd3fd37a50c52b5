"""Recording routing into stores from Python: the one implementation behind ``workbench record``, ``replay``
and ``agent`` (needs the ``[model]`` extra).

>>> from workbench.recording import record, replay                     # doctest: +SKIP
>>> record("k2-mini", "data/prompts/suite.jsonl", "runs/suite.zarr", max_new_tokens=16)
>>> model, tok = load_model("k2-mini")                                  # a model a notebook already holds
>>> record(model, [{"id": "p1", "domain": "math", "text": "2 + 2 ="}], "runs/p.zarr", tokenizer=tok)
>>> replay("k2-mini", "data/transcripts/tool_loops.jsonl", "runs/loops.zarr")

All three share one preflight (``preflight.py``) and refuse bad input with one ``WorkbenchError`` before any
weight is read; errors about a parameter (``ParameterError``) name the Python parameter.
"""

from __future__ import annotations

from workbench.recording.agent import record_agent
from workbench.recording.preflight import Preflight
from workbench.recording.prompts import RecordSummary, record
from workbench.recording.transcripts import ReplaySummary, replay

__all__ = ["Preflight", "RecordSummary", "ReplaySummary", "record", "record_agent", "replay"]
