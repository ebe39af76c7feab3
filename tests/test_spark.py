"""The Spark engine (analytics/pipeline/spark.py) gives the local engine's charges and costs, row for row.

Spark runs in local mode on 2 cores, one session for the module. The traffic is generated and
crosses every rule set (cbp-2022 → cbp-2023 → pmp-2025 → pmp-2026-10) and 44 months; the free
tiers are lowered so that every monthly counter decides both ways. The 1 M-message run is marked
`slow`: `.ci/run` runs it with WA_ANALYTICS_SLOW_TESTS=1.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from decimal import Decimal
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pytest
from polars.testing import assert_frame_equal
from traffic import low_tier_card, with_free_tier_size

from analytics import cli
from analytics.bill import charges
from analytics.core import schema
from analytics.core.resources import query
from analytics.pipeline import spark as spark_engine
from analytics.present import invoice_text, summaries
from analytics.price import pricing
from analytics.settings import Settings
from analytics.synthetic import generate
from analytics.terms import rules

pytest.importorskip("pyspark", reason="the Spark engine needs pyspark: pip install 'wa-analytics[spark]'")

USD = Settings(currency="USD", report_unpriced=True)  # the shipped card has no rates for parts of 2025


@pytest.fixture(scope="module")
def spark():
    session = spark_engine.session("local[2]", driver_memory="2g")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def traffic() -> pl.DataFrame:
    """About 22,000 canonical messages from April 2023 to November 2026: every rule set and switch."""
    generated = generate.generate_traffic(users=300, start=dt.date(2023, 4, 1), months=44, seed=5)
    return generated.unique(subset=["message_id", "user_id"], keep="first", maintain_order=True)  # a group message: a row per participant


# Five free units a month per counter, so each counter has free and paid charges every month.
SMALL_FREE_TIERS = with_free_tier_size(rules.shipped(), 5)
# ... and free entry point charges taking places in them (the choice), the other way round.
COUNTING_FEP = with_free_tier_size(rules.shipped(), 5, rules.Choices(fep_counts_toward_free_tier=True, crossover="utility"))


@pytest.mark.parametrize(
    ("config", "session_timezone"),
    [
        (Settings(timezone="Europe/Rome", rule_book=SMALL_FREE_TIERS), "UTC"),
        (Settings(rules="cbp-2022", rule_book=SMALL_FREE_TIERS), "America/Sao_Paulo"),
        (
            Settings(fep_model="extend-24h-per-user-message", service_exempt_until=dt.date(2026, 10, 20), rule_book=COUNTING_FEP),
            "UTC",
        ),
    ],
    ids=["rules-in-force-rome", "what-if-cbp-2022-in-a-session-not-in-utc", "every-option-of-2026"],
)
def test_spark_charges_equal_the_local_engine(spark, traffic, config, session_timezone) -> None:
    """A notebook's session may have any time zone: instants cross Arrow as instants."""
    if config.rules == "cbp-2022":
        traffic = traffic.filter(pl.col("group_id").is_null())  # Meta bills groups per message only
    local = schema.conform_charges(charges.bill(traffic, config))
    spark.conf.set("spark.sql.session.timeZone", session_timezone)
    try:
        on_spark = spark_engine.to_polars(spark_engine.bill(spark.createDataFrame(traffic.to_arrow()), config, partitions=3))
    finally:
        spark.conf.set("spark.sql.session.timeZone", "UTC")
    assert_frame_equal(on_spark, local)
    if config.rules is None:
        assert set(local["rule_set"]) == {"cbp-2022", "cbp-2023", "pmp-2025", "pmp-2026-10"}
        for rule_set in ("cbp-2022", "cbp-2023", "pmp-2026-10"):  # each counter decided both ways
            decided = set(local.filter(pl.col("rule_set") == rule_set)["pricing_type"])
            assert {"free_tier", "regular"} <= decided, rule_set
    if config.service_exempt_until is not None:
        assert "free_exempt" in set(local["pricing_type"])


# Two WABAs in two time zones and two portfolios, a markup, tiers reached every month.
ROME_AND_SAO_PAULO = Settings(timezone="Europe/Rome", waba_timezones={"104996122399160": "America/Sao_Paulo"})
TIERED_USD = ROME_AND_SAO_PAULO.replace(
    currency="USD",
    portfolios={"104996122399150": "retail", "104996122399160": "wholesale"},
    markup_percent=Decimal("12.5"),
    markup_per_charge=Decimal("0.0001"),
    report_unpriced=True,
)


