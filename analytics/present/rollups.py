"""Roll-ups: the small tidy frames that charts and notebooks draw, summed from charges and costs.

The step between money and pictures (STYLE.md: read → bill → price → roll up → chart). Every
"sum per X" a notebook would otherwise write inline lives here, so a notebook cell is one call and
`analytics.present.charts` only draws. Each function returns a Polars DataFrame sorted one fixed way, a
few hundred rows at most whatever the traffic (months × categories, 7 × 24 cells, ...).

Time: a charge's month, weekday and hour are read in its WABA's time zone (`Settings.timezone_of`),
the way `analytics.price.pricing` reads months (billing-rules.md §2 Months): `month` is the same
`YYYY-MM` string as in `pricing.costs`, so volumes and costs line up month by month.

Money: the roll-ups of `pricing.costs` (exact decimals) are summed exactly, then rounded half away
from zero to cents and given as Float64, which is what a chart needs; invoices stay in
`pricing.invoice`. Unpriced billable charges (`report_unpriced`) are counted in `unpriced_charges`,
never added to a cost as zero.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from analytics.core import schema
from analytics.core.money import HALF_AWAY_FROM_ZERO
from analytics.core.times import local_time
from analytics.price import pricing
from analytics.reconcile import outcomes
from analytics.settings import Settings
from analytics.terms import rules

CENTS = 2
SHARE_DECIMALS = 4
CONVERSATIONS, MESSAGES = "conversations", "messages"  # what one charge is, by pricing model (contracts.md §2)
UNIT_OF_PRICING_MODEL = {"CBP": CONVERSATIONS, "PMP": MESSAGES}
WEEKDAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")  # ISO weekday 1..7
HOURS = range(24)
REGULAR = "regular"  # the one paid pricing type (contracts.md §2)

VOLUMES_SCHEMA: dict[str, pl.DataType] = {
    "month": pl.String(),
    "rule_set": pl.String(),
    "pricing_model": pl.String(),
    "category": pl.String(),
    "charges": pl.Int64(),
    "billable_charges": pl.Int64(),
    "free_charges": pl.Int64(),
    "unit": pl.String(),
}
OPENINGS_SCHEMA: dict[str, pl.DataType] = {
    "weekday": pl.Int8(),
    "weekday_name": pl.String(),
    "hour": pl.Int8(),
    "charges": pl.Int64(),
}
SWITCHES_SCHEMA: dict[str, pl.DataType] = {"date": pl.Date(), "rule_set": pl.String(), "label": pl.String()}
COSTS_BY_MONTH_SCHEMA: dict[str, pl.DataType] = {
    "month": pl.String(),
    "category": pl.String(),
    "charges": pl.Int64(),
    "billable_charges": pl.Int64(),
    "unpriced_charges": pl.Int64(),
    "cost": pl.Float64(),
    "currency": pl.String(),
}
COSTS_BY_MARKET_SCHEMA: dict[str, pl.DataType] = {
    "market": pl.String(),
    "charges": pl.Int64(),
    "billable_charges": pl.Int64(),
    "unpriced_charges": pl.Int64(),
    "cost": pl.Float64(),
    "currency": pl.String(),
}
FREE_AND_PAID_SCHEMA: dict[str, pl.DataType] = {
    "month": pl.String(),
    "pricing_type": pl.String(),
    "paid": pl.Boolean(),
    "charges": pl.Int64(),
    "share": pl.Float64(),
}
SCENARIO_COSTS_SCHEMA: dict[str, pl.DataType] = {
    "scenario": pl.String(),
    "category": pl.String(),
    "charges": pl.Int64(),
    "billable_charges": pl.Int64(),
    "unpriced_charges": pl.Int64(),
    "cost": pl.Float64(),
    "cost_difference": pl.Float64(),
    "currency": pl.String(),
}
SCENARIO_SAVINGS_SCHEMA: dict[str, pl.DataType] = {
    "scenario": pl.String(),
    "cost": pl.Float64(),
    "saving": pl.Float64(),
    "saving_share": pl.Float64(),
    "currency": pl.String(),
}
PROJECTED_COSTS_SCHEMA: dict[str, pl.DataType] = {
    "scenario": pl.String(),
    "month": pl.String(),
    "horizon": pl.Int64(),
    "billable_charges": pl.Int64(),
    "unpriced_charges": pl.Int64(),
    "cost": pl.Float64(),
    "cost_low": pl.Float64(),
    "cost_high": pl.Float64(),
    "currency": pl.String(),
}
RECONCILIATION_BY_MONTH_SCHEMA: dict[str, pl.DataType] = {
    "month": pl.String(),
    "level": pl.String(),
    "status": pl.String(),
    "reason": pl.String(),
    "items": pl.Int64(),
}


# --- Volumes and when they happen --------------------------------------------------------------------


def volumes(charges: pl.DataFrame, settings: Settings | None = None) -> pl.DataFrame:
    """Charges per local month, rule set, pricing model and category (`VOLUMES_SCHEMA`).

    `billable_charges` are the paid ones (`regular`), `free_charges` the rest (free tier, free entry
    point, customer service); `unit` says what a charge counts: `conversations` under CBP,
    `messages` under PMP (contracts.md §2). Sorted by month, rule set, pricing model, category.
    """
    settings = settings or Settings()
    return (
        charges.with_columns(month=_local_month(settings))
        .group_by("month", "rule_set", "pricing_model", "category")
        .agg(charges=pl.len(), billable_charges=pl.col("billable").sum())
        .with_columns(
            free_charges=pl.col("charges") - pl.col("billable_charges"),
            unit=pl.col("pricing_model").replace_strict(UNIT_OF_PRICING_MODEL, default=None, return_dtype=pl.String),
        )
        .select([pl.col(c).cast(t) for c, t in VOLUMES_SCHEMA.items()])
        .sort("month", "rule_set", "pricing_model", "category")
    )


def openings(charges: pl.DataFrame, settings: Settings | None = None) -> pl.DataFrame:
    """Charges started per local weekday (1 = Monday) and hour (`OPENINGS_SCHEMA`): when
    conversations open under CBP and when charged messages are delivered under PMP.

    All 168 cells are present, empty ones with 0, sorted by weekday and hour, so a heat map of it
    has no holes.
    """
    settings = settings or Settings()
    local = local_time(settings, "started_at")
    counted = charges.group_by(weekday=local.dt.weekday().cast(pl.Int8), hour=local.dt.hour().cast(pl.Int8)).agg(charges=pl.len())
    cells = pl.DataFrame({"weekday": list(range(1, 8)), "weekday_name": list(WEEKDAY_NAMES)}, schema_overrides={"weekday": pl.Int8}).join(
        pl.DataFrame({"hour": list(HOURS)}, schema={"hour": pl.Int8}), how="cross"
    )
    return (
        cells.join(counted, on=["weekday", "hour"], how="left")
        .with_columns(pl.col("charges").fill_null(0))
        .select([pl.col(c).cast(t) for c, t in OPENINGS_SCHEMA.items()])
        .sort("weekday", "hour")
    )


def rule_set_switches(start: dt.date, end: dt.date) -> pl.DataFrame:
    """Every date in [start, end] from which other rules apply (`SWITCHES_SCHEMA`), oldest first:
    each rule set's start and each amendment inside a rule set (data/rules/rule_sets.toml,
    billing-rules.md §1, §9). Dates are 00:00 in the WABA time zone; `label` is short enough to
    print on a chart: the rule set's name, or the amendment's `label`.
    """
    found = [(r.effective_from, r.name, r.label or r.name) for r in rules.shipped().periods]
    inside = sorted((d, name, label) for d, name, label in found if start <= d <= end)
    return pl.DataFrame(
        {"date": [d for d, _, _ in inside], "rule_set": [n for _, n, _ in inside], "label": [label for _, _, label in inside]},
        schema=SWITCHES_SCHEMA,
    )


# --- Money, from the roll-up of pricing.costs (contracts.md §4) --------------------------------------


def costs_by_month(costs: pl.DataFrame) -> pl.DataFrame:
    """Per month and category (`COSTS_BY_MONTH_SCHEMA`): charges, billable and unpriced charges,
    and the cost in cents (priced charges only). Sorted by month, category."""
    return (
        costs.group_by("month", "category", "currency")
        .agg(*_money_sums())
        .select([pl.col(c).cast(t) for c, t in COSTS_BY_MONTH_SCHEMA.items()])
        .sort("month", "category", "currency", nulls_last=True)
    )


def costs_by_market(costs: pl.DataFrame, *, top: int | None = None) -> pl.DataFrame:
    """Per market over the whole period (`COSTS_BY_MARKET_SCHEMA`), most expensive first (then by
    name). With `top`, the markets after the `top` most expensive are summed into one row
    `other markets`, last."""
    by_market = (
        costs.group_by("market", "currency")
        .agg(*_money_sums())
        .select([pl.col(c).cast(t) for c, t in COSTS_BY_MARKET_SCHEMA.items()])
        .sort(["cost", "market"], descending=[True, False], nulls_last=True)
    )
    if top is None or by_market.height <= top:
        return by_market
    rest = (
        by_market.slice(top)
        .group_by("currency")
        .agg(pl.col("charges", "billable_charges", "unpriced_charges").sum(), pl.col("cost").sum().round(CENTS))
        .with_columns(market=pl.lit("other markets"))
        .select([pl.col(c).cast(t) for c, t in COSTS_BY_MARKET_SCHEMA.items()])
        .sort("currency", nulls_last=True)
    )
    return pl.concat([by_market.head(top), rest])


def free_and_paid(costs: pl.DataFrame) -> pl.DataFrame:
    """Per month and pricing type (`FREE_AND_PAID_SCHEMA`): charges, whether they are paid
    (`regular`) and their `share` of the month's charges (0..1, 4 decimals). Sorted by month, then
    pricing type in the order of contracts.md §2 (regular, free tier, free entry point, free
    customer service; others after)."""
    known = {p: i for i, p in enumerate(schema.PRICING_TYPES)}
    return (
        costs.group_by("month", "pricing_type")
        .agg(charges=pl.col("charges").sum())
        .with_columns(
            paid=pl.col("pricing_type") == REGULAR,
            share=(pl.col("charges") / pl.col("charges").sum().over("month")).round(SHARE_DECIMALS),
            _order=pl.col("pricing_type").replace_strict(known, default=len(known), return_dtype=pl.Int64),
        )
        .sort("month", "_order", "pricing_type")
        .select([pl.col(c).cast(t) for c, t in FREE_AND_PAID_SCHEMA.items()])
    )


# --- Scenarios and projections (analytics.whatif.scenarios, analytics.whatif.projection) ----------------------------


def scenario_costs(comparison_table: pl.DataFrame) -> pl.DataFrame:
    """Per scenario and category over all months (`SCENARIO_COSTS_SCHEMA`), from
    `Comparison.table`: cost and its difference from the baseline, in cents. Scenarios keep the
    table's order (baseline first, as `compare` writes it), categories sorted."""
    return (
        _in_order_seen(comparison_table, "scenario")
        .group_by("_scenario_order", "scenario", "category", "currency")
        .agg(
            pl.col("charges", "billable_charges", "unpriced_charges").sum(),
            cost=_cents(pl.col("cost").sum()),
            # A scenario in another currency has no difference: keep it empty, not zero.
            cost_difference=pl.when(pl.col("cost_difference").null_count() == 0).then(_cents(pl.col("cost_difference").sum())),
        )
        .sort("_scenario_order", "category", "currency", nulls_last=True)
        .select([pl.col(c).cast(t) for c, t in SCENARIO_COSTS_SCHEMA.items()])
    )


