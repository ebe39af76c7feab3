"""Stage files (analytics/core/stages.py): the marker `ingest` and `charges` write, and the trust rule
of the commands that read them."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import polars as pl
import pytest

from analytics import __version__, cli
from analytics.core import stages
from analytics.core.resources import resource
from analytics.core.schema import MESSAGE_SCHEMA
from analytics.read import ingest
from analytics.synthetic import generate


def run(capsys, *argv: str) -> tuple[int, str]:
    status = cli.main([str(a) for a in argv])
    return status, capsys.readouterr().err


def marker_of(path: Path) -> dict:
    return json.loads(pl.read_parquet_metadata(path)[stages.MARKER_KEY])


@pytest.fixture(scope="module")
def traffic(tmp_path_factory) -> Path:
    """Synthetic traffic as CSV, with webhook-style repeats (the generator's), read by the validating path."""
    path = tmp_path_factory.mktemp("traffic") / "traffic.csv"
    generate.write_traffic(generate.generate_traffic(users=120, start=dt.date(2026, 8, 1), months=3, seed=7), path)
    return path


@pytest.fixture()
def stage_file(traffic, tmp_path, capsys) -> Path:
    out = tmp_path / "messages.parquet"
    assert run(capsys, "ingest", traffic, "-o", out, "--timezone", "Europe/Rome", "--latest-timestamp", "2027-06-30")[0] == 0
    return out


def test_ingest_writes_a_marker_with_what_it_checked(traffic, stage_file):
    marker = marker_of(stage_file)
    written = pl.read_parquet(stage_file)
    validated = ingest.read_messages([traffic], timezone="Europe/Rome", latest=ingest.latest_option("2027-06-30"))
    assert marker["kind"] == "messages" and marker["version"] == stages.STAGE_VERSION
    assert marker["package_version"] == __version__
    assert marker["rows"] == written.height == validated.summary.rows_used
    assert validated.summary.rows_read > written.height  # the generator's repeats were dropped: the file is what ingest kept
    assert marker["timezone"] == "Europe/Rome" and marker["waba_timezones"] == {}
    assert marker["latest_timestamp_bound"] == ingest.latest_option("2027-06-30").isoformat()
    assert dt.datetime.fromisoformat(marker["first_timestamp"]) == written["timestamp"].min()
    assert dt.datetime.fromisoformat(marker["last_timestamp"]) == written["timestamp"].max()
    assert marker["rules_file"] == stages.content_hash(resource("data", "rules", "rule_sets.toml").read_bytes())
    assert marker["markets_table"] == stages.content_hash(resource("data", "markets", "regions.csv").read_bytes())
    assert marker["unconfirmed_deliveries"] == written.filter(pl.col("status") == "sent").height > 0
    assert marker["validated"] == list(ingest.VALIDATED) and marker["pseudonymised"] is False
    # The columns stay exactly those of contracts.md §1: the marker is metadata only.
    assert written.schema == pl.Schema(MESSAGE_SCHEMA)


def test_a_csv_output_has_no_marker_and_a_plain_parquet_file_none(traffic, tmp_path, capsys):
    assert run(capsys, "ingest", traffic, "-o", tmp_path / "messages.csv")[0] == 0
    assert stages.read_marker(tmp_path / "messages.csv") is None
    pl.read_csv(traffic).write_parquet(tmp_path / "plain.parquet")
    assert stages.read_marker(tmp_path / "plain.parquet") is None


def test_charges_on_a_stage_file_equal_charges_through_validation(traffic, stage_file, tmp_path, capsys, monkeypatch):
    validated, trusted = tmp_path / "validated.parquet", tmp_path / "trusted.parquet"
    status, err = run(capsys, "charges", traffic, "-o", validated, "--timezone", "Europe/Rome", "--latest-timestamp", "2027-06-30")
    assert status == 0 and "used as they are" not in err

    def no_second_validation(*args, **kwargs):
        raise AssertionError("a stage file was validated again")

    monkeypatch.setattr(ingest, "label", no_second_validation)
    status, err = run(capsys, "charges", stage_file, "-o", trusted, "--timezone", "Europe/Rome")
    assert status == 0
    assert f"{stage_file}: canonical messages written by wa-analytics ingest, used as they are" in err
    expected = pl.read_parquet(validated)
    assert expected.height > 400
    assert pl.read_parquet(trusted).to_dicts() == expected.to_dicts()
    assert f"Used {marker_of(stage_file)['rows']:,} rows." in err


def test_a_large_stage_file_is_billed_bucket_by_bucket_from_the_file_itself(stage_file, tmp_path, capsys, monkeypatch):
    from analytics.bill import partitioned

    in_memory = tmp_path / "in_memory.parquet"
    assert run(capsys, "charges", stage_file, "-o", in_memory, "--timezone", "Europe/Rome")[0] == 0
    monkeypatch.setattr(partitioned, "ROWS_PER_BUCKET", 200)
    read = []
    bill_parquet = partitioned.bill_parquet
    monkeypatch.setattr(partitioned, "bill_parquet", lambda inputs, *a, **k: read.append(inputs) or bill_parquet(inputs, *a, **k))
    in_buckets = tmp_path / "in_buckets.parquet"
    assert run(capsys, "charges", stage_file, "-o", in_buckets, "--timezone", "Europe/Rome")[0] == 0
    assert read == [[stage_file]]  # no copy of the messages first
    order = ["business_phone", "user_id", "started_at", "opening_message_id"]
    expected = pl.read_parquet(in_memory).sort(order)
    assert pl.read_parquet(in_buckets).sort(order).to_dicts() == expected.to_dicts()
    assert marker_of(in_buckets)["rows"] == expected.height


def test_summary_of_a_stage_file_is_the_summary_of_its_messages(traffic, stage_file, capsys):
    assert cli.main(["summary", str(traffic), "--timezone", "Europe/Rome", "--latest-timestamp", "2027-06-30"]) == 0
    validated = capsys.readouterr().out
    assert cli.main(["summary", str(stage_file), "--timezone", "Europe/Rome"]) == 0
    assert capsys.readouterr().out == validated != ""


def _rewrite(stage_file: Path, target: Path, change: str) -> None:
    metadata, frame = pl.read_parquet_metadata(stage_file), pl.read_parquet(stage_file)
    if change == "column dropped":
        frame = frame.drop("status")
    elif change == "type changed":
        frame = frame.with_columns(pl.col("timestamp").dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    elif change == "rows removed":
        frame = frame.head(10)
    elif change == "other version":
        marker = json.loads(metadata[stages.MARKER_KEY])
        metadata = {**metadata, stages.MARKER_KEY: json.dumps({**marker, "version": stages.STAGE_VERSION + 1})}
    elif change == "unreadable marker":
        metadata = {**metadata, stages.MARKER_KEY: "{not json"}
    frame.write_parquet(target, metadata=metadata)


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ("column dropped", "missing status"),
        ("type changed", "timestamp is String"),
        ("rows removed", "holds 10 rows, its marker says"),
        ("other version", f"stage file version {stages.STAGE_VERSION + 1}, this is version {stages.STAGE_VERSION}"),
        ("unreadable marker", "marker cannot be read"),
    ],
)
@pytest.mark.parametrize("command", ["charges", "costs", "summary"])
def test_a_tampered_stage_file_is_refused(stage_file, tmp_path, capsys, change, said, command):
    tampered = tmp_path / "tampered.parquet"
    _rewrite(stage_file, tampered, change)
    output = [] if command == "summary" else ["-o", tmp_path / "out.csv"]
    status, err = run(capsys, command, tampered, *output)
    assert status == 2
    assert err.startswith(f"wa-analytics: error: {tampered}: ")
    assert said in err
    assert "run `wa-analytics ingest` again" in err.lower()
    assert not (tmp_path / "out.csv").exists()


