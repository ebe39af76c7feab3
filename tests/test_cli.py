"""`wa-analytics` (contracts.md §4): exit statuses, messages on stderr, files written."""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from analytics import __version__, cli
from analytics.core.schema import MESSAGE_SCHEMA
from analytics.read import ingest

FIXTURES = Path(__file__).parent / "fixtures" / "ingest"
CONSOLE_SCRIPT = Path(sys.executable).with_name("wa-analytics")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    status = cli.main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_missing_column_exits_2_and_names_the_column(capsys, tmp_path):
    status, out, err = run(capsys, "ingest", str(FIXTURES / "missing_column.csv"), "-o", str(tmp_path / "out.csv"))
    assert status == 2
    assert err.startswith("wa-analytics: error: ")
    assert "missing_column.csv: missing required column user_id" in err
    assert not (tmp_path / "out.csv").exists()


def test_bad_timestamp_exits_0_with_good_rows_out_and_the_bad_line_quarantined(capsys, tmp_path):
    out_path, quarantine_path = tmp_path / "out" / "messages.parquet", tmp_path / "quarantine.csv"
    status, _, err = run(capsys, "ingest", str(FIXTURES / "bad_timestamp.csv"), "-o", str(out_path), "--quarantine", str(quarantine_path))
    assert status == 0
    messages = pl.read_parquet(out_path)
    assert messages.schema == pl.Schema(MESSAGE_SCHEMA)
    assert messages["message_id"].to_list() == ["wamid.B001", "wamid.B002", "wamid.B004"]
    with open(quarantine_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["source_row"], r["reason"], r["timestamp"]) for r in rows] == [("4", ingest.BAD_TIMESTAMP, "01/03/2026 09:02")]
    assert list(rows[0]) == list(ingest.QUARANTINE_COLUMNS)
    assert f"Quarantined 1 row (written to {quarantine_path})" in err
    assert "Used 3 rows." in err


def test_quarantine_goes_beside_the_output_by_default(capsys, tmp_path):
    status, _, err = run(capsys, "ingest", str(FIXTURES / "bad_timestamp.csv"), "-o", str(tmp_path / "messages.csv.gz"))
    assert status == 0
    assert (tmp_path / "messages.quarantine.csv").exists()
    assert f"written to {tmp_path / 'messages.quarantine.csv'}" in err


@pytest.mark.parametrize(
    "output, expected",
    [("out/messages.parquet", "out/messages.quarantine.csv"), ("m.CSV.GZ", "m.quarantine.csv"), ("a.b.csv", "a.b.quarantine.csv")],
)
def test_default_quarantine_path(output, expected):
    assert cli.default_quarantine_path(output) == expected


def test_no_quarantine_file_unless_asked_or_needed(capsys, tmp_path):
    assert run(capsys, "ingest", str(FIXTURES / "messages.csv"), "-o", str(tmp_path / "m.csv"))[0] == 0
    assert not (tmp_path / "m.quarantine.csv").exists()
    asked = tmp_path / "asked.csv"
    status, _, _ = run(capsys, "ingest", str(FIXTURES / "messages.csv"), "-o", str(tmp_path / "m.csv"), "--quarantine", str(asked))
    assert status == 0
    assert asked.read_text().strip() == ",".join(ingest.QUARANTINE_COLUMNS)


def test_csv_output_reads_back(capsys, tmp_path):
    assert run(capsys, "ingest", str(FIXTURES / "messages.csv"), "-o", str(tmp_path / "m.csv"))[0] == 0
    assert "2026-01-05T09:00:00+00:00" in (tmp_path / "m.csv").read_text()
    status, out, _ = run(capsys, "summary", str(tmp_path / "m.csv"))
    assert status == 0 and "Messages:          7 (2 inbound, 5 outbound)" in out


SUMMARY = """\
Period:            2026-01-05 09:00 to 2026-02-10 10:00 (UTC)
Messages:          7 (2 inbound, 5 outbound)
Business numbers:  2
WABAs:             2
Users:             4
Markets (top 3 of 4, by messages):
  market                           messages      users
  Germany                                 2          1
  Italy                                   2          1
  North America                           2          1
Messages by month (UTC) and kind:
                 inbound   outbound
  month     non-template  marketing  utility  authentication  non-template  total
  2026-01              1          1        0               0             1      3
  2026-02              1          1        1               1             0      4
  total                2          2        1               1             1      7
"""