def scenario_savings(comparison_table: pl.DataFrame) -> pl.DataFrame:
    """Per scenario (`SCENARIO_SAVINGS_SCHEMA`): total cost, `saving` against the baseline
    (positive: the scenario costs less) and `saving_share` of the baseline's cost (4 decimals);
    empty where the scenario is priced in another currency than the baseline."""
    totals = (
        _in_order_seen(comparison_table, "scenario")
        .group_by("_scenario_order", "scenario", "currency")
        .agg(
            cost=pl.col("cost").sum(),
            saving=pl.when(pl.col("cost_difference").null_count() == 0).then(-pl.col("cost_difference").sum()),
        )
        .with_columns(baseline_cost=pl.col("cost") + pl.col("saving"))
        .sort("_scenario_order", "currency", nulls_last=True)
    )
    return totals.select(
        "scenario",
        cost=_cents(pl.col("cost")),
        saving=_cents(pl.col("saving")),
        saving_share=pl.when(pl.col("baseline_cost") != 0)
        .then(pl.col("saving").cast(pl.Float64) / pl.col("baseline_cost").cast(pl.Float64))
        .round(SHARE_DECIMALS),
        currency="currency",
    ).cast(SCENARIO_SAVINGS_SCHEMA)  # type: ignore[arg-type]


