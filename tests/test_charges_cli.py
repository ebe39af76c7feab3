"""`wa-analytics charges` end to end, and the engine paths that must agree with the reference."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest
from traffic import Traffic

from analytics import cli
from analytics.bill import charges, partitioned, reference
from analytics.core import schema
from analytics.present import summaries
from analytics.read import ingest
from analytics.settings import Settings
from analytics.synthetic import generate

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample" / "messages.csv.gz"


@pytest.fixture(scope="module")
def sample_messages() -> pl.DataFrame:
    return ingest.read_messages([SAMPLE]).messages.collect()


def test_charges_on_the_sample_match_the_reference(tmp_path: Path, capsys: pytest.CaptureFixture[str], sample_messages) -> None:
    out = tmp_path / "charges.parquet"
    assert cli.main(["charges", str(SAMPLE), "-o", str(out)]) == 0
    stderr = capsys.readouterr().err
    expected = reference.bill(sample_messages)
    written = pl.read_parquet(out)
    assert written.height == expected.height > 30_000
    assert written.to_dicts() == expected.to_dicts()
    # The printed summary is the reference's own counts, line for line.
    assert summaries.describe_charges(expected) in stderr
    # The October 2026 rules are on Meta's own pages (data/rules/rule_sets.toml): no warning for them.
    assert "warning" not in stderr and "reported by partners" not in stderr
    assert "Free entry point windows: every one modelled (fep_model fixed-72h)" in stderr
    assert "Quarantined 6 rows" in stderr


def test_keys_sharing_a_hash_are_still_billed_apart(monkeypatch: pytest.MonkeyPatch, sample_messages) -> None:
    # Every key gets the same 64-bit hash: the second hash must notice, and the keys be told apart
    # by their strings, giving the very charges of an engine without collisions.
    expected = charges.bill(sample_messages)
    monkeypatch.setattr(charges, "_key_hash", lambda groups=False: pl.lit(42, dtype=pl.UInt64))
    collided = charges.bill(sample_messages)
    assert collided.height == expected.height > 30_000
    assert collided.equals(expected)


def test_charges_with_rules_override_and_timezone(tmp_path: Path, sample_messages) -> None:
    # The sample's one-to-one traffic: its Groups API rows cannot be billed under a CBP rule set
    # (Meta bills groups per message only, issue 17's design).
    one_to_one = sample_messages.filter(pl.col("group_id").is_null())
    source = tmp_path / "one_to_one.parquet"
    one_to_one.write_parquet(source)
    out = tmp_path / "charges.csv"
    assert cli.main(["charges", str(source), "-o", str(out), "--rules", "cbp-2023", "--timezone", "Europe/Rome"]) == 0
    written = pl.read_csv(out, infer_schema=False)
    assert set(written["rule_set"]) == {"cbp-2023"}
    expected = reference.bill(one_to_one, Settings(timezone="Europe/Rome", rules="cbp-2023"))
    assert written.height == expected.height
    assert written["category"].value_counts().sort("category").rows() == (expected["category"].value_counts().sort("category").rows())


def test_charges_config_file_and_bad_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "analytics.toml"
    config.write_text('[billing]\ntimezone = "Mars/Olympus"\n')
    assert cli.main(["charges", str(SAMPLE), "-o", str(tmp_path / "c.csv"), "--config", str(config)]) == 2
    assert '[billing] timezone: expected an IANA time zone name such as "Europe/Rome" or "UTC", got \'Mars/Olympus\'' in capsys.readouterr().err
    assert cli.main(["charges", str(SAMPLE), "-o", str(tmp_path / "c.csv"), "--rules", "nbp-2021"]) == 2
    assert "invalid choice: 'nbp-2021'" in capsys.readouterr().err


def test_partitioned_billing_equals_in_memory_billing(tmp_path: Path) -> None:
    """Hash buckets of whole keys give the same charges as one pass, across rule-set switches."""
    traffic = generate.generate_traffic(users=400, start=dt.date(2025, 5, 1), months=3, seed=3).unique(subset="message_id", keep="first")
    source = tmp_path / "messages.parquet"
    traffic.write_parquet(source)
    config = Settings(timezone="Europe/Rome")
    run = partitioned.bill_parquet([source], tmp_path / "charges.parquet", config, rows_per_bucket=300)
    assert run.buckets > partitioned.RESCAN_BUCKETS_AT_MOST  # split by DuckDB
    in_buckets = schema.conform_charges(pl.read_parquet(tmp_path / "charges.parquet"))
    assert {"cbp-2023", "pmp-2025"} <= set(in_buckets["rule_set"])
    assert in_buckets.to_dicts() == charges.bill(traffic, config).to_dicts()
    assert run.charges == in_buckets.height
    rescanned = partitioned.bill_parquet([source], tmp_path / "two.parquet", config, rows_per_bucket=traffic.height // 2 + 1)
    assert rescanned.buckets == 2 <= partitioned.RESCAN_BUCKETS_AT_MOST
    assert schema.conform_charges(pl.read_parquet(tmp_path / "two.parquet")).to_dicts() == in_buckets.to_dicts()
    one_pass = partitioned.bill_parquet([source], tmp_path / "one.csv", config)
    assert one_pass.buckets == 1
    assert pl.read_csv(tmp_path / "one.csv", infer_schema=False).height == in_buckets.height


def test_charges_command_bills_large_inputs_bucket_by_bucket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(partitioned, "ROWS_PER_BUCKET", 5_000)
    monkeypatch.setattr(partitioned, "ROWS_PER_LARGE_BUCKET", 5_000)
    buckets = []
    bill_parquet = partitioned.bill_parquet
    monkeypatch.setattr(partitioned, "bill_parquet", lambda *a, **k: buckets.append(bill_parquet(*a, **k).buckets))
    out = tmp_path / "charges.parquet"
    assert cli.main(["charges", str(SAMPLE), "-o", str(out)]) == 0
    assert buckets == [9]
    expected = reference.bill(ingest.read_messages([SAMPLE]).messages.collect())
    assert schema.conform_charges(pl.read_parquet(out)).to_dicts() == expected.to_dicts()


@pytest.mark.parametrize(
    ("column", "value", "error"),
    [
        ("timestamp", dt.datetime(2021, 5, 1, tzinfo=dt.UTC), "message m0002 at 2021-05-01 00:00:00+00:00 is before 2022-02-01"),
        ("template_category", "promotional", "template message m0002 has category 'promotional': expected one of"),
        ("direction", "sideways", "message m0002 has direction 'sideways': expected one of inbound, outbound"),
    ],
)
def test_the_engine_names_the_first_row_ingest_would_have_quarantined(column, value, error) -> None:
    messages = Traffic().user(0).template(1, "marketing").text(2).frame()
    broken = messages.with_columns(pl.when(pl.col("message_id") == "m0002").then(pl.lit(value)).otherwise(pl.col(column)).alias(column))
    for frame in (broken, broken.lazy()):
        with pytest.raises(ValueError, match=error.replace("(", r"\(").replace("+", r"\+")):
            charges.bill(frame)