@pytest.fixture(scope="module")
def local_charges(traffic) -> pl.DataFrame:
    return charges.bill(traffic, ROME_AND_SAO_PAULO)


def priced_to_polars(priced) -> pl.DataFrame:
    """Spark's priced rows in `pricing.PRICED_SCHEMA`, instants in UTC, sorted like the charges."""
    frame = pl.from_arrow(priced.toArrow()).with_columns(pl.col(pl.Datetime).dt.convert_time_zone("UTC"))
    return frame.select(pl.col(c).cast(t) for c, t in pricing.PRICED_SCHEMA.items()).sort(schema.CHARGE_ORDER)


def test_spark_priced_rows_equal_the_local_engine(spark, local_charges) -> None:
    """`spark.price`: every column of every priced charge, tier positions and exact decimals
    included, in a session whose time zone is neither UTC nor a WABA's."""
    card = low_tier_card()
    local = pricing.price(local_charges, TIERED_USD, card=card).sort(schema.CHARGE_ORDER)
    spark.conf.set("spark.sql.session.timeZone", "Asia/Tokyo")
    try:
        on_spark = priced_to_polars(spark_engine.price(spark.createDataFrame(local_charges.to_arrow()), TIERED_USD, card=card))
    finally:
        spark.conf.set("spark.sql.session.timeZone", "UTC")
    assert_frame_equal(on_spark, local)
    assert local["tier_position"].max() > 20 and set(local.filter("billable")["tier_from"].drop_nulls()) == {1, 3, 8}
    assert set(local["portfolio"]) == {"retail", "wholesale"} and local["cost"].null_count() > 0  # some unpriced


def test_spark_costs_equal_the_local_engine(spark, traffic, local_charges) -> None:
    """Billed and priced on Spark, summed per partition: the same costs, invoice lines and summary."""
    card = low_tier_card()
    local = pricing.price(local_charges, TIERED_USD, card=card)
    billed = spark_engine.bill(spark.createDataFrame(traffic.to_arrow()), ROME_AND_SAO_PAULO)
    on_spark = pl.from_arrow(spark_engine.costs(billed, TIERED_USD, card=card).toArrow())
    assert_frame_equal(on_spark.cast(pricing.ROLLUP_SCHEMA), pricing.costs(local))
    partials = spark_engine.cost_partials(billed, TIERED_USD, card=card)
    assert_frame_equal(pricing.invoice_from_partials(partials), pricing.invoice(local))
    assert invoice_text.format_invoice_from_partials(partials, TIERED_USD) == invoice_text.format_invoice(local, TIERED_USD)
    assert pricing.costs(local).height > 100


def test_a_missing_rate_raises_the_same_error_on_spark(spark, local_charges) -> None:
    """Without --report-unpriced: the local engine's message, from a few rows Spark collects."""
    strict = ROME_AND_SAO_PAULO.replace(currency="USD", portfolios=TIERED_USD.portfolios)
    card = low_tier_card().filter(~((pl.col("market") == "Germany") & (pl.col("category") == "marketing")))
    with pytest.raises(pricing.MissingRateError) as local:
        pricing.price(local_charges, strict, card=card)
    charges_frame = spark.createDataFrame(local_charges.to_arrow())
    with pytest.raises(pricing.MissingRateError) as on_spark:
        spark_engine.price(charges_frame, strict, card=card)
    assert str(on_spark.value) == str(local.value)
    assert "Germany marketing" in str(local.value) and "In all" in str(local.value)
    with pytest.raises(pricing.MissingRateError) as in_costs:
        spark_engine.costs(charges_frame, strict, card=card)
    assert str(in_costs.value) == str(local.value)


