"""The one exception type the CLI turns into a single clear line and a non-zero exit."""


class WorkbenchError(Exception):
    """A user-facing error: the message says what is wrong and what to do."""


class SelectionError(WorkbenchError):
    """A selection names an unknown domain/segment/sequence, is out of range, or selects no tokens."""


class StoreError(WorkbenchError):
    """A routing store cannot be opened, appended to or written as asked."""


class ParameterError(WorkbenchError):
    """A bad value of a named parameter. The message names the Python parameter; a CLI renames it.

    ``ParameterError("{max_new_tokens} must be 0 or more", "max_new_tokens")`` reads "max_new_tokens must be
    0 or more"; ``err.renamed({"max_new_tokens": "--max-new-tokens"})`` gives the CLI's line.
    """

    def __init__(self, template: str, *params: str) -> None:
        self.template, self.params = template, params
        super().__init__(template.format(**{p: p for p in params}))

    def renamed(self, names: dict[str, str]) -> str:
        return self.template.format(**{p: names.get(p, p) for p in self.params})
