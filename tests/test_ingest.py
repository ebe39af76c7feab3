"""Readers, validation and quarantine (contracts.md §1; analytics/read/ingest.py docstring, step 2)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from analytics.core.errors import InputError, UsageError
from analytics.core.schema import MESSAGE_SCHEMA
from analytics.present.summaries import format_ingest_summary
from analytics.read import ingest

FIXTURES = Path(__file__).parent / "fixtures" / "ingest"
HEADER = "message_id,timestamp,direction,business_phone,waba_id,user_id,message_type,template_category,status,entry_point"
GOOD_ROW = "wamid.G1,2026-01-05T09:00:00Z,inbound,15550001111,waba-1,393330000001,text,,received,"
UTC = dt.UTC


def write_csv(folder: Path, *rows: str, name: str = "input.csv", header: str = HEADER) -> Path:
    path = folder / name
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def read(*paths: Path, **options) -> tuple[pl.DataFrame, pl.DataFrame, ingest.IngestSummary]:
    ingested = ingest.read_messages(list(paths), **options)
    return ingested.messages.collect(), ingested.quarantine.collect(), ingested.summary


def quarantined(quarantine: pl.DataFrame) -> list[tuple[int, str]]:
    return list(quarantine.select("source_row", "reason").iter_rows())


def assert_counts_add_up(summary: ingest.IngestSummary) -> None:
    assert summary.rows_read == summary.rows_used + summary.rows_dropped + summary.rows_quarantined


# --- each validation rule, with its exact reason and line ------------------------------------------

RULES = {
    "missing message_id": (
        ",2026-01-05T09:00:00Z,inbound,15550001111,waba-1,393330000001,text,,received,",
        "missing required value: message_id",
    ),
    "missing timestamp and user_id": (
        "wamid.X,,inbound,15550001111,waba-1,,text,,received,",
        "missing required value: timestamp, user_id",
    ),
    "blank direction": (
        "wamid.X,2026-01-05T09:00:00Z,   ,15550001111,waba-1,393330000001,text,,received,",
        "missing required value: direction",
    ),
    "timestamp without zone": (
        "wamid.X,2026-01-05T09:00:00,inbound,15550001111,waba-1,393330000001,text,,received,",
        "timestamp has no time zone: write it with an offset such as +01:00 or Z",
    ),
    "timestamp without zone, space and fraction": (
        "wamid.X,2026-01-05 09:00:00.25,inbound,15550001111,waba-1,393330000001,text,,received,",
        "timestamp has no time zone: write it with an offset such as +01:00 or Z",
    ),
    "unparseable timestamp": (
        "wamid.X,yesterday,inbound,15550001111,waba-1,393330000001,text,,received,",
        ingest.BAD_TIMESTAMP,
    ),
    "impossible date": (
        "wamid.X,2026-02-30T09:00:00Z,inbound,15550001111,waba-1,393330000001,text,,received,",
        ingest.BAD_TIMESTAMP,
    ),
    "Unix milliseconds": (
        "wamid.X,1767603600000,inbound,15550001111,waba-1,393330000001,text,,received,",
        ingest.BAD_TIMESTAMP,
    ),
    "before cbp-2022": (
        "wamid.X,2022-01-31T23:59:59Z,inbound,15550001111,waba-1,393330000001,text,,received,",
        "before 2022-02-01: notification-based pricing is not modelled",
    ),
    "unknown direction": (
        "wamid.X,2026-01-05T09:00:00Z,sideways,15550001111,waba-1,393330000001,text,,received,",
        "unknown direction: use inbound (user to business) or outbound",
    ),
    "template without category": (
        "wamid.X,2026-01-05T09:00:00Z,outbound,15550001111,waba-1,393330000001,template,,delivered,",
        "template without category: add template_category (marketing, utility, authentication or marketing_lite)",
    ),
    "unknown category": (
        "wamid.X,2026-01-05T09:00:00Z,outbound,15550001111,waba-1,393330000001,template,promo,delivered,",
        "unknown template_category: use marketing, utility, authentication or marketing_lite",
    ),
    "unknown status": (
        "wamid.X,2026-01-05T09:00:00Z,outbound,15550001111,waba-1,393330000001,text,,pending,",
        "unknown status: use delivered, read, sent, failed, received, or leave it empty",
    ),
    "unknown entry point": (
        "wamid.X,2026-01-05T09:00:00Z,inbound,15550001111,waba-1,393330000001,text,,received,banner",
        "unknown entry_point: use ctwa or page_cta, or leave it empty",
    ),
    "more values than columns": (
        "wamid.X,2026-01-05T09:00:00Z,inbound,15550001111,waba-1,393330000001,text,,received,,Rossi, Mario",
        "row has more values than the header has columns: quote values that contain commas",
    ),
}


@pytest.mark.parametrize("row, reason", RULES.values(), ids=RULES.keys())
def test_each_rule_quarantines_the_row_with_its_reason_and_line(tmp_path, row, reason):
    messages, quarantine, summary = read(write_csv(tmp_path, GOOD_ROW, row, GOOD_ROW.replace("G1", "G2")))
    assert quarantined(quarantine) == [(3, reason)]
    assert messages["message_id"].to_list() == ["wamid.G1", "wamid.G2"]
    assert summary.quarantined == {reason: 1}
    assert_counts_add_up(summary)


def test_quarantine_keeps_the_values_as_read(tmp_path):
    row = "wamid.X, 2026-01-05T09:00:00 ,Sideways,15550001111,,393330000001,text,,received,"
    _, quarantine, _ = read(write_csv(tmp_path, row))
    assert quarantine.columns == list(ingest.QUARANTINE_COLUMNS)
    record = quarantine.row(0, named=True)
    assert (record["source_file"], record["source_row"]) == (str(tmp_path / "input.csv"), 2)
    assert (record["timestamp"], record["direction"], record["waba_id"]) == (" 2026-01-05T09:00:00 ", "Sideways", None)


def test_each_row_gets_the_first_reason_that_applies(tmp_path):
    no_zone_and_bad_direction = "wamid.X,2026-01-05T09:00:00,sideways,15550001111,,393330000001,template,,pending,"
    _, quarantine, _ = read(write_csv(tmp_path, no_zone_and_bad_direction))
    assert quarantined(quarantine) == [(2, ingest.NO_TIME_ZONE)]


def test_first_supported_date_is_midnight_in_the_waba_time_zone(tmp_path):
    rows = [
        "wamid.R1,2022-01-31T23:30:00Z,inbound,15550001111,,393330000001,text,,,",  # 00:30 on 1 Feb in Rome
        "wamid.R2,2022-02-01T00:30:00+02:00,inbound,15550001111,,393330000001,text,,,",  # 23:30 on 31 Jan in Rome
    ]
    path = write_csv(tmp_path, *rows)
    messages, quarantine, _ = read(path, timezone="Europe/Rome")
    assert messages["message_id"].to_list() == ["wamid.R1"]
    assert quarantined(quarantine) == [(3, ingest.before_first_supported())]
    messages, quarantine, _ = read(path)  # UTC
    assert messages.height == 0 and quarantine.height == 2


# --- timestamps ------------------------------------------------------------------------------------

INSTANTS = {
    "1767603600": dt.datetime(2026, 1, 5, 9, 0, tzinfo=UTC),
    "1767603600.25": dt.datetime(2026, 1, 5, 9, 0, 0, 250_000, tzinfo=UTC),
    "1767603600.": dt.datetime(2026, 1, 5, 9, 0, tzinfo=UTC),
    "2026-01-05T09:00:00Z": dt.datetime(2026, 1, 5, 9, 0, tzinfo=UTC),
    "2026-01-05t09:00:00z": dt.datetime(2026, 1, 5, 9, 0, tzinfo=UTC),
    "2026-01-05T10:00:00+01:00": dt.datetime(2026, 1, 5, 9, 0, tzinfo=UTC),
    "2026-01-05T04:30:00-0430": dt.datetime(2026, 1, 5, 9, 0, tzinfo=UTC),
    "2026-01-05T11:00+02": dt.datetime(2026, 1, 5, 9, 0, tzinfo=UTC),
    "2026-01-05 09:00:00.123456789Z": dt.datetime(2026, 1, 5, 9, 0, 0, 123_456, tzinfo=UTC),
    "2026-01-05T09:00:00,5+00:00": dt.datetime(2026, 1, 5, 9, 0, 0, 500_000, tzinfo=UTC),
    "2026-01-05T00:30:00+05:30": dt.datetime(2026, 1, 4, 19, 0, tzinfo=UTC),
}


@pytest.mark.parametrize("text, expected", INSTANTS.items(), ids=INSTANTS.keys())
def test_timestamps_parse_to_utc_instants(tmp_path, text, expected):
    messages, quarantine, _ = read(write_csv(tmp_path, f'wamid.X,"{text}",inbound,15550001111,,393330000001,text,,,'))
    assert quarantine.height == 0
    assert messages["timestamp"].to_list() == [expected]
    assert messages.schema["timestamp"] == MESSAGE_SCHEMA["timestamp"]


# --- canonical form ----------------------------------------------------------------------------------


def test_values_are_put_in_canonical_form(tmp_path):
    rows = [
        "wamid.C1,2026-01-05T09:00:00Z,OUTBOUND,15550001111,,393330000001,Template,MARKETING,Delivered,",
        "wamid.C2,2026-01-05T09:00:00Z,Inbound,15550001111,,393330000001,text,,RECEIVED,CTWA",
        "wamid.C3,2026-01-05T09:00:00Z,outbound,15550001111,,393330000001,template,Marketing_Lite,,",
    ]
    messages, quarantine, _ = read(write_csv(tmp_path, *rows))
    assert quarantine.height == 0
    assert messages.select("direction", "waba_id", "message_type", "template_category", "status", "entry_point").rows() == [
        ("outbound", "default", "template", "marketing", "delivered", None),
        ("inbound", "default", "text", None, "received", "ctwa"),
        ("outbound", "default", "template", "marketing_lite", None, None),
    ]


def test_meaningless_values_are_dropped_and_noted(tmp_path):
    rows = [
        "wamid.N1,2026-01-05T09:00:00Z,outbound,15550001111,,393330000001,text,utility,delivered,",
        "wamid.N2,2026-01-05T09:01:00Z,outbound,15550001111,,393330000001,text,,delivered,ctwa",
        "wamid.N3,2026-01-05T09:02:00Z,outbound,15550001111,,393330000001,template,utility,delivered,nonsense",
    ]
    messages, quarantine, summary = read(write_csv(tmp_path, *rows))
    assert quarantine.height == 0
    assert messages.select("template_category", "entry_point").rows() == [(None, None), (None, None), ("utility", None)]
    assert "entry_point ignored on 2 outbound messages: it only means something inbound" in summary.notes
    assert "template_category ignored on 1 non-template message" in summary.notes


def test_user_country_comes_from_the_phone(tmp_path):
    header = "message_id,timestamp,direction,business_phone,user_id,user_phone,user_country,message_type"
    rows = [
        "wamid.U1,2026-01-05T09:00:00Z,inbound,15550001111,4915100000001,,,text",
        "wamid.U2,2026-01-05T09:00:00Z,inbound,15550001111,US.1234567890,+393330000001,,text",
        "wamid.U3,2026-01-05T09:00:00Z,inbound,15550001111,BR.1234567890,,br,text",
    ]
    messages, _, _ = read(write_csv(tmp_path, *rows, header=header))
    assert messages["user_country"].to_list() == ["DE", "IT", "BR"]


def test_headers_match_without_case_or_spaces_and_extra_columns_are_noted(tmp_path):
    header = " Message_ID ,TIMESTAMP,Direction,business_phone,user_id,message_type,Campaign,cost"
    path = write_csv(tmp_path, "wamid.H1,2026-01-05T09:00:00Z,inbound,15550001111,393330000001,text,spring,0.1", header=header)
    messages, _, summary = read(path)
    assert messages.columns == list(MESSAGE_SCHEMA)
    assert messages["message_id"].to_list() == ["wamid.H1"]
    assert f"{path}: ignored columns not in the canonical table: Campaign, cost" in summary.notes


def test_blank_lines_are_skipped_and_noted(tmp_path):
    path = write_csv(tmp_path, GOOD_ROW, "", ",,,,,,,,,", GOOD_ROW.replace("G1", "G2"))
    messages, quarantine, summary = read(path)
    assert messages.height == 2 and quarantine.height == 0
    assert summary.rows_read == 2
    assert f"{path}: skipped 2 rows without any value (blank lines)" in summary.notes


def test_unconfirmed_deliveries_are_counted(tmp_path):
    rows = [
        "wamid.S1,2026-01-05T09:00:00Z,outbound,15550001111,,393330000001,text,,sent,",
        "wamid.S2,2026-01-05T09:01:00Z,outbound,15550001111,,393330000001,text,,SENT,",
        "wamid.S3,2026-01-05T09:02:00Z,outbound,15550001111,,393330000001,text,,delivered,",
    ]
    _, _, summary = read(write_csv(tmp_path, *rows))
    assert summary.unconfirmed_deliveries == 2
    assert "2 outbound messages with status sent (delivery not confirmed): billed as delivered." in format_ingest_summary(summary)


# --- duplicates ------------------------------------------------------------------------------------


def test_identical_repeats_across_files_are_kept_once_and_conflicting_ones_all_quarantined():
    day1, day2 = FIXTURES / "day1.csv", FIXTURES / "day2.csv"
    messages, quarantine, summary = read(day1, day2)
    # wamid.D2 on day 2 is the same message in other notation (Unix seconds, upper case): kept once.
    assert messages["message_id"].to_list() == ["wamid.D1", "wamid.D2", "wamid.D4"]
    assert summary.duplicates_dropped == 1
    conflict = f"conflicting duplicate of message_id wamid.D3: rows {day1}:4, {day2}:2 hold different values; keep one version of the message"
    assert quarantine.select("source_file", "source_row", "reason").rows() == [
        (str(day1), 4, conflict),
        (str(day2), 2, conflict),
    ]
    assert quarantine["status"].to_list() == ["delivered", "failed"]
    assert summary.quarantined == {"conflicting duplicate of message_id": 2}
    assert (summary.rows_read, summary.rows_used) == (6, 3)
    assert_counts_add_up(summary)


def test_a_conflict_names_its_first_rows_and_counts_the_rest(tmp_path):
    rows = [f"wamid.X,2026-01-05T09:0{i}:00Z,inbound,15550001111,,393330000001,text,,," for i in range(7)]
    _, quarantine, summary = read(write_csv(tmp_path, *rows))
    path = tmp_path / "input.csv"
    named = ", ".join(f"{path}:{line}" for line in range(2, 7))
    assert set(quarantine["reason"]) == {
        f"conflicting duplicate of message_id wamid.X: rows {named} and 2 more hold different values; keep one version of the message"
    }
    assert summary.rows_quarantined == 7


def test_a_row_quarantined_for_its_own_reason_does_not_make_a_conflict(tmp_path):
    rows = [GOOD_ROW, GOOD_ROW.replace("2026-01-05T09:00:00Z", "never")]
    messages, quarantine, summary = read(write_csv(tmp_path, *rows))
    assert messages["message_id"].to_list() == ["wamid.G1"]
    assert quarantined(quarantine) == [(3, ingest.BAD_TIMESTAMP)]


# --- readers ---------------------------------------------------------------------------------------


def test_one_bad_timestamp_among_good_rows():
    messages, quarantine, summary = read(FIXTURES / "bad_timestamp.csv")
    assert messages["message_id"].to_list() == ["wamid.B001", "wamid.B002", "wamid.B004"]
    assert quarantined(quarantine) == [(4, ingest.BAD_TIMESTAMP)]
    assert quarantine["timestamp"].to_list() == ["01/03/2026 09:02"]
    assert (summary.rows_read, summary.rows_used, summary.rows_quarantined) == (4, 3, 1)


def test_a_missing_required_column_stops_the_run_naming_file_and_column():
    path = FIXTURES / "missing_column.csv"
    with pytest.raises(InputError) as raised:
        ingest.read_messages([path])
    message = str(raised.value)
    assert str(path) in message
    assert "missing required column user_id" in message
    assert "Add or rename the columns" in message


def test_a_file_without_any_canonical_column_says_so(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("name,amount\nx,1\n")
    with pytest.raises(InputError, match="has none of the canonical message columns"):
        ingest.read_messages([path])


@pytest.mark.parametrize(
    "name, content, expected",
    [
        ("messages.txt", "x", "unknown file type '.txt'"),
        ("messages.xlsx", "x", "unknown file type '.xlsx'"),
        ("broken.parquet", "not parquet", "cannot read as Parquet"),
        ("broken.csv.gz", "not gzip", "cannot read the header as CSV"),
        ("latin1.csv", f"{HEADER}\n".encode() + b"wamid.L1,2026-01-05T09:00:00Z,inbound,1,,Caf\xe9,text,,,\n", "line 2 is not UTF-8 text"),
        ("broken.json", '{"message_id": ', "not valid JSON"),
        ("twice.csv", f"{HEADER},Direction\n", "column 'direction' appears twice"),
    ],
)
def test_unreadable_files_raise_input_errors_naming_the_file(tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(InputError) as raised:
        ingest.read_messages([path])
    assert str(path) in str(raised.value)
    assert expected in str(raised.value)


def test_a_missing_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        ingest.read_messages([tmp_path / "nowhere.csv"])


@pytest.mark.parametrize("name", ["empty.csv", "empty.jsonl", "empty.json"])
def test_an_empty_file_is_zero_rows_and_a_note(tmp_path, name):
    path = tmp_path / name
    path.write_text("\n")
    messages, quarantine, summary = read(path)
    assert (messages.height, quarantine.height, summary.rows_read) == (0, 0, 0)
    assert f"{path}: the file is empty" in summary.notes


def test_csv_gz_is_read(tmp_path):
    import gzip

    path = tmp_path / "input.csv.gz"
    path.write_bytes(gzip.compress(f"{HEADER}\n{GOOD_ROW}\n".encode()))
    messages, _, summary = read(path)
    assert messages["message_id"].to_list() == ["wamid.G1"]
    assert summary.files == (ingest.InputFile(str(path), "CSV", 1),)


def test_canonical_json_lines():
    path = FIXTURES / "records.jsonl"
    messages, quarantine, summary = read(path)
    assert messages.select("message_id", "timestamp", "business_phone", "template_category").rows() == [
        ("wamid.J001", dt.datetime(2026, 3, 1, 9, 0, tzinfo=UTC), "15550001111", None),
        ("wamid.J002", dt.datetime(2026, 3, 1, 9, 5, 0, 500_000, tzinfo=UTC), "15550001111", "utility"),
        ("wamid.J004", dt.datetime(2026, 3, 1, 9, 6, 40, 250_000, tzinfo=UTC), "15550001111", None),
    ]
    assert quarantine["source_row"].to_list() == [4]
    assert quarantine["reason"][0].startswith("line is not valid JSON")
    assert f"{path}: ignored column not in the canonical table: campaign" in summary.notes
    assert summary.files == (ingest.InputFile(str(path), "JSON records", 4),)


def test_canonical_json_array():
    messages, quarantine, summary = read(FIXTURES / "records.json")
    assert messages.select("message_id", "waba_id").rows() == [("wamid.A001", "default"), ("wamid.A002", "waba-9")]
    assert quarantined(quarantine) == [(3, "array item is not a JSON object")]
    assert_counts_add_up(summary)


def test_json_values_that_are_lists_or_objects_are_quarantined(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text(
        '{"message_id": "wamid.O1", "timestamp": "2026-01-05T09:00:00Z", "direction": "inbound", '
        '"business_phone": "15550001111", "user_id": ["393330000001"], "message_type": "text"}\n'
    )
    _, quarantine, _ = read(path)
    assert quarantined(quarantine) == [(1, "user_id is a JSON list, expected text or a number")]


def test_webhook_payloads_are_recognised_by_their_shape():
    path = FIXTURES / "webhooks.jsonl"
    ingested = ingest.read_messages([path])
    messages = ingested.messages.collect()
    assert messages.select("message_id", "direction", "message_type", "template_category", "status", "entry_point").rows() == [
        ("wamid.W001", "inbound", "text", None, "received", "ctwa"),
        ("wamid.W002", "outbound", "template", "marketing", "delivered", None),
    ]
    assert messages["timestamp"].to_list() == [
        dt.datetime(2026, 3, 8, 9, 0, tzinfo=UTC),
        dt.datetime(2026, 3, 8, 9, 1, 5, tzinfo=UTC),  # the delivered status's time, not the sent one
    ]
    # Three records read (a message, two statuses): two rows used, the sent status folded into its message's.
    assert ingested.summary.files == (ingest.InputFile(str(path), "webhook JSON", 3),)
    assert (ingested.summary.rows_read, ingested.summary.rows_used, ingested.summary.statuses_folded) == (3, 2, 1)
    assert ingested.billing["status"].to_list() == ["sent", "delivered"]


def test_send_log_without_webhooks_is_noted(tmp_path):
    send_log = tmp_path / "send_log.csv"
    send_log.write_text("message_id,message_type\nwamid.G1,text\n")
    _, _, summary = read(write_csv(tmp_path, GOOD_ROW), send_log=send_log)
    assert any(note.startswith("--send-log not used") for note in summary.notes)


def test_parquet_round_trip(tmp_path):
    messages, _, _ = read(FIXTURES / "messages.csv")
    for name in ("messages.parquet", "messages.csv", "messages.csv.gz"):
        ingest.write_frame(messages, tmp_path / name)
        again, quarantine, summary = read(tmp_path / name)
        assert quarantine.height == 0 and summary.rows_used == messages.height
        assert again.equals(messages), name
    assert pl.read_parquet(tmp_path / "messages.parquet").schema == pl.Schema(MESSAGE_SCHEMA)


def test_parquet_with_typed_columns(tmp_path):
    rome = dt.datetime(2026, 1, 5, 10, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    typed = pl.DataFrame(
        {
            "message_id": ["wamid.P1", "wamid.P2"],
            "timestamp": pl.Series([rome, rome], dtype=pl.Datetime("ms", "Europe/Rome")),
            "direction": ["inbound", "outbound"],
            "business_phone": [15550001111, 15550001111],
            "user_id": [393330000001, 393330000001],
            "message_type": ["text", "text"],
        }
    )
    naive = typed.head(1).with_columns(message_id=pl.lit("wamid.P3"), timestamp=pl.col("timestamp").dt.replace_time_zone(None))
    typed.write_parquet(tmp_path / "typed.parquet")
    naive.write_parquet(tmp_path / "naive.parquet")
    messages, quarantine, _ = read(tmp_path / "typed.parquet", tmp_path / "naive.parquet")
    assert messages["timestamp"].to_list() == [dt.datetime(2026, 1, 5, 9, tzinfo=UTC)] * 2
    assert messages["business_phone"].to_list() == ["15550001111"] * 2
    assert quarantine.select("source_file", "source_row", "reason").rows() == [(str(tmp_path / "naive.parquet"), 1, ingest.NO_TIME_ZONE)]


def test_validate_gives_exactly_the_message_schema():
    raw = pl.LazyFrame(
        {
            "message_id": ["wamid.V1", "wamid.V2"],
            "timestamp": ["2026-01-05T09:00:00Z", "later"],
            "direction": ["inbound", "inbound"],
            "business_phone": ["15550001111"] * 2,
            "user_id": ["393330000001"] * 2,
            "message_type": ["text"] * 2,
            "source_file": ["memory"] * 2,
            "source_row": [1, 2],
        }
    )
    messages, quarantine = ingest.validate(raw)
    assert messages.collect().schema == pl.Schema(MESSAGE_SCHEMA)
    assert quarantine.collect().select("source_file", "source_row", "reason").rows() == [("memory", 2, ingest.BAD_TIMESTAMP)]


def test_pseudonymise_hides_users_in_messages_and_quarantine(tmp_path):
    key = b"a test key of enough length"
    rows = [GOOD_ROW, GOOD_ROW.replace("G1", "G2").replace("2026-01-05T09:00:00Z", "never")]
    messages, quarantine, _ = read(write_csv(tmp_path, *rows), pseudonymise_key=key)
    assert messages["user_id"][0].startswith("p_") and messages["user_country"][0] == "IT"
    assert quarantine["user_id"][0] == messages["user_id"][0]
    assert quarantine.columns == list(ingest.QUARANTINE_COLUMNS)


def test_summary_counts_add_up_and_read_well(tmp_path):
    bad = write_csv(tmp_path, GOOD_ROW, GOOD_ROW, "wamid.Z,soon,inbound,15550001111,,393330000001,text,,,", name="bad.csv")
    ingested = ingest.read_messages([FIXTURES / "messages.csv", bad])
    summary = ingested.summary
    assert (summary.rows_read, summary.rows_used, summary.duplicates_dropped, summary.rows_quarantined) == (10, 8, 1, 1)
    assert_counts_add_up(summary)
    assert ingested.messages.collect().height == summary.rows_used
    assert ingested.quarantine.collect().height == summary.rows_quarantined
    text = format_ingest_summary(summary, quarantine_path="out/quarantine.csv")
    assert "Read 10 rows from 2 files:" in text
    assert "Dropped 1 identical repeat of a message_id (kept once)." in text
    assert f"Quarantined 1 row (written to out/quarantine.csv):\n  1  {ingest.BAD_TIMESTAMP}" in text


def test_write_frame_refuses_an_unknown_extension(tmp_path):
    with pytest.raises(UsageError, match=r"give an output ending in \.csv, \.csv\.gz, \.parquet"):
        ingest.write_frame(pl.DataFrame({"a": [1]}), tmp_path / "out.xlsx")


def test_unknown_time_zone_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="unknown time zone 'Mars/Olympus'"):
        ingest.read_messages([write_csv(tmp_path, GOOD_ROW)], timezone="Mars/Olympus")


def test_traffic_summary_counts():
    messages, _, _ = read(FIXTURES / "messages.csv")
    traffic = ingest.describe_traffic(messages)
    assert (traffic.messages, traffic.inbound, traffic.outbound) == (7, 2, 5)
    assert (traffic.business_phones, traffic.wabas, traffic.users) == (2, 2, 4)
    assert traffic.first == dt.datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    assert traffic.last == dt.datetime(2026, 2, 10, 10, 0, tzinfo=UTC)
    assert traffic.markets == (("Germany", 2, 1), ("Italy", 2, 1), ("North America", 2, 1), ("Brazil", 1, 1))
    assert traffic.by_month.rows() == [
        ("2026-01", "inbound", "non-template", 1),
        ("2026-01", "outbound", "marketing", 1),
        ("2026-01", "outbound", "non-template", 1),
        ("2026-02", "inbound", "non-template", 1),
        ("2026-02", "outbound", "authentication", 1),
        ("2026-02", "outbound", "marketing", 1),
        ("2026-02", "outbound", "utility", 1),
    ]


# --- fep_expires_at: the optional extension column (README, canonical messages) ----------------------------

FEP_HEADER = HEADER + ",fep_expires_at"
WEBHOOKS_2026_10 = Path(__file__).parent / "fixtures" / "webhooks"


def test_fep_expires_at_is_optional_and_null_when_absent(tmp_path):
    messages, quarantine, _ = read(write_csv(tmp_path, GOOD_ROW))
    assert messages.schema["fep_expires_at"] == MESSAGE_SCHEMA["fep_expires_at"] == pl.Datetime("us", "UTC")
    assert messages["fep_expires_at"].to_list() == [None] and quarantine.is_empty()


def test_fep_expires_at_from_a_canonical_csv_is_an_instant_on_outbound_rows_only(tmp_path):
    path = write_csv(
        tmp_path,
        "wamid.O1,2026-11-03T10:05:00Z,outbound,15550001111,waba-1,393330000001,text,,delivered,,2026-11-06T11:05:00+01:00",
        "wamid.O2,2026-11-03T10:06:00Z,outbound,15550001111,waba-1,393330000001,text,,delivered,,1793959500",
        "wamid.O3,2026-11-03T10:07:00Z,outbound,15550001111,waba-1,393330000001,text,,delivered,,",
        "wamid.I1,2026-11-03T10:00:00Z,inbound,15550001111,waba-1,393330000001,text,,received,ctwa,1793959500",
        "wamid.O4,2026-11-03T10:08:00Z,outbound,15550001111,waba-1,393330000001,text,,delivered,,next tuesday",
        header=FEP_HEADER,
    )
    messages, quarantine, summary = read(path)
    end = dt.datetime(2026, 11, 6, 10, 5, tzinfo=UTC)
    assert messages.select("message_id", "fep_expires_at").rows() == [
        ("wamid.O1", end),
        ("wamid.O2", end),
        ("wamid.O3", None),
        ("wamid.I1", None),  # inbound: means nothing
    ]
    assert quarantined(quarantine) == [(6, ingest.BAD_FEP_EXPIRY)]
    assert quarantine["fep_expires_at"].to_list() == ["next tuesday"]  # as read
    assert_counts_add_up(summary)


def test_fep_expires_at_from_metas_status_webhooks():
    ingested = ingest.read_messages([WEBHOOKS_2026_10 / "fep_2026_10.jsonl"], send_log=WEBHOOKS_2026_10 / "send_log_2026_10.csv")
    end = dt.datetime(2026, 11, 6, 10, 5, tzinfo=UTC)  # expiration_timestamp 1793959500, on `sent`
    assert ingested.messages.collect().select("message_id", "fep_expires_at").rows() == [
        ("wamid.F1in", None),
        ("wamid.F1", end),
        ("wamid.F2", end),
    ]


def test_fep_expires_at_survives_parquet_and_older_files_without_it(tmp_path):
    messages, _, _ = read(
        write_csv(tmp_path, "wamid.O1,2026-11-03T10:05:00Z,outbound,15550001111,waba-1,393330000001,text,,delivered,,1793959500", header=FEP_HEADER)
    )
    messages.write_parquet(tmp_path / "new.parquet")
    messages.drop("fep_expires_at").write_parquet(tmp_path / "old.parquet")
    new, _, _ = read(tmp_path / "new.parquet")
    old, _, _ = read(tmp_path / "old.parquet")
    assert new["fep_expires_at"].to_list() == [dt.datetime(2026, 11, 6, 10, 5, tzinfo=UTC)]
    assert old["fep_expires_at"].to_list() == [None] and old.schema == pl.Schema(MESSAGE_SCHEMA)


def test_the_reference_engine_reads_messages_without_the_fep_column():
    from analytics.bill import charges, reference

    messages, _, _ = read(FIXTURES / "messages.csv")
    without = messages.drop("fep_expires_at")
    assert reference.bill(without).equals(reference.bill(messages))
    assert reference.bill(without).height == charges.bill(messages).height > 0


# --- the optional columns of 2026: groups, Meta Business Agent, template names ----------------------

HEADER_2026 = f"{HEADER},group_id,sent_by,tokens,template_name"
OUT = "2026-11-03T10:00:00Z,outbound,15550001111,waba-1"


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (f"wamid.S,{OUT},393330000001,text,,delivered,,,robot,,", ingest.UNKNOWN_SENDER),
        (f"wamid.S,{OUT},393330000001,text,,delivered,,,meta_business_agent,-5,", ingest.BAD_TOKENS),
        (f"wamid.S,{OUT},393330000001,text,,delivered,,,meta_business_agent,12.5,", ingest.BAD_TOKENS),
        (f"wamid.S,{OUT},393330000001,text,,delivered,,,meta_business_agent,many,", ingest.BAD_TOKENS),
        (f"wamid.S,{OUT},393330000001,template,authentication,delivered,,grp-1,,,otp", ingest.GROUP_AUTHENTICATION),
        ("wamid.S,2026-11-03T10:00:00Z,inbound,15550001111,waba-1,393330000001,text,,received,ctwa,grp-1,,,", ingest.GROUP_ENTRY_POINT),
        (f"wamid.S,{OUT},393330000001,text,,delivered,,grp-1,meta_business_agent,100,", ingest.GROUP_BUSINESS_AGENT),
        ("wamid.S,2025-06-30T21:59:59Z,outbound,15550001111,waba-1,393330000001,text,,delivered,,grp-1,,,", ingest.group_before_pricing()),
    ],
    ids=[
        "unknown sender",
        "negative tokens",
        "fractional tokens",
        "tokens not a number",
        "group authentication",
        "group entry point",
        "group agent",
        "group before group pricing",
    ],
)
def test_the_2026_columns_quarantine_what_cannot_be_billed(tmp_path, row, reason):
    messages, quarantine, summary = read(write_csv(tmp_path, row, header=HEADER_2026))
    assert messages.height == 0
    assert quarantined(quarantine) == [(2, reason)]
    assert summary.quarantined == {reason: 1}


def test_the_2026_columns_are_typed_and_counted(tmp_path):
    path = write_csv(
        tmp_path,
        f"wamid.A,{OUT},393330000001,text,,delivered,,,META_BUSINESS_AGENT,21500.0,",
        f"wamid.B,{OUT},393330000001,text,,delivered,,,meta_business_agent,,",
        f"wamid.C,{OUT},393330000002,template,marketing,delivered,,,business,300,summer_sale",
        f"wamid.G,{OUT},393330000003,template,utility,delivered,,grp-1,,,order_update",
        f"wamid.G,{OUT},393330000004,template,utility,delivered,,grp-1,,,order_update",
        header=HEADER_2026,
    )
    messages, quarantine, summary = read(path)
    assert quarantine.height == 0
    assert messages.select("message_id", "user_id", "group_id", "sent_by", "tokens", "template_name").rows() == [
        ("wamid.A", "393330000001", None, "meta_business_agent", 21500, None),
        ("wamid.B", "393330000001", None, "meta_business_agent", None, None),
        ("wamid.C", "393330000002", None, "business", None, "summer_sale"),  # tokens of the business: ignored
        ("wamid.G", "393330000003", "grp-1", None, None, "order_update"),
        ("wamid.G", "393330000004", "grp-1", None, None, "order_update"),
    ]
    assert messages.schema["tokens"] == pl.Int64()
    assert (summary.group_messages, summary.business_agent_messages, summary.business_agent_without_tokens) == (2, 2, 1)
    assert "tokens ignored on 1 message not sent by Meta Business Agent: only its replies are charged per token" in summary.notes
    text = format_ingest_summary(summary)
    assert "2 group message rows (group_id: one row per participant of a message sent to a group)." in text
    assert "2 messages sent by Meta Business Agent, 1 of them without tokens (costs estimate those)." in text


def test_a_group_message_repeats_per_participant_not_per_message_id(tmp_path):
    delivered = f"{OUT},393330000003,template,utility,delivered,,grp-1,,,"
    path = write_csv(
        tmp_path,
        f"wamid.G,{delivered}",
        f"wamid.G,{OUT},393330000004,template,utility,delivered,,grp-1,,,",  # another participant: its own row
        f"wamid.G,{delivered}",  # the same participant again, identical: dropped
        f"wamid.H,{OUT},393330000003,template,utility,delivered,,grp-1,,,",
        f"wamid.H,{OUT},393330000003,template,marketing,delivered,,grp-1,,,",  # the same participant, conflicting
        f"wamid.O,{OUT},393330000005,text,,delivered,,,,,",
        f"wamid.O,{OUT},393330000006,text,,delivered,,,,,",  # one-to-one: the message_id alone is the key
        header=HEADER_2026,
    )
    messages, quarantine, summary = read(path)
    assert messages.select("message_id", "user_id").rows() == [("wamid.G", "393330000003"), ("wamid.G", "393330000004")]
    assert summary.duplicates_dropped == 1
    conflict = "conflicting duplicate of message_id {}: rows {}:{}, {}:{} hold different values; keep one version of the message"
    group_conflict = conflict.format("wamid.H (the same group participant)", path, 5, path, 6)
    one_to_one_conflict = conflict.format("wamid.O", path, 7, path, 8)
    assert quarantined(quarantine) == [(5, group_conflict), (6, group_conflict), (7, one_to_one_conflict), (8, one_to_one_conflict)]
    assert_counts_add_up(summary)


def test_older_files_without_the_2026_columns_read_them_as_null(tmp_path):
    messages, _, _ = read(write_csv(tmp_path, GOOD_ROW))
    assert messages.select("group_id", "sent_by", "tokens", "template_name").rows() == [(None, None, None, None)]


def test_the_2026_columns_from_parquet_and_canonical_json(tmp_path):
    frame = pl.DataFrame(
        {
            "message_id": ["wamid.A", "wamid.G"],
            "timestamp": ["2026-11-03T10:00:00Z"] * 2,
            "direction": ["outbound"] * 2,
            "business_phone": ["15550001111"] * 2,
            "user_id": ["393330000001", "393330000003"],
            "message_type": ["text", "text"],
            "group_id": [None, "grp-1"],
            "sent_by": ["meta_business_agent", None],
            "tokens": [21500.0, None],  # a float column, as spreadsheets export it
        }
    )
    parquet = tmp_path / "in.parquet"
    frame.write_parquet(parquet)
    records = tmp_path / "in.jsonl"
    frame.with_columns(pl.col("tokens").cast(pl.Int64)).write_ndjson(records)
    for path in (parquet, records):
        messages, quarantine, _ = read(path)
        assert quarantine.height == 0, path
        assert messages.select("message_id", "group_id", "sent_by", "tokens").rows() == [
            ("wamid.A", None, "meta_business_agent", 21500),
            ("wamid.G", "grp-1", None, None),
        ]


def test_webhook_group_messages_and_agent_replies_reach_the_canonical_messages():
    webhooks_dir = Path(__file__).parent / "fixtures" / "webhooks"
    ingested = ingest.read_messages(
        [webhooks_dir / "group_messages.jsonl", webhooks_dir / "business_agent.jsonl"], send_log=webhooks_dir / "send_log_2026_11.csv"
    )
    messages = ingested.messages.collect()
    assert messages.select("message_id", "direction", "user_id", "group_id", "status", "sent_by", "tokens").rows() == [
        ("wamid.G3in", "inbound", "393330000501", "120363000000000020", "received", None, None),
        ("wamid.G3", "outbound", "393330000501", "120363000000000020", "read", None, None),
        ("wamid.G3", "outbound", "393330000502", "120363000000000020", "delivered", None, None),
        ("wamid.G3", "outbound", "393330000503", "120363000000000020", "failed", None, None),
        ("wamid.B1in", "inbound", "393330000601", None, "received", None, None),
        ("wamid.B1", "outbound", "393330000601", None, "delivered", "meta_business_agent", 21500),
        ("wamid.B2", "outbound", "393330000601", None, "delivered", "meta_business_agent", None),
    ]
    summary = ingested.summary
    assert (summary.group_messages, summary.business_agent_messages, summary.business_agent_without_tokens) == (4, 2, 1)
    assert summary.rows_quarantined == 0
    assert_counts_add_up(summary)


def test_a_stage_file_keeps_the_group_and_agent_counts_for_later_commands(tmp_path):
    webhooks_dir = Path(__file__).parent / "fixtures" / "webhooks"
    out = tmp_path / "messages.parquet"
    inputs = [webhooks_dir / "group_messages.jsonl", webhooks_dir / "business_agent.jsonl"]
    ingest.read_messages(inputs, send_log=webhooks_dir / "send_log_2026_11.csv", output=out)
    reread = ingest.read_messages([out])
    assert reread.stage_file == str(out)
    summary = reread.summary
    assert (summary.group_messages, summary.business_agent_messages, summary.business_agent_without_tokens) == (4, 2, 1)
    assert reread.messages.collect().select("group_id").to_series().drop_nulls().to_list() == ["120363000000000020"] * 4
