"""Files to canonical messages (contracts.md §1): read, validate, quarantine, count.

Follow a file through this module in order:

1. **Read** (`read_raw`), by extension, into a *raw canonical* lazy frame: every column of
   `schema.MESSAGE_SCHEMA` as text, plus `source_file`, `source_row` and `problem` (what the reader
   found wrong with the row, null when fine). CSV (`.csv`, `.csv.gz`) and Parquet are scanned
   lazily, so files larger than memory stream through. JSON (`.json`, `.jsonl`, `.ndjson`) is parsed
   whole in Python; one whose first value is a Meta webhook payload goes to `analytics.read.webhooks`,
   otherwise it holds canonical records (a JSON array of objects, or one object a line).
   Column names are matched without regard to case or surrounding spaces; optional columns may be
   absent (null); other columns are ignored and named in the run summary. A missing required column,
   an unreadable file or an unknown extension raises `InputError`.
   `source_row` is the line number for CSV (the header is line 1; a quoted value spanning lines
   shifts the rows after it) and JSONL, the 1-based row for Parquet, the 1-based position in a JSON
   array.
2. **Validate** (`validate`): values are trimmed (empty is missing) and put in canonical form, or
   the row goes to the quarantine with exactly one reason, the first that applies in this order:

   1. the reader's `problem` (a CSV row with more values than the header, a webhook it cannot use, …)
   2. `MISSING_VALUE`: a required value (§1) is missing
   3. `NO_TIME_ZONE`: an ISO 8601 timestamp without offset (never guessed, §1)
   4. `BAD_TIMESTAMP`: neither ISO 8601 with offset or `Z` nor Unix seconds
   5. `before_first_supported()`: before 2022-02-01 00:00 in the row's WABA time zone
      (`waba_timezones`, else `timezone`), the same instant the engines switch at (billing-rules.md §1)
   6. `UNKNOWN_DIRECTION`: not `inbound` or `outbound` (any case)
   7. `TEMPLATE_WITHOUT_CATEGORY`, then 8. `UNKNOWN_CATEGORY` (templates only)
   9. `UNKNOWN_STATUS`; 10. `UNKNOWN_ENTRY_POINT` (inbound only); 10a. `BAD_FEP_EXPIRY`: an
      `fep_expires_at` given that is neither ISO 8601 with offset nor Unix seconds
   11. `UNKNOWN_COUNTRY`: `user_country` is not an ISO 3166-1 alpha-2 code (`XX`, `UK`, `Italy`):
       never priced as `Other`, whether or not a phone would have been used instead
   11a. `UNKNOWN_SENDER`: `sent_by` is not one of `schema.SENDERS` (empty is the business);
       11b. `BAD_TOKENS`: `tokens` is not a whole number >= 0 (`1200.0` from a float column is 1200);
       11c. `GROUP_AUTHENTICATION`: an authentication template with a `group_id` (Meta, "Groups API",
       Updated Jun 16, 2026: not supported in groups); 11d. `GROUP_ENTRY_POINT`: a group message
       with an `entry_point` (no free entry points in groups); 11e. `GROUP_BUSINESS_AGENT` [choice]:
       a group message `sent_by` `meta_business_agent` (Meta documents none); 11f.
       `group_before_pricing()`: a group message dated before the first rule set that bills groups
       (`bills_groups`: 2025-07-01, per-message pricing), in the row's WABA time zone
   12. `after_latest()`: a timestamp later than the latest plausible one, by default the run's
       start plus `FUTURE_MARGIN` (`99999999999` is year 5138: milliseconds cut short, not a time
       to bill); `read_messages(latest=...)`, `--latest-timestamp` on the command line
   13. `CONFLICTING_DUPLICATE`: another row with the same message_id has different canonical
       values (all such rows go, since none can be trusted over the others; a row quarantined for
       its own reason takes no part). A group row (`group_id` given) is one delivery to one
       participant: its key is (`message_id`, `user_id`), so the participants of one group message
       are not repeats of each other; a one-to-one row's key is `message_id` alone.

   Rows that pass all of these and repeat a key with the same canonical values (webhook
   retries; "2024-05-01T10:00:00+02:00" and "1714550400" are the same instant) are kept once, the
   first in input order, and counted in `duplicates_dropped`. Canonical form: timestamps as UTC
   instants (fractions kept to the microsecond), `direction`, `message_type`, `template_category`,
   `status` and `entry_point` lower-cased, `user_country` upper-cased, empty `waba_id` is
   `default`, a phone-like `user_id` as its digits (`_canonical_values`; the number it was
   written as goes to an empty `user_phone` in E.164, and the summary counts such rows). A
   category on a non-template and an entry point on an outbound message mean nothing to billing
   (§1): they are set to null and counted in the run summary's notes. The optional
   `fep_expires_at` (the end Meta gave a free entry point window, README) is an instant like
   `timestamp`, kept on outbound rows only; files without the column read it as null. Rows with no value
   at all (blank lines, `,,,,`) are not messages: they are skipped and counted in the notes.
   The optional columns of 2026 (absent: null): `group_id` and `template_name` as text, `sent_by`
   lower-cased, `tokens` a whole number. [choice] `tokens` on a message not sent by Meta Business
   Agent means nothing to billing (only Meta Business Agent replies are charged per token): like a
   category on a non-template it is set to null and counted in the notes, not quarantined.
3. **Locate and pseudonymise** (`read_messages`): `markets.with_user_country` fills `user_country`
   from the phone, the given country or a business-scoped id's country prefix. Users for whom none
   is known keep their rows (their free messages and windows still count) with market `Unknown`,
   and are counted in the summary by why (`markets.unknown_market_reason`), with the first row of
   each reason: `costs` cannot price their paid charges. With a key, `pseudonymise` replaces user
   ids and phones (also in the quarantine).
4. **Count** (`IngestSummary`): rows read = used + dropped + quarantined, always.

`read_messages` returns lazy frames: the input files are scanned again whenever they are collected
or written (`write_frame` streams them to disk). Before returning, it scans the inputs to find
repeated message_ids (memory: one entry per distinct message_id, not per row) and again to count,
so a file that breaks mid-way raises `InputError` there, not later.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import polars as pl

from analytics.core import outputs, progress, stages
from analytics.core.errors import NOT_UTF8, InputError, UsageError, found_names, library_reason
from analytics.core.json_files import loads_or_none, not_valid_json, read_text
from analytics.core.resources import resource
from analytics.core.schema import (
    DEFAULT_WABA,
    DIRECTIONS,
    ENTRY_POINTS,
    INSTANT,
    MESSAGE_SCHEMA,
    META_BUSINESS_AGENT,
    REQUIRED_MESSAGE_COLUMNS,
    SENDERS,
    STATUSES,
    TEMPLATE,
    TEMPLATE_CATEGORIES,
)
from analytics.core.text import plural
from analytics.read import webhooks
from analytics.read.pseudonymise import pseudonymise
from analytics.terms import markets
from analytics.terms.rules import first_group_date, first_supported_date

MESSAGE_COLUMNS = tuple(MESSAGE_SCHEMA)
SOURCE_COLUMNS = ("source_file", "source_row")
RAW_SCHEMA: dict[str, pl.DataType] = {
    **{column: pl.String() for column in MESSAGE_COLUMNS},
    "source_file": pl.String(),
    "source_row": pl.Int64(),
    "problem": pl.String(),
}
QUARANTINE_COLUMNS = ("source_file", "source_row", "reason", *MESSAGE_COLUMNS)
# A Parquet column that holds instants with a zone is also kept as such beside its text (null for other
# readers): validation takes the instant as it is instead of writing it out and parsing it back.
_TYPED = {"timestamp": "_typed_timestamp", "fep_expires_at": "_typed_fep_expires_at"}

CSV_SUFFIXES = (".csv", ".csv.gz")
PARQUET_SUFFIXES = (".parquet",)
JSON_SUFFIXES = (".json", ".jsonl", ".ndjson")
INPUT_SUFFIXES = (*CSV_SUFFIXES, *PARQUET_SUFFIXES, *JSON_SUFFIXES)
OUTPUT_SUFFIXES = (*CSV_SUFFIXES, *PARQUET_SUFFIXES)
CSV_DATETIME_FORMAT = "%Y-%m-%dT%H:%M:%S%.f%:z"  # ISO 8601 with offset: what the readers read back

# Quarantine reasons (module docstring, step 2), in the order they are checked.
TOO_MANY_VALUES = "row has more values than the header has columns: quote values that contain commas"
MISSING_VALUE = "missing required value: "  # followed by the columns
NO_TIME_ZONE = "timestamp has no time zone: write it with an offset such as +01:00 or Z"
BAD_TIMESTAMP = (
    "timestamp is not a time: write ISO 8601 with an offset (2024-05-01T09:30:00+02:00, 2024-05-01T07:30:00Z) or Unix seconds (1714548600)"
)
UNKNOWN_DIRECTION = "unknown direction: use inbound (user to business) or outbound"
_CATEGORIES = f"{', '.join(TEMPLATE_CATEGORIES[:-1])} or {TEMPLATE_CATEGORIES[-1]}"
TEMPLATE_WITHOUT_CATEGORY = f"template without category: add template_category ({_CATEGORIES})"
UNKNOWN_CATEGORY = f"unknown template_category: use {_CATEGORIES}"
UNKNOWN_STATUS = f"unknown status: use {', '.join(STATUSES)}, or leave it empty"
UNKNOWN_ENTRY_POINT = f"unknown entry_point: use {' or '.join(ENTRY_POINTS)}, or leave it empty"
BAD_FEP_EXPIRY = "fep_expires_at is not a time: write ISO 8601 with an offset (2026-10-05T09:30:00Z) or Unix seconds, or leave it empty"
UNKNOWN_COUNTRY = "user_country is not an ISO 3166-1 alpha-2 country code: write two letters such as IT or GB (not UK), or leave it empty"
# The optional columns of 2026 (README, canonical messages): Meta Business Agent and groups.
UNKNOWN_SENDER = f"unknown sent_by: use {' or '.join(SENDERS)}, or leave it empty (the business)"
BAD_TOKENS = "tokens is not a whole number of 0 or more: write the tokens Meta billed (e.g. 21500), or leave it empty when not known"
# Meta, "Groups API" (Updated Jun 16, 2026), https://developers.facebook.com/documentation/business-messaging/whatsapp/groups/ :
# authentication templates are not supported in groups.
GROUP_AUTHENTICATION = (
    "authentication template in a group: Meta's Groups API does not support authentication templates in groups; "
    "check template_category, or leave group_id empty if it was sent one-to-one"
)
# Meta, "Groups API Pricing" (Updated May 21, 2026): no free entry points in groups (issue 17's design).
GROUP_ENTRY_POINT = (
    "group message with an entry_point: free entry points (Click-to-WhatsApp, page buttons) do not apply to groups; "
    "leave entry_point empty, or group_id empty if the message was one-to-one"
)
# [choice] Meta documents no Meta Business Agent replies in groups: such a row cannot be billed as either.
GROUP_BUSINESS_AGENT = (
    "group message sent by meta_business_agent: Meta documents Meta Business Agent replies one-to-one only; "
    "leave sent_by empty if the business wrote it, or group_id empty if it was one-to-one"
)


# Meta bills group messages per message only ("Groups API Pricing", Updated May 21, 2026): a group
# row dated before the first rule set that bills groups (`bills_groups`) cannot be billed.
def group_before_pricing() -> str:
    first = first_group_date()
    return (
        f"group message before {first.isoformat() if first else 'any rule set that bills groups'}: Meta bills group messages "
        "per message only (Groups API pricing); check the timestamp, or leave group_id empty if it was one-to-one"
    )


FUTURE_MARGIN = dt.timedelta(days=1)  # a timestamp later than the run's start plus this is implausible (`after_latest`)
CONFLICTING_DUPLICATE = "conflicting duplicate of message_id"  # the summary's key; rows get the details
ROWS_NAMED_PER_CONFLICT = 5


def before_first_supported() -> str:
    return f"before {first_supported_date().isoformat()}: notification-based pricing is not modelled"


# Internal columns of the labelled frame.
_POSITION, _RAW, _INSTANT, _NO_ZONE, _REASON = "_position", "_raw", "_instant", "_no_zone", "_reason"
_ISO_PARTS = "_iso_parts"
_FEP_ISO_PARTS, _FEP_INSTANT = "_fep_iso_parts", "_fep_instant"
_KIND, _OUTCOME, _BLANK = "_reason_kind", "_outcome", "_blank"
_ENTRY_POINT_IGNORED, _CATEGORY_IGNORED = "_entry_point_ignored", "_category_ignored"
_TOKENS, _TOKENS_IGNORED = "_tokens", "_tokens_ignored"
# The key repeats are found by: message_id, and for a group row the participant too (docstring, step 2, 13).
_KEY, _KEY_SEPARATOR = "_duplicate_key", "\x1f"
_ROW_INDEX, _OVERFLOW = "_row_index", "_overflow"
_ID_NORMALISED, _ID_AS_WRITTEN = "_user_id_normalised", "_user_id_as_written"
USED, DUPLICATE, QUARANTINED, BLANK = "used", "duplicate", "quarantined", "blank"


# --- 1. Read -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RawInput:
    """One input file as raw canonical rows, with what the reader has to say about it."""

    path: str
    kind: str  # CSV, Parquet, JSON records, webhook JSON
    frame: pl.LazyFrame  # RAW_SCHEMA
    notes: tuple[str, ...] = ()
    billing: pl.DataFrame | None = None
    webhook: webhooks.WebhookFile | None = None  # statuses still to fold with the other files' (`fold_webhooks`)
    statuses_retried: int = 0  # webhook statuses identical to one read before (retries): dropped
    statuses_folded: int = 0  # other webhook statuses, folded into their message's row: dropped


def read_raw(path: str | Path, *, send_log: pl.DataFrame | None = None, templates: pl.DataFrame | None = None, fold: bool = True) -> RawInput:
    """The raw canonical rows of one file, by its extension (module docstring, step 1). Without
    `fold`, a webhook file's statuses are left for `fold_webhooks` to fold with other files'."""
    path = Path(path)
    suffix = _suffix(path)
    if suffix not in INPUT_SUFFIXES:
        raise InputError(
            f"unknown file type '{suffix or path.name}'",
            path=str(path),
            fix=f"Give CSV, Parquet or JSON files ({', '.join(INPUT_SUFFIXES)})",
        )
    if not path.is_file():
        problem = "is a directory" if path.is_dir() else "no such file"
        raise InputError(problem, path=str(path), fix="Check the path")
    if suffix in CSV_SUFFIXES:
        return scan_canonical_csv(path)
    if suffix in PARQUET_SUFFIXES:
        return scan_canonical_parquet(path)
    return read_json(path, send_log=send_log, templates=templates, fold=fold)


def fold_webhooks(inputs: Sequence[RawInput], *, send_log: pl.DataFrame | None = None, templates: pl.DataFrame | None = None) -> list[RawInput]:
    """The inputs, with the statuses of every webhook file among them folded together
    (`webhooks.fold_files`): one message's statuses may sit in several files (daily dumps)."""
    files = [i.webhook for i in inputs if i.webhook is not None]
    folded = iter(webhooks.fold_files(files, send_log=send_log, templates=templates))  # in the inputs' order
    retried = iter(_retried_statuses(files))
    paths: set[str] = set()
    result = []
    for raw_input in inputs:
        if raw_input.webhook is None:
            result.append(raw_input)
            continue
        rows = next(folded)
        if raw_input.path in paths:  # the same file again: its folded rows are the first reading's
            rows = replace(rows, messages=rows.messages.filter(pl.col("direction").ne_missing("outbound")))
        paths.add(raw_input.path)
        result.append(_with_rows(raw_input, rows, next(retried)))
    return result


