"""The live agent tool loop: tools (sandboxed python, calculator, BM25 search) and ``run_agent``.

``run_agent`` needs the ``[model]`` extra (torch, transformers); the tools do not.
"""

from workbench.agent.sandbox import SandboxLimits, SandboxResult, run_python
from workbench.agent.tools import TOOL_NAMES, Tool, ToolBox, make_toolbox

__all__ = ["TOOL_NAMES", "SandboxLimits", "SandboxResult", "Tool", "ToolBox", "make_toolbox", "run_python"]
