"""The chart builders (analytics.present.charts), through `chart.to_dict()`: marks, fields, titles and the
rows each chart carries; and each one rendered to PNG by vl-convert, offline."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import polars as pl
import pytest

alt = pytest.importorskip("altair")
vl_convert = pytest.importorskip("vl_convert")

from analytics.bill import charges
from analytics.core import (
    resources,
    schema,  # noqa: E402
)
from analytics.present import charts, rollups
from analytics.price import pricing
from analytics.read import ingest
from analytics.reconcile import matching as reconcile
from analytics.settings import Settings  # noqa: E402
from analytics.synthetic import meta_billing
from analytics.whatif import projection, scenarios

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def rows_of(spec: dict, view: dict | None = None) -> list[dict]:
    """The data rows a (sub)chart carries, from the top-level `datasets`."""
    return spec["datasets"][(view or spec)["data"]["name"]]


def encoding(view: dict, channel: str) -> tuple[str | None, str | None]:
    found = view["encoding"][channel]
    return found.get("field"), found.get("type")


def title_text(spec: dict) -> str:
    title = spec["title"]
    return title if isinstance(title, str) else title["text"]


def render(chart: alt.TopLevelMixin) -> bytes:
    return vl_convert.vegalite_to_png(chart.to_dict(), scale=1)


# --- Small tidy frames, as the roll-ups give them --------------------------------------------------


def volumes_frame() -> pl.DataFrame:
    return pl.DataFrame(
        [
            ("2025-06", "cbp-2023", "CBP", "marketing", 12, 10, 2, "conversations"),
            ("2025-06", "cbp-2023", "CBP", "service", 5, 0, 5, "conversations"),
            ("2025-07", "pmp-2025", "PMP", "utility", 7, 4, 3, "messages"),
            ("2025-07", "pmp-2025", "PMP", "marketing", 30, 30, 0, "messages"),
            ("2025-09", "pmp-2025", "PMP", "marketing", 20, 20, 0, "messages"),
        ],
        schema=rollups.VOLUMES_SCHEMA,
        orient="row",
    )


def costs_frame() -> pl.DataFrame:
    rows = [
        ("2026-01", "Italy", "marketing", "regular", 10, 10, "0.700000", True),
        ("2026-01", "Spain", "utility", "regular", 4, 4, "0.100000", True),
        ("2026-01", "Spain", "utility", "regular", 2, 2, None, False),
        ("2026-01", "Italy", "service", "free_customer_service", 6, 0, "0", True),
        ("2026-02", "Italy", "marketing", "regular", 8, 8, "0.560000", True),
        ("2026-02", "Italy", "utility", "free_tier", 2, 0, "0", True),
    ]
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
                "currency": "USD",
                "priced": priced,
            }
            for m, market, c, p, n, b, cost, priced in rows
        ],
        schema=pricing.ROLLUP_SCHEMA,
    )


def comparison_frame() -> pl.DataFrame:
    rows = [
        ("baseline", "2026-01", "marketing", 10, "1.000000", "0"),
        ("baseline", "2026-01", "utility", 4, "0.400000", "0"),
        ("baseline", "2026-01", "service", 0, "0", "0"),
        ("fewer_campaigns", "2026-01", "marketing", 5, "0.500000", "-0.500000"),
        ("fewer_campaigns", "2026-01", "utility", 4, "0.400000", "0"),
        ("fewer_campaigns", "2026-01", "service", 0, "0", "0"),
        ("today_rules", "2026-01", "marketing", 10, "1.000000", "0"),
        ("today_rules", "2026-01", "utility", 6, "0.600000", "0.200000"),
        ("today_rules", "2026-01", "service", 0, "0", "0"),
    ]
    return pl.DataFrame(
        [
            {
                "scenario": s,
                "month": m,
                "category": c,
                "charges": b,
                "billable_charges": b,
                "cost": Decimal(cost),
                "currency": "EUR",
                "unpriced_charges": 0,
                "charges_difference": 0,
                "billable_charges_difference": 0,
                "cost_difference": Decimal(diff),
            }
            for s, m, c, b, cost, diff in rows
        ],
        schema=scenarios.COMPARE_SCHEMA,
    )


def projection_frame(*, band: bool = True) -> pl.DataFrame:
    def row(scenario, month, horizon, category, cost):
        value = Decimal(cost)
        return {
            "scenario": scenario,
            "month": month,
            "horizon": horizon,
            "category": category,
            "charges": 1,
            "billable_charges": 1,
            "cost": value,
            "cost_low": value * Decimal("0.9") if band else None,
            "cost_high": value * Decimal("1.1") if band else None,
            "currency": "EUR",
            "unpriced_charges": 0,
            "charges_difference": 0,
            "billable_charges_difference": 0,
            "cost_difference": Decimal(0),
        }

    return pl.DataFrame(
        [
            row("baseline", "2026-12", 1, "marketing", "10.000000"),
            row("baseline", "2026-12", 1, "utility", "2.000000"),
            row("baseline", "2027-01", 2, "marketing", "11.000000"),
            row("fewer_campaigns", "2026-12", 1, "marketing", "6.000000"),
            row("fewer_campaigns", "2027-01", 2, "marketing", "7.000000"),
        ],
        schema=projection.PROJECT_SCHEMA,
    )


def reconciliation_frame() -> pl.DataFrame:
    return pl.DataFrame(
        [
            ("2026-01", "message", "match", "agrees", 100),
            ("2026-02", "message", "match", "agrees", 90),
            ("2026-02", "message", "different", "category_changed", 2),
            ("2026-02", "message", "different", "pricing_type_differs", 1),
            ("2026-02", "conversation", "different", "window_differs", 1),
            ("2026-04", "message", "missing_meta", "pricing_not_reported", 3),
        ],
        schema=rollups.RECONCILIATION_BY_MONTH_SCHEMA,
        orient="row",
    )


def openings_frame() -> pl.DataFrame:
    cells = rollups.openings(schema.empty_charges())
    return cells.with_columns(charges=pl.when((pl.col("weekday") == 2) & (pl.col("hour") == 10)).then(7).otherwise(0))


SWITCHES = rollups.rule_set_switches(dt.date(2024, 1, 1), dt.date(2026, 12, 31))

BUILDERS = {
    "volumes_chart": lambda: charts.volumes_chart(volumes_frame(), SWITCHES),
    "cost_by_category_chart": lambda: charts.cost_by_category_chart(rollups.costs_by_month(costs_frame())),
    "cost_by_market_chart": lambda: charts.cost_by_market_chart(rollups.costs_by_market(costs_frame())),
    "free_paid_chart": lambda: charts.free_paid_chart(rollups.free_and_paid(costs_frame())),
    "scenario_chart": lambda: charts.scenario_chart(comparison_frame()),
    "projection_chart": lambda: charts.projection_chart(projection_frame()),
    "openings_heatmap": lambda: charts.openings_heatmap(openings_frame()),
    "reconciliation_chart": lambda: charts.reconciliation_chart(reconciliation_frame()),
}


# --- The theme and the colours ---------------------------------------------------------------------


def test_importing_charts_enables_the_house_theme():
    assert charts.THEME in alt.theme.names()
    assert alt.theme.active == charts.THEME
    config = charts.cost_by_market_chart(rollups.costs_by_market(costs_frame())).to_dict()["config"]
    assert config["font"] == charts.FONT
    assert config["range"]["category"][:5] == ["#4c78a8", "#f58518", "#54a24b", "#88d27a", "#b279a2"]


def test_a_category_has_the_same_colour_in_every_chart():
    volumes_bars = charts.volumes_chart(volumes_frame()).to_dict()["layer"][0]
    cost_bars = charts.cost_by_category_chart(rollups.costs_by_month(costs_frame())).to_dict()
    scenario_bars = charts.scenario_chart(comparison_frame()).to_dict()["hconcat"][0]
    for view in (volumes_bars, cost_bars, scenario_bars):
        scale = view["encoding"]["color"]["scale"]
        colours = dict(zip(scale["domain"], scale["range"], strict=True))
        assert colours["marketing"] == charts.CATEGORY_COLOURS["marketing"]
        assert colours["utility"] == charts.CATEGORY_COLOURS["utility"]
        assert scale["domain"] == charts.category_order(scale["domain"])


def test_categories_keep_the_fixed_order_and_unknown_ones_come_last_in_grey():
    assert charts.category_order(["zeta", "service", "marketing", "alpha", "utility"]) == ["marketing", "utility", "service", "alpha", "zeta"]
    scale = charts.category_scale(["zeta", "marketing", "alpha"]).to_dict()
    assert scale == {"domain": ["marketing", "alpha", "zeta"], "range": ["#4c78a8", *charts.UNKNOWN_COLOURS[:2]]}


# --- One test per builder ---------------------------------------------------------------------------


def test_volumes_chart_stacks_billable_volume_by_category_and_marks_the_switches():
    spec = charts.volumes_chart(volumes_frame(), SWITCHES).to_dict()
    bars, rule, label = spec["layer"]
    assert [bars["mark"]["type"], rule["mark"]["type"], label["mark"]["type"]] == ["bar", "rule", "text"]
    assert title_text(spec) == "Billable conversations and messages per month by category"
    assert encoding(bars, "x") == ("month", "ordinal")
    assert encoding(bars, "y") == ("volume", "quantitative")
    assert encoding(bars, "color") == ("category", "nominal")
    assert bars["encoding"]["x"]["scale"]["domain"] == ["2025-06", "2025-07", "2025-08", "2025-09"]  # August empty, kept
    assert [(r["month"], r["category"], r["volume"]) for r in rows_of(spec, bars)] == [
        ("2025-06", "marketing", 10),
        ("2025-06", "service", 0),
        ("2025-07", "marketing", 30),
        ("2025-07", "utility", 4),
        ("2025-09", "marketing", 20),
    ]
    # Only the switch inside the months shown, at the left edge of its month's band.
    assert rows_of(spec, rule) == [{"month": "2025-07", "date": "2025-07-01", "rule_set": "pmp-2025", "label": "pmp-2025"}]
    assert rule["encoding"]["x"]["bandPosition"] == 0
    assert label["encoding"]["text"]["field"] == "label"


def test_volumes_chart_title_says_messages_under_per_message_pricing_and_has_no_switch_layers_without_switches():
    only_pmp = volumes_frame().filter(pl.col("unit") == "messages")
    spec = charts.volumes_chart(only_pmp).to_dict()
    assert title_text(spec) == "Billable messages per month by category"
    assert len(spec["layer"]) == 1
    assert spec["layer"][0]["encoding"]["y"]["title"] == "Billable messages"


def test_cost_by_category_chart_in_cents_with_the_currency_and_the_unpriced_count():
    spec = charts.cost_by_category_chart(rollups.costs_by_month(costs_frame())).to_dict()
    assert spec["mark"]["type"] == "bar"
    assert encoding(spec, "y") == ("cost", "quantitative")
    assert spec["encoding"]["y"]["title"] == "Cost (USD)"
    assert spec["title"] == {"text": "Cost per month by category", "subtitle": "2 billable charges have no rate in the card and are not in the cost"}
    assert [(r["month"], r["category"], r["cost"], r["unpriced_charges"]) for r in rows_of(spec)] == [
        ("2026-01", "marketing", 0.7, 0),
        ("2026-01", "utility", 0.1, 2),
        ("2026-02", "marketing", 0.56, 0),
    ]


def test_cost_by_market_chart_most_expensive_on_top():
    spec = charts.cost_by_market_chart(rollups.costs_by_market(costs_frame())).to_dict()
    assert spec["mark"]["type"] == "bar"
    assert encoding(spec, "x") == ("cost", "quantitative") and spec["encoding"]["x"]["title"] == "Cost (USD)"
    assert encoding(spec, "y") == ("market", "nominal")
    assert spec["encoding"]["y"]["sort"] == ["Italy", "Spain"]
    assert [(r["market"], r["cost"]) for r in rows_of(spec)] == [("Italy", 1.26), ("Spain", 0.1)]
    assert spec["title"]["text"] == "Cost by market"


def test_free_paid_chart_shares_with_paid_first():
    spec = charts.free_paid_chart(rollups.free_and_paid(costs_frame())).to_dict()
    assert encoding(spec, "y") == ("share", "quantitative")
    assert spec["encoding"]["y"]["axis"]["format"] == "%"
    assert spec["encoding"]["color"]["scale"]["domain"] == ["regular", "free_tier", "free_customer_service"]
    assert [(r["month"], r["pricing_type"], r["share"]) for r in rows_of(spec)] == [
        ("2026-01", "regular", 0.7273),
        ("2026-01", "free_customer_service", 0.2727),
        ("2026-02", "regular", 0.8),
        ("2026-02", "free_tier", 0.2),
    ]
    assert spec["title"]["text"] == "Free and paid charges per month"


def test_scenario_chart_cost_by_category_beside_the_saving_against_baseline():
    spec = charts.scenario_chart(comparison_frame()).to_dict()
    costs, saved = spec["hconcat"]
    assert title_text(spec) == "Scenarios: cost and saving against the baseline"
    assert costs["mark"]["type"] == "bar" and saved["mark"]["type"] == "bar"
    assert encoding(costs, "x") == ("scenario", "nominal")
    assert costs["encoding"]["x"]["sort"] == ["baseline", "fewer_campaigns", "today_rules"]
    assert encoding(costs, "color") == ("category", "nominal")
    assert costs["encoding"]["y"]["title"] == "Cost (EUR)"
    assert saved["encoding"]["y"]["title"] == "Saving against baseline (EUR)"
    assert [(r["scenario"], r["category"], r["cost"]) for r in rows_of(spec, costs)] == [
        ("baseline", "marketing", 1.0),
        ("baseline", "utility", 0.4),
        ("fewer_campaigns", "marketing", 0.5),
        ("fewer_campaigns", "utility", 0.4),
        ("today_rules", "marketing", 1.0),
        ("today_rules", "utility", 0.6),
    ]
    assert [(r["scenario"], r["saving"], r["saving_share"]) for r in rows_of(spec, saved)] == [
        ("fewer_campaigns", 0.5, 0.3571),
        ("today_rules", -0.2, -0.1429),
    ]


def test_projection_chart_lines_per_scenario_over_the_back_test_band():
    spec = charts.projection_chart(projection_frame()).to_dict()
    band, lines = spec["layer"]
    assert band["mark"]["type"] == "area" and lines["mark"]["type"] == "line"
    assert encoding(band, "y") == ("cost_low", "quantitative") and band["encoding"]["y2"]["field"] == "cost_high"
    assert encoding(lines, "y") == ("cost", "quantitative") and lines["encoding"]["y"]["title"] == "Cost (EUR)"
    assert encoding(lines, "color") == ("scenario", "nominal")
    assert lines["encoding"]["color"]["scale"]["range"][0] == charts.SCENARIO_COLOURS[0]  # the baseline
    assert [(r["scenario"], r["month"], r["cost"], r["cost_low"], r["cost_high"]) for r in rows_of(spec, band)] == [
        ("baseline", "2026-12", 12.0, 10.8, 13.2),
        ("baseline", "2027-01", 11.0, 9.9, 12.1),
    ]  # the baseline's band only, by default: many overlapping bands blur into one
    assert [r["scenario"] for r in rows_of(spec, lines)] == ["baseline", "baseline", "fewer_campaigns", "fewer_campaigns"]
    assert spec["title"]["text"] == "Projected cost per month by scenario"
    assert spec["title"]["subtitle"] == "Band (baseline): ± the back-test's error at each horizon"


def test_projection_chart_bands_of_every_scenario_when_asked():
    spec = charts.projection_chart(projection_frame(), band_for=None).to_dict()
    band, _ = spec["layer"]
    assert [(r["scenario"], r["cost_low"]) for r in rows_of(spec, band)] == [
        ("baseline", 10.8),
        ("baseline", 9.9),
        ("fewer_campaigns", 5.4),
        ("fewer_campaigns", 6.3),
    ]


def test_projection_chart_without_a_back_test_has_no_band_and_says_so():
    spec = charts.projection_chart(projection_frame(band=False)).to_dict()
    assert [layer["mark"]["type"] for layer in spec["layer"]] == ["line"]
    assert spec["title"]["subtitle"] == "No back-test: no band"


def test_openings_heatmap_weekday_by_hour_every_cell():
    spec = charts.openings_heatmap(openings_frame()).to_dict()
    assert spec["mark"]["type"] == "rect"
    assert encoding(spec, "x") == ("hour", "ordinal")
    assert encoding(spec, "y") == ("weekday_name", "ordinal")
    assert spec["encoding"]["y"]["sort"] == ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
    assert encoding(spec, "color") == ("charges", "quantitative")
    data = rows_of(spec)
    assert len(data) == 168
    assert [r for r in data if r["charges"]] == [{"weekday": 2, "weekday_name": "Tue", "hour": 10, "charges": 7}]
    assert spec["title"]["text"] == "When charges start, by weekday and hour"


def test_reconciliation_chart_differences_per_month_by_status_without_matches():
    spec = charts.reconciliation_chart(reconciliation_frame()).to_dict()
    assert spec["mark"]["type"] == "bar"
    assert encoding(spec, "color") == ("status", "nominal")
    assert spec["encoding"]["color"]["scale"]["domain"] == ["different", "missing_ours", "missing_meta"]
    assert spec["encoding"]["x"]["scale"]["domain"] == ["2026-01", "2026-02", "2026-03", "2026-04"]
    assert [(r["month"], r["status"], r["items"], r["reasons"]) for r in rows_of(spec)] == [
        ("2026-02", "different", 4, "category_changed 2, pricing_type_differs 1, window_differs 1"),
        ("2026-04", "missing_meta", 3, "pricing_not_reported 3"),
    ]
    assert spec["title"]["text"] == "Differences from Meta's reports per month"
    assert spec["encoding"]["y"]["axis"]["values"] == [0, 1, 2, 3, 4]  # whole items: no tick at 0.5
    with_matches = charts.reconciliation_chart(reconciliation_frame(), include_matches=True).to_dict()
    assert ("2026-01", "match", 100) in [(r["month"], r["status"], r["items"]) for r in rows_of(with_matches)]


@pytest.mark.parametrize("builder", list(BUILDERS))
def test_every_builder_returns_a_chart_and_renders_to_png_offline(builder):
    chart = BUILDERS[builder]()
    assert isinstance(chart, alt.TopLevelMixin)
    png = render(chart)
    assert png.startswith(PNG_SIGNATURE) and len(png) > 5_000


# --- End to end on the shipped sample --------------------------------------------------------------


@pytest.fixture(scope="module")
def sample_charts() -> dict[str, alt.TopLevelMixin]:
    billing = Settings(timezone="Europe/Rome")
    sample = resources.resource("data", "sample", "messages.csv.gz")
    messages = ingest.read_messages([str(sample)], timezone=billing.timezone).messages.collect()
    billed = charges.bill(messages, billing)
    costs = pricing.costs(pricing.price(billed, billing))
    plans = [scenarios.scenario("baseline"), scenarios.scenario("today_rules", rules="pmp-2026-10")]
    compared = scenarios.compare(messages, plans, billing)
    projected = projection.project(messages, plans, months=2, settings=billing)
    meta = meta_billing.meta_pricing_objects(billed, messages, billing)
    changed = meta_billing.perturb(messages, meta, billed)
    items = reconcile.reconcile(changed.messages, charges.bill(changed.messages, billing), meta_pricing=changed.meta_pricing, settings=billing).rows
    first, last = billed["started_at"].min(), billed["started_at"].max()
    volumes = rollups.volumes(billed, billing)
    return {
        "volumes": charts.volumes_chart(volumes, rollups.rule_set_switches(first.date(), last.date())),
        "cost_by_category": charts.cost_by_category_chart(rollups.costs_by_month(costs)),
        "cost_by_market": charts.cost_by_market_chart(rollups.costs_by_market(costs, top=8)),
        "free_paid": charts.free_paid_chart(rollups.free_and_paid(costs)),
        "scenario": charts.scenario_chart(compared.table),
        "projection": charts.projection_chart(projected.table),
        "openings": charts.openings_heatmap(rollups.openings(billed, billing)),
        "reconciliation": charts.reconciliation_chart(rollups.reconciliation_by_month(items, billing)),
    }


def test_every_chart_of_the_shipped_sample_renders_from_the_real_pipeline(sample_charts):
    for name, chart in sample_charts.items():
        spec = chart.to_dict()
        carried = sum(len(rows) for rows in spec["datasets"].values())
        assert 0 < carried <= 500, f"{name} carries {carried} rows: pre-aggregate"
        assert render(chart).startswith(PNG_SIGNATURE), name
    volumes = sample_charts["volumes"].to_dict()
    switch_rows = rows_of(volumes, volumes["layer"][1])
    # the sample spans pmp-2025, its amendments of 2026-08-01 (Meta Business Agent) and 2026-09-28
    # (ad windows up to 7 days), and pmp-2026-10
    assert [r["date"] for r in switch_rows] == ["2026-08-01", "2026-09-28", "2026-10-01"]
    assert title_text(volumes) == "Billable messages per month by category"
