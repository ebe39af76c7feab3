"""Small helpers every module that writes sentences for people uses: counts with their noun, articles, times.

Below every stage, as `errors` is, so a stage writing an explanation column and the presentation
layer writing summaries say "1 row", "2,000 rows" and "2026-10-01 09:00:00 UTC" the same way.
"""

from __future__ import annotations

import datetime as dt


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
