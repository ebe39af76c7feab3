"""Pricing charges with a rate card (contracts.md §3, §4): tiers, dates, currencies, markup, roll-ups.

Cards here are made up (tests/fixtures/pricing/README.md). Expected money is written out with its
arithmetic, so each figure can be checked by hand.
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime as dt
import gzip
from decimal import Decimal
from pathlib import Path

import duckdb
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from traffic import Traffic, low_tier_card, merge, with_free_tier_size

from analytics.bill import charges
from analytics.core import schema
from analytics.core.errors import UsageError
from analytics.core.resources import query
from analytics.present.invoice_text import format_invoice
from analytics.price import pricing
from analytics.price.pricing import MissingRateError, costs, invoice, price
from analytics.read import ingest
from analytics.settings import Settings
from analytics.synthetic import generate
from analytics.terms import rules
from analytics.terms.ratecards import TIER_FAMILY, load_card

FIXTURES = Path(__file__).parent / "fixtures" / "pricing"
CHECKOUT = Path(__file__).resolve().parents[1]
SAMPLE = CHECKOUT / "data" / "sample" / "messages.csv.gz"
HEADER = "effective_from,currency,market,category,tier_from,rate,source,note\n"
D = Decimal


def card_of(tmp_path: Path, body: str) -> pl.DataFrame:
    path = tmp_path / "card.csv"
    path.write_text(HEADER + body, encoding="utf-8")
    return load_card(path)


def charge(
    at: str,
    category: str = "utility",
    *,
    market: str = "Italy",
    pricing_type: str = "regular",
    waba: str = "W1",
    phone: str = "P1",
    user: str = "U1",
    message: str | None = None,
    rule_set: str = "pmp-2025",
) -> dict[str, object]:
    started = dt.datetime.fromisoformat(at.replace("Z", "+00:00"))
    return {
        "rule_set": rule_set,
        "pricing_model": "CBP" if rule_set.startswith("cbp") else "PMP",
        "category": category,
        "pricing_type": pricing_type,
        "billable": pricing_type == "regular",
        "started_at": started,
        "expires_at": started + dt.timedelta(hours=24) if rule_set.startswith("cbp") else None,
        "business_phone": phone,
        "waba_id": waba,
        "user_id": user,
        "market": market,
        "message_count": 1,
        "opening_message_id": message or f"m-{at}-{phone}-{user}-{category}",
    }


def frame(*rows: dict[str, object]) -> pl.DataFrame:
    return schema.with_charge_extensions(pl.DataFrame(list(rows), schema=schema.CHARGE_CONTRACT_SCHEMA, orient="row"))


def burst(n: int, start: str = "2026-01-05T10:00:00Z", **kwargs: object) -> list[dict[str, object]]:
    """`n` charges one minute apart."""
    first = dt.datetime.fromisoformat(start.replace("Z", "+00:00"))
    return [charge((first + dt.timedelta(minutes=i)).isoformat(), **kwargs) for i in range(n)]  # type: ignore[arg-type]


TIERED = (
    "2026-01-01,EUR,Italy,utility,1,0.0300,,\n"
    "2026-01-01,EUR,Italy,utility,4,0.0200,,\n"
    "2026-01-01,EUR,Italy,utility,6,0.0100,,\n"
    "2026-01-01,EUR,Italy,authentication,1,0.0500,,\n"
    "2026-01-01,EUR,Italy,authentication,3,0.0400,,\n"
    "2026-01-01,EUR,Italy,authentication_international,1,0.0900,,\n"
    "2026-01-01,EUR,Italy,authentication_international,3,0.0800,,\n"
    "2026-01-01,EUR,Italy,marketing,1,0.0600,,\n"
    "2026-01-01,EUR,Germany,utility,1,0.0400,,\n"
    "2026-01-01,EUR,Germany,utility,3,0.0350,,\n"
)


# --- Volume tiers -------------------------------------------------------------------------------


def test_the_nth_message_exactly_at_tier_from_pays_the_tier_rate(tmp_path):
    priced = price(frame(*burst(7)), card=card_of(tmp_path, TIERED))
    assert priced["tier_position"].to_list() == [1, 2, 3, 4, 5, 6, 7]
    assert priced["tier_from"].to_list() == [1, 1, 1, 4, 4, 6, 6]
    # Graduated: 3 × 0.03 + 2 × 0.02 + 2 × 0.01 = 0.15, not 7 × 0.01.
    assert priced["rate"].to_list() == [D("0.03")] * 3 + [D("0.02")] * 2 + [D("0.01")] * 2
    assert priced["cost"].sum() == D("0.15")


def test_tiers_count_per_portfolio_market_family_and_month(tmp_path):
    card = card_of(tmp_path, TIERED)
    rows = [
        *burst(2, waba="W1", phone="P1"),
        *burst(2, "2026-01-06T10:00:00Z", waba="W2", phone="P2"),  # another WABA: messages 3 and 4
        *burst(1, "2026-01-07T10:00:00Z", market="Germany"),  # its own counter
        *burst(2, "2026-01-08T10:00:00Z", category="marketing"),  # no tiers for marketing
        *burst(1, "2026-01-09T10:00:00Z", pricing_type="free_customer_service"),  # free: not counted
        *burst(1, "2026-01-10T10:00:00Z", rule_set="cbp-2023"),  # CBP has no volume tiers
        *burst(1, "2026-02-01T10:00:00Z"),  # a new month starts again at 1
    ]
    priced = price(frame(*rows), card=card).sort("started_at")
    assert priced["tier_position"].to_list() == [1, 2, 3, 4, 1, None, None, None, None, 1]
    assert priced["rate"].to_list() == [D("0.03"), D("0.03"), D("0.03"), D("0.02"), D("0.04"), D("0.06"), D("0.06"), None, D("0.03"), D("0.03")]
    separate = Settings(portfolios={"W1": "retail", "W2": "wholesale"})
    by_portfolio = price(frame(*rows), settings=separate, card=card).sort("started_at")
    assert by_portfolio["tier_position"].to_list()[:4] == [1, 2, 1, 2]
    assert by_portfolio["portfolio"].to_list()[:4] == ["retail", "retail", "wholesale", "wholesale"]


def test_authentication_and_authentication_international_share_one_counter(tmp_path):
    # pricing-research.md P-8 g: accumulated volume carries over to the auth-international rate.
    rows = [
        *burst(2, category="authentication"),
        *burst(2, "2026-01-15T10:00:00Z", category="authentication_international"),
    ]
    priced = price(frame(*rows), card=card_of(tmp_path, TIERED)).sort("started_at")
    assert priced["tier_position"].to_list() == [1, 2, 3, 4]
    # authentication 0.05, 0.05; then authentication_international at its tier from 3: 0.08, 0.08.
    assert priced["rate"].to_list() == [D("0.05"), D("0.05"), D("0.08"), D("0.08")]


def test_delivery_order_breaks_ties_by_number_then_user_then_message(tmp_path):
    same_second = "2026-01-05T10:00:00Z"
    rows = [
        charge(same_second, phone="P2", user="U1", message="a"),
        charge(same_second, phone="P1", user="U2", message="a"),
        charge(same_second, phone="P1", user="U1", message="b"),
        charge(same_second, phone="P1", user="U1", message="a"),
        charge("2026-01-05T09:59:59Z", phone="P9", user="U9", message="z"),
    ]
    priced = price(frame(*rows), card=card_of(tmp_path, TIERED))
    positions = {(r["business_phone"], r["user_id"], r["opening_message_id"]): r["tier_position"] for r in priced.iter_rows(named=True)}
    assert positions == {("P9", "U9", "z"): 1, ("P1", "U1", "a"): 2, ("P1", "U1", "b"): 3, ("P1", "U2", "a"): 4, ("P2", "U1", "a"): 5}
    assert priced["opening_message_id"].to_list() == ["a", "a", "b", "a", "z"]  # the charges' own order is kept


def sql_tier_positions(frame: pl.DataFrame, rates: pl.DataFrame) -> pl.Series:
    """The volume-tier counter as queries/tier_positions.sql on DuckDB (what Spark runs): the spec
    `pricing.tier_positions`, a Polars window, is held to."""
    con = duckdb.connect()
    con.register("priceable_charges", frame.with_row_index("row"))
    con.register("tiered_families", pricing.tiered_families(rates))
    counted = con.sql(query("tier_positions")).pl().filter(pl.col("tier_position").is_not_null())
    return pl.repeat(None, frame.height, dtype=pl.Int64, eager=True).scatter(counted["row"], counted["tier_position"])


def test_the_tier_counter_in_sql_equals_the_polars_window_across_tier_boundaries():
    """queries/tier_positions.sql on DuckDB (Spark's counter) gives each charge the position the
    Polars window of `pricing` gives, on generated traffic with two WABAs in two portfolios and time
    zones, in months past both tiers."""
    traffic = generate.generate_traffic(users=300, start=dt.date(2025, 6, 1), months=8, seed=11)
    billing = Settings(timezone="Europe/Rome", waba_timezones={"104996122399160": "America/Sao_Paulo"})
    billed = charges.bill(traffic.unique(subset="message_id", keep="first", maintain_order=True), billing)
    card = low_tier_card()
    for portfolios in ({}, {"104996122399150": "retail", "104996122399160": "wholesale"}):
        config = billing.replace(currency="USD", portfolios=portfolios, report_unpriced=True)
        frame = pricing.priceable(billed, config)
        rates = pricing.rates_in(card, "USD")
        in_sql = sql_tier_positions(frame, rates)
        assert pricing.tier_positions(frame, rates).to_list() == in_sql.to_list()
        assert in_sql.max() > 20 and in_sql.is_not_null().sum() > 300
        priced = price(billed, config, card=card)
        assert priced["tier_position"].to_list() == in_sql.to_list()
        assert set(priced.filter("billable")["tier_from"].drop_nulls()) == {1, 3, 8}


def test_the_tier_counter_query_reads_only_what_it_is_given():
    """Charges outside any counter keep a null position and pass through with their columns."""
    at = dt.datetime(2026, 1, 5, 10, tzinfo=dt.UTC)
    priceable_charges = pl.DataFrame(
        {
            "row": [0, 1, 2, 3, 4],
            "portfolio": ["p"] * 5,
            "market": ["Italy", "Italy", "Italy", "Italy", "Germany"],
            "family": ["utility", "utility", None, "utility", "utility"],
            "month": ["2026-01"] * 5,
            "billable": [True, True, True, False, True],
            "pricing_model": ["PMP", "PMP", "PMP", "PMP", "PMP"],
            "started_at": [at + dt.timedelta(seconds=1), at, at, at, at],
            "business_phone": ["P1"] * 5,
            "user_id": ["U1"] * 5,
            "opening_message_id": ["m0", "m1", "m2", "m3", "m4"],
        }
    )
    tiered_families = pl.DataFrame({"market": ["Italy"], "family": ["utility"]})
    con = duckdb.connect()
    con.register("priceable_charges", priceable_charges)
    con.register("tiered_families", tiered_families)
    result = con.sql(query("tier_positions")).pl().sort("row").with_columns(pl.col("started_at").dt.convert_time_zone("UTC"))
    assert result["tier_position"].to_list() == [2, 1, None, None, None]
    assert_frame_equal(result.drop("tier_position"), priceable_charges)


# --- Dates and time zones ---------------------------------------------------------------------------

DATED = (
    "2026-03-01,EUR,Italy,marketing,1,0.0500,,\n"
    "2026-04-01,EUR,Italy,marketing,1,0.0600,,\n"
    "2026-03-01,EUR,Italy,utility,1,0.0300,,\n"
    "2026-03-01,EUR,Italy,utility,3,0.0200,,\n"
)


def test_effective_dates_and_months_follow_the_waba_time_zone(tmp_path):
    card = card_of(tmp_path, DATED)
    # 2026-03-31 22:30 UTC is 2026-04-01 00:30 in Rome (CEST, UTC+2): April's rate and month there.
    rows = [charge("2026-03-31T22:30:00Z", "marketing"), charge("2026-03-31T21:59:59Z", "marketing")]
    in_utc = price(frame(*rows), card=card)
    assert in_utc["rate"].to_list() == [D("0.05"), D("0.05")]
    assert in_utc["month"].to_list() == ["2026-03", "2026-03"]
    rome = Settings(timezone="Europe/Rome")
    in_rome = price(frame(*rows), rome, card=card)
    assert in_rome["rate"].to_list() == [D("0.06"), D("0.05")]  # 21:59:59 UTC is 23:59:59 in Rome
    assert in_rome["month"].to_list() == ["2026-04", "2026-03"]
    assert in_rome["rate_effective_from"].to_list() == [dt.date(2026, 4, 1), dt.date(2026, 3, 1)]


def test_months_are_named_across_years_whatever_the_order_of_the_charges(tmp_path):
    card = card_of(tmp_path, DATED)
    at = ["2027-01-02T10:00:00Z", "2026-03-31T23:59:59Z", "2026-12-31T23:00:00Z", "2026-03-01T00:00:00Z"]
    priced = price(frame(*(charge(t, "marketing", pricing_type="free_entry_point") for t in at)), card=card)
    assert priced["month"].to_list() == ["2027-01", "2026-03", "2026-12", "2026-03"]
    rome = price(frame(*(charge(t, "marketing", pricing_type="free_entry_point") for t in at)), Settings(timezone="Europe/Rome"), card=card)
    assert rome["month"].to_list() == ["2027-01", "2026-04", "2027-01", "2026-03"]


def test_volume_tiers_reset_at_midnight_of_the_first_in_each_wabas_zone(tmp_path):
    card = card_of(tmp_path, DATED)
    rows = [
        charge("2026-03-31T20:00:00Z", waba="ROME", phone="R", user="U1"),  # 22:00 Rome, March
        charge("2026-03-31T21:00:00Z", waba="ROME", phone="R", user="U2"),  # 23:00 Rome, March
        charge("2026-03-31T22:30:00Z", waba="ROME", phone="R", user="U3"),  # 00:30 Rome, April: a new count
        charge("2026-03-31T23:00:00Z", waba="SAOPAULO", phone="S", user="U4"),  # 20:00 São Paulo, March
    ]
    config = Settings(timezone="Europe/Rome", waba_timezones={"SAOPAULO": "America/Sao_Paulo"})
    priced = price(frame(*rows), config, card=card).sort("started_at")
    assert priced["month"].to_list() == ["2026-03", "2026-03", "2026-04", "2026-03"]
    # One portfolio, two local months at once (Meta's volume-tier example 3): March counts 1, 2, 3.
    assert priced["tier_position"].to_list() == [1, 2, 1, 3]
    assert priced["rate"].to_list() == [D("0.03"), D("0.03"), D("0.03"), D("0.02")]


def test_a_rate_carries_until_a_later_row_for_its_currency_market_and_category(tmp_path):
    card = card_of(tmp_path, DATED + "2026-05-01,EUR,Italy,utility,1,0.0250,,\n")
    rows = [charge("2026-04-20T10:00:00Z"), charge("2026-05-20T10:00:00Z"), charge("2026-05-21T10:00:00Z"), charge("2026-05-22T10:00:00Z")]
    priced = price(frame(*rows), card=card)
    # April: the March row. From May the new card has no tiers, so every message pays 0.025.
    assert priced["rate"].to_list() == [D("0.03"), D("0.025"), D("0.025"), D("0.025")]
    assert priced["rate_effective_from"].to_list() == [dt.date(2026, 3, 1)] + [dt.date(2026, 5, 1)] * 3


# --- Currencies ------------------------------------------------------------------------------------

TWO_CURRENCIES = "2026-01-01,EUR,Italy,marketing,1,0.0650,,\n2026-01-01,USD,Italy,marketing,1,0.0691,,\n2026-01-01,USD,Germany,marketing,1,0.1365,,\n"


def test_a_card_may_hold_several_currencies(tmp_path):
    card = card_of(tmp_path, TWO_CURRENCIES + "2026-01-01,EUR,Germany,marketing,1,0.1131,,\n")
    rows = frame(charge("2026-01-05T10:00:00Z", "marketing"), charge("2026-01-05T10:00:00Z", "marketing", market="Germany"))
    with pytest.raises(UsageError, match="prices this traffic in EUR and USD: choose one with --currency"):
        price(rows, card=card)
    in_eur = price(rows, settings=Settings(currency="eur"), card=card)
    assert in_eur["currency"].unique().to_list() == ["EUR"]
    assert in_eur["cost"].sum() == D("0.0650") + D("0.1131")
    in_usd = price(rows, settings=Settings(currency="USD"), card=card)
    assert in_usd["cost"].sum() == D("0.0691") + D("0.1365")
    with pytest.raises(UsageError, match="has no GBP rates: it has EUR, USD"):
        price(rows, settings=Settings(currency="GBP"), card=card)


def test_the_default_currency_is_the_one_that_prices_everything(tmp_path):
    card = card_of(tmp_path, TWO_CURRENCIES)  # EUR has no Germany
    rows = frame(charge("2026-01-05T10:00:00Z", "marketing"), charge("2026-01-05T10:00:00Z", "marketing", market="Germany"))
    assert price(rows, card=card)["currency"].unique().to_list() == ["USD"]
    only_italy = frame(charge("2026-01-05T10:00:00Z", "marketing"))
    with pytest.raises(UsageError, match="--currency"):
        price(only_italy, card=card)
    nothing_complete = frame(*rows.iter_rows(named=True), charge("2026-01-05T10:00:00Z", "marketing", market="Spain"))
    with pytest.raises(UsageError, match="no currency of the rate card prices every billable charge.*EUR 1, USD 2"):
        price(nothing_complete, card=card)


# --- Missing rates ---------------------------------------------------------------------------------


def test_a_billable_charge_without_a_rate_names_currency_market_category_and_date(tmp_path):
    card = card_of(tmp_path, DATED)
    rows = frame(charge("2026-02-27T10:00:00Z", "marketing"), *burst(2, "2026-03-05T10:00:00Z"))
    with pytest.raises(MissingRateError) as raised:
        price(rows, Settings(timezone="Europe/Rome"), card=card)
    message = str(raised.value)
    assert "no rate for EUR Italy marketing on 2026-02-27 (time zone Europe/Rome)" in message
    assert "the card has no EUR rate for Italy marketing on or before that date" in message
    assert "--report-unpriced" in message


def test_an_unknown_rate_in_the_card_is_missing_and_its_note_is_shown(tmp_path):
    card = card_of(tmp_path, DATED + "2026-04-01,EUR,Italy,utility,1,,somewhere,unknown: the April card was not found\n")
    with pytest.raises(MissingRateError, match="Italy utility on 2026-04-02.*unknown: the April card was not found"):
        price(frame(charge("2026-04-02T10:00:00Z")), card=card)


def test_an_unknown_tier_is_missing_from_its_first_message(tmp_path):
    card = card_of(tmp_path, "2026-01-01,EUR,Italy,utility,1,0.0300,,\n2026-01-01,EUR,Italy,utility,3,,,unknown: tiers not found\n")
    assert price(frame(*burst(2)), card=card)["cost"].sum() == D("0.06")
    with pytest.raises(MissingRateError, match="message 3 of 2026-01 in its volume-tier counter.*unknown: tiers not found"):
        price(frame(*burst(3)), card=card)


def test_report_unpriced_keeps_them_on_a_separate_line(tmp_path):
    card = card_of(tmp_path, DATED)
    rows = frame(*burst(2, "2026-02-27T10:00:00Z", category="marketing"), *burst(1, "2026-03-27T10:00:00Z", category="marketing"))
    priced = price(rows, settings=Settings(report_unpriced=True), card=card)
    assert priced["cost"].to_list() == [None, None, D("0.05")]
    rollup = costs(priced)
    assert rollup.select("month", "charges", "billable_charges", "cost", "priced").rows() == [
        ("2026-02", 2, 2, None, False),
        ("2026-03", 1, 1, D("0.05"), True),
    ]
    summary = format_invoice(priced)
    assert "Unpriced: 2 billable charges have no rate in the card and are not in the total: 2026-02 Italy marketing 2" in summary
    assert "Total: 3 charges, 3 billable, 0.05 EUR" in summary


def test_free_charges_cost_zero_and_need_no_rate(tmp_path):
    card = card_of(tmp_path, DATED)
    rows = frame(
        charge("2026-03-05T10:00:00Z", pricing_type="free_customer_service"),
        charge("2026-03-05T10:00:00Z", "marketing", market="Brazil", pricing_type="free_entry_point"),
        charge("2026-03-05T10:00:00Z", "service", pricing_type="free_tier", rule_set="pmp-2026-10"),
    )
    priced = price(rows, card=card)
    assert priced["cost"].to_list() == [D(0)] * 3
    assert priced["rate"].null_count() == 3 and priced["markup"].to_list() == [D(0)] * 3


def test_an_unknown_market_says_what_is_missing_in_the_input(tmp_path):
    with pytest.raises(MissingRateError, match="the user's market is not known.*user_phone or user_country"):
        price(frame(charge("2026-03-05T10:00:00Z", "marketing", market="Unknown")), card=card_of(tmp_path, DATED))


# --- Markup --------------------------------------------------------------------------------------------


def test_a_providers_markup_is_a_percentage_and_a_fixed_amount_per_billable_charge(tmp_path):
    card = card_of(tmp_path, DATED)
    rows = frame(
        charge("2026-03-05T10:00:00Z", "marketing"),
        charge("2026-03-05T10:00:00Z", "marketing", pricing_type="free_entry_point"),
        *burst(3, "2026-03-06T10:00:00Z"),
    )
    config = Settings(markup_percent=D("12.5"), markup_per_charge="0.001")
    priced = price(rows, settings=config, card=card)
    # marketing 0.05 × 1.125 + 0.001 = 0.05725; utility 0.03 × 1.125 + 0.001 = 0.03475 (twice);
    # the third utility message is at tier 3: 0.02 × 1.125 + 0.001 = 0.0235; the free one costs 0.
    assert priced["cost"].to_list() == [D("0.05725"), D(0), D("0.03475"), D("0.03475"), D("0.0235")]
    assert priced["markup"].to_list() == [D("0.00725"), D(0), D("0.00475"), D("0.00475"), D("0.0035")]
    assert priced["rate"].to_list() == [D("0.05"), None, D("0.03"), D("0.03"), D("0.02")]
    assert costs(priced)["cost"].sum() == D("0.15025")  # 0.05725 + 2 × 0.03475 + 0.0235


def test_markup_settings_are_checked():
    with pytest.raises(UsageError, match="more than 4 decimals"):
        Settings(markup_percent="1.23456")
    with pytest.raises(UsageError, match="must be a number >= 0"):
        Settings(markup_per_charge=-1)
    with pytest.raises(UsageError, match="is not a number"):
        Settings(markup_percent="ten")


# --- The roll-ups and a hand-computed invoice -----------------------------------------------------


def fixture_priced(**config: object) -> pl.DataFrame:
    ingested = ingest.read_messages([FIXTURES / "traffic.csv"], timezone="Europe/Rome")
    billing = Settings(timezone="Europe/Rome")
    billed = charges.bill(ingested.messages.collect(), billing)
    return price(billed, billing.replace(rate_card=FIXTURES / "card.csv", **config))


def test_hand_computed_costs_for_a_small_traffic_file():
    """tests/fixtures/pricing/traffic.csv with card.csv, in Europe/Rome, one portfolio.

    January (Rome): T01 marketing Italy 0.05; T02, T03 utility Italy, messages 1 and 2 of the
    month, 0.02 each; T05 utility inside the service window and T06 text: free; T07 utility,
    message 3, tier from 3: 0.015; T09 marketing Germany at 23:30 on the 31st: 0.10.
    February: T08 (23:30 UTC on 31 January, 00:30 on 1 February in Rome) utility Italy, message 1
    of February, February card 0.025; T10 authentication Italy, January row still in force 0.03;
    T11 marketing Italy, February card 0.06; T12 utility Germany 0.04; T13 failed: nothing.
    """
    rollup = costs(fixture_priced())
    assert rollup.schema == pl.Schema(pricing.ROLLUP_SCHEMA)
    assert rollup.select("month", "market", "category", "pricing_type", "charges", "billable_charges", "cost").rows() == [
        ("2026-01", "Germany", "marketing", "regular", 1, 1, D("0.100000")),
        ("2026-01", "Italy", "marketing", "regular", 1, 1, D("0.050000")),
        ("2026-01", "Italy", "service", "free_customer_service", 1, 0, D("0")),
        ("2026-01", "Italy", "utility", "free_customer_service", 1, 0, D("0")),
        ("2026-01", "Italy", "utility", "regular", 3, 3, D("0.055000")),  # 0.02 + 0.02 + 0.015
        ("2026-02", "Germany", "utility", "regular", 1, 1, D("0.040000")),
        ("2026-02", "Italy", "authentication", "regular", 1, 1, D("0.030000")),
        ("2026-02", "Italy", "marketing", "regular", 1, 1, D("0.060000")),
        ("2026-02", "Italy", "utility", "regular", 1, 1, D("0.025000")),
    ]
    assert rollup["cost"].sum() == D("0.36")
    assert set(rollup["currency"]) == {"EUR"} and rollup["priced"].all()


def test_hand_computed_invoice_for_a_small_traffic_file():
    lines = invoice(fixture_priced(markup_percent=10, markup_per_charge=D("0.001")))
    # With 10% + 0.001 a billable charge: T02 + T07 = (0.02 + 0.015) × 1.1 + 2 × 0.001 = 0.0405 -> 0.04.
    row = lines.filter(pl.col("month") == "2026-01", pl.col("business_phone") == "P1", pl.col("category") == "utility").row(0, named=True)
    assert (row["charges"], row["billable_charges"], row["card_cost"], row["markup"], row["cost"]) == (3, 2, D("0.04"), D("0.01"), D("0.04"))
    # T08: 0.025 × 1.1 + 0.001 = 0.0285 -> 0.03.
    row = lines.filter(pl.col("month") == "2026-02", pl.col("business_phone") == "P2", pl.col("category") == "utility").row(0, named=True)
    assert row["cost"] == D("0.03")
    # Total: 0.36 × 1.1 + 9 billable × 0.001 = 0.405.
    priced = fixture_priced(markup_percent=10, markup_per_charge=D("0.001"))
    assert priced["cost"].sum() == D("0.405")
    summary = format_invoice(priced, Settings(markup_percent=10, markup_per_charge=D("0.001")))
    assert "Total: 11 charges, 9 billable, 0.41 EUR (markup 0.05)" in summary  # 0.405 -> 0.41, 0.045 -> 0.05


def test_the_invoice_summary_shows_each_month_waba_and_number():
    summary = format_invoice(fixture_priced(), card_name="card.csv")
    assert summary.splitlines()[:8] == [
        "Costs in EUR from card.csv:",
        "2026-01        charges  billable  marketing  utility  authentication  total",
        "  WABA W1",
        "    number P1        6         4       0.15     0.04            0.00   0.19",
        "  WABA W2",
        "    number P2        1         1       0.00     0.02            0.00   0.02",
        "  month total        7         5       0.15     0.06            0.00   0.21",
        "  by market: Italy 0.11, Germany 0.10",
    ]
    assert "Total: 11 charges, 9 billable, 0.36 EUR" in summary
    assert "trust C 76.4%, trust D 23.6%" in summary  # February's rows are marked D in the fixture: 0.085 / 0.36


def test_priced_charges_keep_the_charges_and_add_the_pricing_columns():
    priced = fixture_priced()
    assert priced.schema == pl.Schema(pricing.PRICED_SCHEMA)
    assert priced.select(*schema.CHARGE_SCHEMA).equals(priced.select(*schema.CHARGE_SCHEMA).sort(schema.CHARGE_ORDER))
    assert priced.filter("billable")["rate_source"].unique().to_list() == ["tests/fixtures/pricing"]


def test_cost_under_a_reported_rule_set_is_flagged(tmp_path):
    card = card_of(tmp_path, "2026-10-01,USD,Italy,service,1,0.0300,,\n2026-10-01,USD,Italy,marketing,1,0.0795,,\n")
    rows = frame(
        charge("2026-10-05T10:00:00Z", "service", rule_set="pmp-2026-10"), charge("2026-10-05T10:00:00Z", "marketing", rule_set="pmp-2026-10")
    )
    priced = price(rows, card=card)
    assert "Warning" not in format_invoice(priced)  # the shipped rules of 2026-10 are on Meta's own pages
    book = rules.shipped()
    reported = dataclasses.replace(
        book, periods=tuple(dataclasses.replace(p, status="reported") if p.name == "pmp-2026-10" else p for p in book.periods)
    )
    assert (
        "Warning: 0.11 USD (100.0% of the total) is for 2 billable charges under rule set pmp-2026-10, whose rules are not all "
        "read on Meta's own pages" in format_invoice(priced, rule_book=reported)
    )


# --- Configuration ---------------------------------------------------------------------------------


def test_settings_read_the_pricing_table_of_the_config_file(tmp_path):
    (tmp_path / "cards").mkdir()
    config = tmp_path / "wa.toml"
    config.write_text(
        '[billing]\ntimezone = "Europe/Rome"\n'
        '[pricing]\nrate_card = "cards/ours.csv"\ncurrency = "eur"\nportfolios = { "W1" = "retail" }\n'
        "markup_percent = 12.5\nmarkup_per_charge = 0.002\nreport_unpriced = true\n"
    )
    read = Settings.from_toml(config)
    assert read == Settings(
        timezone="Europe/Rome",
        rate_card=str(tmp_path / "cards" / "ours.csv"),
        currency="EUR",
        portfolios={"W1": "retail"},
        markup_percent=D("12.5"),
        markup_per_charge=D("0.002"),
        report_unpriced=True,
    )
    assert Settings.from_toml(config, currency="USD").currency == "USD"
    assert Settings.from_toml(config).timezone == "Europe/Rome"
    config.write_text("[pricing]\nmarkup = 3\n")
    with pytest.raises(UsageError, match="unknown key markup in \\[pricing\\]"):
        Settings.from_toml(config)


# --- The shipped sample with the shipped card ---------------------------------------------------


@pytest.fixture(scope="module")
def sample_charges(tmp_path_factory) -> pl.DataFrame:
    """Charges of the shipped sample (`make sample` writes it; made the same way here if absent)."""
    path = SAMPLE
    if not path.exists():
        path = tmp_path_factory.mktemp("sample") / "messages.csv.gz"
        traffic = generate.generate_traffic(users=2500, start=dt.date(2026, 1, 1), months=11, seed=7)
        generate.write_traffic(traffic, path, with_defects=True)
    with gzip.open(path, "rt") as handle:
        assert handle.readline().startswith("message_id,")
    return charges.bill(ingest.read_messages([path]).messages.collect())


def reference_price(charges_: pl.DataFrame, card_path: Path) -> dict[tuple[str, str, str], Decimal]:
    """A plain, slow re-statement of contracts.md §3 for UTC and one portfolio: cost per
    (month, market, category), from the card's CSV text and a Python loop over the charges."""
    import csv

    with open(card_path, newline="", encoding="utf-8") as handle:
        card_rows = [r for r in csv.DictReader(handle) if r["currency"] == "USD"]
    by_key: dict[tuple[str, str], dict[str, dict[int, str]]] = {}
    for r in card_rows:
        by_key.setdefault((r["market"], r["category"]), {}).setdefault(r["effective_from"], {})[int(r["tier_from"] or 1)] = r["rate"]
    counters: dict[tuple[str, str, str], int] = {}
    totals: dict[tuple[str, str, str], Decimal] = {}
    ordered = charges_.filter("billable").sort("started_at", "business_phone", "user_id", "opening_message_id")
    for c in ordered.iter_rows(named=True):
        day, month = c["started_at"].date().isoformat(), c["started_at"].strftime("%Y-%m")
        family = TIER_FAMILY.get(c["category"])
        n = 1
        if family and c["pricing_model"] == "PMP":
            counters[(c["market"], family, month)] = n = counters.get((c["market"], family, month), 0) + 1
        # 2026: a group delivery at its base category's rate (Meta's Groups API Pricing; service at the
        # utility rate from pmp-2026-10), a Meta Business Agent reply per token at the global rate
        per_token = c["category"] == "meta_business_agent"
        rated = ("global", c["category"]) if per_token else (c["market"], REFERENCE_PRICED_AS.get(c["category"], c["category"]))
        dates = sorted(by_key[rated])
        tiers = by_key[rated][dates[bisect.bisect_right(dates, day) - 1]]
        rate = tiers[max(t for t in tiers if t <= n)]
        assert rate, (c["opening_message_id"], c["market"], c["category"], day, n)
        key = (month, c["market"], c["category"])
        cost = D(rate) * (c["tokens"] or 25_000) / 1_000_000 if per_token else D(rate)
        totals[key] = totals.get(key, D(0)) + cost
    return totals


REFERENCE_PRICED_AS = {"group_marketing": "marketing", "group_utility": "utility", "group_service": "utility"}


def test_the_shipped_card_prices_every_billable_charge_of_the_sample(sample_charges, tmp_path):
    priced = price(sample_charges)  # the shipped card, its one complete currency, no --report-unpriced
    assert priced["currency"].unique().to_list() == ["USD"]
    billable = priced.filter("billable")
    assert billable.height > 20_000 and billable["rate"].null_count() == 0
    assert set(priced["month"]) == {f"2026-{m:02d}" for m in range(1, 12)}
    # The same money from a plain loop over the card's CSV files (both files, as one card).
    card_csv = tmp_path / "card.csv"
    shipped = sorted((CHECKOUT / "data" / "rate_cards").glob("*.csv"))
    card_csv.write_text(shipped[0].read_text() + "".join(p.read_text().split("\n", 1)[1] for p in shipped[1:]))
    expected = reference_price(sample_charges, card_csv)
    rollup = costs(priced).filter(pl.col("billable_charges") > 0)
    got = {(r["month"], r["market"], r["category"]): r["cost"] for r in rollup.iter_rows(named=True)}
    assert got == expected
    assert rollup["cost"].sum() == sum(expected.values())


# billing-rules.md §9: the six markets of 2026-07-01 on the shipped card (data/rate_cards/README.md).
# A phone of each; the rate of (marketing, utility, authentication) in June (the region's, Meta's
# CSV), August (own rate where a source gives it, else none) and November (the 2026-10-01 card).
SIX_MARKETS = {
    "Hong Kong": ("85291234567", ("0.0732", "0.0113", "0.0113"), ("0.0732", None, None), ("0.0732", "0.0260", "0.0260")),
    "Hungary": ("36201234567", ("0.0860", "0.0212", "0.0212"), ("0.0860", None, None), ("0.0860", "0.0350", "0.0350")),
    "Poland": ("48221234567", ("0.0860", "0.0212", "0.0212"), (None, None, None), ("0.0366", "0.0122", "0.0122")),
    "Qatar": ("97433123456", ("0.0341", "0.0091", "0.0091"), ("0.0341", "0.0120", "0.0120"), ("0.0341", "0.0120", "0.0120")),
    "Romania": ("40712345678", ("0.0860", "0.0212", "0.0212"), ("0.0860", None, None), ("0.0860", "0.0290", "0.0290")),
    "Singapore": ("6581234567", ("0.0732", "0.0113", "0.0113"), ("0.0732", None, None), ("0.0732", "0.0160", "0.0160")),
}
REGION_LEFT = {"Hong Kong": "Rest of Asia Pacific", "Singapore": "Rest of Asia Pacific", "Qatar": "Rest of Middle East"}


@pytest.mark.parametrize("market", sorted(SIX_MARKETS))
def test_the_six_markets_of_2026_07_01_never_get_the_regions_rate_after_they_leave(market):
    """From 2026-07-01 a user of the six is priced at the market's own rate where a source gives
    it, and is unpriced (never the region's rate) where none does."""
    phone, june, august, november = SIX_MARKETS[market]
    region = REGION_LEFT.get(market, "Rest of Central & Eastern Europe")
    traffics = [
        Traffic(start, user_id=phone, user_country=None, id_prefix=f"{start[:7]}.")
        .template(0, "marketing")
        .template(1, "utility")
        .template(2, "authentication")
        for start in ("2026-06-10T09:00:00Z", "2026-08-10T09:00:00Z", "2026-11-10T09:00:00Z")
    ]
    billed = charges.bill(merge(*traffics))
    priced = price(billed, settings=Settings(currency="USD", report_unpriced=True)).filter("billable")
    got = {(r["month"], r["category"]): (r["market"], r["rate"]) for r in priced.iter_rows(named=True)}
    expected = {}
    for month, rates in (("2026-06", june), ("2026-08", august), ("2026-11", november)):
        for category, rate in zip(("marketing", "utility", "authentication"), rates, strict=False):
            expected[(month, category)] = (region if month == "2026-06" else market, None if rate is None else D(rate))
    assert got == expected
    if None in august:
        with pytest.raises(MissingRateError, match=rf"no rate for USD {market} \w+ on 2026-08-10 .*the card says .unknown: "):
            price(billed, settings=Settings(currency="USD"))


def test_no_charges_price_to_empty_tables_of_the_right_shape():
    priced = price(schema.empty_charges())
    assert priced.schema == pl.Schema(pricing.PRICED_SCHEMA) and priced.height == 0
    assert costs(priced).schema == pl.Schema(pricing.ROLLUP_SCHEMA)
    assert invoice(priced).height == 0
    assert "Total: 0 charges, 0 billable, 0.00" in format_invoice(priced)


# --- Service messages from 2026-10-01 (billing-rules.md §9, data/rules/rule_sets.toml) ------------------

SERVICE_CARD = (
    "2026-10-01,EUR,Italy,utility,1,0.0300,,\n"
    "2026-10-01,EUR,Italy,utility,3,0.0200,,\n"
    "2026-10-01,EUR,Spain,utility,1,0.0200,,\n"
    "2026-10-01,EUR,Spain,service,1,0.0150,,\n"
    "2026-10-01,EUR,France,utility,1,0.0400,,\n"
    "2026-10-01,EUR,France,service,1,,,unknown: not transcribed\n"
)


def test_service_pays_the_market_s_utility_list_rate_where_the_card_has_no_service_row(tmp_path):
    card = card_of(tmp_path, SERVICE_CARD)
    service = burst(4, "2026-10-05T10:00:00Z", category="service", rule_set="pmp-2026-10")
    spain = charge("2026-10-05T11:00:00Z", "service", market="Spain", rule_set="pmp-2026-10", message="s1")
    priced = price(frame(*service, spain), card=card)

    italy = priced.filter(pl.col("market") == "Italy")
    # the utility list rate, and never a volume tier: four service messages, the card tiers utility from the 3rd
    assert italy["rate"].to_list() == [Decimal("0.0300")] * 4 and italy["tier_position"].null_count() == 4
    assert priced.filter(pl.col("market") == "Spain")["rate"].to_list() == [Decimal("0.0150")]  # its own service row wins


def test_a_service_row_without_a_rate_stays_unpriced_and_the_rule_is_per_rule_set(tmp_path):
    card = card_of(tmp_path, SERVICE_CARD)
    france = frame(charge("2026-10-05T10:00:00Z", "service", market="France", rule_set="pmp-2026-10"))
    with pytest.raises(MissingRateError, match="France"):
        price(france, card=card)
    # a rule set without `service_rate_from` (a what-if of pmp-2025 with metered service) does not fall back
    what_if = frame(charge("2026-10-05T10:00:00Z", "service", rule_set="pmp-2025"))
    with pytest.raises(MissingRateError, match="service"):
        price(what_if, card=card)


# --- Partials priced by group (`cost_partials_of_charges`, what `wa-analytics costs` runs) -------------


@pytest.fixture(scope="module")
def billed_across_rule_sets() -> tuple[pl.DataFrame, Settings]:
    """Charges of generated traffic from 2025-05 to 2026-11 (CBP, PMP, the service rate of
    pmp-2026-10), two WABAs in two time zones, free tiers of 5 so that service is billed."""
    traffic = generate.generate_traffic(users=250, start=dt.date(2025, 5, 1), months=19, seed=5)
    billing = Settings(
        timezone="Europe/Rome",
        waba_timezones={"104996122399160": "America/Sao_Paulo"},
        rule_book=with_free_tier_size(rules.shipped(), 5),
    )
    return charges.bill(traffic.unique(subset="message_id", keep="first", maintain_order=True), billing), billing


@pytest.mark.parametrize(
    "config",
    [
        {"currency": "USD", "report_unpriced": True},
        {
            "currency": "USD",
            "portfolios": {"104996122399150": "retail", "104996122399160": "wholesale"},
            "markup_percent": D("12.5"),
            "markup_per_charge": D("0.000123"),
            "report_unpriced": True,
        },
    ],
    ids=["plain", "portfolios-and-markup"],
)
@pytest.mark.parametrize("card_name", ["shipped", "low-tiers"])
def test_partials_priced_by_group_equal_the_partials_of_every_priced_charge(billed_across_rule_sets, config, card_name):
    billed, billing = billed_across_rule_sets
    card = load_card() if card_name == "shipped" else low_tier_card()
    settings = billing.replace(**config)
    priced = price(billed, settings, card=card)
    by_group = pricing.cost_partials_of_charges(billed, settings, card=card)
    keys = list(pricing.PARTIAL_KEYS)
    assert_frame_equal(by_group.sort(keys, nulls_last=True), pricing.cost_partials(priced).sort(keys, nulls_last=True))
    # the traffic reaches what the groups must get right: rule sets, tiers, the service fallback, unpriced charges
    assert set(priced["rule_set"]) == {"cbp-2023", "pmp-2025", "pmp-2026-10"}
    paid = priced.filter("billable")
    assert paid.filter(pl.col("category") == "service", pl.col("rate").is_not_null()).height > 0
    assert set(paid["tier_from"].drop_nulls()) == ({1} if card_name == "shipped" else {1, 3, 8})
    if card_name == "shipped":
        assert paid["rate"].null_count() > 0 and not by_group["priced"].all()
    assert by_group["charges"].sum() == billed.height and by_group.height < billed.height / 5


def test_partials_priced_by_group_report_a_missing_rate_as_price_does(billed_across_rule_sets):
    billed, billing = billed_across_rule_sets
    settings = billing.replace(currency="USD")  # the shipped card has no rates for some markets of 2025
    with pytest.raises(MissingRateError) as plain:
        price(billed, settings)
    with pytest.raises(MissingRateError) as by_group:
        pricing.cost_partials_of_charges(billed, settings)
    assert str(by_group.value) == str(plain.value)


def test_no_charges_give_empty_partials_by_group():
    partials = pricing.cost_partials_of_charges(schema.empty_charges())
    assert partials.schema == pl.Schema(pricing.PARTIAL_SCHEMA) and partials.height == 0


# --- Issue 17: groups, Meta Business Agent, AI Providers, marketing max prices ----------------------


def with_tokens(charges_frame: pl.DataFrame, *tokens: int | None) -> pl.DataFrame:
    return charges_frame.with_columns(tokens=pl.Series(tokens, dtype=pl.Int64))


def with_templates(charges_frame: pl.DataFrame, *names: str | None) -> pl.DataFrame:
    return charges_frame.with_columns(template_name=pl.Series(names, dtype=pl.String))


def test_meta_business_agent_is_priced_per_token_at_the_shipped_global_rate():
    # data/rate_cards/meta-business-agent.csv: USD 2.00 per 1 M tokens from 2026-08-01, every market.
    charges_frame = with_tokens(
        frame(
            charge("2026-08-01T00:00:00Z", "meta_business_agent", market="Italy", user="U1"),
            charge("2026-08-02T09:00:00Z", "meta_business_agent", market="Brazil", user="U2"),
            charge("2026-08-02T09:00:00Z", "meta_business_agent", market="Unknown", user="U3"),
        ),
        23_457,
        1_000_000,
        1,
    )
    priced = price(charges_frame)
    assert priced["rate"].to_list() == [D("2"), D("2"), D("2")] and priced["rate_unit"].to_list() == ["million_tokens"] * 3
    # 2.00 × 23,457 / 1,000,000 = 0.046914; 2.00 × 1,000,000 / 1,000,000 = 2; 2.00 × 1 / 1,000,000 = 0.000002
    assert priced["cost"].to_list() == [D("0.046914"), D("2"), D("0.000002")]
    assert priced["billed_tokens"].to_list() == [23_457, 1_000_000, 1] and not priced["estimated"].any()
    assert "Meta Business Agent" in priced["rate_source"][0] and "Updated: Jul 1, 2026" in priced["rate_source"][0]
    rollup = costs(priced)
    italy = rollup.filter(pl.col("market") == "Italy").row(0, named=True)
    assert (italy["cost"], italy["tokens"], italy["estimated_charges"]) == (D("0.046914"), 23_457, 0)
    # Before 2026-08-01 the card has no such rate: unpriced, never zero.
    early = with_tokens(frame(charge("2026-07-31T23:59:00Z", "meta_business_agent")), 20_000)
    with pytest.raises(MissingRateError, match="USD Italy meta_business_agent on 2026-07-31"):
        price(early, Settings(currency="USD"))


def test_meta_business_agent_without_tokens_is_priced_at_agent_tokens_per_message_and_marked_an_estimate():
    charges_frame = with_tokens(
        frame(charge("2026-09-01T10:00:00Z", "meta_business_agent", user="U1"), charge("2026-09-01T11:00:00Z", "meta_business_agent", user="U2")),
        None,
        10_000,
    )
    priced = price(charges_frame)
    assert priced["estimated"].to_list() == [True, False]
    assert priced["billed_tokens"].to_list() == [25_000, 10_000]  # Settings' default: the top of Meta's 20,000-25,000
    assert priced["cost"].to_list() == [D("0.05"), D("0.02")]  # 2.00 × 25,000 / 1 M; 2.00 × 10,000 / 1 M
    fewer = price(charges_frame, Settings(agent_tokens_per_message=20_000))
    assert fewer["cost"].to_list() == [D("0.04"), D("0.02")]
    row = costs(priced).row(0, named=True)
    assert (row["cost"], row["tokens"], row["estimated_charges"], row["at_most_charges"]) == (D("0.07"), 35_000, 1, 0)
    lines = invoice(priced).row(0, named=True)
    assert (lines["cost"], lines["tokens"], lines["estimated_charges"]) == (D("0.07"), 35_000, 1)
    text = format_invoice(priced)
    assert "~0.07" in text
    assert "Estimated: 1 per-token charges (Meta Business Agent) without their tokens are priced at 25,000 tokens each" in text
    assert "0.05 USD of the total is an estimate" in text


def test_a_percent_markup_on_a_per_token_cost_is_rounded_once_to_twelve_decimals():
    charges_frame = with_tokens(frame(charge("2026-09-01T10:00:00Z", "meta_business_agent")), 7)
    priced = price(charges_frame, Settings(markup_percent=D("12.3457"), markup_per_charge=D("0.001")))
    # card 2.00 × 7 / 1 M = 0.000014; markup 0.000014 × 0.123457 = 0.000001728398 (exact: 12 places) + 0.001
    assert priced["markup"][0] == D("0.001001728398") and priced["cost"][0] == D("0.001015728398")


def test_a_market_row_wins_over_a_global_row_and_a_global_rate_is_per_currency(tmp_path):
    path = tmp_path / "card.csv"
    path.write_text(
        "effective_from,currency,market,category,tier_from,rate,source,note,unit\n"
        "2026-08-01,USD,global,meta_business_agent,1,2.00,test,trust B,million_tokens\n"
        "2026-08-01,USD,Italy,meta_business_agent,1,3.00,test,trust C,million_tokens\n"
        "2026-08-01,EUR,Italy,marketing,1,0.06,test,trust C,\n",
        encoding="utf-8",
    )
    card = load_card(path)
    charges_frame = with_tokens(
        frame(
            charge("2026-09-01T10:00:00Z", "meta_business_agent", market="Italy"),
            charge("2026-09-01T10:00:00Z", "meta_business_agent", market="Spain", user="U2"),
        ),
        100_000,
        100_000,
    )
    priced = price(charges_frame, Settings(currency="USD"), card=card)
    assert priced["cost"].to_list() == [D("0.3"), D("0.2")]  # Italy's own 3.00, Spain the global 2.00, per 1 M tokens
    assert priced["rate_trust"].to_list() == ["C", "B"]
    in_euros = price(charges_frame, Settings(currency="EUR", report_unpriced=True), card=card)
    assert in_euros["cost"].is_null().all()  # no EUR rate known: unpriced, never zero
    assert costs(in_euros)["priced"].to_list() == [False, False]


def test_a_per_token_unit_is_refused_for_per_message_categories_and_an_unknown_unit_is_named(tmp_path):
    path = tmp_path / "card.csv"
    path.write_text(
        "effective_from,currency,market,category,tier_from,rate,source,note,unit\n"
        "2026-08-01,USD,Italy,marketing,1,2.00,test,trust B,million_tokens\n"
        "2026-08-01,USD,Italy,utility,1,0.03,test,trust B,per_token\n",
        encoding="utf-8",
    )
    with pytest.raises(Exception, match=r"line 2: unit million_tokens for marketing: only meta_business_agent.*line 3: unknown unit 'per_token'"):
        load_card(path)


GROUP_CARD = (
    "2026-10-01,USD,Italy,marketing,1,0.07,test,trust B\n"
    "2026-10-01,USD,Italy,utility,1,0.03,test,trust B\n"
    "2026-10-01,USD,Italy,utility,2,0.02,test,trust B\n"
    "2026-10-01,USD,Spain,marketing,1,0.06,test,trust B\n"
    "2026-10-01,USD,Spain,group_marketing,1,0.05,test,trust C\n"
    "2026-10-01,USD,Spain,utility,1,0.01,test,trust B\n"
)


def test_group_categories_are_priced_at_their_base_category_rate_unless_the_card_has_their_own(tmp_path):
    card = card_of(tmp_path, GROUP_CARD)
    charges_frame = frame(
        charge("2026-10-05T10:00:00Z", "group_marketing", rule_set="pmp-2026-10", user="U1"),
        charge("2026-10-05T10:00:00Z", "group_utility", rule_set="pmp-2026-10", user="U2"),
        # group_service: at service's rate; the card has no service row, so pmp-2026-10's service_rate_from (utility)
        charge("2026-10-05T10:00:00Z", "group_service", rule_set="pmp-2026-10", user="U3"),
        charge("2026-10-05T10:00:00Z", "group_marketing", rule_set="pmp-2026-10", market="Spain", user="U4"),
        charge("2026-10-05T10:00:00Z", "group_service", rule_set="pmp-2026-10", market="Spain", user="U5"),
    )
    priced = price(charges_frame, card=card)
    assert priced["cost"].to_list() == [D("0.07"), D("0.03"), D("0.03"), D("0.05"), D("0.01")]
    assert priced["rate_trust"].to_list() == ["B", "B", "B", "C", "B"]  # Spain's own group_marketing row (C) wins


def test_group_deliveries_count_toward_no_volume_tier(tmp_path):
    # Italy utility: 0.03 for the 1st message of the month, 0.02 from the 2nd (GROUP_CARD).
    card = card_of(tmp_path, GROUP_CARD)
    charges_frame = frame(
        charge("2026-10-05T10:00:00Z", "group_utility", rule_set="pmp-2026-10", user="U1"),
        charge("2026-10-05T10:01:00Z", "group_utility", rule_set="pmp-2026-10", user="U2"),
        charge("2026-10-05T10:02:00Z", "utility", rule_set="pmp-2026-10", user="U3"),
        charge("2026-10-05T10:03:00Z", "utility", rule_set="pmp-2026-10", user="U4"),
    )
    priced = price(charges_frame, card=card)
    assert priced["tier_position"].to_list() == [None, None, 1, 2]
    assert priced["cost"].to_list() == [D("0.03"), D("0.03"), D("0.03"), D("0.02")]  # groups at the list rate, uncounted


def test_general_purpose_ai_is_unpriced_never_zero():
    charges_frame = frame(
        charge("2026-03-20T10:00:00Z", "general_purpose_ai", market="Brazil", user="U1"),
        charge("2026-03-20T10:00:00Z", "marketing", market="Brazil", user="U2"),
    )
    with pytest.raises(MissingRateError, match="general_purpose_ai.*Meta's AI Provider rate card is not known"):
        price(charges_frame)  # the shipped card has several currencies: USD prices the marketing charge
    priced = price(charges_frame, Settings(report_unpriced=True))
    assert priced["currency"].to_list() == ["USD", "USD"]
    assert priced.filter(pl.col("category") == "general_purpose_ai")["cost"].to_list() == [None]
    rollup = costs(priced).filter(pl.col("category") == "general_purpose_ai").row(0, named=True)
    assert (rollup["priced"], rollup["cost"], rollup["billable_charges"]) == (False, None, 1)
    assert "Unpriced: 1 billable charges have no rate" in format_invoice(priced, Settings(report_unpriced=True))


def max_price_settings(*caps: tuple[str, str, str, str | None]) -> Settings:
    from analytics.settings import MaxPrice

    return Settings(max_prices=tuple(MaxPrice(waba, D(per_1000), dt.date.fromisoformat(start), template) for waba, per_1000, start, template in caps))


def test_a_max_price_caps_marketing_of_its_waba_from_its_date(tmp_path):
    card = card_of(tmp_path, GROUP_CARD)
    charges_frame = frame(
        charge("2026-10-01T09:00:00Z", "marketing", rule_set="pmp-2026-10", waba="W1", user="U1"),
        charge("2026-10-02T09:00:00Z", "marketing", rule_set="pmp-2026-10", waba="W1", user="U2"),
        charge("2026-10-02T09:00:00Z", "group_marketing", rule_set="pmp-2026-10", waba="W1", user="U3"),
        charge("2026-10-02T09:00:00Z", "utility", rule_set="pmp-2026-10", waba="W1", user="U4"),
        charge("2026-10-02T09:00:00Z", "marketing", rule_set="pmp-2026-10", waba="W2", user="U5"),
        charge("2026-10-02T09:00:00Z", "marketing", rule_set="pmp-2026-10", waba="W1", user="U6", market="Spain"),
    )
    # 45.5 per 1,000 = 0.0455 a message, from 2026-10-02 (UTC), WABA W1 only
    priced = price(charges_frame, max_price_settings(("W1", "45.5", "2026-10-02", None)), card=card)
    assert priced["cost"].to_list() == [D("0.07"), D("0.0455"), D("0.0455"), D("0.03"), D("0.07"), D("0.0455")]
    assert priced["at_most"].to_list() == [False, True, True, False, False, True]
    # A max price above the list rate: the list rate, still an upper bound.
    above = price(charges_frame, max_price_settings(("W1", "80", "2026-10-02", None)), card=card)
    assert above["cost"].to_list() == [D("0.07"), D("0.07"), D("0.07"), D("0.03"), D("0.07"), D("0.06")]
    assert above["at_most"].to_list() == [False, True, True, False, False, True]
    rollup = costs(priced).filter(pl.col("category") == "marketing", pl.col("market") == "Italy").row(0, named=True)
    assert (rollup["cost"], rollup["at_most_charges"]) == (D("0.185500"), 1)  # 0.07 + 0.0455 (W1, capped) + 0.07 (W2)
    text = format_invoice(priced)
    assert "At most: 3 marketing charges under a max price are priced at min(list rate, max price): 0.14 USD" in text  # 3 × 0.0455
    assert "≤" in text


def test_a_max_price_for_a_template_caps_only_that_template_and_wins_over_the_wabas(tmp_path):
    card = card_of(tmp_path, GROUP_CARD)
    charges_frame = with_templates(
        frame(
            charge("2026-10-05T09:00:00Z", "marketing", rule_set="pmp-2026-10", user="U1"),
            charge("2026-10-05T09:00:00Z", "marketing", rule_set="pmp-2026-10", user="U2"),
            charge("2026-10-05T09:00:00Z", "marketing", rule_set="pmp-2026-10", user="U3"),
        ),
        "spring_sale",
        "newsletter",
        None,
    )
    only_template = price(charges_frame, max_price_settings(("W1", "40", "2026-10-01", "spring_sale")), card=card)
    assert only_template["cost"].to_list() == [D("0.04"), D("0.07"), D("0.07")]
    both = price(charges_frame, max_price_settings(("W1", "50", "2026-10-01", None), ("W1", "40", "2026-10-01", "spring_sale")), card=card)
    assert both["cost"].to_list() == [D("0.04"), D("0.05"), D("0.05")]


def test_cost_partials_of_charges_give_the_same_costs_and_invoice_with_tokens_and_caps(tmp_path):
    charges_frame = with_templates(
        with_tokens(
            frame(
                charge("2026-10-05T09:00:00Z", "marketing", rule_set="pmp-2026-10", user="U1"),
                charge("2026-10-05T09:05:00Z", "marketing", rule_set="pmp-2026-10", user="U2"),
                charge("2026-10-05T09:10:00Z", "meta_business_agent", rule_set="pmp-2026-10", user="U1"),
                charge("2026-10-05T09:20:00Z", "meta_business_agent", rule_set="pmp-2026-10", user="U2"),
                charge("2026-10-05T09:30:00Z", "meta_business_agent", rule_set="pmp-2026-10", user="U3"),
                charge("2026-10-05T09:40:00Z", "group_utility", rule_set="pmp-2026-10", user="U4"),
            ),
            None,
            None,
            21_000,
            None,
            None,
            None,
        ),
        "spring_sale",
        None,
        None,
        None,
        None,
        None,
    )
    # the template's cap: 1 charge capped; the WABA's: both marketing charges; none: no cap
    for caps, capped in (((("W1", "40", "2026-10-01", "spring_sale"),), 1), ((("W1", "40", "2026-10-01", None),), 2), ((), 0)):
        settings = max_price_settings(*caps)
        priced = price(charges_frame, settings)
        partials = pricing.cost_partials_of_charges(charges_frame, settings)
        assert_frame_equal(pricing.costs_from_partials(partials), costs(priced))
        assert_frame_equal(pricing.invoice_from_partials(partials), invoice(priced))
        assert priced["at_most"].sum() == capped
    priced = price(charges_frame, max_price_settings(("W1", "40", "2026-10-01", "spring_sale")))
    agent = costs(priced).filter(pl.col("category") == "meta_business_agent").row(0, named=True)
    assert (agent["tokens"], agent["estimated_charges"], agent["cost"]) == (71_000, 2, D("0.142"))  # 2.00 × 71,000 / 1 M


def test_issue_17_traffic_billed_by_the_engine_and_priced():
    """From messages: a group marketing_lite template capped by its template's max price, a free group
    service reply, Meta Business Agent replies with and without tokens (shipped card, USD)."""
    from traffic import Group

    from analytics.settings import MaxPrice

    group = Group("2026-10-05T08:00:00Z", {"393330000001": "IT", "5511987654321": "BR"}, waba_id="W1")
    group.template(0, "marketing_lite", template_name="autumn_sale").text(1)
    one_to_one = Traffic("2026-09-07T08:00:00Z").user(0).agent(0.1, tokens=21_000).agent(0.2)
    messages = pl.concat([group.frame(), one_to_one.frame()], how="diagonal_relaxed")
    settings = Settings(currency="USD", max_prices=(MaxPrice("W1", D("30"), dt.date(2026, 10, 1), "autumn_sale"),))
    priced = price(charges.bill(messages, settings), settings).sort("started_at", "market")
    assert priced.select("category", "pricing_type", "market", "rate", "cost", "estimated", "at_most").rows() == [
        ("meta_business_agent", "regular", "Italy", D("2"), D("0.042"), False, False),  # 2.00 × 21,000 / 1 M
        ("meta_business_agent", "regular", "Italy", D("2"), D("0.05"), True, False),  # 25,000 assumed
        ("group_marketing", "regular", "Brazil", D("0.0625"), D("0.03"), False, True),  # list 0.0625, capped at 30 / 1,000
        ("group_marketing", "regular", "Italy", D("0.0795"), D("0.03"), False, True),
        ("group_service", "free_tier", "Brazil", None, D("0"), False, False),
        ("group_service", "free_tier", "Italy", None, D("0"), False, False),
    ]