def projected_costs(projection_table: pl.DataFrame) -> pl.DataFrame:
    """Per scenario and projected month (`PROJECTED_COSTS_SCHEMA`), from `Projection.table`: cost
    and its back-test band (`cost_low`, `cost_high`, empty without a back-test), in cents.
    Scenarios keep the table's order, months sorted."""
    return (
        _in_order_seen(projection_table, "scenario")
        .group_by("_scenario_order", "scenario", "month", "horizon", "currency")
        .agg(
            pl.col("billable_charges", "unpriced_charges").sum(),
            cost=_cents(pl.col("cost").sum()),
            **{bound: pl.when(pl.col(bound).null_count() == 0).then(_cents(pl.col(bound).sum())) for bound in ("cost_low", "cost_high")},
        )
        .sort("_scenario_order", "month", "currency", nulls_last=True)
        .select([pl.col(c).cast(t) for c, t in PROJECTED_COSTS_SCHEMA.items()])
    )


# --- Reconciliation (analytics.reconcile) ---------------------------------------------------------------------


def reconciliation_by_month(items: pl.DataFrame, settings: Settings | None = None) -> pl.DataFrame:
    """Reconciliation rows (`outcomes.RECONCILIATION_SCHEMA`, e.g. `Reconciliation.rows`) counted
    per local month, level, status and reason (`RECONCILIATION_BY_MONTH_SCHEMA`).

    A row's time is our charge's start, else Meta's, else the start of Meta's aggregate period,
    read in `billing.timezone` (the rows carry no WABA, so per-WABA zones do not apply). Sorted by
    month, level (message, conversation, aggregate), status (match, different, missing_ours,
    missing_meta), reason.
    """
    settings = settings or Settings()
    at = pl.coalesce("ours_started_at", "meta_started_at", "period_start")
    level_order = {level: i for i, level in enumerate(outcomes.LEVELS)}
    status_order = {status: i for i, status in enumerate(outcomes.STATUSES)}
    return (
        items.with_columns(month=at.dt.convert_time_zone(settings.timezone).dt.strftime("%Y-%m"))
        .group_by("month", "level", "status", "reason")
        .agg(items=pl.len())
        .with_columns(
            _level=pl.col("level").replace_strict(level_order, default=len(level_order), return_dtype=pl.Int64),
            _status=pl.col("status").replace_strict(status_order, default=len(status_order), return_dtype=pl.Int64),
        )
        .sort("month", "_level", "_status", "reason", nulls_last=True)
        .select([pl.col(c).cast(t) for c, t in RECONCILIATION_BY_MONTH_SCHEMA.items()])
    )