def test_summary_prints_the_traffic(capsys):
    status, out, err = run(capsys, "summary", str(FIXTURES / "messages.csv"), "--top", "3")
    assert status == 0
    assert out == SUMMARY
    assert "Read 7 rows from 1 file:" in err


def test_summary_months_follow_the_time_zone(capsys):
    status, out, _ = run(capsys, "summary", str(FIXTURES / "messages.csv"), "--timezone", "America/Los_Angeles")
    assert status == 0
    # wamid.T004 (2026-02-01 00:00 UTC) is still January in Los Angeles.
    assert "  2026-01              1          1        1               0             1      4" in out


@pytest.mark.parametrize(
    "argv, expected",
    [
        ([], "the following arguments are required: SUBCOMMAND"),
        (["ingest", "x.csv"], "the following arguments are required: -o/--output"),
        (["ingest", "x.csv", "-o", "out.xlsx"], "cannot write 'out.xlsx'"),
        (["ingest", "x.csv", "-o", "out.csv", "--quarantine", "q.parquet"], "must be CSV"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["summary", "x.csv", "--timezone", "Mars/Olympus"], "unknown time zone 'Mars/Olympus'"),
        (["summary", "nowhere.csv"], "nowhere.csv: no such file"),
    ],
)
def test_usage_errors_exit_2(capsys, argv, expected):
    status, _, err = run(capsys, *argv)
    assert status == 2
    assert err.startswith("wa-analytics: error: ")
    assert expected in err


def test_pseudonymise_needs_a_key(capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("WA_ANALYTICS_PSEUDONYM_KEY", raising=False)
    status, _, err = run(capsys, "ingest", str(FIXTURES / "messages.csv"), "-o", str(tmp_path / "m.csv"), "--pseudonymise")
    assert status == 2 and "WA_ANALYTICS_PSEUDONYM_KEY is not set" in err
    monkeypatch.setenv("WA_ANALYTICS_PSEUDONYM_KEY", "0123456789abcdef0123")
    status, _, _ = run(capsys, "ingest", str(FIXTURES / "messages.csv"), "-o", str(tmp_path / "m.csv"), "--pseudonymise")
    assert status == 0
    assert all(u.startswith("p_") for u in pl.read_csv(tmp_path / "m.csv")["user_id"])


def test_internal_errors_exit_1_and_offer_the_traceback(capsys, monkeypatch, tmp_path):
    def broken(*args, **kwargs):
        raise RuntimeError("something unexpected")

    monkeypatch.setattr(ingest, "read_messages", broken)
    status, _, err = run(capsys, "summary", str(FIXTURES / "messages.csv"))
    assert status == 1
    assert err == "wa-analytics: internal error: something unexpected (run with --debug for the traceback)\n"
    status, _, err = run(capsys, "--debug", "summary", str(FIXTURES / "messages.csv"))
    assert status == 1 and "Traceback" in err and "RuntimeError: something unexpected" in err
    status, _, err = run(capsys, "summary", "--debug", str(FIXTURES / "messages.csv"))
    assert status == 1 and "Traceback" in err


def test_version_and_help_exit_0(capsys):
    status, out, _ = run(capsys, "--version")
    assert (status, out) == (0, f"wa-analytics {__version__}\n")
    status, out, _ = run(capsys, "ingest", "--help")
    assert status == 0 and "--quarantine FILE" in out


def test_every_subcommand_is_registered():
    parser = cli.build_parser()
    choices = next(a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert {"ingest", "summary"} <= set(choices)


def test_the_console_script(tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    missing = subprocess.run(
        [str(CONSOLE_SCRIPT), "ingest", str(FIXTURES / "missing_column.csv"), "-o", str(tmp_path / "out.parquet")],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert missing.returncode == 2
    assert "wa-analytics: error:" in missing.stderr and "missing required column user_id" in missing.stderr
    assert "Traceback" not in missing.stderr
    good = subprocess.run(
        [str(CONSOLE_SCRIPT), "ingest", str(FIXTURES / "bad_timestamp.csv"), "-o", str(tmp_path / "out.parquet")],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert good.returncode == 0, good.stderr
    assert pl.read_parquet(tmp_path / "out.parquet").height == 3
    assert "4," in (tmp_path / "out.quarantine.csv").read_text()
