"""Small helpers every module that writes text for people uses: counts with their noun, articles,
times, durations and aligned tables.

Below every stage, as `errors` is, so a stage writing an explanation column and the presentation
layer writing summaries say "1 row", "2,000 rows" and "2026-10-01 09:00:00 UTC" the same way.
Amounts of money are `analytics.core.money`; values quoted from a file in a message are
`analytics.core.errors.excerpt` and `printable`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence


def plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def a(word: str) -> str:
    """The word with its article, for the category names this module writes (a utility, an authentication)."""
    return f"{'an' if word[:1].lower() in 'aeio' else 'a'} {word}"


def utc_time(value: dt.datetime | None) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S} UTC" if value is not None else "an unknown time"


def duration(seconds: int | None) -> str:
    if seconds is None:
        return "an unknown time"
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def aligned(table: Sequence[Sequence[str]]) -> list[str]:
    """Rows of cells as lines: the first column left-aligned, the others right-aligned (numbers)."""
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return ["  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in table]
