"""Library errors name Python parameters; the CLI says its flags (``max_new_tokens`` -> ``--max-new-tokens``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from workbench.errors import ParameterError, WorkbenchError


@contextmanager
def cli_flags(**renamed: str) -> Iterator[None]:
    """Re-raise a ``ParameterError`` as a ``WorkbenchError`` naming the flag of each parameter.

    A parameter's flag is ``--`` plus its name with dashes (``batch_size`` -> ``--batch-size``) unless
    ``renamed`` gives another (``episode_id="--id"``).
    """
    try:
        yield
    except ParameterError as err:
        raise WorkbenchError(err.for_cli(renamed)) from None
