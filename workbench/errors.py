"""The one exception type the CLI turns into a single clear line and a non-zero exit."""


class WorkbenchError(Exception):
    """A user-facing error: the message says what is wrong and what to do."""

    def _render_traceback_(self) -> list[str]:
        """IPython/Jupyter show this one line instead of a traceback (as the CLI prints ``error: ...``)."""
        return [f"\x1b[31m{type(self).__name__}\x1b[0m: {self}"]


class SelectionError(WorkbenchError):
    """A selection names an unknown domain/segment/sequence, is out of range, or selects no tokens."""


class StoreError(WorkbenchError):
    """A routing store cannot be opened, appended to or written as asked."""
