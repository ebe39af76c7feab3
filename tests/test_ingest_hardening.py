"""Issue 15 (hardening) and issue 14 item 7, through the installed `wa-analytics` command: what
ingest does with one customer written two ways, users without a market, implausible timestamps,
webhook retries and unreadable CSV, asserted on the exit status, the one-line message and the counts.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

CONSOLE_SCRIPT = Path(sys.executable).with_name("wa-analytics")
HEADER = "message_id,timestamp,direction,business_phone,waba_id,user_id,user_phone,user_country,message_type,template_category,status"


def wa_analytics(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([str(CONSOLE_SCRIPT), *map(str, argv)], capture_output=True, text=True, env=env, check=False, timeout=300)


def write_csv(path: Path, *rows: str, header: str = HEADER) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def unix(text: str) -> int:
    return int(dt.datetime.fromisoformat(text).timestamp())


def inbound_webhook(wamid: str, wa_id: str, when: str) -> dict:
    """An inbound text message as Meta's Cloud API posts it (formats-research.md §1.1)."""
    return {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "WABA1",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {"display_phone_number": "15550001111", "phone_number_id": "B1"},
                            "contacts": [{"profile": {"name": "Mario"}, "wa_id": wa_id}],
                            "messages": [{"from": wa_id, "id": wamid, "timestamp": str(unix(when)), "type": "text", "text": {"body": "hi"}}],
                        },
                    }
                ],
            }
        ],
    }


def status_webhook(wamid: str, status: str, wa_id: str, when: str) -> dict:
    """An outbound message's status as Meta's Cloud API posts it (PMP, utility)."""
    return {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "WABA1",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {"display_phone_number": "15550001111", "phone_number_id": "B1"},
                            "statuses": [
                                {
                                    "id": wamid,
                                    "status": status,
                                    "timestamp": str(unix(when)),
                                    "recipient_id": wa_id,
                                    "pricing": {"billable": False, "pricing_model": "PMP", "category": "utility", "type": "free_customer_service"},
                                }
                            ],
                        },
                    }
                ],
            }
        ],
    }


def write_jsonl(path: Path, *payloads: dict) -> Path:
    path.write_text("".join(json.dumps(p) + "\n" for p in payloads), encoding="utf-8")
    return path


# --- issue 15 item 5: one customer billed as two --------------------------------------------------


@pytest.mark.parametrize("spelled", ["+393330001106", "0039 333 000 1106", "+39 (333) 000-1106", "393330001106.0"])
def test_a_phone_written_two_ways_is_one_customer(tmp_path, spelled):
    """The user writes (webhook, wa_id digits); the CRM export names them with + or 00, separators
    or a spreadsheet float: the utility template inside their open window is free, not `regular`."""
    webhook = write_jsonl(tmp_path / "inbound.jsonl", inbound_webhook("wamid.IN1", "393330001106", "2026-03-02T10:00:00+00:00"))
    export = write_csv(
        tmp_path / "crm.csv",
        f'wamid.OUT1,2026-03-02T11:00:00Z,outbound,B1,WABA1,"{spelled}",,,template,utility,delivered',
    )
    charged = wa_analytics("charges", webhook, export, "-o", tmp_path / "charges.csv")
    assert charged.returncode == 0, charged.stderr
    assert "read as its digits (Meta's wa_id form), so each user is one customer" in charged.stderr
    assert "on 1 row:" in charged.stderr
    charges = pl.read_csv(tmp_path / "charges.csv", infer_schema=False)
    assert charges.select("user_id", "category", "pricing_type", "billable").rows() == [("393330001106", "utility", "free_customer_service", "false")]

    ingested = wa_analytics("ingest", webhook, export, "-o", tmp_path / "messages.csv")
    assert ingested.returncode == 0, ingested.stderr
    assert "Read 2 rows from 2 files" in ingested.stderr and "Used 2 rows." in ingested.stderr
    messages = pl.read_csv(tmp_path / "messages.csv", infer_schema=False)
    # The id as written survives as the E.164 number in user_phone; the webhook's digits need none.
    assert messages.select("message_id", "user_id", "user_phone", "user_country").rows() == [
        ("wamid.IN1", "393330001106", None, "IT"),
        ("wamid.OUT1", "393330001106", "+393330001106", "IT"),
    ]


