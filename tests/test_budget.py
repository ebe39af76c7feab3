"""Budgets (analytics/present/budget.py): `[[pricing.budget]]` in the config file, the month so far
projected to its end with a back-tested band, `Traffic.budget()` and the lines `wa-analytics costs`
prints.

The traffic: marketing templates to Italian users at noon UTC, ten a day through January 2026
with a campaign of a hundred more on the 25th, and ten a day on 1 to 14 February — half a month.
Expected figures are worked out here from that shape and the shipped card's USD rate.
"""

from __future__ import annotations

import datetime as dt
from decimal import ROUND_HALF_UP, Decimal

import polars as pl
import pytest

from analytics import cli, config_schema
from analytics.bill import charges as engine
from analytics.core import schema
from analytics.core.errors import UsageError
from analytics.pipeline.traffic import load
from analytics.present import budget
from analytics.price import pricing
from analytics.settings import Budget, Settings
from analytics.terms.ratecards import load_card

WABA = "104996122399150"
AS_OF = dt.datetime(2026, 2, 14, 12, tzinfo=dt.UTC)  # the last message
SHARE = 13.5 / 28  # of February passed at AS_OF


def day_messages(day: dt.date, count: int) -> list[dict]:
    return [
        dict(
            message_id=f"w.{day:%m%d}.{i}",
            timestamp=dt.datetime.combine(day, dt.time(12), dt.UTC),
            direction="outbound",
            business_phone="5550001",
            waba_id=WABA,
            user_id=f"39333{day:%m%d}{i:03d}",
            message_type="template",
            template_category="marketing",
            status="delivered",
        )
        for i in range(count)
    ]


def traffic(*, january: bool = True) -> pl.DataFrame:
    rows = []
    if january:
        for day in range(1, 32):
            rows += day_messages(dt.date(2026, 1, day), 10 + (100 if day == 25 else 0))
    for day in range(1, 15):
        rows += day_messages(dt.date(2026, 2, day), 10)
    frame = pl.DataFrame(rows)
    return frame.select([(pl.col(c) if c in frame.columns else pl.lit(None)).cast(t).alias(c) for c, t in schema.MESSAGE_SCHEMA.items()])


def rate(month_start: dt.date) -> Decimal:
    card = load_card(None).filter(
        (pl.col("currency") == "USD") & (pl.col("market") == "Italy") & (pl.col("category") == "marketing") & (pl.col("tier_from") == 1)
    )
    return Decimal(card.filter(pl.col("effective_from") <= month_start).sort("effective_from")["rate"][-1])


