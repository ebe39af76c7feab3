"""Cost by template and the templates billed in another category than written
(analytics/present/templates.py, analytics/read/template_updates.py, `Traffic.template_costs()` and
`wa-analytics templates`).

Meta's `template_category_update` payload is pywa's test data, read in place from ../shared; the
expected costs are the shipped card's rates, looked up here on their own.
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import polars as pl
import pytest
from meta_fixtures import FIXTURES

from analytics import cli
from analytics.bill import charges as engine
from analytics.core import schema
from analytics.pipeline.traffic import load
from analytics.present import templates
from analytics.price import pricing
from analytics.read.template_updates import COMPLETED, IMPENDING, read_category_updates, update_row
from analytics.reconcile import matching
from analytics.settings import Settings
from analytics.synthetic import meta_billing
from analytics.terms.ratecards import load_card

CATEGORY_UPDATE = FIXTURES / "pywa__tests_data_updates_template_category_update.json"
WABA = "57438975935"  # the fixture's entry id
UPDATED_AT = dt.datetime(2025, 6, 19, 14, 54, 42, tzinfo=dt.UTC)  # the fixture's entry time, 1750344882
USD = Settings(currency="USD", report_unpriced=True)


def update_payload(tmp_path):
    """The fixture's webhook payload (pywa keeps it under the key "marketing") as a file of its own."""
    path = tmp_path / "category_update.json"
    path.write_text(json.dumps(json.loads(CATEGORY_UPDATE.read_text())["marketing"]))
    return path


def messages(*rows: dict) -> pl.DataFrame:
    frame = pl.DataFrame(list(rows)).with_columns(pl.col("timestamp").str.to_datetime(time_zone="UTC"))
    return frame.select([(pl.col(c) if c in frame.columns else pl.lit(None)).cast(t).alias(c) for c, t in schema.MESSAGE_SCHEMA.items()])


def template(message_id: str, timestamp: str, category: str, name: str | None, *, user: str = "393330001001", waba: str = WABA) -> dict:
    return dict(
        message_id=message_id,
        timestamp=timestamp,
        direction="outbound",
        business_phone="5550001",
        waba_id=waba,
        user_id=user,
        message_type="template",
        template_category=category,
        status="delivered",
        template_name=name,
    )


def inbound(message_id: str, timestamp: str, user: str = "393330001001") -> dict:
    return dict(
        message_id=message_id, timestamp=timestamp, direction="inbound", business_phone="5550001", waba_id=WABA, user_id=user, message_type="text"
    )


def usd_rate(market: str, category: str, on: dt.date) -> Decimal:
    """The shipped card's first-tier USD rate in force on `on`, looked up without the pricing code."""
    card = load_card(None).filter(
        (pl.col("currency") == "USD") & (pl.col("market") == market) & (pl.col("category") == category) & (pl.col("tier_from") == 1)
    )
    in_force = card.filter(pl.col("effective_from") <= on).sort("effective_from").tail(1)
    return Decimal(in_force["rate"].item())


def test_the_category_update_fixture_is_read_as_a_completed_change(tmp_path):
    read = read_category_updates([update_payload(tmp_path)])
    assert read.unreadable == ()
    row = read.updates.row(0, named=True)
    assert read.updates.height == 1
    assert (row["waba_id"], row["template_id"], row["template_name"], row["language"]) == (WABA, "12345678", "my_message_template", "he")
    assert (row["category"], row["previous_category"], row["kind"], row["effective_from"]) == ("marketing", None, COMPLETED, UPDATED_AT)