def test_business_scoped_ids_and_other_ids_are_left_as_written(tmp_path):
    export = write_csv(
        tmp_path / "in.csv",
        "m1,2026-03-02T10:00:00Z,inbound,B1,,PE.9771234567,,,text,,",
        "m2,2026-03-02T10:00:00Z,inbound,B1,,US.13491208655302741918,,,text,,",
        "m3,2026-03-02T10:00:00Z,inbound,B1,,393330001106,,,text,,",
    )
    result = wa_analytics("ingest", export, "-o", tmp_path / "messages.csv")
    assert result.returncode == 0, result.stderr
    assert "read as its digits" not in result.stderr  # nothing was rewritten
    messages = pl.read_csv(tmp_path / "messages.csv", infer_schema=False)
    assert messages["user_id"].to_list() == ["PE.9771234567", "US.13491208655302741918", "393330001106"]
    assert messages["user_phone"].null_count() == 3


# --- issue 14 item 7: markets without a phone number ---------------------------------------------


def test_a_business_scoped_id_with_a_country_prefix_gives_the_market(tmp_path):
    """changes-2026-h2.md §6: `PE.977…` is a user in Peru, priced as Peru, when no phone or country is known."""
    export = write_csv(
        tmp_path / "in.csv",
        "m1,2026-03-02T10:00:00Z,outbound,B1,,PE.9771234567,,,template,marketing,delivered",
        "m2,2026-03-02T10:00:00Z,outbound,B1,,IN.1013456789,,,template,marketing,delivered",
        "m3,2026-03-02T10:00:00Z,outbound,B1,,PE.9771234568,,CL,template,marketing,delivered",  # the given country wins
        "m4,2026-03-02T10:00:00Z,outbound,B1,,PE.9771234569,+393330001106,,template,marketing,delivered",  # the phone wins
    )
    ingested = wa_analytics("ingest", export, "-o", tmp_path / "messages.csv")
    assert ingested.returncode == 0, ingested.stderr
    messages = pl.read_csv(tmp_path / "messages.csv", infer_schema=False)
    assert messages["user_country"].to_list() == ["PE", "IN", "CL", "IT"]
    costed = wa_analytics("costs", export, "--currency", "USD", "-o", tmp_path / "costs.csv")
    assert costed.returncode == 0, costed.stderr
    costs = pl.read_csv(tmp_path / "costs.csv")
    assert sorted(costs.select("market", "charges").rows()) == [("Chile", 1), ("India", 1), ("Italy", 1), ("Peru", 1)]


# --- issue 15 item 6: markets silently Unknown ---------------------------------------------------

UNLOCATED = (
    "m1,2026-03-02T10:00:00Z,outbound,B1,,@mario,,,template,marketing,delivered",
    "m2,2026-03-02T10:00:00Z,outbound,B1,,user.abc,,,template,marketing,delivered",
    "m3,2026-03-02T10:00:00Z,outbound,B1,,+800 1234 5678,,,template,marketing,delivered",
    "m4,2026-03-02T10:00:00Z,outbound,B1,,3.9333E+11,,,template,marketing,delivered",
    "m5,2026-03-02T10:00:00Z,outbound,B1,,03330001106,,,template,marketing,delivered",
    "m6,2026-03-02T11:00:00Z,outbound,B1,,@mario,,,template,marketing,delivered",
    "m7,2026-03-02T11:00:00Z,outbound,B1,,0039 333 000 1106,,,template,marketing,delivered",  # located: Italy
)


def test_users_without_a_market_are_counted_by_reason_and_kept(tmp_path):
    from analytics.terms import markets

    export = write_csv(tmp_path / "in.csv", *UNLOCATED)
    result = wa_analytics("ingest", export, "-o", tmp_path / "messages.csv")
    assert result.returncode == 0, result.stderr
    assert "Used 7 rows." in result.stderr
    lines = result.stderr.splitlines()
    heading = lines.index("Market unknown for 5 users (6 rows): kept with market Unknown, but costs cannot price their paid messages; by reason:")
    assert lines[heading + 1 : heading + 5] == [
        f"  2 users (3 rows): {markets.NOT_A_PHONE} (first: {export}, row 2)",
        f"  1 user (1 row): {markets.NON_GEOGRAPHIC_NUMBER} (first: {export}, row 4)",
        f"  1 user (1 row): {markets.NO_SUCH_CALLING_CODE} (first: {export}, row 6)",
        f"  1 user (1 row): {markets.SCIENTIFIC_NOTATION} (first: {export}, row 5)",
    ]
    assert "@mario" not in result.stderr  # the summary names reasons and rows, never the ids
    messages = pl.read_csv(tmp_path / "messages.csv", infer_schema=False)
    assert messages["user_country"].to_list() == [None] * 6 + ["IT"]