def test_a_parquet_file_without_marker_is_validated_and_bad_rows_quarantined(stage_file, tmp_path, capsys):
    plain = tmp_path / "plain.parquet"
    frame = pl.read_parquet(stage_file)
    bad = frame.head(2).with_columns(pl.Series("direction", ["sideways", "upwards"]), pl.Series("message_id", ["bad.1", "bad.2"]))
    pl.concat([frame, bad]).write_parquet(plain)  # no metadata: an ordinary file
    quarantine = tmp_path / "bad.csv"
    status, err = run(capsys, "charges", plain, "-o", tmp_path / "charges.parquet", "--quarantine", quarantine, "--timezone", "Europe/Rome")
    assert status == 0
    assert "used as they are" not in err
    quarantined = pl.read_csv(quarantine)
    assert quarantined["message_id"].to_list() == ["bad.1", "bad.2"]
    assert set(quarantined["reason"]) == {ingest.UNKNOWN_DIRECTION}
    assert f"Used {frame.height:,} rows." in err


def test_a_stage_file_with_a_csv_goes_the_validating_way(stage_file, tmp_path, capsys):
    more = tmp_path / "more.csv"
    extra = (
        pl.read_parquet(stage_file).head(2).with_columns(pl.Series("message_id", ["new.1", "bad.1"]), pl.Series("direction", ["inbound", "sideways"]))
    )
    ingest.write_frame(extra, more)
    quarantine = tmp_path / "bad.csv"
    status, err = run(capsys, "charges", stage_file, more, "-o", tmp_path / "c.parquet", "--quarantine", quarantine, "--timezone", "Europe/Rome")
    assert status == 0
    assert "used as they are" not in err
    rows = marker_of(stage_file)["rows"]
    assert f"Used {rows + 1:,} rows." in err
    assert f"{stage_file} (Parquet): {rows:,} rows" in err
    assert pl.read_csv(quarantine)["message_id"].to_list() == ["bad.1"]


