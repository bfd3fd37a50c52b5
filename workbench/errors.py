"""The one exception type the CLI turns into a single clear line and a non-zero exit."""


class WorkbenchError(Exception):
    """A user-facing error: the message says what is wrong and what to do."""


class SelectionError(WorkbenchError):
    """A selection names an unknown domain/segment/sequence, is out of range, or selects no tokens."""


class StoreError(WorkbenchError):
    """A routing store cannot be opened, appended to or written as asked."""


class StoreDamagedError(StoreError):
    """A routing store's committed data is damaged (a chunk missing, truncated or failing its checksum)."""


class GraphError(WorkbenchError):
    """A reasoning graph cannot be built or pruned as asked: an option out of range, or routing that
    does not match the model. ``parameter`` names the Python argument at fault, if one is (the CLI
    maps it to its flag)."""

    def __init__(self, message: str, *, parameter: str | None = None) -> None:
        super().__init__(message)
        self.parameter = parameter
