"""Errors that speak to the user: which file, which row, what was expected, what to do."""

from __future__ import annotations

import re
from collections.abc import Sequence


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


class NotBillableUnder(UsageError, ValueError):
    """Traffic a what-if rule set (`--rules`) cannot bill, such as group messages under conversation-based
    pricing: a usage error on the command line (exit 2), and the engines' ValueError for what they refuse."""


# --- Quoting a file in a message: the field at fault, short and clean, never more ---------------------
# A file named by mistake (`rate_card = "/proc/self/environ"`, a `.env`) must not reach the terminal or
# a log: a message quotes at most the one field at fault, cut short, without control characters.

EXCERPT_LIMIT = 32
NOT_UTF8 = "line {} is not UTF-8 text (a Latin-1 or Windows-1252 byte such as é?)"  # CSV and JSON readers
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAME_LIKE = re.compile(r"[\w(][\w .()/#-]{0,39}")  # \w: letters of any script, digits, _


def excerpt(value: object, *, limit: int = EXCERPT_LIMIT) -> str:
    """`value` (a field read from a file) quoted for a message: control characters removed, at most
    `limit` characters."""
    text = _CONTROL.sub(" ", str(value)).strip()
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def found_names(names: Sequence[str], *, most: int = 20, quote: bool = False) -> str:
    """Column names found in a file, for a message: the ones that look like names (in quotes if
    `quote`), the others only counted (a header line that is really a secret, `KEY=value`, is not
    repeated)."""
    shown = [n.strip() for n in names if _NAME_LIKE.fullmatch(n.strip())]
    hidden = len(names) - len(shown)
    shown = [repr(n) for n in shown] if quote else shown
    parts = shown[:most] + ([f"{len(shown) - most} more"] if len(shown) > most else [])
    if hidden:
        parts.append(f"{hidden} header that is not a column name" if hidden == 1 else f"{hidden} headers that are not column names")
    return ", ".join(parts) or "none"


def library_reason(error: BaseException, *, limit: int = 120) -> str:
    """A library's error (Polars, csv, json) as the reason of a message: its first line, without the
    file's text it may quote (Polars puts it `between backticks`), short and without control characters."""
    line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    line = _CONTROL.sub(" ", re.sub(r"`[^`]*(`|$)", "…", line)).strip()
    return line if len(line) <= limit else line[: limit - 1] + "…"


def printable(message: object) -> str:
    """A message as the terminal gets it: no control characters but line breaks (a file's escape
    sequences that slipped into a message cannot rewrite the screen)."""
    return re.sub(r"[^\S\n ]|[\x00-\x08\x0b-\x1f\x7f-\x9f]", " ", str(message))
