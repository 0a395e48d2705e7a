"""The one error type the stages raise for bad input or failed work.

cli.run turns it into a single `command: where: message` line on stderr and
exit status 1; anything else is a bug and is reported as one line too.
"""


class LayerpipeError(Exception):
    """A failure the user can act on: bad input, a missing file, a full disk."""

    def __init__(self, message: str, where: str | None = None):
        super().__init__(message)
        self.message = message
        self.where = where

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message


class UsageError(LayerpipeError):
    """Options that contradict each other; exit status 2 like typer's own."""