def test_tier_query_positions_the_same_in_duckdb_and_spark(spark) -> None:
    """queries/tier_positions.sql runs in both engines (Spark after `spark_dialect`): the same
    positions, ties in time broken by number, user and message, other charges uncounted."""
    at = dt.datetime(2026, 1, 5, 10, tzinfo=dt.UTC)
    priceable_charges = pl.DataFrame(
        {
            "row": [0, 1, 2, 3, 4, 5, 6],
            "portfolio": ["p", "p", "p", "p", "p", "q", "p"],
            "market": ["Italy", "Italy", "Italy", "Italy", "Germany", "Italy", "Italy"],
            "family": ["utility", "utility", "utility", None, "utility", "utility", "utility"],
            "month": ["2026-01"] * 7,
            "billable": [True, True, True, True, True, True, False],
            "pricing_model": ["PMP", "PMP", "PMP", "PMP", "PMP", "PMP", "PMP"],
            "started_at": [at, at, at, at, at, at, at],
            "business_phone": ["P2", "P1", "P1", "P1", "P1", "P1", "P1"],
            "user_id": ["U1", "U2", "U1", "U1", "U1", "U1", "U1"],
            "opening_message_id": ["m0", "m1", "m2", "m3", "m4", "m5", "m6"],
        }
    )
    tiered_families = pl.DataFrame({"market": ["Italy"], "family": ["utility"]})
    con = duckdb.connect()
    con.register("priceable_charges", priceable_charges)
    con.register("tiered_families", tiered_families)
    in_utc = pl.col("started_at").dt.convert_time_zone("UTC")
    in_duckdb = con.sql(query("tier_positions")).pl().sort("row").with_columns(in_utc)
    spark.createDataFrame(priceable_charges.to_arrow()).createOrReplaceTempView("priceable_charges")
    spark.createDataFrame(tiered_families.to_arrow()).createOrReplaceTempView("tiered_families")
    in_spark = pl.from_arrow(spark.sql(spark_engine.spark_dialect(query("tier_positions"))).toArrow()).sort("row").with_columns(in_utc)
    assert in_duckdb["tier_position"].to_list() == [3, 2, 1, None, None, 1, None]
    assert_frame_equal(in_spark, in_duckdb, check_dtypes=False)


def test_free_tier_query_decides_the_same_in_duckdb_and_spark(spark) -> None:
    """queries/free_tiers.sql runs in both engines (Spark after `spark_dialect`), as the local
    engine and the Spark engine each run it: same rows, same positions in the month."""
    at = dt.datetime(2025, 11, 3, 9, tzinfo=dt.UTC)
    counted_charges = pl.DataFrame(
        {
            "row": [0, 1, 2, 3, 4],
            "free_tier_counter": ["pmp-2026-10/service"] * 3 + ["cbp-2022/conversations"] * 2,
            "free_tier_scope": ["+391", "+391", "+392", "waba", "waba"],
            "local_month": [dt.date(2026, 10, 1)] * 3 + [dt.date(2022, 3, 1)] * 2,
            "started_at": [at, at, at, at, at + dt.timedelta(seconds=1)],
            "business_phone": ["+391", "+391", "+392", "+391", "+391"],
            "user_id": ["b", "a", "a", "a", "a"],
            "opening_message_id": ["m1", "m2", "m3", "m4", "m5"],
            "free_units": [1] * 5,
            "placed_as": [None] * 5,
            "beyond_free_tier": ["regular"] * 3 + ["free_exempt", "free_exempt"],
        },
        schema_overrides={"placed_as": pl.String},
    )
    in_duckdb = duckdb.connect().sql(query("free_tiers")).pl().sort("row")
    spark.createDataFrame(counted_charges.to_arrow()).createOrReplaceTempView("counted_charges")
    in_spark = pl.from_arrow(spark.sql(spark_engine.spark_dialect(query("free_tiers"))).toArrow()).sort("row")
    assert in_duckdb["pricing_type"].to_list() == ["regular", "free_tier", "free_tier", "free_tier", "free_exempt"]
    assert_frame_equal(in_spark, in_duckdb, check_dtypes=False)


def test_chunks_of_sorted_batches_never_split_a_key() -> None:
    keys = [("p1", "u1")] * 3 + [("p1", "u2")] * 4 + [("p2", "u1")] * 2 + [("p2", "u2")]
    frame = pa.table({"business_phone": [k[0] for k in keys], "billing_key": [k[1] for k in keys], "n": list(range(len(keys)))})
    batches = frame.to_batches(max_chunksize=2)  # batch boundaries fall inside keys
    chunks = list(spark_engine.whole_key_chunks(iter(batches), rows=3))
    assert pl.concat(chunks)["n"].to_list() == list(range(len(keys)))
    seen: set[tuple[str, str]] = set()
    for chunk in chunks:
        in_chunk = set(chunk.select("business_phone", "billing_key").unique().iter_rows())
        assert not in_chunk & seen
        seen |= in_chunk
    assert len(chunks) > 1


