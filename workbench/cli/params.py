"""Library errors name Python parameters; the CLI says its flags (``max_new_tokens`` -> ``--max-new-tokens``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from workbench.errors import ParameterError, WorkbenchError


@contextmanager
def cli_flags(**renamed: str) -> Iterator[None]:
    """Re-raise a ``ParameterError``, or a ``WorkbenchError`` whose ``param`` is renamed here, as a
    ``WorkbenchError`` naming the flag of each parameter.

    A parameter's flag is ``--`` plus its name with dashes (``batch_size`` -> ``--batch-size``) unless
    ``renamed`` gives another (``episode_id="--id"``). Other errors pass unchanged (``main`` words a
    leading parameter with its default flag).
    """
    try:
        yield
    except WorkbenchError as err:
        if isinstance(err, ParameterError) or (err.param is not None and err.param in renamed):
            raise WorkbenchError(err.for_cli(renamed)) from None
        raise
