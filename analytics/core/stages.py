"""Stage files: Parquet that `wa-analytics` wrote and says so, so the next command need not check it again.

`ingest -o x.parquet` writes canonical messages (contracts.md §1) and `charges -o x.parquet` the
charges table (§2); both carry one Parquet key-value metadata entry, `MARKER_KEY`, whose value is
JSON: the kind of table (`MESSAGES` or `CHARGES`), `STAGE_VERSION`, the package version, the row
count, and what the rows were checked or billed with (module `analytics.read.ingest`, the cli's
`charges`). The columns stay exactly those of the contract: the marker is an addition in the
file's metadata, which every Parquet reader ignores.

The trust rule: a file whose marker is there, of the kind expected, of this `STAGE_VERSION`, with
exactly the schema's column names and types in order and the row count it says, is used as it is
(`check`). A marker that is there but does not match is refused (`StageFileError`, exit 2): the
file was changed after it was written, or by another version; writing it again is the fix. A file
without a marker is an ordinary input, validated as any other.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from analytics import __version__
from analytics.core.errors import InputError

MARKER_KEY = "wa-analytics"
# Bump when the canonical schema, what ingest checks, or what a charges marker's settings mean changes:
# files of another version are refused, and the message says to write them again.
STAGE_VERSION = 2  # 2: ingest checks sent_by, tokens and group rows (issue 17)
MESSAGES, CHARGES = "messages", "charges"
_WRITTEN_BY = {MESSAGES: "wa-analytics ingest", CHARGES: "wa-analytics charges"}


class StageFileError(InputError):
    """A file marked as written by wa-analytics that no longer matches its marker: exit status 2."""


def metadata(kind: str, rows: int, **fields: Any) -> dict[str, str]:
    """The Parquet key-value metadata of a stage file of `kind` with `rows` rows (`write_frame(metadata=...)`)."""
    marker = {"kind": kind, "version": STAGE_VERSION, "package_version": __version__, "rows": rows, **fields}
    return {MARKER_KEY: json.dumps(marker, sort_keys=True, default=str)}


def read_marker(path: str | Path) -> dict[str, Any] | None:
    """The marker of a Parquet file, or None: not Parquet, not a file, unreadable, or no marker."""
    path = Path(path)
    if path.suffix.lower() != ".parquet" or not path.is_file():
        return None
    try:
        text = pl.read_parquet_metadata(path).get(MARKER_KEY)
    except (OSError, pl.exceptions.PolarsError):
        return None  # not Parquet after all: the reader that follows says so
    if text is None:
        return None
    try:
        marker = json.loads(text)
    except ValueError:
        marker = None
    if not isinstance(marker, dict) or marker.get("kind") not in _WRITTEN_BY:
        raise StageFileError(f"its {MARKER_KEY} marker cannot be read", path=str(path), fix=_fix(MESSAGES))
    return marker


def check(path: str | Path, marker: Mapping[str, Any], kind: str, schema: Mapping[str, pl.DataType]) -> None:
    """Refuse (StageFileError) a marked file that is not what its marker says: another kind, another
    STAGE_VERSION, columns or types other than `schema`'s, or another row count."""
    path = str(path)
    if marker["kind"] != kind:
        what = "canonical messages" if kind == MESSAGES else "charges"
        raise StageFileError(
            f"is a {marker['kind']} file written by {_WRITTEN_BY[marker['kind']]}, not {what}",
            path=path,
            fix=f"Give {'the messages `wa-analytics ingest` wrote' if kind == MESSAGES else 'a charges file'} instead",
        )
    if marker.get("version") != STAGE_VERSION:
        raise StageFileError(
            f"was written by wa-analytics {marker.get('package_version', '?')} in stage file version "
            f"{marker.get('version')!r}, this is version {STAGE_VERSION}",
            path=path,
            fix=f"Run `{_WRITTEN_BY[kind]}` again with this version to write it anew",
        )
    found = pl.scan_parquet(path).collect_schema()
    if list(found.items()) != list(schema.items()):
        raise StageFileError(f"no longer has the columns its marker promises ({_schema_difference(found, schema)})", path=path, fix=_fix(kind))
    rows = pl.scan_parquet(path).select(pl.len()).collect().item()  # from the footer, not the data
    if rows != marker.get("rows"):
        raise StageFileError(f"holds {rows:,} rows, its marker says {marker.get('rows')}", path=path, fix=_fix(kind))


def _fix(kind: str) -> str:
    return f"It was changed after {_WRITTEN_BY[kind]} wrote it: run `{_WRITTEN_BY[kind]}` again to write it anew"


def _schema_difference(found: Mapping[str, pl.DataType], expected: Mapping[str, pl.DataType]) -> str:
    missing = [c for c in expected if c not in found]
    extra = [c for c in found if c not in expected]
    retyped = [f"{c} is {found[c]}, not {t}" for c, t in expected.items() if c in found and found[c] != t]
    parts = [f"missing {', '.join(missing)}"] if missing else []
    parts += [f"unexpected {', '.join(extra)}"] if extra else []
    parts += retyped
    return "; ".join(parts) or "columns in another order"


def content_hash(data: bytes | str) -> str:
    """A short hash of reference data (rules, market table) for the marker: which version checked or billed the rows."""
    raw = data.encode() if isinstance(data, str) else data
    return "sha256:" + hashlib.sha256(raw).hexdigest()[:16]


def settings_of(config: Any, names: Sequence[str] | None = None) -> dict[str, Any]:
    """A billing configuration (a dataclass) as a charges marker keeps it: its fields `names` (default:
    every field) as JSON, the rules themselves as a content hash of what was read (not where from)."""
    settings: dict[str, Any] = {}
    for item in dataclasses.fields(config):
        if names is not None and item.name not in names:
            continue
        value = getattr(config, item.name)
        if item.name == "rule_book":
            value = content_hash(repr(dataclasses.replace(value, source="")) if hasattr(value, "source") else repr(value))
        elif dataclasses.is_dataclass(value):
            value = dataclasses.asdict(value)  # type: ignore[arg-type]
        settings[item.name] = json.loads(json.dumps(value, sort_keys=True, default=str))
    return settings


def differing_settings(marker: Mapping[str, Any], config: Any, names: Sequence[str] | None = None) -> list[str]:
    """The settings of `config` (its fields `names`) that differ from those a charges file was billed with, by name."""
    billed_with, given = marker.get("settings", {}), settings_of(config, names)
    return [name for name in sorted(set(billed_with) | set(given)) if billed_with.get(name) != given.get(name)]