def test_a_narrower_bound_than_ingest_checked_validates_again(stage_file, tmp_path, capsys):
    last = dt.datetime.fromisoformat(marker_of(stage_file)["last_timestamp"])
    bound = (last - dt.timedelta(days=3)).date()
    quarantine = tmp_path / "late.csv"
    status, err = run(
        capsys,
        "charges",
        stage_file,
        "-o",
        tmp_path / "c.parquet",
        "--latest-timestamp",
        bound.isoformat(),
        "--quarantine",
        quarantine,
        "--timezone",
        "Europe/Rome",
    )
    assert status == 0
    assert "used as they are" not in err
    late = pl.read_parquet(stage_file).filter(pl.col("timestamp") > ingest.latest_option(bound.isoformat()))
    assert late.height > 0
    assert sorted(pl.read_csv(quarantine)["message_id"]) == sorted(late["message_id"])


@pytest.fixture()
def charges_file(stage_file, tmp_path, capsys) -> Path:
    out = tmp_path / "charges.parquet"
    assert run(capsys, "charges", stage_file, "-o", out, "--timezone", "Europe/Rome", "--rules", "pmp-2025")[0] == 0
    return out


def test_charges_writes_a_marker_with_its_settings(charges_file):
    marker = marker_of(charges_file)
    assert marker["kind"] == "charges" and marker["rows"] == pl.read_parquet(charges_file).height
    settings = marker["settings"]
    assert settings["timezone"] == "Europe/Rome" and settings["rules"] == "pmp-2025" and settings["fep_model"] == "fixed-72h"
    assert settings["rule_book"].startswith("sha256:")


def test_costs_of_a_charges_file_equal_costs_of_the_messages(stage_file, charges_file, tmp_path, capsys, monkeypatch):
    from analytics.bill import charges

    options = ["--timezone", "Europe/Rome", "--rules", "pmp-2025", "--currency", "USD", "--report-unpriced"]
    status, _ = run(capsys, "costs", stage_file, "-o", tmp_path / "from_messages.csv", *options)
    assert status == 0
    monkeypatch.setattr(charges, "bill", lambda *a, **k: pytest.fail("a charges file was billed again"))
    status, err = run(capsys, "costs", charges_file, "-o", tmp_path / "from_charges.csv", *options)
    assert status == 0
    assert f"charges from {charges_file} (written by wa-analytics charges, with the same settings): not billed again" in err
    expected = pl.read_csv(tmp_path / "from_messages.csv")
    assert expected.height > 3
    assert pl.read_csv(tmp_path / "from_charges.csv").to_dicts() == expected.to_dicts()


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["--timezone", "UTC", "--rules", "pmp-2025"], "timezone"),
        (["--timezone", "Europe/Rome"], "rules"),
        (["--timezone", "Europe/Rome", "--rules", "pmp-2026-10"], "rules"),
    ],
)
def test_costs_refuses_a_charges_file_billed_with_other_settings(charges_file, tmp_path, capsys, options, named):
    status, err = run(capsys, "costs", charges_file, "-o", tmp_path / "costs.csv", *options)
    assert status == 2
    assert err.startswith(f"wa-analytics: error: {charges_file}: was billed with other settings than this run's: {named}")
    assert "give the messages to bill them again" in err
    assert not (tmp_path / "costs.csv").exists()


def test_costs_refuses_a_charges_file_of_another_config(charges_file, tmp_path, capsys):
    config = tmp_path / "analytics.toml"
    config.write_text('[billing]\ntimezone = "Europe/Rome"\nfep_model = "fixed-7d"\n')
    status, err = run(capsys, "costs", charges_file, "-o", tmp_path / "costs.csv", "--config", config, "--rules", "pmp-2025")
    assert status == 2
    assert "other settings than this run's: fep_model" in err


@pytest.mark.parametrize("command", ["charges", "compare"])
def test_commands_that_need_messages_refuse_a_charges_file(charges_file, tmp_path, capsys, command):
    scenarios = tmp_path / "scenarios.toml"
    scenarios.write_text("[scenario.baseline]\n")
    extra = ["--scenarios", scenarios] if command == "compare" else []
    status, err = run(capsys, command, charges_file, "-o", tmp_path / "out.csv", *extra)
    assert status == 2
    assert f"{charges_file}: is a charges file written by wa-analytics charges, not canonical messages" in err