def _with_rows(raw_input: RawInput, rows: webhooks.WebhookRows, retried: int) -> RawInput:
    """The input with its folded rows, and how many of its status records no row stands for:
    retries (identical to a status read before) and the other statuses of a message, both dropped,
    so that rows read = used + dropped + quarantined for webhooks as for CSV."""
    assert raw_input.webhook is not None
    absorbed = raw_input.webhook.statuses.height - (rows.messages.height - raw_input.webhook.rows.height)
    retried = min(retried, absorbed)
    return replace(
        raw_input,
        frame=conform_raw(rows.messages.lazy()),
        billing=rows.billing,
        webhook=None,
        statuses_retried=retried,
        statuses_folded=absorbed - retried,
    )


def _retried_statuses(files: Sequence[webhooks.WebhookFile]) -> list[int]:
    """Per file, its status records identical (but for where they were read) to one read before in
    the run, in file and row order: Meta's retries, and the same status in two overlapping dumps."""
    if not files:
        return []
    statuses = pl.concat([f.statuses.drop("source_file", "source_row").with_columns(_file=pl.lit(i, pl.Int32)) for i, f in enumerate(files)])
    content = [c for c in statuses.columns if c != "_file"]
    counted = statuses.with_columns(_retry=~pl.struct(content).is_first_distinct()).group_by("_file").agg(pl.col("_retry").sum())
    by_file = dict(counted.iter_rows())
    return [int(by_file.get(i, 0)) for i in range(len(files))]


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".csv.gz" if name.endswith(".csv.gz") else path.suffix.lower()


def _column_name(name: str) -> str:
    return name.replace("\ufeff", "").strip().lower()