def test_spark_bills_groups_agents_and_carried_columns_like_the_local_engine(spark) -> None:
    """A group's participants are billed in one kernel call however Spark partitions; the kernel's
    group_id, tokens and template_name pass through to the charges."""
    from test_groups_agents_ai import mixed_traffic

    traffic = mixed_traffic()
    local = schema.conform_charges(charges.bill(traffic))
    on_spark = spark_engine.to_polars(spark_engine.bill(spark.createDataFrame(traffic.to_arrow()), partitions=4))
    assert_frame_equal(on_spark, local)
    assert local["group_id"].drop_nulls().n_unique() == 3
    assert set(local["tokens"].drop_nulls()) == {20_000}
    assert set(local["template_name"].drop_nulls()) == {"receipt"}


def test_charges_and_costs_commands_with_engine_spark(spark, traffic, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """What `ingest` writes, as a Parquet directory in; a directory or one file out (sorted like the
    local engine's); costs."""
    raw, ingested, messages = tmp_path / "raw.csv", tmp_path / "messages.parquet", tmp_path / "messages"
    traffic.write_csv(raw)
    assert cli.main(["ingest", str(raw), "-o", str(ingested)]) == 0
    messages.mkdir()
    canonical = pl.read_parquet(ingested)
    canonical.head(canonical.height // 2).write_parquet(messages / "part-0.parquet")
    canonical.tail(canonical.height - canonical.height // 2).write_parquet(messages / "part-1.parquet")
    local_out, spark_out, spark_dir = tmp_path / "local.parquet", tmp_path / "spark.parquet", tmp_path / "charges"
    assert cli.main(["charges", str(ingested), "-o", str(local_out)]) == 0
    capsys.readouterr()
    assert cli.main(["charges", "--engine", "spark", "--spark-master", "local[2]", str(messages), "-o", str(spark_out)]) == 0
    stderr = capsys.readouterr().err
    local = pl.read_parquet(local_out)
    assert_frame_equal(pl.read_parquet(spark_out), local)  # same rows, same order
    assert summaries.describe_charges(local) in stderr
    assert cli.main(["charges", "--engine", "spark", str(messages), "-o", str(spark_dir)]) == 0
    assert_frame_equal(schema.conform_charges(pl.read_parquet(spark_dir / "*.parquet")), local)

    local_costs, spark_costs = tmp_path / "costs.csv", tmp_path / "spark-costs.csv"
    card = ["--currency", "USD", "--report-unpriced"]
    assert cli.main(["costs", str(ingested), *card, "-o", str(local_costs)]) == 0
    assert cli.main(["costs", "--engine", "spark", str(messages), *card, "-o", str(spark_costs)]) == 0
    assert spark_costs.read_text() == local_costs.read_text()


def test_engine_spark_refuses_what_it_cannot_read(spark, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sample = Path(__file__).resolve().parents[1] / "data" / "sample" / "messages.csv.gz"
    assert cli.main(["charges", "--engine", "spark", str(sample), "-o", str(tmp_path / "c.parquet")]) == 2
    assert "run `wa-analytics ingest" in capsys.readouterr().err
    assert cli.main(["charges", "--engine", "spark", "--send-log", "log.csv", str(sample), "-o", str(tmp_path / "c.parquet")]) == 2
    assert "takes no --send-log" in capsys.readouterr().err
    wrong = tmp_path / "wrong.parquet"
    pl.DataFrame({"message_id": ["m1"], "timestamp": ["2025-01-01T00:00:00Z"]}).write_parquet(wrong)
    assert cli.main(["charges", "--engine", "spark", str(wrong), "-o", str(tmp_path / "c.parquet")]) == 2
    assert "missing required column direction, business_phone, user_id, message_type" in capsys.readouterr().err
    too_early = tmp_path / "early.parquet"
    pl.DataFrame(
        {
            "message_id": ["m1"],
            "timestamp": [dt.datetime(2021, 5, 1, tzinfo=dt.UTC)],
            "direction": ["outbound"],
            "business_phone": ["+39021"],
            "user_id": ["393331234567"],
            "message_type": ["template"],
            "template_category": ["marketing"],
        }
    ).write_parquet(too_early)
    assert cli.main(["charges", "--engine", "spark", str(too_early), "-o", str(tmp_path / "c.parquet")]) == 2
    assert "message m1 at 2021-05-01 00:00:00+00:00 is before 2022-02-01" in capsys.readouterr().err


def test_engine_spark_without_pyspark_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "pyspark", None)  # import pyspark now raises ImportError
    messages = tmp_path / "messages.parquet"
    schema.empty_messages().write_parquet(messages)
    assert cli.main(["costs", "--engine", "spark", str(messages), "-o", str(tmp_path / "costs.csv")]) == 2
    assert "pip install 'wa-analytics[spark]'" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("WA_ANALYTICS_SLOW_TESTS") != "1", reason="1 M messages on Spark: run with WA_ANALYTICS_SLOW_TESTS=1 (.ci/run does)"
)
def test_one_million_messages_on_spark_equal_the_local_engine(tmp_path: Path) -> None:
    """The issue's done-when: `--engine spark` and the local engine, identical charges and costs on
    1 M generated messages (2025-01 to 2026-10: cbp-2023, pmp-2025 and pmp-2026-10)."""
    raw, messages = tmp_path / "raw.parquet", tmp_path / "messages.parquet"
    generate.generate_to_parquet(raw, users=28_400, start=dt.date(2025, 1, 1), months=22, seed=1)
    assert cli.main(["ingest", str(raw), "-o", str(messages)]) == 0  # what both engines bill
    assert pl.scan_parquet(messages).select(pl.len()).collect().item() > 950_000
    out = {engine: tmp_path / f"{engine}-charges.parquet" for engine in ("local", "spark")}
    assert cli.main(["charges", str(messages), "-o", str(out["local"])]) == 0
    assert cli.main(["charges", "--engine", "spark", "--spark-master", "local[2]", str(messages), "-o", str(out["spark"])]) == 0
    assert_frame_equal(pl.read_parquet(out["spark"]), pl.read_parquet(out["local"]))
    card = ["--currency", "USD", "--report-unpriced"]
    costs = {engine: tmp_path / f"{engine}-costs.csv" for engine in ("local", "spark")}
    assert cli.main(["costs", str(messages), *card, "-o", str(costs["local"])]) == 0
    assert cli.main(["costs", "--engine", "spark", "--spark-master", "local[2]", str(messages), *card, "-o", str(costs["spark"])]) == 0
    assert costs["spark"].read_text() == costs["local"].read_text()


def test_spark_prices_issue_17_charges_as_the_local_engine(spark) -> None:
    """Per-token Meta Business Agent charges (with and without tokens), group deliveries at their
    base rates and marketing under a max price: the same priced rows, costs and invoice on Spark."""
    from analytics.settings import MaxPrice

    def charge(minute: int, category: str, tokens: int | None = None, template: str | None = None) -> dict[str, object]:
        return {
            **dict.fromkeys(schema.CHARGE_SCHEMA),
            **{"rule_set": "pmp-2026-10", "pricing_model": "PMP", "category": category, "pricing_type": "regular", "billable": True},
            **{"started_at": dt.datetime(2026, 10, 5, 9, minute, tzinfo=dt.UTC), "business_phone": "P1", "waba_id": "W1"},
            **{"user_id": f"U{minute}", "market": "Italy", "message_count": 1, "opening_message_id": f"m{minute}"},
            **{"tokens": tokens, "template_name": template},
        }

    local_charges = pl.DataFrame(
        [
            charge(1, "meta_business_agent", tokens=23_457),
            charge(2, "meta_business_agent"),
            charge(3, "marketing", template="spring_sale"),
            charge(4, "marketing"),
            charge(5, "group_marketing", template="spring_sale"),
            charge(6, "group_utility"),
            charge(7, "group_service"),
        ],
        schema=schema.CHARGE_SCHEMA,
    )
    settings = Settings(
        currency="USD",
        markup_percent=Decimal("12.5"),
        max_prices=(MaxPrice("W1", Decimal("40"), dt.date(2026, 10, 1), "spring_sale"),),
    )
    local = pricing.price(local_charges, settings).sort(schema.CHARGE_ORDER)
    frame = spark.createDataFrame(local_charges.to_arrow())
    assert_frame_equal(priced_to_polars(spark_engine.price(frame, settings)), local)
    partials = spark_engine.cost_partials(frame, settings)
    assert_frame_equal(pricing.costs_from_partials(partials), pricing.costs(local))
    assert_frame_equal(pricing.invoice_from_partials(partials), pricing.invoice(local))
    assert local["estimated"].sum() == 1 and local["at_most"].sum() == 2