def test_an_impending_change_takes_effect_at_its_update_timestamp_and_an_unreadable_one_is_counted():
    # The fields of Meta's "impending category change" notification (template_category_update webhook reference).
    impending = update_row(
        {"id": "1", "time": 1767225600},
        {
            "message_template_name": "order_update",
            "correct_category": "MARKETING",
            "new_category": "UTILITY",
            "category_update_timestamp": 1767830400,
        },
    )
    assert isinstance(impending, dict)
    assert (impending["kind"], impending["category"], impending["previous_category"]) == (IMPENDING, "marketing", "utility")
    assert impending["effective_from"] == dt.datetime(2026, 1, 8, tzinfo=dt.UTC)
    assert update_row({"id": "1"}, {"message_template_name": "x", "new_category": "UTILITY"}) == "template 'x': no time the change takes effect"


def test_template_recategorisation_found_in_a_webhook_fixture_whose_billed_category_differs(tmp_path):
    """Meta moved my_message_template to MARKETING on 2025-06-19: a send written as utility after
    that is billed as marketing, one before it is not, nor one of another WABA or template."""
    traffic = messages(
        template("w.before", "2025-06-10T10:00:00Z", "utility", "my_message_template"),
        template("w.after", "2026-02-10T10:00:00Z", "utility", "my_message_template"),
        template("w.other_waba", "2026-02-10T11:00:00Z", "utility", "my_message_template", user="393330001002", waba="999"),
        template("w.promo", "2026-02-11T10:00:00Z", "marketing", "promo"),
    )
    priced = pricing.price(engine.bill(traffic, USD), USD)
    updates = read_category_updates([update_payload(tmp_path)]).updates
    billed = templates.billed_categories(traffic, None, updates)
    assert billed.rows() == [("w.after", "marketing", templates.CATEGORY_UPDATE)]

    found = templates.recategorised(traffic, priced, billed, USD)
    utility, marketing = usd_rate("Italy", "utility", dt.date(2026, 2, 10)), usd_rate("Italy", "marketing", dt.date(2026, 2, 10))
    assert marketing > utility  # the difference below is a real one
    assert found.select("month", "template_name", "intended_category", "billed_category", "messages", "currency").rows() == [
        ("2026-02", "my_message_template", "utility", "marketing", 1, "USD")
    ]
    row = found.row(0, named=True)
    assert (row["cost_as_intended"], row["cost_as_billed"], row["cost_difference"]) == (utility, marketing, marketing - utility)
    assert row["unpriced_charges"] == 0


def test_recategorisation_from_metas_pricing_objects_costs_a_free_utility_message_its_marketing_rate():
    """A utility template inside the customer service window is free (pmp-2025); Meta's pricing
    object bills it as marketing, so the difference is the whole marketing rate. The reconciliation
    finds it (`category_changed`) and the template is named with it."""
    traffic = messages(
        inbound("w.in", "2026-03-02T09:00:00Z"),
        template("w.order", "2026-03-02T09:05:00Z", "utility", "order_confirmation"),
        template("w.ship", "2026-03-05T09:00:00Z", "utility", "shipping_update"),
    )
    as_meta_billed = traffic.with_columns(
        template_category=pl.when(pl.col("message_id") == "w.order").then(pl.lit("marketing")).otherwise("template_category")
    )
    meta_pricing = meta_billing.meta_pricing_objects(engine.bill(as_meta_billed, USD), as_meta_billed, USD)
    ours = engine.bill(traffic, USD)
    rows = matching.reconcile(traffic, ours, meta_pricing=meta_pricing, settings=USD).rows
    billed = templates.billed_categories(traffic, rows, None)
    assert billed.rows() == [("w.order", "marketing", templates.PRICING_OBJECT)]

    found = templates.recategorised(traffic, pricing.price(ours, USD), billed, USD)
    marketing = usd_rate("Italy", "marketing", dt.date(2026, 3, 2))
    assert found.select("template_name", "intended_category", "billed_category", "cost_as_intended", "cost_as_billed", "cost_difference").rows() == [
        ("order_confirmation", "utility", "marketing", Decimal(0), marketing, marketing)
    ]


