"""The roll-ups that charts draw (analytics.present.rollups), on traffic and tables small enough to count by hand."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import polars as pl
import pytest
from traffic import Traffic, instant, merge

from analytics.bill import charges
from analytics.core import schema
from analytics.present import rollups
from analytics.price import pricing
from analytics.reconcile import outcomes
from analytics.settings import Settings

ROME = Settings(timezone="Europe/Rome")


def costs_rows(*rows: tuple) -> pl.DataFrame:
    """A `pricing.costs` roll-up: (month, market, category, pricing_type, charges, billable, cost, priced)."""
    return pl.DataFrame(
        [
            {
                "month": m,
                "market": market,
                "category": c,
                "pricing_type": p,
                "charges": n,
                "billable_charges": b,
                "cost": None if cost is None else Decimal(cost),
                "currency": "EUR",
                "priced": priced,
            }
            for m, market, c, p, n, b, cost, priced in rows
        ],
        schema=pricing.ROLLUP_SCHEMA,
    )


# --- volumes --------------------------------------------------------------------------------------


def test_volumes_month_follows_the_billing_time_zone():
    # 2025-07-31 21:30 UTC is 23:30 in Rome (July), 22:30 UTC is 00:30 on 1 August there.
    traffic = Traffic(start="2025-07-31T21:30:00Z").template(0, "marketing").template(1, "marketing")
    billed = charges.bill(traffic.frame(), ROME)
    in_rome = rollups.volumes(billed, ROME)
    assert in_rome.select("month", "category", "charges", "billable_charges", "free_charges", "unit").rows() == [
        ("2025-07", "marketing", 1, 1, 0, "messages"),
        ("2025-08", "marketing", 1, 1, 0, "messages"),
    ]
    assert rollups.volumes(charges.bill(traffic.frame()))["month"].to_list() == ["2025-07"]


def test_volumes_months_agree_with_pricing():
    traffic = Traffic(start="2025-07-31T21:30:00Z").template(0, "marketing").template(1, "utility").user(2).text(3)
    billed = charges.bill(traffic.frame(), ROME)
    priced = pricing.price(billed, ROME.replace(currency="USD", report_unpriced=True))
    by_pricing = priced.group_by("month", "category").len().sort("month", "category").rows()
    ours = rollups.volumes(billed, ROME).select("month", "category", "charges").rows()
    assert ours == [(m, c, n) for m, c, n in by_pricing]


def test_volumes_split_billable_and_free_per_rule_set_with_units():
    # pmp-2025: a service reply and a utility template inside the customer service window are free.
    pmp = Traffic(start="2025-09-01T08:00:00Z", id_prefix="p").user(0).text(1).template(2, "utility").template(30, "marketing")
    # cbp-2023: a marketing conversation is billable, counted in conversations.
    cbp = Traffic(start="2024-03-04T08:00:00Z", user_id="393330000002", id_prefix="c").template(0, "marketing").template(1, "marketing")
    table = rollups.volumes(charges.bill(merge(pmp, cbp)))
    assert table.schema == pl.Schema(rollups.VOLUMES_SCHEMA)
    assert table.rows() == [
        ("2024-03", "cbp-2023", "CBP", "marketing", 1, 1, 0, "conversations"),
        ("2025-09", "pmp-2025", "PMP", "marketing", 1, 1, 0, "messages"),
        ("2025-09", "pmp-2025", "PMP", "service", 1, 0, 1, "messages"),
        ("2025-09", "pmp-2025", "PMP", "utility", 1, 0, 1, "messages"),
    ]


def test_volumes_of_no_charges_is_an_empty_table_with_the_schema():
    assert rollups.volumes(schema.empty_charges()).schema == pl.Schema(rollups.VOLUMES_SCHEMA)


# --- openings -------------------------------------------------------------------------------------


def test_openings_has_every_weekday_and_hour_with_zeros_filled():
    # Monday 2024-03-04 23:30 UTC is Tuesday 00:30 in Rome (UTC+1 in March).
    traffic = Traffic(start="2024-03-04T23:30:00Z").template(0, "marketing").template(25, "utility")
    cells = rollups.openings(charges.bill(traffic.frame(), ROME), ROME)
    assert cells.height == 7 * 24
    assert cells.select("weekday", "hour").unique().height == 168
    assert cells["charges"].sum() == 2
    assert cells.filter(pl.col("charges") > 0).rows() == [(2, "Tue", 0, 1), (3, "Wed", 1, 1)]
    assert cells.row(0) == (1, "Mon", 0, 0)
    assert cells.row(-1) == (7, "Sun", 23, 0)


def test_openings_reads_each_waba_in_its_own_time_zone():
    rome = Traffic(start="2024-03-04T23:30:00Z", waba_id="rome", id_prefix="r").template(0, "marketing")
    sao_paulo = Traffic(start="2024-03-04T23:30:00Z", waba_id="sp", user_id="5511999990000", id_prefix="s").template(0, "marketing")
    config = Settings(timezone="Europe/Rome", waba_timezones={"sp": "America/Sao_Paulo"})
    cells = rollups.openings(charges.bill(merge(rome, sao_paulo), config), config)
    # São Paulo is UTC-3: Monday 20:30.
    assert cells.filter(pl.col("charges") > 0).select("weekday_name", "hour", "charges").rows() == [("Mon", 20, 1), ("Tue", 0, 1)]


def test_openings_of_no_charges_is_168_zero_cells():
    cells = rollups.openings(schema.empty_charges())
    assert cells.height == 168 and cells["charges"].sum() == 0
    assert cells.schema == pl.Schema(rollups.OPENINGS_SCHEMA)


# --- rule-set switches ----------------------------------------------------------------------------


def test_rule_set_switches_include_the_free_service_change_and_both_ends():
    switches = rollups.rule_set_switches(dt.date(2024, 11, 1), dt.date(2026, 10, 1))
    assert switches.select("date", "rule_set").rows() == [
        (dt.date(2024, 11, 1), "cbp-2023"),
        (dt.date(2025, 7, 1), "pmp-2025"),
        (dt.date(2026, 8, 1), "pmp-2025"),
        (dt.date(2026, 9, 28), "pmp-2025"),
        (dt.date(2026, 10, 1), "pmp-2026-10"),
    ]
    assert switches["label"].to_list() == ["service free", "pmp-2025", "Business Agent", "ad windows up to 7 d", "pmp-2026-10"]


def test_rule_set_switches_outside_every_change_is_empty():
    switches = rollups.rule_set_switches(dt.date(2026, 1, 1), dt.date(2026, 7, 31))
    assert switches.height == 0 and switches.schema == pl.Schema(rollups.SWITCHES_SCHEMA)


# --- money ----------------------------------------------------------------------------------------


def test_costs_by_month_sums_markets_rounds_to_cents_and_keeps_unpriced_apart():
    costs = costs_rows(
        ("2026-01", "Italy", "marketing", "regular", 10, 10, "0.120000", True),
        ("2026-01", "Spain", "marketing", "regular", 1, 1, "0.005000", True),  # 0.125 -> 0.13 (half away from zero)
        ("2026-01", "Spain", "marketing", "regular", 2, 2, None, False),
        ("2026-01", "Italy", "service", "free_customer_service", 4, 0, "0", True),
        ("2026-02", "Italy", "utility", "regular", 3, 3, "0.034999", True),
    )
    table = rollups.costs_by_month(costs)
    assert table.schema == pl.Schema(rollups.COSTS_BY_MONTH_SCHEMA)
    assert table.rows() == [
        ("2026-01", "marketing", 13, 13, 2, 0.13, "EUR"),
        ("2026-01", "service", 4, 0, 0, 0.0, "EUR"),
        ("2026-02", "utility", 3, 3, 0, 0.03, "EUR"),
    ]


def test_costs_by_market_most_expensive_first_and_the_rest_summed():
    costs = costs_rows(
        ("2026-01", "Spain", "marketing", "regular", 1, 1, "1.000000", True),
        ("2026-02", "Spain", "marketing", "regular", 1, 1, "1.000000", True),
        ("2026-01", "Italy", "marketing", "regular", 5, 5, "3.000000", True),
        ("2026-01", "France", "utility", "regular", 1, 1, "0.500000", True),
        ("2026-01", "Germany", "utility", "regular", 1, 1, "0.500000", True),
    )
    assert rollups.costs_by_market(costs).select("market", "cost").rows() == [("Italy", 3.0), ("Spain", 2.0), ("France", 0.5), ("Germany", 0.5)]
    top = rollups.costs_by_market(costs, top=2)
    assert top.select("market", "charges", "cost").rows() == [("Italy", 5, 3.0), ("Spain", 2, 2.0), ("other markets", 2, 1.0)]


def test_free_and_paid_shares_per_month_paid_first():
    costs = costs_rows(
        ("2026-01", "Italy", "marketing", "regular", 3, 3, "0.3", True),
        ("2026-01", "Spain", "utility", "regular", 3, 3, "0.3", True),
        ("2026-01", "Italy", "service", "free_customer_service", 2, 0, "0", True),
        ("2026-01", "Italy", "utility", "free_tier", 1, 0, "0", True),
        ("2026-02", "Italy", "service", "free_customer_service", 4, 0, "0", True),
    )
    assert rollups.free_and_paid(costs).rows() == [
        ("2026-01", "regular", True, 6, 0.6667),
        ("2026-01", "free_tier", False, 1, 0.1111),
        ("2026-01", "free_customer_service", False, 2, 0.2222),
        ("2026-02", "free_customer_service", False, 4, 1.0),
    ]


# --- scenarios and projections --------------------------------------------------------------------


def comparison(*rows: tuple) -> pl.DataFrame:
    """A `Comparison.table`: (scenario, month, category, billable, cost, cost_difference)."""
    from analytics.whatif.scenarios import COMPARE_SCHEMA

    return pl.DataFrame(
        [
            {
                "scenario": s,
                "month": m,
                "category": c,
                "charges": b,
                "billable_charges": b,
                "currency": "EUR",
                "cost": Decimal(cost),
                "unpriced_charges": 0,
                "charges_difference": 0,
                "billable_charges_difference": 0,
                "cost_difference": None if diff is None else Decimal(diff),
            }
            for s, m, c, b, cost, diff in rows
        ],
        schema=COMPARE_SCHEMA,
    )


def test_scenario_costs_and_savings_keep_the_tables_scenario_order():
    table = comparison(
        ("baseline", "2026-01", "marketing", 10, "1.000000", "0"),
        ("baseline", "2026-02", "marketing", 10, "1.000000", "0"),
        ("baseline", "2026-01", "utility", 4, "0.400000", "0"),
        ("fewer_campaigns", "2026-01", "marketing", 5, "0.500000", "-0.500000"),
        ("fewer_campaigns", "2026-02", "marketing", 5, "0.500000", "-0.500000"),
        ("fewer_campaigns", "2026-01", "utility", 4, "0.400000", "0"),
        ("another_currency", "2026-01", "marketing", 10, "0.900000", None),
    )
    assert rollups.scenario_costs(table).select("scenario", "category", "billable_charges", "cost", "cost_difference").rows() == [
        ("baseline", "marketing", 20, 2.0, 0.0),
        ("baseline", "utility", 4, 0.4, 0.0),
        ("fewer_campaigns", "marketing", 10, 1.0, -1.0),
        ("fewer_campaigns", "utility", 4, 0.4, 0.0),
        ("another_currency", "marketing", 10, 0.9, None),
    ]
    assert rollups.scenario_savings(table).rows() == [
        ("baseline", 2.4, 0.0, 0.0, "EUR"),
        ("fewer_campaigns", 1.4, 1.0, 0.4167, "EUR"),
        ("another_currency", 0.9, None, None, "EUR"),
    ]


def test_projected_costs_sum_categories_with_their_band():
    from analytics.whatif.projection import PROJECT_SCHEMA

    def row(scenario, month, horizon, category, cost, low, high):
        money = lambda v: None if v is None else Decimal(v)  # noqa: E731
        return {
            "scenario": scenario,
            "month": month,
            "horizon": horizon,
            "category": category,
            "charges": 1,
            "billable_charges": 1,
            "cost": money(cost),
            "cost_low": money(low),
            "cost_high": money(high),
            "currency": "EUR",
            "unpriced_charges": 0,
            "charges_difference": 0,
            "billable_charges_difference": 0,
            "cost_difference": Decimal(0),
        }

    table = pl.DataFrame(
        [
            row("baseline", "2027-01", 2, "marketing", "2.000000", "1.800000", "2.200000"),
            row("baseline", "2026-12", 1, "marketing", "1.000000", "0.900000", "1.100000"),
            row("baseline", "2026-12", 1, "utility", "0.500000", "0.450000", "0.550000"),
            row("no_band", "2026-12", 1, "marketing", "1.000000", None, None),
        ],
        schema=PROJECT_SCHEMA,
    )
    assert rollups.projected_costs(table).select("scenario", "month", "horizon", "billable_charges", "cost", "cost_low", "cost_high").rows() == [
        ("baseline", "2026-12", 1, 2, 1.5, 1.35, 1.65),
        ("baseline", "2027-01", 2, 1, 2.0, 1.8, 2.2),
        ("no_band", "2026-12", 1, 1, 1.0, None, None),
    ]


# --- reconciliation -------------------------------------------------------------------------------


def test_reconciliation_by_month_counts_status_and_reason_in_local_months():
    def item(status, reason, ours=None, meta=None, period=None, level="message"):
        return {
            "level": level,
            "status": status,
            "reason": reason,
            "ours_started_at": instant(ours) if ours else None,
            "meta_started_at": instant(meta) if meta else None,
            "period_start": instant(period) if period else None,
        }

    items = (
        pl.DataFrame(
            [
                item("match", "agrees", ours="2026-01-31T23:30:00Z", meta="2026-01-31T23:30:00Z"),  # 00:30 on 1 Feb in Rome (UTC+1)
                item("match", "agrees", ours="2026-01-15T10:00:00Z"),
                item("different", "category_changed", ours="2026-01-31T10:00:00Z", meta="2026-01-31T10:00:00Z"),
                item("missing_ours", "status_missing", meta="2026-02-03T10:00:00Z"),
                item("missing_ours", "status_missing", meta="2026-02-04T10:00:00Z"),
                item("different", "volume_differs", period="2026-01-31T23:00:00Z", level="aggregate"),  # 00:00 1 Feb in Rome
            ]
        )
        .with_columns(
            [
                pl.lit(None).cast(t).alias(c)
                for c, t in outcomes.RECONCILIATION_SCHEMA.items()
                if c not in ("level", "status", "reason", "ours_started_at", "meta_started_at", "period_start")
            ]
        )
        .select(list(outcomes.RECONCILIATION_SCHEMA))
    )
    table = rollups.reconciliation_by_month(items, ROME)
    assert table.schema == pl.Schema(rollups.RECONCILIATION_BY_MONTH_SCHEMA)
    assert table.rows() == [
        ("2026-01", "message", "match", "agrees", 1),
        ("2026-01", "message", "different", "category_changed", 1),
        ("2026-02", "message", "match", "agrees", 1),
        ("2026-02", "message", "missing_ours", "status_missing", 2),
        ("2026-02", "aggregate", "different", "volume_differs", 1),
    ]
    assert rollups.reconciliation_by_month(items)["month"].to_list() == ["2026-01", "2026-01", "2026-01", "2026-02"]


@pytest.mark.parametrize("timezone", ["UTC", "Pacific/Kiritimati"])
def test_reconciliation_by_month_of_no_items_is_empty(timezone):
    empty = pl.DataFrame(schema=outcomes.RECONCILIATION_SCHEMA)
    assert rollups.reconciliation_by_month(empty, Settings(timezone=timezone)).height == 0
