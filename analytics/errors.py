"""Errors that speak to the user: which file, which row, what was expected, what to do."""

from __future__ import annotations


class InputError(Exception):
    """Input that cannot be used at all (a missing column, an unreadable file): exit status 2."""

    def __init__(self, message: str, *, path: str | None = None, row: int | None = None, fix: str | None = None):
        self.path, self.row, self.fix = path, row, fix
        where = ""
        if path is not None:
            where = f"{path}" + (f", row {row}" if row is not None else "") + ": "
        super().__init__(where + message + (f". {fix}" if fix else ""))


class UsageError(Exception):
    """A command line or configuration that does not make sense: exit status 2."""
