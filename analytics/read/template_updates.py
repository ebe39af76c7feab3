"""Meta's `template_category_update` webhooks: when a template's category changed, and to what.

Meta recategorises templates (manually or by an automated process) and says so in a webhook of its
own field, `template_category_update`, beside the `messages` field that carries traffic (Meta's
"template_category_update webhook reference", Updated: Nov 11, 2025,
https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/template_category_update).
`analytics.read.webhooks` counts these changes as skipped (they are no traffic); this module reads
them from the same files, one row per change (`CATEGORY_UPDATE_SCHEMA`):

- a *completed* change (`previous_category`, `new_category`, or `new_category` alone in older
  payloads): the template is billed as `new_category` from the webhook's `entry.time`;
- an *impending* change (`correct_category`, `new_category` = the current category,
  `category_update_timestamp`): the template will be billed as `correct_category` from
  `category_update_timestamp`. [choice] Read as a change at that instant: a message sent later is
  billed in the correct category, unless a later event says otherwise.

Categories are read lower case. A change whose template name, category or time cannot be read is
not guessed: it is counted in `CategoryUpdates.unreadable` with its file and row.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from analytics.core.schema import INSTANT
from analytics.read.ingest import JSON_SUFFIXES
from analytics.read.webhooks import _NotAWebhook, _payloads

FIELD = "template_category_update"
COMPLETED, IMPENDING = "completed", "impending"

CATEGORY_UPDATE_SCHEMA: dict[str, pl.DataType] = {
    "waba_id": pl.String(),
    "template_id": pl.String(),
    "template_name": pl.String(),
    "language": pl.String(),
    "previous_category": pl.String(),
    "category": pl.String(),  # what the template is billed as from `effective_from`
    "effective_from": INSTANT,
    "kind": pl.String(),  # COMPLETED or IMPENDING
    "source_file": pl.String(),
    "source_row": pl.Int64(),
}


@dataclass(frozen=True)
class CategoryUpdates:
    """The changes read (`CATEGORY_UPDATE_SCHEMA`), and the ones that could not be, as `file:row: why`."""

    updates: pl.DataFrame
    unreadable: tuple[str, ...] = ()


def read_category_updates(paths: Sequence[str | Path]) -> CategoryUpdates:
    """The `template_category_update` changes in the JSON/JSONL files among `paths` (others are
    not webhook files and are passed over), sorted by time."""
    rows: list[dict] = []
    unreadable: list[str] = []
    for path in paths:
        if not str(path).lower().endswith(JSON_SUFFIXES):
            continue
        for source_row, _where, payload in _payloads(Path(path)):
            if isinstance(payload, _NotAWebhook):
                continue  # ingest quarantines it already
            for entry in payload.get("entry") or []:
                for change in (entry.get("changes") or []) if isinstance(entry, dict) else []:
                    if isinstance(change, dict) and change.get("field") == FIELD:
                        row = update_row(entry, change.get("value"))
                        if isinstance(row, str):
                            unreadable.append(f"{path}:{source_row}: {row}")
                        else:
                            rows.append(row | {"source_file": str(path), "source_row": source_row})
    frame = pl.DataFrame(rows, schema=CATEGORY_UPDATE_SCHEMA).sort("effective_from", "source_file", "source_row")
    return CategoryUpdates(frame, tuple(unreadable))


def update_row(entry: dict, value: object) -> dict | str:
    """One change as a row of CATEGORY_UPDATE_SCHEMA (module docstring), or why it cannot be read."""
    if not isinstance(value, dict):
        return "the change's value is not an object"
    name = _text(value.get("message_template_name"))
    if name is None:
        return "no message_template_name"
    if value.get("correct_category") is not None:
        kind, category, when = IMPENDING, _lower(value.get("correct_category")), _instant(value.get("category_update_timestamp"))
        previous = _lower(value.get("new_category"))
    else:
        kind, category, when = COMPLETED, _lower(value.get("new_category")), _instant(entry.get("time"))
        previous = _lower(value.get("previous_category"))
    if category is None:
        return f"template {name!r}: no category to change to"
    if when is None:
        return f"template {name!r}: no time the change takes effect"
    return {
        "waba_id": _text(entry.get("id")),
        "template_id": _text(value.get("message_template_id")),
        "template_name": name,
        "language": _text(value.get("message_template_language")),
        "previous_category": previous,
        "category": category,
        "effective_from": when,
        "kind": kind,
    }


def _text(value: object) -> str | None:
    if value is None or isinstance(value, bool | dict | list):
        return None
    text = str(value).strip()
    return text or None


def _lower(value: object) -> str | None:
    text = _text(value)
    return text.lower() if text else None


def _instant(value: object) -> dt.datetime | None:
    """Unix seconds (a number or digits), as Meta writes `time` and `category_update_timestamp`."""
    text = _text(value)
    if text is None or not text.isdigit():
        return None
    return dt.datetime.fromtimestamp(int(text), dt.UTC)
