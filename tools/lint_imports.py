"""``python -m tools.lint_imports``: import-linter's ``lint-imports``, seeing ``workbench.hooks`` and ``workbench.viz``.

Plain ``lint-imports`` builds its graph before it loads contract plugins, too late for
``tools.import_contracts`` to teach grimp the ``package-dir`` layout, so ``make test`` runs this instead.
Arguments are those of ``lint-imports`` (``--verbose``, ``--contract ID``, ``--no-cache``).
"""

from __future__ import annotations

import sys

from importlinter.cli import lint_imports_command

import tools.import_contracts  # noqa: F401  (patches grimp's package finder before the graph is built)

if __name__ == "__main__":
    sys.exit(lint_imports_command())
