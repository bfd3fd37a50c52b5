"""The one exception type the CLI turns into a single clear line and a non-zero exit."""

from __future__ import annotations

from collections.abc import Mapping


class WorkbenchError(Exception):
    """A user-facing error: the message says what is wrong and what to do.

    The library names Python parameters, never CLI flags. When one parameter is at fault, ``param``
    names it and the message begins with it (``WorkbenchError("min_count must be >= 0, got -1",
    param="min_count")``); the CLI then words it with its flag (``for_cli``: ``--min-count must be ...``).
    """

    def __init__(self, message: str = "", *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param

    def for_cli(self, flags: Mapping[str, str] | None = None) -> str:
        """The message with its leading parameter name replaced by the flag for it.

        The flag is ``flags[param]`` when given, else typer's spelling of the parameter (``--min-count``).
        """
        text = str(self)
        if not self.param or not text.startswith(self.param):
            return text
        flag = (flags or {}).get(self.param, "--" + self.param.replace("_", "-"))
        return flag + text[len(self.param) :]

    def _render_traceback_(self) -> list[str]:
        """IPython/Jupyter show this one line instead of a traceback (as the CLI prints ``error: ...``)."""
        return [f"\x1b[31m{type(self).__name__}\x1b[0m: {self}"]


class SelectionError(WorkbenchError):
    """A selection names an unknown domain/segment/sequence, is out of range, or selects no tokens."""


class StoreError(WorkbenchError):
    """A routing store cannot be opened, appended to or written as asked."""


class StoreDamagedError(StoreError):
    """A routing store's committed data is damaged (a chunk missing, truncated or failing its checksum)."""


class GraphError(WorkbenchError):
    """A reasoning graph cannot be built or pruned as asked: an option out of range, or routing that
    does not match the model. ``param`` names the Python argument at fault, if one is (the CLI words it
    with its flag through ``for_cli``)."""


class ParameterError(WorkbenchError):
    """A bad value of one or more named parameters. The message names the Python parameters; a CLI
    words them as its flags (``for_cli``).

    ``ParameterError("{max_new_tokens} must be 0 or more", "max_new_tokens")`` reads "max_new_tokens must be
    0 or more"; ``err.for_cli()`` gives "--max-new-tokens must be 0 or more".
    """

    def __init__(self, template: str, *params: str) -> None:
        self.template, self.params = template, params
        super().__init__(template.format(**{p: p for p in params}), param=params[0] if len(params) == 1 else None)

    def for_cli(self, flags: Mapping[str, str] | None = None) -> str:
        """The message with every parameter named by its flag (``flags[p]``, else ``--`` + dashed name)."""
        names = {p: (flags or {}).get(p, "--" + p.replace("_", "-")) for p in self.params}
        return self.template.format(**names)