def test_costs_names_why_a_charge_has_no_market(tmp_path):
    from analytics.terms import markets

    export = write_csv(tmp_path / "in.csv", UNLOCATED[4])
    result = wa_analytics("costs", export, "--currency", "USD", "-o", tmp_path / "costs.csv")
    assert result.returncode == 2
    error = result.stderr.splitlines()[-1]
    assert error.startswith("wa-analytics: error: no rate for USD Unknown marketing on 2026-03-02")
    assert f"the user's market is not known: {markets.NO_SUCH_CALLING_CODE}" in error
    assert not (tmp_path / "costs.csv").exists()

    by_currency = wa_analytics("costs", export, "-o", tmp_path / "costs.csv")
    assert by_currency.returncode == 2
    assert "1 of them are of users whose market is unknown (the run summary says why)" in by_currency.stderr.splitlines()[-1]
    assert f"1 user (1 row): {markets.NO_SUCH_CALLING_CODE}" in by_currency.stderr


@pytest.mark.parametrize("country", ["XX", "UK", "Italy", "1"])
def test_a_user_country_that_is_no_iso_code_is_quarantined_not_priced_as_other(tmp_path, country):
    from analytics.read import ingest

    export = write_csv(
        tmp_path / "in.csv",
        f"m1,2026-03-02T10:00:00Z,outbound,B1,,user.abc,,{country},template,marketing,delivered",
        "m2,2026-03-02T10:00:00Z,outbound,B1,,user.def,,it,template,marketing,delivered",
    )
    quarantine = tmp_path / "bad.csv"
    result = wa_analytics("costs", export, "--currency", "USD", "-o", tmp_path / "costs.csv", "--quarantine", quarantine)
    assert result.returncode == 0, result.stderr
    assert "Read 2 rows" in result.stderr and "Used 1 row." in result.stderr
    assert f"Quarantined 1 row (written to {quarantine}):\n  1  {ingest.UNKNOWN_COUNTRY}" in result.stderr
    assert pl.read_csv(quarantine, infer_schema=False).select("source_row", "reason", "user_country").rows() == [
        ("2", ingest.UNKNOWN_COUNTRY, country)
    ]
    assert pl.read_csv(tmp_path / "costs.csv")["market"].to_list() == ["Italy"]


# --- issue 15 item 7: implausible timestamps -----------------------------------------------------


def test_a_timestamp_far_in_the_future_is_quarantined_with_a_reason(tmp_path):
    export = write_csv(
        tmp_path / "in.csv",
        "m1,99999999999,inbound,B1,,393330001106,,,text,,",  # year 5138: milliseconds cut short
        "m2,2026-03-02T10:00:00Z,inbound,B1,,393330001106,,,text,,",
        "m3,9999-12-31T00:00:00Z,inbound,B1,,393330001106,,,text,,",
    )
    quarantine = tmp_path / "bad.csv"
    started = dt.datetime.now(dt.UTC)
    result = wa_analytics("charges", export, "-o", tmp_path / "charges.csv", "--quarantine", quarantine)
    assert result.returncode == 0, result.stderr
    assert "Read 3 rows" in result.stderr and "Used 1 row." in result.stderr
    rows = pl.read_csv(quarantine, infer_schema=False).select("source_row", "reason", "timestamp").rows()
    assert [(row, timestamp) for row, _, timestamp in rows] == [("2", "99999999999"), ("4", "9999-12-31T00:00:00Z")]
    reason = rows[0][1]
    assert rows[1][1] == reason and reason.startswith("timestamp after ") and "--latest-timestamp" in reason
    bound = dt.datetime.fromisoformat(reason.split()[2].rstrip(","))
    # the run's start plus one day (the message gives the bound to the second)
    assert dt.timedelta(days=1, seconds=-1) <= bound - started < dt.timedelta(days=1, minutes=5)
    assert f"Quarantined 2 rows (written to {quarantine}):\n  2  {reason}" in result.stderr


