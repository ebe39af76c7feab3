"""Malformed input never ends in a traceback: a clean InputError, or every row accounted for.

Random rows and files (random text in any column, missing and extra columns, random bytes,
truncated lines, random JSON, broken webhook payloads) go through `ingest.read_messages`; each run
either raises `InputError` or uses, deduplicates or quarantines every row it read, and the run
summary's counts add up (contracts.md §1: bad input never disappears silently): read = used +
dropped + quarantined. Most examples call `ingest.read_messages` in this process; a few run the
installed `wa-analytics ingest` (exit 0 or 2, never a traceback, the summary's counts add up).

`make test` runs a few dozen examples of each; `make test-thorough` sets
WA_ANALYTICS_FUZZ_EXAMPLES for many more.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analytics.core.errors import InputError
from analytics.core.schema import MESSAGE_SCHEMA, REQUIRED_MESSAGE_COLUMNS
from analytics.read import ingest

EXAMPLES = int(os.environ.get("WA_ANALYTICS_FUZZ_EXAMPLES", "25"))
FAST = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Through the installed command, a second or two each: a few, and a tenth of a thorough run.
THROUGH_THE_COMMAND = settings(max_examples=max(4, EXAMPLES // 10), deadline=None, suppress_health_check=[HealthCheck.too_slow])
CONSOLE_SCRIPT = Path(sys.executable).with_name("wa-analytics")

VALID = {
    "message_id": ["wamid.1", "wamid.2", "wamid.3", "wamid.4", "wamid.5", "wamid.6"],
    "timestamp": ["2026-01-05T09:00:00Z", "2026-01-05T10:00:00+01:00", "1767603600", "1767603600.5"],
    "direction": ["inbound", "outbound", "OUTBOUND"],
    "business_phone": ["15550001111", "15550002222"],
    "waba_id": ["waba-1", ""],
    "user_id": [
        "393330000001",
        "+1 202 555 0101",
        "US.123",
        "+39 333 000 0001",
        "0039 333 000 0001",
        "393330000001.0",
        "PE.9771234",
        "@mario",
        "+800 1234 5678",
        "3.9333E+11",
    ],
    "user_phone": ["", "+393330000001"],
    "user_country": ["", "IT", "br", "XX", "UK"],
    "message_type": ["text", "image", "template", "Template"],
    "template_category": ["marketing", "UTILITY", "authentication", "marketing_lite", ""],
    "status": ["delivered", "read", "sent", "failed", "received", ""],
    "entry_point": ["", "ctwa", "page_cta"],
}
PLAUSIBLE_JUNK = [
    "2026-01-05 09:00",
    "2021-12-31T00:00:00Z",
    "2026-02-30T00:00:00Z",
    "99999999999999999999",
    "99999999999",
    "9999-12-31T00:00:00Z",
    "-1.5",
    "T",
    "Z",
    "sideways",
    "promo",
    "pending",
    "banner",
    " ",
    '"',
    ",",
    "\n",
]
ANY_TEXT = st.text(max_size=12)


@st.composite
def value(draw, column: str) -> str:
    """Mostly a valid value, sometimes a near miss, empty, or any text."""
    kind = draw(st.sampled_from(["valid"] * 6 + ["near miss", "empty", "any text"]))
    if kind == "valid":
        return draw(st.sampled_from(VALID.get(column, ["spring", ""])))
    if kind == "near miss":
        return draw(st.sampled_from(PLAUSIBLE_JUNK))
    return "" if kind == "empty" else draw(ANY_TEXT)


@st.composite
def canonical_table(draw) -> tuple[list[str], list[list[str]]]:
    """A header (canonical columns, maybe one required missing, maybe extras) and rows of values."""
    columns = [c for c in MESSAGE_SCHEMA if c in REQUIRED_MESSAGE_COLUMNS or draw(st.booleans())]
    if draw(st.sampled_from([False] * 9 + [True])):
        columns.remove(draw(st.sampled_from(REQUIRED_MESSAGE_COLUMNS)))
    columns += draw(st.lists(st.sampled_from(["extra", "Campaign", "", "source_row"]), max_size=2, unique=True))
    columns = draw(st.permutations(columns))
    rows = draw(st.lists(st.tuples(*[value(c) for c in columns]).map(list), max_size=8))
    return columns, rows


def csv_text(columns: list[str], rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([columns, *rows])
    return buffer.getvalue()


@st.composite
def damaged(draw, data: bytes) -> bytes:
    """`data` truncated, with bytes replaced, with a raw line inserted, or as it was."""
    how = draw(st.sampled_from(["intact", "truncated", "replaced", "inserted"]))
    if how == "truncated" and data:
        return data[: draw(st.integers(0, len(data) - 1))]
    if how == "replaced" and data:
        at = draw(st.integers(0, len(data) - 1))
        return data[:at] + draw(st.binary(min_size=1, max_size=4)) + data[at + 1 :]
    if how == "inserted":
        lines = data.split(b"\n")
        at = draw(st.integers(0, len(lines)))
        return b"\n".join([*lines[:at], draw(st.binary(max_size=20)).replace(b"\n", b","), *lines[at:]])
    return data


def write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    return path


def assert_read_cleanly(*paths: Path) -> ingest.IngestSummary | None:
    """InputError, or every row read is used, deduplicated or quarantined, and the counts agree."""
    try:
        ingested = ingest.read_messages(list(paths))
    except InputError:
        return None
    summary = ingested.summary
    messages, quarantine = ingested.messages.collect(), ingested.quarantine.collect()
    assert summary.rows_read == summary.rows_used + summary.rows_dropped + summary.rows_quarantined
    assert summary.rows_read == sum(f.rows for f in summary.files)
    assert min(summary.rows_read, summary.rows_used, summary.duplicates_dropped, summary.statuses_folded) >= 0
    assert sum(u.rows for u in summary.unknown_markets) <= summary.rows_used
    assert messages.height == summary.rows_used
    assert quarantine.height == summary.rows_quarantined
    assert messages.schema == pl.Schema(MESSAGE_SCHEMA)
    assert messages["message_id"].is_unique().all()
    assert messages.select(pl.col(REQUIRED_MESSAGE_COLUMNS).null_count().sum()).row(0) == (0,) * len(REQUIRED_MESSAGE_COLUMNS)
    assert quarantine["reason"].null_count() == 0
    return summary


@FAST
@given(table=canonical_table(), gz=st.booleans())
def test_well_formed_csv_rows_are_all_accounted_for(table, gz):
    columns, rows = table
    with tempfile.TemporaryDirectory() as folder:
        path = write(Path(folder), "input.csv.gz" if gz else "input.csv", csv_text(columns, rows).encode())
        summary = assert_read_cleanly(path)
    if summary is not None:
        canonical = [i for i, c in enumerate(columns) if c.strip().lower() in MESSAGE_SCHEMA]
        non_blank = [r for r in rows if any(r[i].strip() for i in canonical)]
        assert summary.rows_read == len(non_blank)


@FAST
@given(data=st.data(), table=canonical_table())
def test_damaged_csv_never_crashes(data, table):
    raw = data.draw(damaged(csv_text(*table).encode()))
    with tempfile.TemporaryDirectory() as folder:
        assert_read_cleanly(write(Path(folder), "input.csv", raw))


@FAST
@given(
    raw=st.binary(max_size=200),
    name=st.sampled_from(["input.csv", "input.csv.gz", "input.parquet", "input.json", "input.jsonl"]),
)
def test_random_bytes_never_crash(raw, name):
    with tempfile.TemporaryDirectory() as folder:
        assert_read_cleanly(write(Path(folder), name, raw))


JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), ANY_TEXT)
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(ANY_TEXT, inner, max_size=3), max_leaves=8)


@st.composite
def json_record(draw) -> dict:
    columns = [c for c in MESSAGE_SCHEMA if draw(st.sampled_from([True] * 5 + [False]))]
    record = {c: draw(st.one_of(value(c), value(c), value(c), JSON_VALUES)) for c in columns}
    return record | draw(st.dictionaries(ANY_TEXT, JSON_VALUES, max_size=2))


@st.composite
def webhook_payload(draw) -> dict:
    """A webhook envelope around random or plausible messages and statuses."""
    item = st.dictionaries(
        st.sampled_from(["id", "from", "timestamp", "type", "status", "recipient_id", "pricing", "referral"]),
        st.one_of(value("message_id"), value("timestamp"), JSON_VALUES),
        max_size=6,
    )
    change_value = st.fixed_dictionaries(
        {"metadata": st.one_of(JSON_VALUES, st.just({"phone_number_id": "1555"}))},
        optional={key: st.one_of(st.lists(item, max_size=3), JSON_VALUES) for key in ("messages", "statuses")},
    )
    change = st.fixed_dictionaries({"field": st.sampled_from(["messages", "account_update", "x"]), "value": change_value})
    changes = st.one_of(st.lists(change, max_size=2), JSON_VALUES)
    entries = st.lists(st.fixed_dictionaries({"id": ANY_TEXT, "changes": changes}), max_size=2)
    return {"object": "whatsapp_business_account", "entry": draw(entries)}


@FAST
@given(
    data=st.data(),
    values=st.lists(st.one_of(json_record(), webhook_payload(), JSON_VALUES), max_size=6),
    name=st.sampled_from(["input.jsonl", "input.json"]),
    as_array=st.booleans(),
)
def test_random_json_never_crashes(data, values, name, as_array):
    text = json.dumps(values) if as_array else "\n".join(json.dumps(v) for v in values)
    raw = data.draw(damaged(text.encode()))
    with tempfile.TemporaryDirectory() as folder:
        assert_read_cleanly(write(Path(folder), name, raw))


@FAST
@given(data=st.data(), first=canonical_table())
def test_duplicates_across_files_are_accounted_for(data, first):
    columns, rows = first
    repeated = data.draw(st.lists(st.sampled_from(rows), max_size=4)) if rows else []
    again = data.draw(st.lists(st.tuples(*[value(c) for c in columns]).map(list), max_size=4))
    second = (columns, data.draw(st.permutations([*repeated, *again])))
    with tempfile.TemporaryDirectory() as folder:
        paths = [write(Path(folder), f"day{i}.csv", csv_text(*table).encode()) for i, table in enumerate((first, second))]
        assert_read_cleanly(*paths)


@st.composite
def status_lines(draw) -> list[dict]:
    """Status webhooks of a few messages: every status, retries (the same payload again) and
    overlapping files are what folding and the counts must survive."""
    statuses = []
    for _ in range(draw(st.integers(0, 8))):
        status = {
            "id": draw(st.sampled_from(["wamid.A", "wamid.B", "wamid.C"])),
            "status": draw(st.sampled_from(["sent", "delivered", "read", "failed", "played", "deleted", "x"])),
            "timestamp": draw(st.sampled_from(["1767603600", "1767603660", "99999999999", "soon"])),
            "recipient_id": draw(st.sampled_from(["393330000001", "+393330000001", "PE.977", ""])),
        }
        if draw(st.booleans()):
            status["pricing"] = {"pricing_model": "PMP", "category": draw(st.sampled_from(["utility", "marketing", "service"]))}
        statuses.append(status)
    payloads = [
        {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": "WABA1",
                    "changes": [
                        {
                            "field": "messages",
                            "value": {
                                "metadata": {"phone_number_id": "1555"},
                                "statuses": [status],
                            },
                        }
                    ],
                }
            ],
        }
        for status in statuses
    ]
    retries = draw(st.lists(st.sampled_from(payloads), max_size=4)) if payloads else []
    return draw(st.permutations([*payloads, *retries]))


@FAST
@given(lines=status_lines(), split=st.integers(0, 12), twice=st.booleans())
def test_webhook_statuses_retries_and_overlapping_files_are_accounted_for(lines, split, twice):
    with tempfile.TemporaryDirectory() as folder:
        first = write(Path(folder), "day1.jsonl", "".join(json.dumps(p) + "\n" for p in lines[:split]).encode())
        second = write(Path(folder), "day2.jsonl", "".join(json.dumps(p) + "\n" for p in lines[split:]).encode())
        summary = assert_read_cleanly(first, second, *([first] if twice else []))
    assert summary is not None
    # Every status record is a row read (day1's twice when it is given twice); each message is one row.
    assert summary.rows_read == len(lines) + (len(lines[:split]) if twice else 0)
    wamids = {p["entry"][0]["changes"][0]["value"]["statuses"][0]["id"] for p in lines}
    assert summary.rows_used + summary.rows_quarantined == len(wamids)


# --- through the installed command ----------------------------------------------------------------


def summary_counts(stderr: str) -> dict[str, int]:
    counts = {"dropped": 0, "quarantined": 0}
    for line in stderr.splitlines():
        words = line.replace(",", "").split()
        if len(words) > 1 and words[0] in ("Read", "Used", "Dropped", "Quarantined") and words[1].isdigit():
            counts[words[0].lower()] = int(words[1])
    return counts


@st.composite
def any_input(draw) -> tuple[str, bytes]:
    """(file name, bytes): random bytes, a random canonical table, random JSON or webhook statuses."""
    kind = draw(st.sampled_from(["bytes", "csv", "json", "webhooks"]))
    if kind == "bytes":
        return draw(st.sampled_from(["in.csv", "in.csv.gz", "in.parquet", "in.json", "in.jsonl"])), draw(st.binary(max_size=200))
    if kind == "csv":
        return "in.csv", draw(damaged(csv_text(*draw(canonical_table())).encode()))
    if kind == "json":
        values = draw(st.lists(st.one_of(json_record(), webhook_payload(), JSON_VALUES), max_size=6))
        return "in.jsonl", "\n".join(json.dumps(v) for v in values).encode()
    return "in.jsonl", "".join(json.dumps(p) + "\n" for p in draw(status_lines())).encode()


@THROUGH_THE_COMMAND
@given(given_input=any_input())
def test_the_command_exits_0_or_2_and_its_counts_add_up(given_input):
    name, data = given_input
    with tempfile.TemporaryDirectory() as folder:
        path = write(Path(folder), name, data)
        out, quarantine = Path(folder) / "out.csv", Path(folder) / "quarantine.csv"
        result = subprocess.run(
            [str(CONSOLE_SCRIPT), "ingest", str(path), "-o", str(out), "--quarantine", str(quarantine)],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
            check=False,
            timeout=300,
        )
        assert "Traceback" not in result.stderr and "internal error" not in result.stderr
        assert result.returncode in (0, 2), result.stderr
        if result.returncode == 2:
            assert result.stderr.startswith("wa-analytics: error: ") and len(result.stderr.strip().splitlines()) == 1
            assert not out.exists()
            return
        counts = summary_counts(result.stderr)
        assert counts["read"] == counts["used"] + counts["dropped"] + counts["quarantined"], result.stderr
        assert pl.read_csv(out, infer_schema=False).height == counts["used"]
        assert pl.read_csv(quarantine, infer_schema=False).height == counts["quarantined"]