# --- Helpers ---------------------------------------------------------------------------------------


def _local_month(settings: Settings) -> pl.Expr:
    """`YYYY-MM` of `started_at` in the WABA's time zone: `pricing`'s local date, so both agree."""
    return pricing.local_date(settings).dt.strftime("%Y-%m")


def _money_sums() -> list[pl.Expr]:
    """Charges, billable and unpriced charges, and the priced cost in cents, of `pricing.costs` rows."""
    return [
        pl.col("charges").sum(),
        pl.col("billable_charges").sum(),
        pl.col("billable_charges").filter(~pl.col("priced")).sum().alias("unpriced_charges"),
        _cents(pl.col("cost").filter(pl.col("priced")).sum()).alias("cost"),
    ]


def _cents(amount: pl.Expr) -> pl.Expr:
    """An exact decimal amount rounded half away from zero to cents, as Float64 for charting."""
    return amount.round(CENTS, mode=HALF_AWAY_FROM_ZERO).cast(pl.Float64)


def _in_order_seen(frame: pl.DataFrame, column: str) -> pl.DataFrame:
    """`frame` with `_{column}_order`: the row of each value's first appearance, to keep a table's
    own order of scenarios through a group-by."""
    return frame.with_row_index("_row").with_columns(pl.col("_row").min().over(column).alias(f"_{column}_order")).drop("_row")