def test_marketing_lite_billed_as_marketing_is_no_recategorisation(tmp_path):
    path = tmp_path / "update.json"
    payload = json.loads(CATEGORY_UPDATE.read_text())["marketing"]
    payload["entry"][0]["changes"][0]["value"]["message_template_name"] = "lite_offer"
    path.write_text(json.dumps(payload))
    traffic = messages(template("w.lite", "2026-02-10T10:00:00Z", "marketing_lite", "lite_offer"))
    assert templates.billed_categories(traffic, None, read_category_updates([path]).updates).is_empty()


def test_cost_by_template_sums_each_templates_charges_per_month_and_counts_the_unnamed():
    traffic = messages(
        template("a1", "2026-02-10T10:00:00Z", "marketing", "promo", user="393330001001"),
        template("a2", "2026-02-12T10:00:00Z", "marketing", "promo", user="393330001002"),
        template("b1", "2026-02-12T11:00:00Z", "utility", "shipping_update", user="393330001003"),
        template("c1", "2026-03-01T10:00:00Z", "marketing", "promo", user="393330001001"),
        template("n1", "2026-03-02T10:00:00Z", "utility", None, user="393330001004"),
    )
    priced = pricing.price(engine.bill(traffic, USD), USD)
    by_month = templates.cost_by_template(priced, traffic)
    february = dt.date(2026, 2, 10)
    assert by_month.select("month", "template_name", "category", "charges", "billable_charges", "cost").rows() == [
        ("2026-02", "promo", "marketing", 2, 2, 2 * usd_rate("Italy", "marketing", february)),
        ("2026-02", "shipping_update", "utility", 1, 1, usd_rate("Italy", "utility", february)),
        ("2026-03", "promo", "marketing", 1, 1, usd_rate("Italy", "marketing", dt.date(2026, 3, 1))),
    ]
    assert templates.unnamed_template_charges(priced, traffic) == 1
    assert templates.top_templates(by_month, "2026-02", top=1)["template_name"].to_list() == ["promo"]


def test_traffic_templates_and_the_templates_command_read_the_update_among_the_inputs(tmp_path, capsys):
    csv = tmp_path / "messages.csv"
    messages(
        template("w.after", "2026-02-10T10:00:00Z", "utility", "my_message_template"),
        template("w.promo", "2026-02-11T10:00:00Z", "marketing", "promo", user="393330001002"),
    ).with_columns(pl.col("timestamp").dt.strftime("%Y-%m-%dT%H:%M:%SZ")).write_csv(csv)
    update = update_payload(tmp_path)

    answer = load([csv, update], currency="USD").template_costs()
    difference = usd_rate("Italy", "marketing", dt.date(2026, 2, 10)) - usd_rate("Italy", "utility", dt.date(2026, 2, 10))
    assert answer.recategorised["cost_difference"].to_list() == [difference]
    assert set(answer.by_month["template_name"]) == {"my_message_template", "promo"}

    out = tmp_path / "templates.csv"
    status = cli.main(["templates", str(csv), str(update), "--currency", "USD", "-o", str(out)])
    err = capsys.readouterr().err
    assert status == 0, err
    written = pl.read_csv(tmp_path / "templates.recategorised.csv", infer_schema=False)
    assert written.select("template_name", "intended_category", "billed_category", "evidence").rows() == [
        ("my_message_template", "utility", "marketing", "template_category_update")
    ]
    assert Decimal(written["cost_difference"].item()) == difference
    assert pl.read_csv(out).height == 2
    assert "my_message_template: written utility, billed marketing (template_category_update), 1 messages" in err


@pytest.mark.parametrize("column", ["template_name"])
def test_without_template_names_the_answer_says_what_to_give(column, tmp_path):
    csv = tmp_path / "messages.csv"
    messages(template("w1", "2026-02-10T10:00:00Z", "utility", None)).drop(column).with_columns(
        pl.col("timestamp").dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    ).write_csv(csv)
    answer = load(csv, currency="USD").template_costs()
    assert answer.by_month.is_empty() and answer.unnamed_charges == 1
    assert "the input names no template" in answer.describe()
