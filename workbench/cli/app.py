"""The single `workbench` entry point. Each command lives in its own module with a ``register(app)``.

Errors a user can fix (WorkbenchError) become one line on stderr and exit code 2, with the Python
parameter the library names (``err.param``) worded as its flag; nothing else is caught here, so real
bugs keep their traceback.
"""

from __future__ import annotations

import sys
from importlib import import_module

import typer

from workbench.errors import WorkbenchError

app = typer.Typer(
    name="workbench",
    help="K2 routing workbench: record per-token expert routing of MoE models, compare it, graph it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# One line per command module (workbench/cli/<name>.py, each defining register(app)).
COMMAND_MODULES: tuple[str, ...] = (
    "demo",
    "lab",
    "compare",
    "ablate",
    "graph",
    "info",
    "verify",
    "record",
    "replay",
    "agent",
    "minik2",
    "expert",
    "overview",
    "atlas",
)

for _name in COMMAND_MODULES:
    import_module(f"workbench.cli.{_name}").register(app)


def main() -> None:
    try:
        app()
    except WorkbenchError as err:
        print(f"error: {err.for_cli()}", file=sys.stderr)  # a parameter named by the library -> its flag
        sys.exit(2)