def test_latest_timestamp_sets_the_bound(tmp_path):
    export = write_csv(
        tmp_path / "in.csv",
        "m1,2027-03-01T23:59:59Z,inbound,B1,,393330001106,,,text,,",
        "m2,2027-03-02T00:00:00Z,inbound,B1,,393330001106,,,text,,",
        "m3,2026-03-02T10:00:00Z,inbound,B1,,393330001106,,,text,,",
    )
    result = wa_analytics("ingest", export, "-o", tmp_path / "m.csv", "--latest-timestamp", "2027-03-01")
    assert result.returncode == 0, result.stderr
    assert pl.read_csv(tmp_path / "m.csv")["message_id"].to_list() == ["m1", "m3"]
    assert "1  timestamp after 2027-03-01T23:59:59Z, the latest this run accepts" in result.stderr

    instant = wa_analytics("ingest", export, "-o", tmp_path / "m.csv", "--latest-timestamp", "2027-03-02T01:00:00+01:00")
    assert instant.returncode == 0, instant.stderr
    assert pl.read_csv(tmp_path / "m.csv")["message_id"].to_list() == ["m1", "m2", "m3"]

    for bad in ("2027-03-02T01:00", "tomorrow"):
        refused = wa_analytics("ingest", export, "-o", tmp_path / "other.csv", "--latest-timestamp", bad)
        assert refused.returncode == 2
        assert refused.stderr.strip().splitlines() == [
            f"wa-analytics: error: --latest-timestamp {bad!r} is not a date or an instant with a time zone: write 2027-12-31 or 2027-12-31T23:00:00Z"
        ]
        assert not (tmp_path / "other.csv").exists()


def test_the_bound_is_inclusive_and_to_the_microsecond(tmp_path):
    from analytics.read import ingest

    export = write_csv(
        tmp_path / "in.csv",
        "m1,2026-03-02T10:00:00.000000Z,inbound,B1,,393330001106,,,text,,",
        "m2,2026-03-02T10:00:00.000001Z,inbound,B1,,393330001106,,,text,,",
    )
    latest = dt.datetime(2026, 3, 2, 10, tzinfo=dt.UTC)
    ingested = ingest.read_messages([export], latest=latest)
    assert ingested.messages.collect()["message_id"].to_list() == ["m1"]
    assert ingested.summary.quarantined == {ingest.after_latest(latest): 1}
    assert ingest.default_latest(latest) == latest + dt.timedelta(days=1)


# --- issue 15 item 14: webhook retries counted ---------------------------------------------------


def summary_counts(stderr: str) -> dict[str, int]:
    """Read, used, dropped and quarantined rows from the run summary's lines."""
    counts = {"dropped": 0, "quarantined": 0}
    for line in stderr.splitlines():
        words = line.replace(",", "").split()
        if words and words[0] in ("Read", "Used", "Dropped", "Quarantined") and words[1].isdigit():
            counts[words[0].lower()] = int(words[1])
    return counts


def test_two_identical_webhook_status_lines_are_one_row_and_one_dropped(tmp_path):
    delivered = status_webhook("wamid.O1", "delivered", "393330001106", "2026-03-02T11:00:00+00:00")
    webhook = write_jsonl(tmp_path / "retry.jsonl", delivered, delivered)
    result = wa_analytics("ingest", webhook, "-o", tmp_path / "m.csv")
    assert result.returncode == 0, result.stderr
    assert "Read 2 rows from 1 file:" in result.stderr
    assert f"  {webhook} (webhook JSON): 2 rows" in result.stderr
    assert "Used 1 row." in result.stderr
    assert "Dropped 1 identical repeat of a message_id (kept once)." in result.stderr
    assert summary_counts(result.stderr) == {"read": 2, "used": 1, "dropped": 1, "quarantined": 0}