def _canonical_positions(path: Path, names: Sequence[str]) -> tuple[dict[str, int], tuple[str, ...]]:
    """canonical column -> position in `names`, and the names that are ignored; InputError if unusable."""
    positions: dict[str, int] = {}
    ignored = []
    for position, name in enumerate(names):
        column = _column_name(name)
        if column in positions:
            raise InputError(f"column '{column}' appears twice", path=str(path), fix="Keep one of them")
        if column in MESSAGE_SCHEMA:
            positions[column] = position
        elif column not in SOURCE_COLUMNS:  # our own quarantine and outputs carry these
            ignored.append(name.strip() or "(unnamed)")
    missing = [c for c in REQUIRED_MESSAGE_COLUMNS if c not in positions]
    if missing:
        found = found_names(names)
        problem = (
            "has none of the canonical message columns"
            if len(missing) == len(REQUIRED_MESSAGE_COLUMNS)
            else (f"missing required column{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
        )
        raise InputError(
            f"{problem} (found: {found})",
            path=str(path),
            fix=f"Add or rename the columns; every input needs {', '.join(REQUIRED_MESSAGE_COLUMNS)} (contracts.md §1)",
        )
    return positions, tuple(ignored)


def _ignored_note(path: Path, ignored: Sequence[str]) -> tuple[str, ...]:
    if not ignored:
        return ()
    return (f"{path}: ignored column{'s' if len(ignored) > 1 else ''} not in the canonical table: {found_names(ignored)}",)


def _empty_input(path: Path, kind: str) -> RawInput:
    return RawInput(str(path), kind, pl.LazyFrame(schema=RAW_SCHEMA), notes=(f"{path}: the file is empty",))


def _raw_frame(
    frame: pl.LazyFrame, path: Path, columns: dict[str, pl.Expr], row: pl.Expr, problem: pl.Expr, typed: Sequence[pl.Expr] = ()
) -> pl.LazyFrame:
    """RAW_SCHEMA from the reader's expressions; canonical columns it lacks are null. `typed`: instants
    as the file holds them (`_TYPED`)."""
    return frame.select(
        *[columns.get(c, pl.lit(None)).cast(pl.String).alias(c) for c in MESSAGE_COLUMNS],
        pl.lit(str(path), pl.String).alias("source_file"),
        row.cast(pl.Int64).alias("source_row"),
        problem.cast(pl.String).alias("problem"),
        *typed,
    )


def scan_canonical_csv(path: Path) -> RawInput:
    """A canonical CSV, scanned lazily, every value as text; `source_row` is the line number."""
    header = _csv_header(path)
    if header is None:
        return _empty_input(path, "CSV")
    positions, ignored = _canonical_positions(path, header)
    by_position = {f"_{i}": pl.String() for i in range(len(header))}
    # One column more than the header catches rows with too many values, instead of failing the file.
    scan = pl.scan_csv(
        path,
        has_header=False,
        skip_rows=1,
        schema={**by_position, _OVERFLOW: pl.String()},
        missing_columns="insert",
        truncate_ragged_lines=True,
        row_index_name=_ROW_INDEX,
        row_index_offset=2,
    )
    frame = _raw_frame(
        scan,
        path,
        {column: pl.col(f"_{position}") for column, position in positions.items()},
        row=pl.col(_ROW_INDEX),
        problem=pl.when(pl.col(_OVERFLOW).is_not_null()).then(pl.lit(TOO_MANY_VALUES)),
    )
    return RawInput(str(path), "CSV", frame, notes=_ignored_note(path, ignored))


def _csv_header(path: Path) -> list[str] | None:
    """The header row of a CSV (gzip or not); None for an empty file."""
    try:
        with gzip.open(path, "rb") if _suffix(path) == ".csv.gz" else open(path, "rb") as binary:
            lines = (line.decode("utf-8-sig" if number == 0 else "utf-8") for number, line in enumerate(binary))
            reader = csv.reader(lines)
            header = next(reader, None)  # decodes only the header's lines
    except UnicodeDecodeError:
        raise _unreadable_csv(path) from None
    except (OSError, EOFError, csv.Error) as error:
        raise InputError(f"cannot read the header as CSV ({error})", path=str(path), fix="Give a UTF-8 CSV file") from None
    if reader.line_num > 1 and (fault := csv_fault(path)) is not None:  # a quote in the header that never closes
        raise fault
    if header is None or not any(name.strip() for name in header):
        return None
    return header


UNCLOSED_QUOTE = "line {} opens a quoted value that is never closed"


def csv_fault(path: Path) -> InputError | None:
    """Why a CSV that the scanner could not read is unreadable, naming the line: the first line
    that is not UTF-8, else the line where a quoted value opens and never closes. None if neither."""
    opened_at = None  # the line of a quoted value still open
    try:
        with gzip.open(path, "rb") if _suffix(path) == ".csv.gz" else open(path, "rb") as binary:
            for number, line in enumerate(binary, start=1):
                try:
                    text = line.decode("utf-8-sig" if number == 1 else "utf-8")
                except UnicodeDecodeError:
                    return InputError(NOT_UTF8.format(number), path=str(path), fix="Save the file as UTF-8")
                if text.count('"') % 2:  # an odd number of quotes opens or closes a value ("" is a quote inside)
                    opened_at = number if opened_at is None else None
    except (OSError, EOFError, gzip.BadGzipFile):
        return None
    if opened_at is None:
        return None
    return InputError(UNCLOSED_QUOTE.format(opened_at), path=str(path), fix='Close the quote, or write a quote inside a quoted value as ""')


def _unreadable_csv(path: Path) -> InputError:
    return csv_fault(path) or InputError("cannot be read as UTF-8 CSV", path=str(path), fix="Save the file as UTF-8")


def scan_canonical_parquet(path: Path) -> RawInput:
    """A canonical Parquet file, scanned lazily; values become text the validator reads back."""
    try:
        scan = pl.scan_parquet(path, row_index_name=_ROW_INDEX, row_index_offset=1)
        schema = scan.collect_schema()
    except (OSError, pl.exceptions.PolarsError) as error:
        raise InputError(f"cannot read as Parquet ({_first_line(error)})", path=str(path)) from None
    names = [n for n in schema.names() if n != _ROW_INDEX]
    positions, ignored = _canonical_positions(path, names)
    columns = {column: _as_text(path, names[position], schema[names[position]]) for column, position in positions.items()}
    typed = [
        pl.col(names[positions[column]]).dt.convert_time_zone("UTC").cast(INSTANT).alias(_TYPED[column])
        for column in _TYPED
        if column in positions and isinstance(dtype := schema[names[positions[column]]], pl.Datetime) and dtype.time_zone is not None
    ]
    frame = _raw_frame(scan, path, columns, row=pl.col(_ROW_INDEX), problem=pl.lit(None), typed=typed)
    return RawInput(str(path), "Parquet", frame, notes=_ignored_note(path, ignored))


def _as_text(path: Path, name: str, dtype: pl.DataType) -> pl.Expr:
    """A Parquet column as the text a CSV would hold; zone-less datetimes stay zone-less (quarantined)."""
    column = pl.col(name)
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone is None:
            return column.dt.strftime("%Y-%m-%dT%H:%M:%S%.f")
        return column.dt.convert_time_zone("UTC").dt.strftime(CSV_DATETIME_FORMAT)
    if isinstance(dtype, pl.Date):
        return column.dt.strftime("%Y-%m-%d")
    if dtype.is_nested() or isinstance(dtype, pl.Binary | pl.Object):
        raise InputError(f"column '{name}' holds {dtype}, not text", path=str(path), fix="Store canonical columns as text or numbers")
    return column.cast(pl.String)


def read_json(path: Path, *, send_log: pl.DataFrame | None = None, templates: pl.DataFrame | None = None, fold: bool = True) -> RawInput:
    """Webhook payloads (to `analytics.read.webhooks`) or canonical records, by the file's first value."""
    text = read_text(path)
    if not text.strip():
        return _empty_input(path, "JSON")
    document, first = _first_json_value(path, text)
    if webhooks.looks_like_webhook(first):
        collected = webhooks.collect_webhooks(path)
        notes = tuple(
            f"{path}: skipped {plural(count, 'webhook change')} of field '{name}' (not message traffic)"
            for name, count in sorted(collected.skipped.items())
        )
        unfolded = RawInput(str(path), "webhook JSON", pl.LazyFrame(schema=RAW_SCHEMA), notes=notes, webhook=collected)
        return fold_webhooks([unfolded], send_log=send_log, templates=templates)[0] if fold else unfolded
    records = _array_records(path, document) if document is not None else _line_records(text)
    return _json_records_input(path, records)


def _first_json_value(path: Path, text: str) -> tuple[Any, Any]:
    """(the whole document, or None for one value a line; the file's first value, None if unreadable).

    `.jsonl`/`.ndjson` are always one value a line; a `.json` file is one document, or one value a
    line when that is what it holds.
    """
    first_line = next(line for line in text.splitlines() if line.strip())
    if _suffix(path) == ".json":
        try:
            document = json.loads(text)
        except json.JSONDecodeError as error:
            if loads_or_none(first_line) is None:
                raise InputError(
                    not_valid_json(error),
                    path=str(path),
                    fix="Give a JSON array of objects, or one JSON object a line (JSONL)",
                ) from None
        else:
            return document, (document[0] if isinstance(document, list) and document else document)
    return None, loads_or_none(first_line)  # a broken first line is quarantined with the others


_Record = tuple[int, dict[str, Any] | None, str | None]  # (source_row, record, problem)


def _array_records(path: Path, document: Any) -> Iterator[_Record]:
    if isinstance(document, dict):
        document = [document]
    if not isinstance(document, list):
        raise InputError("expected a JSON array of objects, or one object a line (JSONL)", path=str(path))
    for position, item in enumerate(document, start=1):
        yield (position, item, None) if isinstance(item, dict) else (position, None, "array item is not a JSON object")


def _line_records(text: str) -> Iterator[_Record]:
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            yield line_number, None, f"line is not valid JSON ({error.msg} at column {error.colno})"
            continue
        yield (line_number, value, None) if isinstance(value, dict) else (line_number, None, "line is not a JSON object")


def _json_records_input(path: Path, records: Iterable[_Record]) -> RawInput:
    """Canonical records as a raw frame; a required key no record has is a missing column."""
    rows, keys = [], Counter[str]()
    for source_row, record, problem in records:
        row = dict.fromkeys(MESSAGE_COLUMNS) | {"source_row": source_row, "problem": problem}
        for key, value in (record or {}).items():
            column = _column_name(str(key))
            keys[key if column not in MESSAGE_SCHEMA else column] += 1
            if column in MESSAGE_SCHEMA:
                row[column], value_problem = _json_text_value(column, value)
                row["problem"] = row["problem"] or value_problem
        rows.append(row)
    ignored: tuple[str, ...] = ()
    if keys:  # records with keys must have the required ones; only broken lines are quarantined as such
        _, ignored = _canonical_positions(path, list(keys))
    frame = pl.DataFrame(rows, schema={c: RAW_SCHEMA[c] for c in (*MESSAGE_COLUMNS, "source_row", "problem")})
    frame = frame.with_columns(source_file=pl.lit(str(path))).select(list(RAW_SCHEMA))
    notes = _ignored_note(path, ignored) + (() if rows else (f"{path}: no records",))
    return RawInput(str(path), "JSON records", frame.lazy(), notes=notes)


def _json_text_value(column: str, value: Any) -> tuple[str | None, str | None]:
    """A JSON value as the text a CSV would hold, or a problem for lists and objects."""
    if value is None:
        return None, None
    if isinstance(value, dict | list):
        return None, f"{column} is a JSON {'object' if isinstance(value, dict) else 'list'}, expected text or a number"
    if isinstance(value, bool):
        return ("true" if value else "false"), None
    return str(value), None


def conform_raw(frame: pl.LazyFrame) -> pl.LazyFrame:
    """Exactly RAW_SCHEMA, in order, then the `_TYPED` instants; absent message columns, `problem`
    and instants are null."""
    names = frame.collect_schema().names()
    return frame.select(
        *[(pl.col(c) if c in names else pl.lit(None)).cast(t).alias(c) for c, t in RAW_SCHEMA.items()],
        *[(pl.col(c) if c in names else pl.lit(None)).cast(INSTANT).alias(c) for c in _TYPED.values()],
    )


# --- 2. Validate ---------------------------------------------------------------------------------


def validate(
    raw: pl.LazyFrame,
    *,
    timezone: str = "UTC",
    waba_timezones: Mapping[str, str] | None = None,
    latest: dt.datetime | None = None,
) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """(messages in exactly MESSAGE_SCHEMA, quarantine) from raw canonical rows (docstring, step 2).

    The quarantine has `source_file`, `source_row`, `reason` and the raw values as read.
    """
    labelled = label(raw, timezone=timezone, waba_timezones=waba_timezones, latest=latest)
    return messages_of(labelled), quarantine_of(labelled)


def label(
    raw: pl.LazyFrame, *, timezone: str = "UTC", waba_timezones: Mapping[str, str] | None = None, latest: dt.datetime | None = None
) -> pl.LazyFrame:
    """Every raw row with its canonical values, its outcome (used, duplicate, quarantined, blank) and reason.

    `latest`: the latest plausible timestamp (default `default_latest()`, now plus a day). Scans
    `raw` once now to find repeated message_ids (`repeated_messages`); the rest stays lazy.
    """
    latest = default_latest() if latest is None else latest
    trimmed = (
        conform_raw(raw)
        .with_row_index(_POSITION)
        .with_columns(pl.struct(MESSAGE_COLUMNS).alias(_RAW))
        .with_columns(_trimmed(c) for c in MESSAGE_COLUMNS)
        .with_columns(
            _untyped("timestamp").str.extract_groups(_ISO).alias(_ISO_PARTS),
            _untyped("fep_expires_at").str.extract_groups(_ISO).alias(_FEP_ISO_PARTS),
        )
    )
    checked = trimmed.with_columns(
        pl.coalesce(_TYPED["timestamp"], _iso_instant(pl.col(_ISO_PARTS)), _unix_instant(_untyped("timestamp"))).alias(_INSTANT),
        _has_no_zone(pl.col(_ISO_PARTS)).alias(_NO_ZONE),
        pl.coalesce(_TYPED["fep_expires_at"], _iso_instant(pl.col(_FEP_ISO_PARTS)), _unix_instant(_untyped("fep_expires_at"))).alias(_FEP_INSTANT),
        *[pl.col(c).str.to_lowercase() for c in ("direction", "message_type", "template_category", "status", "entry_point", "sent_by")],
        pl.col("user_country").str.to_uppercase(),
        _whole_number(pl.col("tokens")).alias(_TOKENS),
        pl.all_horizontal(pl.col(MESSAGE_COLUMNS).is_null() & pl.col("problem").is_null()).alias(_BLANK),
    ).with_columns(
        pl.coalesce(
            _row_reason(
                _first_supported_instants(timezone, waba_timezones or {}), _first_supported_instants(timezone, waba_timezones or {}, groups=True)
            ),
            _implausible_time(latest),
        ).alias(_REASON)
    )
    checked = checked.with_columns(_canonical_values()).drop(_ISO_PARTS, _FEP_ISO_PARTS, _FEP_INSTANT, _TOKENS, *_TYPED.values())
    checked = checked.with_columns(_duplicate_key())
    repeats = repeated_messages(checked) if _any_repeated_id(raw) else pl.DataFrame(schema=_REPEATS_SCHEMA)
    return _resolve_duplicates(checked, repeats)


def _any_repeated_id(raw: pl.LazyFrame) -> bool:
    """Whether any message_id (trimmed) occurs twice among all rows, usable or not: one pass over that
    column alone, so that inputs without repeats (most exports, every file `ingest` wrote) skip
    `repeated_messages`, which checks every row to find them among the usable ones."""
    ids = conform_raw(raw).select(_trimmed("message_id")).drop_nulls()
    return bool(ids.select(pl.col("message_id").is_duplicated().any()).collect(engine="streaming").item())


def _untyped(column: str) -> pl.Expr:
    """The text of a timestamp column where the file gave no instant with a zone (`_TYPED`), else null:
    the text parsers only see what they must."""
    return pl.when(pl.col(_TYPED[column]).is_null()).then(pl.col(column))


def _trimmed(column: str) -> pl.Expr:
    value = pl.col(column).str.strip_chars()
    return pl.when(value != "").then(value).alias(column)


# ISO 8601 date, hour and minute, optional seconds and fraction, optional zone (Z, +hh, +hhmm, +hh:mm).
_ISO = (
    r"^(?<date>\d{4}-\d{2}-\d{2})[Tt ](?<hour>\d{2}):(?<minute>\d{2})(?::(?<second>\d{2}))?(?:[.,](?<fraction>\d+))?"
    r"\s*(?:(?<utc>[Zz])|(?<sign>[+-])(?<offset_hours>\d{2})(?::?(?<offset_minutes>\d{2}))?)?$"
)
_UNIX = r"^(?<seconds>[+-]?\d{1,11})(?:\.(?<fraction>\d*))?$"  # 11 digits reach year 5138; more is a mistake (milliseconds?)


def _iso_instant(parts: pl.Expr) -> pl.Expr:
    """The UTC instant of ISO 8601 parts (from `_ISO`) that have a zone; null if there is none or a part is out of range."""

    def number(name: str, *, default: int = 0) -> pl.Expr:
        return parts.struct[name].cast(pl.Int64, strict=False).fill_null(default)

    hour, minute, second = number("hour"), number("minute"), number("second")
    offset_hours, offset_minutes = number("offset_hours"), number("offset_minutes")
    sign = pl.when(parts.struct["sign"] == "-").then(-1).otherwise(1)
    local = parts.struct["date"].str.to_date("%Y-%m-%d", strict=False).cast(pl.Datetime("us")) + pl.duration(
        hours=hour, minutes=minute, seconds=second, microseconds=_micros(parts.struct["fraction"])
    )
    utc = local - pl.duration(minutes=sign * (offset_hours * 60 + offset_minutes))
    in_range = (hour <= 23) & (minute <= 59) & (second <= 59) & (offset_hours <= 23) & (offset_minutes <= 59)
    has_zone = parts.struct["utc"].is_not_null() | parts.struct["sign"].is_not_null()
    return pl.when(in_range & has_zone).then(utc).dt.replace_time_zone("UTC")


def _unix_instant(text: pl.Expr) -> pl.Expr:
    """The UTC instant of Unix seconds, integer or decimal; null for anything else."""
    parts = text.str.extract_groups(_UNIX)
    seconds = parts.struct["seconds"].cast(pl.Int64, strict=False)
    sign = pl.when(parts.struct["seconds"].str.starts_with("-")).then(-1).otherwise(1)
    total = seconds * 1_000_000 + sign * _micros(parts.struct["fraction"])
    return pl.from_epoch(total, time_unit="us").dt.replace_time_zone("UTC")


def _whole_number(text: pl.Expr) -> pl.Expr:
    """A whole number >= 0 written as digits (a trailing `.0`, as a float column writes it, is allowed); null otherwise."""
    digits = text.str.extract(r"^\+?(\d+)(?:\.0*)?$", 1)
    return digits.cast(pl.Int64, strict=False)


def _micros(fraction: pl.Expr) -> pl.Expr:
    """Decimal fraction digits as microseconds, truncated: "5" -> 500000, "123456789" -> 123456."""
    return (fraction.fill_null("") + "000000").str.slice(0, 6).cast(pl.Int64, strict=False)


def _has_no_zone(parts: pl.Expr) -> pl.Expr:
    zone = parts.struct["utc"].is_not_null() | parts.struct["sign"].is_not_null()
    return (parts.struct["date"].is_not_null() & ~zone).fill_null(False)


def _first_supported_instants(timezone: str, waba_timezones: Mapping[str, str], *, groups: bool = False) -> pl.Expr:
    """Each row's first supported instant: 00:00 of the first rule set's date in its WABA's time
    zone (`waba_timezones`, else `timezone`), as the engines decide it (billing-rules.md §1). With
    `groups`, of the first rule set that bills group messages."""
    first = pl.lit(_first_supported_instant(timezone, groups=groups))
    waba_id = pl.col("waba_id").fill_null(DEFAULT_WABA)
    for waba, zone in waba_timezones.items():
        first = pl.when(waba_id == waba).then(pl.lit(_first_supported_instant(zone, groups=groups))).otherwise(first)
    return first


def _first_supported_instant(timezone: str, *, groups: bool = False) -> dt.datetime:
    """00:00 of the first supported date (with `groups`, of the first date that bills group messages)
    in the WABA time zone, as a UTC instant (billing-rules.md §1)."""
    date = (first_group_date() or dt.date.max) if groups else first_supported_date()
    if date == dt.date.max:
        return dt.datetime.max.replace(tzinfo=dt.UTC)
    midnight = dt.datetime.combine(date, dt.time(0), tzinfo=zone_info(timezone))
    return midnight.astimezone(dt.UTC)


def default_latest(now: dt.datetime | None = None) -> dt.datetime:
    """The latest timestamp a run accepts unless told otherwise: its start plus `FUTURE_MARGIN`."""
    return (now or dt.datetime.now(dt.UTC)) + FUTURE_MARGIN


def latest_option(text: str) -> dt.datetime:
    """`--latest-timestamp`: an ISO 8601 date (the whole day counts, UTC) or an instant with an offset."""
    value = text.strip()
    try:
        if len(value) == 10:
            return dt.datetime.combine(dt.date.fromisoformat(value), dt.time.max, tzinfo=dt.UTC)
        instant = dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        instant = None
    if instant is None or instant.tzinfo is None:
        raise UsageError(f"--latest-timestamp {text!r} is not a date or an instant with a time zone: write 2027-12-31 or 2027-12-31T23:00:00Z")
    return instant.astimezone(dt.UTC)


def after_latest(latest: dt.datetime) -> str:
    return (
        f"timestamp after {latest.astimezone(dt.UTC):%Y-%m-%dT%H:%M:%SZ}, the latest this run accepts "
        "(a mistake such as milliseconds or a wrong year? --latest-timestamp accepts later ones; default: the run's start plus one day)"
    )


def _implausible_time(latest: dt.datetime) -> pl.Expr:
    """`after_latest` for a row whose timestamp is later than `latest` (docstring, step 2, 12)."""
    return pl.when(pl.col(_INSTANT) > latest).then(pl.lit(after_latest(latest)))


def zone_info(timezone: str) -> ZoneInfo:
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise UsageError(f"unknown time zone {timezone!r}: use an IANA name such as 'Europe/Rome' or 'UTC'") from None


def _row_reason(first_instant: pl.Expr, first_group_instant: pl.Expr) -> pl.Expr:
    """The first reason (docstring, step 2, 1–11) a row cannot be used, or null."""
    missing = pl.concat_str([pl.when(pl.col(c).is_null()).then(pl.lit(c)) for c in REQUIRED_MESSAGE_COLUMNS], separator=", ", ignore_nulls=True)
    template = pl.col("message_type") == TEMPLATE
    category = pl.col("template_category")
    entry_point = pl.col("entry_point")
    country = pl.col("user_country")
    group = pl.col("group_id").is_not_null()
    return (
        pl.when(pl.col("problem").is_not_null())
        .then(pl.col("problem"))
        .when(missing != "")
        .then(pl.lit(MISSING_VALUE) + missing)
        .when(pl.col(_NO_ZONE))
        .then(pl.lit(NO_TIME_ZONE))
        .when(pl.col(_INSTANT).is_null())
        .then(pl.lit(BAD_TIMESTAMP))
        .when(pl.col(_INSTANT) < first_instant)
        .then(pl.lit(before_first_supported()))
        .when(~pl.col("direction").is_in(DIRECTIONS))
        .then(pl.lit(UNKNOWN_DIRECTION))
        .when(template & category.is_null())
        .then(pl.lit(TEMPLATE_WITHOUT_CATEGORY))
        .when(template & ~category.is_in(TEMPLATE_CATEGORIES))
        .then(pl.lit(UNKNOWN_CATEGORY))
        .when(pl.col("status").is_not_null() & ~pl.col("status").is_in(STATUSES))
        .then(pl.lit(UNKNOWN_STATUS))
        .when((pl.col("direction") == "inbound") & entry_point.is_not_null() & ~entry_point.is_in(ENTRY_POINTS))
        .then(pl.lit(UNKNOWN_ENTRY_POINT))
        .when(pl.col("fep_expires_at").is_not_null() & pl.col(_FEP_INSTANT).is_null())
        .then(pl.lit(BAD_FEP_EXPIRY))
        .when(country.is_not_null() & ~country.is_in(sorted(markets.iso_countries())))
        .then(pl.lit(UNKNOWN_COUNTRY))
        .when(pl.col("sent_by").is_not_null() & ~pl.col("sent_by").is_in(SENDERS))
        .then(pl.lit(UNKNOWN_SENDER))
        .when(pl.col("tokens").is_not_null() & pl.col(_TOKENS).is_null())
        .then(pl.lit(BAD_TOKENS))
        .when(group & template & (category == "authentication"))
        .then(pl.lit(GROUP_AUTHENTICATION))
        .when(group & entry_point.is_not_null())
        .then(pl.lit(GROUP_ENTRY_POINT))
        .when(group & (pl.col("sent_by") == META_BUSINESS_AGENT))
        .then(pl.lit(GROUP_BUSINESS_AGENT))
        .when(group & (pl.col(_INSTANT) < first_group_instant))
        .then(pl.lit(group_before_pricing()))
    )


def _canonical_values() -> list[pl.Expr]:
    """Canonical form of a checked row; flags what was set to null or rewritten for the notes.

    A phone-like `user_id` becomes its digits (`markets.phone_digits`: E.164 without `+`, as Meta's
    `wa_id`), here and nowhere else, so that `+39 333 000 1106` in a CRM export and `393330001106`
    in a webhook are one user to every key formed later (windows, tiers, duplicates). Where that
    rewrote the id, `_ID_AS_WRITTEN` keeps the number in E.164 for `user_phone` (`messages_of`).
    """
    template = pl.col("message_type") == TEMPLATE
    outbound = pl.col("direction") == "outbound"
    by_agent = (pl.col("sent_by") == META_BUSINESS_AGENT).fill_null(False)
    digits = markets.phone_digits_expr(pl.col("user_id"))
    respelled = (digits != pl.col("user_id")).fill_null(False)
    return [
        pl.col(_INSTANT).alias("timestamp"),
        pl.coalesce(digits, pl.col("user_id")).alias("user_id"),
        respelled.alias(_ID_NORMALISED),
        pl.when(respelled).then(pl.lit("+") + digits).alias(_ID_AS_WRITTEN),
        pl.col("waba_id").fill_null(DEFAULT_WABA),
        pl.when(template).then(pl.col("template_category")).alias("template_category"),
        pl.when(~outbound).then(pl.col("entry_point")).alias("entry_point"),
        pl.when(outbound).then(pl.col(_FEP_INSTANT)).alias("fep_expires_at"),
        (outbound & pl.col("entry_point").is_not_null()).fill_null(False).alias(_ENTRY_POINT_IGNORED),
        (~template & pl.col("template_category").is_not_null()).fill_null(False).alias(_CATEGORY_IGNORED),
        pl.when(by_agent).then(pl.col(_TOKENS)).alias("tokens"),
        (~by_agent & pl.col(_TOKENS).is_not_null()).alias(_TOKENS_IGNORED),
    ]


def _duplicate_key() -> pl.Expr:
    """What makes a row one message (docstring, step 2, 13): its message_id, and for a group row the
    participant as well (one row per delivered participant shares the group message's id)."""
    participant = pl.concat_str(pl.col("message_id"), pl.lit(_KEY_SEPARATOR), pl.col("user_id"))
    return pl.when(pl.col("group_id").is_not_null()).then(participant).otherwise(pl.col("message_id")).alias(_KEY)


_USABLE = pl.col(_REASON).is_null() & ~pl.col(_BLANK)
_REPEATS_SCHEMA = {
    _KEY: pl.String(),
    "_versions": pl.UInt32(),  # distinct canonical values among its usable rows
    "_first": pl.UInt32(),  # _POSITION of the copy kept
    "_copies": pl.UInt32(),
    "_rows": pl.String(),  # the first few file:row, for the reason
}


def repeated_messages(checked: pl.LazyFrame) -> pl.DataFrame:
    """The keys (`_duplicate_key`: message_id, and a group row's participant) that usable rows
    repeat, with how many versions, copies and which rows.

    Collected now (one streaming pass to find the ids, one to fetch their rows, only if there are
    any), so later plans join a small table instead of grouping every row again.
    """
    usable = checked.filter(_USABLE)
    ids = usable.group_by(_KEY).agg(pl.len()).filter(pl.col("len") > 1).select(_KEY)
    ids = ids.collect(engine="streaming")
    if ids.is_empty():
        return pl.DataFrame(schema=_REPEATS_SCHEMA)
    rows = usable.join(ids.lazy(), on=_KEY, how="semi").select(
        _KEY,
        _POSITION,
        pl.format("{}:{}", "source_file", "source_row").alias("_row"),
        pl.struct(MESSAGE_COLUMNS).alias("_values"),
    )
    return (
        rows.collect(engine="streaming")
        .group_by(_KEY)
        .agg(
            _versions=pl.col("_values").n_unique(),
            _first=pl.col(_POSITION).min(),
            _copies=pl.len(),
            _rows=pl.col("_row").sort_by(_POSITION).head(ROWS_NAMED_PER_CONFLICT).str.join(", "),
        )
        .cast(_REPEATS_SCHEMA)  # type: ignore[arg-type]
    )


def _resolve_duplicates(checked: pl.LazyFrame, repeats: pl.DataFrame) -> pl.LazyFrame:
    """Outcome of each row: repeats of a key are one message if equal, all quarantined if not."""
    conflicting = _USABLE & (pl.col("_versions") > 1)
    more = pl.when(pl.col("_copies") > ROWS_NAMED_PER_CONFLICT).then(pl.format(" and {} more", pl.col("_copies") - ROWS_NAMED_PER_CONFLICT))
    conflict_reason = pl.concat_str(
        pl.lit(f"{CONFLICTING_DUPLICATE} "),
        pl.col("message_id"),
        pl.when(pl.col("group_id").is_not_null()).then(pl.lit(" (the same group participant)")).otherwise(pl.lit("")),
        pl.lit(": rows "),
        pl.col("_rows"),
        more.fill_null(""),
        pl.lit(" hold different values; keep one version of the message"),
    )
    later_copy = _USABLE & (pl.col(_POSITION) != pl.col("_first")).fill_null(False)
    return (
        checked.join(repeats.lazy(), on=_KEY, how="left", maintain_order="left")
        .with_columns(
            pl.when(pl.col(_BLANK))
            .then(pl.lit(BLANK))
            .when(~_USABLE | conflicting)
            .then(pl.lit(QUARANTINED))
            .when(later_copy)
            .then(pl.lit(DUPLICATE))
            .otherwise(pl.lit(USED))
            .alias(_OUTCOME),
            pl.when(conflicting).then(pl.lit(CONFLICTING_DUPLICATE)).otherwise(pl.col(_REASON)).alias(_KIND),
            pl.when(conflicting).then(conflict_reason).otherwise(pl.col(_REASON)).alias(_REASON),
        )
        .drop(*_REPEATS_SCHEMA)
    )


def messages_of(labelled: pl.LazyFrame) -> pl.LazyFrame:
    """The used rows, exactly MESSAGE_SCHEMA, in input order; a `user_id` written as a phone number
    other than its digits keeps that number in `user_phone` (E.164), unless one is given."""
    used = labelled.filter(pl.col(_OUTCOME) == USED).with_columns(pl.coalesce("user_phone", _ID_AS_WRITTEN).alias("user_phone"))
    return used.select(pl.col(c).cast(t) for c, t in MESSAGE_SCHEMA.items())


def quarantine_of(labelled: pl.LazyFrame) -> pl.LazyFrame:
    """The quarantined rows: where they came from, why, and their values as read."""
    return labelled.filter(pl.col(_OUTCOME) == QUARANTINED).select(*SOURCE_COLUMNS, pl.col(_REASON).alias("reason"), pl.col(_RAW).struct.unnest())


# --- 3. Read, validate, locate, count ------------------------------------------------------------


@dataclass(frozen=True)
class InputFile:
    path: str
    kind: str
    rows: int


@dataclass(frozen=True)
class UnknownMarkets:
    """Users whose market could not be found, for one reason (`markets.unknown_market_reason`)."""

    reason: str
    users: int
    rows: int
    first: str  # where the first such row is: "file, row n"


@dataclass(frozen=True)
class IngestSummary:
    """What a run read and did with it; rows_read = rows_used + rows_dropped + rows_quarantined.

    A webhook file's rows are its inbound messages and status records: a message's statuses are
    folded into one row (`statuses_folded` are the others), and identical repeats of a status
    (retries) are `duplicates_dropped`, as identical repeats of a message are.
    """

    rows_read: int
    rows_used: int
    duplicates_dropped: int
    quarantined: dict[str, int] = field(default_factory=dict)  # reason -> rows, most frequent first
    unconfirmed_deliveries: int = 0  # used rows with status `sent`: billed as delivered
    unknown_markets: tuple[UnknownMarkets, ...] = ()  # most users first
    notes: tuple[str, ...] = ()
    files: tuple[InputFile, ...] = ()
    statuses_folded: int = 0  # webhook statuses folded into their message's row
    group_messages: int = 0  # used rows with a group_id: one per participant of an outbound group message
    business_agent_messages: int = 0  # used rows sent by Meta Business Agent
    business_agent_without_tokens: int = 0  # ... of which the tokens are not known (pricing estimates them)

    @property
    def rows_quarantined(self) -> int:
        return sum(self.quarantined.values())

    @property
    def rows_dropped(self) -> int:
        return self.duplicates_dropped + self.statuses_folded


@dataclass(frozen=True)
class Ingested:
    """Canonical messages, the quarantine, Meta's webhook billing rows and the run summary.

    `messages` (MESSAGE_SCHEMA, `user_country` filled) and `quarantine` are lazy: collect them, or
    stream them to a file with `write_frame`.
    """

    messages: pl.LazyFrame
    quarantine: pl.LazyFrame
    billing: pl.DataFrame
    summary: IngestSummary
    checked: Mapping[str, Any] = field(default_factory=dict)  # what the rows were checked with: the stage file's marker
    stage_file: str | None = None  # the stage file `messages` is, as it is on disk (read_stage_file)


# What ingest checks on every row (module docstring, step 2), as a stage file's marker names it.
VALIDATED = (
    "required values",
    "timestamps with a time zone",
    "not before the first supported rule set",
    "not after the latest bound",
    "directions",
    "template categories",
    "statuses",
    "entry points",
    "fep_expires_at",
    "user_country",
    "sent_by, tokens, group messages",
    "repeated message_ids, per participant for group rows (identical dropped, conflicting quarantined)",
)


def read_messages(
    paths: Sequence[str | Path],
    *,
    send_log: str | Path | None = None,
    templates: str | Path | None = None,
    timezone: str = "UTC",
    waba_timezones: Mapping[str, str] | None = None,
    pseudonymise_key: bytes | None = None,
    latest: dt.datetime | None = None,
    output: str | Path | None = None,
) -> Ingested:
    """Canonical messages from any number of files of any supported format (module docstring).
    `timezone` and `waba_timezones` (`Settings`'s) decide which rows come before the first
    supported rule set; timestamps after `latest` (default: now plus `FUTURE_MARGIN`) are quarantined.

    `output` (what `ingest` does): the messages are also written there, CSV or Parquet (a stage file,
    `stage_metadata`), in the same pass over the inputs that counts them, and `messages` reads them
    back from it when it is Parquet."""
    if not paths:
        raise UsageError("no input files: give at least one CSV, Parquet or JSON file")
    zone_info(timezone)
    marked = _stage_markers(paths)
    if len(paths) == 1 and marked and send_log is None and templates is None and output is None:
        trusted = read_stage_file(
            paths[0], marked[0], timezone=timezone, waba_timezones=waba_timezones, latest=latest, pseudonymise_key=pseudonymise_key
        )
        if trusted is not None:
            return trusted
    log = webhooks.read_send_log(send_log) if send_log is not None else None
    template_list = webhooks.read_templates(templates) if templates is not None else None
    with progress.stage("Reading", total=len(paths), unit="files") as step:
        raw_inputs = [read_raw(p, send_log=log, templates=template_list, fold=False) for p in step.track(paths)]
        inputs = fold_webhooks(raw_inputs, send_log=log, templates=template_list)
    latest = default_latest() if latest is None else latest
    with ExitStack() as cleanup, _reading(inputs), progress.stage(f"Checking {plural(len(inputs), 'file')}"):
        raw = pl.concat([conform_raw(i.frame) for i in inputs], how="vertical")
        labelled = label(raw, timezone=timezone, waba_timezones=waba_timezones, latest=latest)
        if output is None:
            by_user = _outcome_counts(labelled).collect(engine="streaming")
            messages = _located(labelled, pseudonymise_key)
        else:  # one pass: counted and written to a scratch file, copied to `output` with its marker below
            Path(output).parent.mkdir(parents=True, exist_ok=True)  # as `write_frame` would
            written = cleanup.enter_context(outputs.scratch_folder(folder=Path(output).parent)) / "messages.parquet"
            located = messages_of(labelled)
            located = located.with_columns(user_country=markets.user_country_expr(located.collect_schema().names()))
            if pseudonymise_key is not None:
                located = pseudonymise(located, pseudonymise_key)
            by_user = pl.collect_all([_outcome_counts(labelled), located.sink_parquet(written, compression="lz4", lazy=True)], engine="streaming")[0]
            messages = pl.scan_parquet(written)
        ingested = _ingested(
            inputs,
            labelled,
            by_user,
            messages,
            send_log=send_log,
            templates=templates,
            timezone=timezone,
            waba_timezones=waba_timezones,
            latest=latest,
            pseudonymise_key=pseudonymise_key,
        )
        if output is not None:
            write_frame(messages, output, metadata=stage_metadata(ingested))
            written_back = pl.scan_parquet(output) if output_suffix(output) in PARQUET_SUFFIXES else _located(labelled, pseudonymise_key)
            ingested = replace(ingested, messages=written_back)
    return ingested


def _located(labelled: pl.LazyFrame, pseudonymise_key: bytes | None) -> pl.LazyFrame:
    """The used rows as canonical messages with `user_country` filled, pseudonymised with a key."""
    messages = markets.with_user_country(messages_of(labelled))
    return messages if pseudonymise_key is None else pseudonymise(messages, pseudonymise_key)


def _ingested(
    inputs: Sequence[RawInput],
    labelled: pl.LazyFrame,
    by_user: pl.DataFrame,
    messages: pl.LazyFrame,
    *,
    send_log: object,
    templates: object,
    timezone: str,
    waba_timezones: Mapping[str, str] | None,
    latest: dt.datetime,
    pseudonymise_key: bytes | None,
) -> Ingested:
    """`read_messages`'s result from the counts per user (`_outcome_counts`) and the messages."""
    outcomes = by_user.group_by("source_file", _OUTCOME, _KIND).agg(pl.col(_COUNTED).sum())
    unlocated = _unlocated_users(by_user)
    quarantine = quarantine_of(labelled)
    if pseudonymise_key is not None:
        quarantine = _pseudonymised_quarantine(quarantine, pseudonymise_key)
    notes = _input_notes(inputs, send_log, templates, any(i.kind == "webhook JSON" for i in inputs))
    used = by_user.filter(pl.col(_OUTCOME) == USED)
    checked = {
        "validated": list(VALIDATED),
        "timezone": timezone,
        "waba_timezones": dict(waba_timezones or {}),
        "latest_timestamp_bound": latest.isoformat(),
        "first_timestamp": _iso(used["first_timestamp"].min()),
        "last_timestamp": _iso(used["last_timestamp"].max()),
        "rules_file": stages.content_hash(resource("data", "rules", "rule_sets.toml").read_bytes()),
        "markets_table": stages.content_hash(resource("data", "markets", "regions.csv").read_bytes()),
        "pseudonymised": pseudonymise_key is not None,
    }
    return Ingested(
        messages=messages,
        quarantine=quarantine,
        billing=_billing(inputs),
        summary=replace(summarise(outcomes, inputs, notes), unknown_markets=unknown_markets(unlocated)),
        checked=checked,
    )


def _iso(instant: object) -> str | None:
    return instant.isoformat() if isinstance(instant, dt.datetime) else None


# The counts of IngestSummary a stage file's marker keeps for the run summary of a later command.
STAGE_COUNTS = ("group_messages", "business_agent_messages", "business_agent_without_tokens")


def stage_metadata(ingested: Ingested) -> dict[str, str]:
    """The marker of the canonical messages `ingested` holds (`analytics.core.stages`): what they were
    checked with, their row count and what the run summary of a later command repeats."""
    summary = ingested.summary
    return stages.metadata(
        stages.MESSAGES,
        summary.rows_used,
        **ingested.checked,
        unconfirmed_deliveries=summary.unconfirmed_deliveries,
        unknown_markets=[asdict(u) for u in summary.unknown_markets],
        **{name: getattr(summary, name) for name in STAGE_COUNTS},
    )


def _stage_markers(paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    """The markers of the inputs that carry one, each checked against MESSAGE_SCHEMA (a marked file that
    no longer matches is refused: StageFileError); empty unless every input carries one."""
    markers = [stages.read_marker(p) for p in paths]
    for path, marker in zip(paths, markers, strict=True):
        if marker is not None:
            stages.check(path, marker, stages.MESSAGES, MESSAGE_SCHEMA)
    return [m for m in markers if m is not None] if all(m is not None for m in markers) else []


def read_stage_file(
    path: str | Path,
    marker: Mapping[str, Any],
    *,
    timezone: str = "UTC",
    waba_timezones: Mapping[str, str] | None = None,
    latest: dt.datetime | None = None,
    pseudonymise_key: bytes | None = None,
) -> Ingested | None:
    """The canonical messages of a file `ingest` wrote (checked marker), scanned lazily and not
    validated again; None when this run's bounds are narrower than the rows' (a time zone whose
    first supported instant is later than the first message, a latest bound earlier than the last):
    then the file is validated as any other and the rows outside go to the quarantine."""
    first, last = marker.get("first_timestamp"), marker.get("last_timestamp")
    if first is not None and last is not None:
        zones = {timezone, *(waba_timezones or {}).values()}
        if dt.datetime.fromisoformat(first) < max(_first_supported_instant(zone) for zone in zones):
            return None
        if dt.datetime.fromisoformat(last) > (default_latest() if latest is None else latest):
            return None
    messages = pl.scan_parquet(path)
    if pseudonymise_key is not None:
        messages = pseudonymise(messages, pseudonymise_key)
    rows = int(marker["rows"])
    summary = IngestSummary(
        rows_read=rows,
        rows_used=rows,
        duplicates_dropped=0,
        unconfirmed_deliveries=int(marker.get("unconfirmed_deliveries", 0)),
        unknown_markets=tuple(UnknownMarkets(**u) for u in marker.get("unknown_markets", [])),
        **{name: int(marker.get(name, 0)) for name in STAGE_COUNTS},
        notes=(f"{path}: canonical messages written by wa-analytics ingest, used as they are (validated when written)",),
        files=(InputFile(str(path), "Parquet from wa-analytics ingest", rows),),
    )
    quarantine = pl.LazyFrame(schema={c: RAW_SCHEMA.get(c, pl.String()) for c in QUARANTINE_COLUMNS})
    checked = {k: v for k, v in marker.items() if k not in ("kind", "version", "package_version", "rows")}
    return Ingested(
        messages,
        quarantine,
        pl.DataFrame(schema=webhooks.BILLING_SCHEMA),
        summary,
        checked=checked,
        stage_file=str(path) if pseudonymise_key is None else None,
    )


_USER = ("user_id", "user_phone", "user_country")
_COUNTED = (
    "rows",
    "unconfirmed",
    "entry_points_ignored",
    "categories_ignored",
    "user_ids_normalised",
    "tokens_ignored",
    "group_rows",
    "agent_rows",
    "agent_rows_without_tokens",
)


def _outcome_counts(labelled: pl.LazyFrame) -> pl.LazyFrame:
    """Rows per file, outcome, reason and user (as written): the run summary's counts and the users
    without a market (`_unlocated_users`) in one pass over the input. One row per distinct user
    and file, and where each first appears (the lowest position, and its row in its file)."""
    return labelled.group_by("source_file", _OUTCOME, _KIND, *_USER).agg(
        position=pl.col(_POSITION).min(),
        source_row=pl.col("source_row").min(),
        rows=pl.len(),
        unconfirmed=(pl.col("status") == "sent").sum(),
        entry_points_ignored=pl.col(_ENTRY_POINT_IGNORED).sum(),
        categories_ignored=pl.col(_CATEGORY_IGNORED).sum(),
        user_ids_normalised=pl.col(_ID_NORMALISED).sum(),
        tokens_ignored=pl.col(_TOKENS_IGNORED).sum(),
        group_rows=pl.col("group_id").is_not_null().sum(),
        agent_rows=(pl.col("sent_by") == META_BUSINESS_AGENT).sum(),
        agent_rows_without_tokens=((pl.col("sent_by") == META_BUSINESS_AGENT) & pl.col("tokens").is_null()).sum(),
        first_timestamp=pl.col("timestamp").min(),
        last_timestamp=pl.col("timestamp").max(),
    )


def _unlocated_users(by_user: pl.DataFrame) -> pl.DataFrame:
    """The users of used rows for whom no country is known (market `Unknown`): user_id, one phone,
    rows, and the first row's place, from `_outcome_counts` (each distinct phone parsed once)."""
    spellings = (
        by_user.filter(pl.col(_OUTCOME) == USED)
        .sort("position")
        .group_by(*_USER, maintain_order=True)
        .agg(pl.col("rows").sum(), pl.col("position", "source_file", "source_row").first())
    )
    located = markets.with_user_country(spellings).filter(pl.col("user_country").is_null())
    return located.group_by("user_id", maintain_order=True).agg(
        pl.col("rows").sum(), pl.col("user_phone", "position", "source_file", "source_row").first()
    )


def unknown_markets(unlocated: pl.DataFrame) -> tuple[UnknownMarkets, ...]:
    """`_unlocated_users` counted by reason, most users first."""
    by_reason: dict[str, list] = {}
    for row in unlocated.sort("position").iter_rows(named=True):
        reason = markets.unknown_market_reason(row["user_id"], row["user_phone"])
        users, rows, first = by_reason.get(reason, (0, 0, f"{row['source_file']}, row {row['source_row']}"))
        by_reason[reason] = [users + 1, rows + row["rows"], first]
    counted = [UnknownMarkets(reason, users, rows, first) for reason, (users, rows, first) in by_reason.items()]
    return tuple(sorted(counted, key=lambda u: (-u.users, u.reason)))


_READ_ERRORS = (pl.exceptions.PolarsError, pl.exceptions.PanicException, OSError)


@contextmanager
def _reading(inputs: Sequence[RawInput]) -> Iterator[None]:
    """Turn a file that breaks while being scanned into an InputError that names it."""
    try:
        yield
    except _READ_ERRORS as error:
        for raw_input in inputs:
            try:
                raw_input.frame.collect(engine="streaming")
            except _READ_ERRORS as file_error:
                fault = csv_fault(Path(raw_input.path)) if raw_input.kind == "CSV" else None
                if fault is not None:
                    raise fault from None
                raise InputError(
                    f"cannot be read as {raw_input.kind} ({_first_line(file_error)})",
                    path=raw_input.path,
                    fix="Check that it is complete and saved as UTF-8",
                ) from None
        raise InputError(f"the input cannot be read ({_first_line(error)})") from None


def _first_line(error: BaseException) -> str:
    return library_reason(error)  # never the file's text Polars quotes


def _pseudonymised_quarantine(quarantine: pl.LazyFrame, key: bytes) -> pl.LazyFrame:
    """User ids and phones pseudonymised; `user_country` stays as read (pseudonymise derives its own)."""
    hidden = pseudonymise(quarantine.rename({"user_country": "_given_country"}), key)
    return hidden.drop("user_country").rename({"_given_country": "user_country"}).select(QUARANTINE_COLUMNS)


def _billing(inputs: Sequence[RawInput]) -> pl.DataFrame:
    frames = [i.billing for i in inputs if i.billing is not None]
    return pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame(schema=webhooks.BILLING_SCHEMA)


def _input_notes(inputs: Sequence[RawInput], send_log: object, templates: object, any_webhooks: bool) -> list[str]:
    notes = [note for i in inputs for note in i.notes]
    for option, given in (("--send-log", send_log), ("--templates", templates)):
        if given is not None and not any_webhooks:
            notes.append(f"{option} not used: it fills message types of webhook statuses, and no input is webhook JSON")
    return notes


def summarise(outcomes: pl.DataFrame, inputs: Sequence[RawInput], notes: Sequence[str]) -> IngestSummary:
    """The run summary from the counts per (file, outcome, reason)."""

    def total(frame: pl.DataFrame, column: str = "rows") -> int:
        return int(frame[column].sum()) if frame.height else 0

    counted = outcomes.filter(pl.col(_OUTCOME) != BLANK)
    used = counted.filter(pl.col(_OUTCOME) == USED)
    quarantined = (
        counted.filter(pl.col(_OUTCOME) == QUARANTINED).group_by(_KIND).agg(pl.col("rows").sum()).sort(["rows", _KIND], descending=[True, False])
    )
    blank = outcomes.filter(pl.col(_OUTCOME) == BLANK).group_by("source_file").agg(pl.col("rows").sum()).sort("source_file")
    rows_per_file = Counter(dict(counted.group_by("source_file").agg(pl.col("rows").sum()).iter_rows()))
    for raw_input in inputs:
        rows_per_file[raw_input.path] += raw_input.statuses_retried + raw_input.statuses_folded
    retried = sum(i.statuses_retried for i in inputs)
    folded = sum(i.statuses_folded for i in inputs)
    notes = [
        *notes,
        *[f"{file}: skipped {plural(rows, 'row')} without any value (blank lines)" for file, rows in blank.iter_rows()],
    ]
    if entry_points := total(used, "entry_points_ignored"):
        notes.append(f"entry_point ignored on {plural(entry_points, 'outbound message')}: it only means something inbound")
    if categories := total(used, "categories_ignored"):
        notes.append(f"template_category ignored on {plural(categories, 'non-template message')}")
    if tokens := total(used, "tokens_ignored"):
        notes.append(f"tokens ignored on {plural(tokens, 'message')} not sent by Meta Business Agent: only its replies are charged per token")
    if normalised := total(used, "user_ids_normalised"):
        notes.append(
            f"user_id written as a phone number with +, 00, spaces, dashes, parentheses or a trailing .0 on "
            f"{plural(normalised, 'row')}: read as its digits (Meta's wa_id form), so each user is one customer"
        )
    return IngestSummary(
        rows_read=total(counted) + retried + folded,
        rows_used=total(used),
        duplicates_dropped=total(counted.filter(pl.col(_OUTCOME) == DUPLICATE)) + retried,
        statuses_folded=folded,
        quarantined=dict(quarantined.iter_rows()),
        unconfirmed_deliveries=total(used, "unconfirmed"),
        group_messages=total(used, "group_rows"),
        business_agent_messages=total(used, "agent_rows"),
        business_agent_without_tokens=total(used, "agent_rows_without_tokens"),
        notes=tuple(notes),
        files=tuple(InputFile(i.path, i.kind, int(rows_per_file.get(i.path, 0))) for i in _unique_paths(inputs)),
    )


def _unique_paths(inputs: Sequence[RawInput]) -> list[RawInput]:
    seen: dict[str, RawInput] = {}
    for raw_input in inputs:
        seen.setdefault(raw_input.path, raw_input)
    return list(seen.values())


# --- Write ---------------------------------------------------------------------------------------


def output_suffix(path: str | Path) -> str:
    """The output's extension if it is one `write_frame` writes, else UsageError."""
    suffix = _suffix(Path(path))
    if suffix not in OUTPUT_SUFFIXES:
        raise UsageError(f"cannot write '{path}': give an output ending in {', '.join(OUTPUT_SUFFIXES)}")
    return suffix


def write_frame(frame: pl.DataFrame | pl.LazyFrame, path: str | Path, *, for_people: bool = False, metadata: Mapping[str, str] | None = None) -> None:
    """CSV (`.csv`, `.csv.gz`, timestamps ISO 8601 with offset) or Parquet, by extension; streamed, and
    written atomically (`outputs.atomic`) so a failed or stopped run leaves no half-written output.

    `for_people`: a CSV analysts open in a spreadsheet (quarantine, explanations, invoice,
    reconciliation): text cells that a spreadsheet would run as a formula are neutralised
    (`outputs.neutralise_formulas`). Parquet keeps every value exact. `metadata`: Parquet key-value
    metadata (a stage file's marker, `analytics.core.stages`); a CSV has nowhere to keep it.
    """
    path = Path(path)
    suffix = output_suffix(path)
    with outputs.atomic(path) as partial, progress.stage(f"Writing {path.name}"):
        if suffix in PARQUET_SUFFIXES:
            frame.lazy().sink_parquet(partial, metadata=dict(metadata) if metadata else None)
        else:
            compression = "gzip" if suffix == ".csv.gz" else "uncompressed"
            frame = outputs.neutralise_formulas(frame.lazy()) if for_people else frame.lazy()
            frame.sink_csv(partial, compression=compression, datetime_format=CSV_DATETIME_FORMAT, check_extension=False)


# --- What was read: the traffic at a glance ------------------------------------------------------

NON_TEMPLATE = "non-template"


@dataclass(frozen=True)
class TrafficSummary:
    """Canonical messages at a glance: period, counts, markets, and messages per month and kind."""

    timezone: str
    first: dt.datetime | None
    last: dt.datetime | None
    messages: int
    inbound: int
    outbound: int
    business_phones: int
    wabas: int
    users: int
    markets: tuple[tuple[str, int, int], ...]  # (market, messages, users), most messages first
    by_month: pl.DataFrame  # month, direction, kind (template category or non-template), messages


def describe_traffic(messages: pl.DataFrame | pl.LazyFrame, *, timezone: str = "UTC") -> TrafficSummary:
    """A `TrafficSummary` of canonical messages; months and market dates in `timezone`."""
    zone_info(timezone)
    local = pl.col("timestamp").dt.convert_time_zone(timezone)
    frame = markets.with_market(
        messages.lazy().with_columns(
            month=local.dt.strftime("%Y-%m"),
            local_date=local.dt.date(),
            kind=pl.when(pl.col("message_type") == TEMPLATE).then("template_category").otherwise(pl.lit(NON_TEMPLATE)),
        )
    )
    totals, by_market, by_month = pl.collect_all(
        [
            frame.select(
                first=local.min(),
                last=local.max(),
                messages=pl.len(),
                inbound=(pl.col("direction") == "inbound").sum(),
                business_phones=pl.col("business_phone").n_unique(),
                wabas=pl.col("waba_id").n_unique(),
                users=pl.col("user_id").n_unique(),
            ),
            frame.group_by("market")
            .agg(messages=pl.len(), users=pl.col("user_id").n_unique())
            .sort(["messages", "market"], descending=[True, False]),
            frame.group_by("month", "direction", "kind").agg(messages=pl.len()).sort("month", "direction", "kind"),
        ]
    )
    row = totals.row(0, named=True)
    return TrafficSummary(
        timezone=timezone,
        first=row["first"],
        last=row["last"],
        messages=row["messages"],
        inbound=row["inbound"],
        outbound=row["messages"] - row["inbound"],
        business_phones=row["business_phones"],
        wabas=row["wabas"],
        users=row["users"],
        markets=tuple(by_market.select(pl.col("market").fill_null("Unknown"), "messages", "users").iter_rows()),
        by_month=by_month,
    )