def cents(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def priced(settings: Settings, *, january: bool = True) -> pl.DataFrame:
    return pricing.price(engine.bill(traffic(january=january), settings), settings)


def settings_with(*budgets: Budget) -> Settings:
    return Settings(currency="USD", budgets=budgets)


def test_budget_projection_on_a_half_month_of_traffic():
    r = rate(dt.date(2026, 2, 1))
    assert rate(dt.date(2026, 1, 1)) == r  # one rate for both months: the figures below use it
    spent = 140 * r
    projected = spent / Decimal(SHARE)
    # January projected from the same share of its days: 31 × 13.5 / 28 = 14.9 days, the first 15 noons, 150 messages;
    # it cost 410 messages in the end (the campaign of the 25th).
    error = abs(150 / SHARE - 410) / 410
    low, high = projected * Decimal(1 - error), projected * Decimal(1 + error)
    assert cents(low) < cents(projected) < cents(high)

    settings = settings_with(
        Budget(amount=cents(projected) + 1),  # every month: above the projection, below the band's top
        Budget(amount=Decimal(15), month="2026-02", category="marketing"),  # below the projection
        Budget(amount=Decimal(5), month="2026-02", waba_id=WABA),  # below what is spent already
        Budget(amount=Decimal(100), category="utility"),  # nothing of it spent
    )
    status = budget.budget_status(priced(settings), settings)
    assert status.height == 4
    by_scope = {(row["category"], row["waba_id"]): row for row in status.iter_rows(named=True)}
    whole = by_scope[(None, None)]
    assert (whole["month"], whole["as_of"], whole["currency"]) == ("2026-02", AS_OF, "USD")
    assert whole["elapsed_share"] == pytest.approx(SHARE)
    assert (whole["spent"], whole["projected"]) == (cents(spent), cents(projected))
    assert (whole["projected_low"], whole["projected_high"]) == (cents(low), cents(high))
    assert (whole["backtest_months"], whole["backtest_error"]) == (1, pytest.approx(error))
    assert (whole["outcome"], whole["unpriced_charges"]) == (budget.MAY_EXCEED, 0)
    assert by_scope[("marketing", None)]["outcome"] == budget.WILL_EXCEED
    assert by_scope[(None, WABA)]["outcome"] == budget.EXCEEDED
    utility = by_scope[("utility", None)]
    assert (utility["spent"], utility["projected"], utility["outcome"]) == (Decimal(0), Decimal(0), budget.WITHIN)
    assert utility["backtest_months"] == 0  # no utility cost in January to test the run rate on

    text = budget.format_budget(status)
    assert (
        f"Budget 2026-02 (all traffic): {cents(projected) + 1:,.2f} USD; spent {cents(spent):,.2f} by 2026-02-14 12:00 UTC (48% of the month)" in text
    )
    assert (
        f"projected {cents(projected):,.2f} at month end (band {cents(low):,.2f} to {cents(high):,.2f}, ±24% back-tested on 1 earlier month)" in text
    )
    assert "Budget 2026-02 (marketing): 15.00 USD" in text and "will be exceeded" in text and "EXCEEDED already" in text


def test_a_month_that_is_over_is_held_against_what_it_cost_and_a_month_budget_replaces_the_every_month_one():
    r = rate(dt.date(2026, 1, 1))
    settings = settings_with(Budget(amount=Decimal(40)), Budget(amount=Decimal(20), month="2026-01"))
    status = budget.budget_status(priced(settings), settings, month="2026-01")
    assert status.select("month", "budget", "elapsed_share", "spent", "projected", "projected_low", "projected_high", "outcome").rows() == [
        ("2026-01", Decimal(20), 1.0, cents(410 * r), cents(410 * r), cents(410 * r), cents(410 * r), budget.EXCEEDED)
    ]


def test_without_an_earlier_month_the_band_is_unknown_and_said_so():
    settings = settings_with(Budget(amount=Decimal(100)))
    status = budget.budget_status(priced(settings, january=False), settings)
    row = status.row(0, named=True)
    assert row["projected"] == cents(140 * rate(dt.date(2026, 2, 1)) / Decimal(SHARE))
    assert (row["projected_low"], row["projected_high"], row["backtest_months"], row["outcome"]) == (None, None, 0, budget.WITHIN)
    assert "no band: no earlier month to back-test the run rate on" in budget.format_budget(status)


def test_billable_charges_without_a_rate_are_counted_not_spent():
    settings = settings_with(Budget(amount=Decimal(100))).replace(report_unpriced=True)
    without_rate = priced(settings, january=False).with_columns(
        cost=pl.when(pl.col("started_at").dt.day() == 14).then(None).otherwise(pl.col("cost")),
        rate=pl.when(pl.col("started_at").dt.day() == 14).then(None).otherwise(pl.col("rate")),
    )
    row = budget.budget_status(without_rate, settings).row(0, named=True)
    assert (row["spent"], row["unpriced_charges"]) == (cents(130 * rate(dt.date(2026, 2, 1))), 10)
    assert "Budget 2026-02: 10 billable charges have no rate and are not in what is spent below" in budget.format_budget(
        budget.budget_status(without_rate, settings)
    )


def test_a_budget_in_another_currency_is_a_usage_error():
    settings = settings_with(Budget(amount=Decimal(100), currency="eur"))
    with pytest.raises(UsageError, match=r"currency EUR, but the costs are priced in USD: give the budget in USD, or price in EUR"):
        budget.budget_status(priced(settings, january=False), settings)


def test_budgets_are_read_from_the_config_file_and_bad_ones_are_refused_naming_the_key(tmp_path):
    config = tmp_path / "wa.toml"
    config.write_text(
        '[pricing]\ncurrency = "USD"\n[[pricing.budget]]\namount = 1500\n'
        '[[pricing.budget]]\nmonth = "2026-11"\ncategory = "marketing"\nwaba_id = "104996122399150"\namount = "600.50"\n'
    )
    assert Settings.from_toml(config).budgets == (
        Budget(amount=Decimal(1500)),
        Budget(amount=Decimal("600.50"), month="2026-11", category="marketing", waba_id="104996122399150"),
    )
    for body, message in [
        ('[[pricing.budget]]\nmonth = "2026-11"\n', "[[pricing.budget]] number 1: missing amount"),
        ('[[pricing.budget]]\namount = 10\nmonth = "2026-13"\n', '[pricing.budget number 1] month: expected a month such as "2026-11"'),
        ("[[pricing.budget]]\namount = 10\n[[pricing.budget]]\namount = -1\n", "[pricing.budget number 2] amount: expected a number >= 0"),
        ('[[pricing.budget]]\namount = 10\ncategroy = "marketing"\n', "unknown key categroy in [pricing.budget number 1]: did you mean category?"),
        ("[pricing]\nbudget = 10\n", "[pricing] budget: expected [[pricing.budget]] tables"),
    ]:
        config.write_text(body)
        with pytest.raises(UsageError, match=None) as error:
            config_schema.load(config)
        assert message in str(error.value), str(error.value)
    config.write_text("[[pricing.budget]]\namount = 10.001\n")
    with pytest.raises(UsageError, match="budget amount 10.001 has more than 2 decimals"):
        Settings.from_toml(config)


def test_traffic_budget_and_costs_print_the_status(tmp_path, capsys):
    csv = tmp_path / "messages.csv"
    traffic().with_columns(pl.col("timestamp").dt.strftime("%Y-%m-%dT%H:%M:%SZ")).write_csv(csv)
    config = tmp_path / "wa.toml"
    config.write_text('[pricing]\ncurrency = "USD"\n[[pricing.budget]]\namount = 15\n')
    settings = Settings.from_toml(config)
    assert load(csv, settings=config).budget().equals(budget.budget_status(priced(settings), settings))
    status = cli.main(["costs", str(csv), "--config", str(config), "-o", str(tmp_path / "costs.csv")])
    err = capsys.readouterr().err
    assert status == 0, err
    projected = cents(140 * rate(dt.date(2026, 2, 1)) / Decimal(SHARE))
    assert f"Budget 2026-02 (all traffic): 15.00 USD; spent {cents(140 * rate(dt.date(2026, 2, 1))):,.2f} by 2026-02-14 12:00 UTC" in err
    assert f"projected {projected:,.2f} at month end" in err and "will be exceeded" in err
