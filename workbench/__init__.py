"""K2 routing workbench: record, compare and graph per-token expert routing of MoE models.

``import workbench`` is the notebook user's kit; every name is imported on first use (PEP 562), so the
import itself loads nothing heavy (no torch, transformers, plotly, dask or zarr):

>>> import workbench
>>> ds = workbench.open_store("runs/suite.zarr")             # doctest: +SKIP
>>> g = ds.routing.graph(where="domain=math", top_edges=12)  # doctest: +SKIP
>>> workbench.export_graph(g, "math.png")                    # doctest: +SKIP

=====================  ==========================================================  ==========================
name                   what                                                        needs
=====================  ==========================================================  ==========================
``open_store``         a routing store as a lazy Dataset, with ``ds.routing``      core
``record``             record prompts with routing hooks into a store              ``[model]`` (torch)
``replay``             replay transcripts through a model into a store             ``[model]`` (torch)
``record_agent``       run the live agent loop on a task, recording every step     ``[model]`` (torch)
``RoutingRecorder``    the forward hooks themselves, as a context manager          ``[model]`` (torch)
``reasoning_graph``    the reasoning graph of a selection (networkx)               core
``graph_figure``       a reasoning graph as a plotly figure                        core
``export_graph``       a graph to PNG/SVG/PDF/HTML/GraphML/GEXF/JSON               core (Chromium for images)
``compare``            expert usage across domains, with intervals and tests       core
``expert_page``        what one expert does: contexts, lift, shares, neighbours    core
``find``               text or regex search over the decoded tokens of a store     core
``synthetic_store``    a synthetic store of any size (benchmarks, tests)           core
``Selection``          which tokens and layers (``parse_where("domain=math")``)    core
=====================  ==========================================================  ==========================

The layers behind these names, and the rules between them, are in docs/architecture.md.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:  # what editors and mypy see; at run time each name is imported on first use
    from workbench.accessor import open_store
    from workbench.analysis.compare import compare
    from workbench.errors import WorkbenchError
    from workbench.experts.page import expert_page
    from workbench.experts.search import find
    from workbench.graph.build import reasoning_graph
    from workbench.hooks import RoutingRecorder
    from workbench.recording import record, record_agent, replay
    from workbench.routing_config import RoutingConfig
    from workbench.store.select import Selection, parse_where
    from workbench.store.synthetic import synthetic_store
    from workbench.viz.export import export_graph
    from workbench.viz.graph_figure import graph_figure

# name -> the module that defines it. ``workbench.open_store`` comes from workbench.accessor, which
# registers ``ds.routing`` on import.
_LAZY: dict[str, str] = {
    "open_store": "workbench.accessor",
    "record": "workbench.recording",
    "replay": "workbench.recording",
    "record_agent": "workbench.recording",
    "RoutingRecorder": "workbench.hooks",
    "reasoning_graph": "workbench.graph.build",
    "graph_figure": "workbench.viz.graph_figure",
    "export_graph": "workbench.viz.export",
    "compare": "workbench.analysis.compare",
    "expert_page": "workbench.experts.page",
    "find": "workbench.experts.search",
    "synthetic_store": "workbench.store.synthetic",
    "Selection": "workbench.store.select",
    "parse_where": "workbench.store.select",
    "RoutingConfig": "workbench.routing_config",
    "WorkbenchError": "workbench.errors",
}

__all__ = [  # a literal list, so linters and editors read it; tests check it equals _LAZY's keys
    "RoutingConfig",
    "RoutingRecorder",
    "Selection",
    "WorkbenchError",
    "__version__",
    "compare",
    "expert_page",
    "export_graph",
    "find",
    "graph_figure",
    "open_store",
    "parse_where",
    "reasoning_graph",
    "record",
    "record_agent",
    "replay",
    "synthetic_store",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'workbench' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    if name == "expert_page":
        import_module("workbench.viz.expert_page")  # the page's HTML face in Jupyter (registered by the view layer)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