def test_webhook_counts_add_up_with_statuses_retries_and_quarantined_rows(tmp_path):
    sent = status_webhook("wamid.O1", "sent", "393330001106", "2026-03-02T11:00:00+00:00")
    delivered = status_webhook("wamid.O1", "delivered", "393330001106", "2026-03-02T11:00:05+00:00")
    read = status_webhook("wamid.O1", "read", "393330001106", "2026-03-02T11:05:00+00:00")
    inbound = inbound_webhook("wamid.I1", "393330001106", "2026-03-02T10:00:00+00:00")
    future = inbound_webhook("wamid.I2", "393330001106", "5138-11-16T09:46:39+00:00")
    day1 = write_jsonl(tmp_path / "day1.jsonl", inbound, sent, delivered, sent, future)
    day2 = write_jsonl(tmp_path / "day2.jsonl", delivered, read, inbound)  # overlapping dumps
    result = wa_analytics("ingest", day1, day2, "-o", tmp_path / "m.csv")
    assert result.returncode == 0, result.stderr
    # 8 records: 2 rows used (the inbound message, the outbound one at its delivered time), the
    # future message quarantined; 3 identical repeats (sent, delivered, inbound) and 2 statuses
    # (sent, read) folded into the outbound row.
    assert summary_counts(result.stderr) == {"read": 8, "used": 2, "dropped": 5, "quarantined": 1}
    assert "Dropped 5 rows: 3 identical repeats (webhook retries included), 2 status updates folded into their message's row." in result.stderr
    assert f"  {day1} (webhook JSON): 5 rows" in result.stderr and f"  {day2} (webhook JSON): 3 rows" in result.stderr
    messages = pl.read_csv(tmp_path / "m.csv", infer_schema=False)
    assert messages.select("message_id", "status", "timestamp").rows() == [
        ("wamid.I1", "received", "2026-03-02T10:00:00+00:00"),
        ("wamid.O1", "read", "2026-03-02T11:00:05+00:00"),
    ]


# --- issue 15 item 11 (ingest): line numbers of unreadable CSV ------------------------------------

GOOD = "m{},2026-03-02T10:00:00Z,inbound,B1,,393330001106,,,text,,"


@pytest.mark.parametrize("name", ["in.csv", "in.csv.gz"])
def test_a_latin1_byte_names_the_file_and_line(tmp_path, name):
    import gzip

    lines = [HEADER, *(GOOD.format(i) for i in range(1, 40)), "m40,2026-03-02T10:00:00Z,inbound,B1,,Jos\xe9,,,text,,", GOOD.format(41)]
    data = ("\n".join(lines) + "\n").encode("latin-1")
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    original = path.read_bytes()
    result = wa_analytics("ingest", path, "-o", tmp_path / "m.csv")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"wa-analytics: error: {path}: line 41 is not UTF-8 text (a Latin-1 or Windows-1252 byte such as é?). Save the file as UTF-8"
    ]
    assert path.read_bytes() == original
    assert not (tmp_path / "m.csv").exists()


def test_an_unterminated_quote_names_the_file_and_line_and_echoes_nothing(tmp_path):
    rows = [GOOD.format(i) for i in range(1, 6)]
    rows.insert(2, 'm9,2026-03-02T10:00:00Z,inbound,"B1,,SECRET-VALUE,,,text,,')
    path = write_csv(tmp_path / "in.csv", *rows)
    result = wa_analytics("ingest", path, "-o", tmp_path / "m.csv")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f'wa-analytics: error: {path}: line 4 opens a quoted value that is never closed. Close the quote, or write a quote inside a quoted value as ""'
    ]
    assert "SECRET" not in result.stderr


def test_a_latin1_byte_in_the_header_or_json_names_the_line(tmp_path):
    header = tmp_path / "header.csv"
    header.write_bytes((HEADER.replace("message_type", "tipo_di_messaggio_\xe9") + "\n").encode("latin-1"))
    result = wa_analytics("ingest", header, "-o", tmp_path / "m.csv")
    assert result.returncode == 2
    assert f"{header}: line 1 is not UTF-8 text" in result.stderr.splitlines()[-1]
    records = tmp_path / "records.jsonl"
    records.write_bytes(b'{"message_id": "m1"}\n{"message_id": "m2", "user_id": "Jos\xe9"}\n')
    result = wa_analytics("ingest", records, "-o", tmp_path / "m.csv")
    assert result.returncode == 2
    assert f"{records}: line 2 is not UTF-8 text" in result.stderr.splitlines()[-1]


def test_a_quote_that_never_closes_in_the_header_names_line_1_and_echoes_no_row(tmp_path):
    path = write_csv(tmp_path / "in.csv", GOOD.format(1).replace("393330001106", "SECRET-ID"), header='"' + HEADER)
    result = wa_analytics("ingest", path, "-o", tmp_path / "m.csv")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f'wa-analytics: error: {path}: line 1 opens a quoted value that is never closed. Close the quote, or write a quote inside a quoted value as ""'
    ]
