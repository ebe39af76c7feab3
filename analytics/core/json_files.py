"""Reading JSON and JSON Lines files, one way for every stage that reads them.

Ingest (canonical records and webhook payloads, `analytics.read.ingest` and `webhooks`) and Meta's
reports (`analytics.reconcile.meta_reports`) read the same kinds of files: one document, a JSON
array, or one value a line. They share the reading and its errors, which name the file and the
position (line, column) and never quote the file's content (a file given by mistake must not reach
the terminal: `analytics.core.errors`). What a file's values mean, and whether a broken line is
quarantined or stops the run, stays with each reader.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from analytics.core.errors import NOT_UTF8, InputError


def read_text(path: Path) -> str:
    """The file's text, UTF-8 with or without a byte-order mark; an InputError naming the file (and,
    for bytes that are not UTF-8, the line) when it cannot be read."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise InputError(f"cannot read the file ({error.strerror or error})", path=str(path)) from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise InputError(NOT_UTF8.format(line), path=str(path), fix="Save the file as UTF-8") from None


def not_valid_json(error: json.JSONDecodeError) -> str:
    """Where a document is broken, without its text: "not valid JSON (Expecting value at line 3 column 5)"."""
    return f"not valid JSON ({error.msg} at line {error.lineno} column {error.colno})"


def loads_or_none(text: str) -> Any:
    """The JSON value of `text`, None if it is not JSON."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def json_lines(text: str) -> Iterator[tuple[int, Any, json.JSONDecodeError | None]]:
    """(line number, value, None) for each non-blank line of JSON Lines text, or (line number,
    None, the error) for a line that is not JSON: the caller says what a broken line means."""
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line), None
        except json.JSONDecodeError as error:
            yield number, None, error
