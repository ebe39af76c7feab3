"""Reconciliation at the aggregate level: Meta's analytics against our charges rolled up alike.

Level 3 of `analytics.reconcile.matching`'s docstring. Its own module because it is a different
computation from the item level — buckets, dimensions and a SQL join
(`queries/reconcile_aggregates.sql`, of which this is the one caller) instead of matching wamids
— and shares with it only the vocabulary of `outcomes` and the sentences of `explanations`.
"""

from __future__ import annotations

import duckdb
import polars as pl

from analytics.core import schema
from analytics.core.money import HALF_AWAY_FROM_ZERO
from analytics.core.resources import ArrowStream, query
from analytics.core.text import plural
from analytics.core.times import local_time
from analytics.reconcile.explanations import explain_aggregate, explained
from analytics.reconcile.meta_reports import (
    COST_DTYPE,
    COST_SCALE,
    DAILY,
    HALF_HOUR,
    MONTHLY,
    REPORT_PRICING_MODEL,
    in_metas_words,
    pricing_type_meanings,
)
from analytics.reconcile.outcomes import (
    AGGREGATE,
    AGREES,
    CBP_FREE_ENTRY_AS,
    COST_DIFFERS,
    COST_NOT_AVAILABLE,
    COST_TOLERANCE,
    DIFFERENT,
    FREE_GROUP_CUSTOMER_SERVICE,
    GROUP_CATEGORIES,
    MATCH,
    METAS_CATEGORIES,
    MISSING_META,
    MISSING_OURS,
    MODELLED_CATEGORIES,
    NOT_MODELLED,
    RATE_CARD_GAP,
    RECONCILIATION_SCHEMA,
    ROUNDING,
    VOLUME_DIFFERS,
    finished,
)
from analytics.settings import Settings
from analytics.terms import markets, rules

_DIMENSIONS = ("phone_number", "country", "category", "pricing_type")
_EXACT_COST = pl.Decimal(38, 12)  # pricing.COST_SCALE: summed exactly, rounded once


def reconcile_aggregates(
    charges: pl.DataFrame,
    analytics: pl.DataFrame,
    *,
    settings: Settings | None = None,
    con: duckdb.DuckDBPyConnection | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame, list[str]]:
    """Rows of the aggregate level, Meta's unreadable data points, and notes.

    `charges`: contracts.md §2 with `user_country` (`with_user_country`) and, to compare costs,
    `cost` and `currency` (`pricing.price`; a null cost on a billable charge is an unknown rate).
    Without `cost` volumes alone are compared.
    """
    settings = settings or Settings()
    unreadable = analytics.filter(pl.col("problem").is_not_null()).select(
        meta_source="report",
        source_file="source_file",
        source_row="source_row",
        message_id=pl.lit(None, pl.String),
        problem="problem",
    )
    points = analytics.filter(pl.col("problem").is_null()).with_columns(
        report_id=pl.format("{} {}", pl.col("source_file").fill_null("(response)"), "report")
    )
    compare_cost = "cost" in charges.columns
    notes: list[str] = []
    ours_parts, meta_parts = [], []
    for (report_id,), report in points.group_by("report_id", maintain_order=True):
        ours, meta, report_notes = _report_buckets(str(report_id), report, charges, settings)
        ours_parts.append(ours)
        meta_parts.append(meta)
        notes += report_notes
    if not meta_parts:
        return pl.DataFrame(schema=RECONCILIATION_SCHEMA), unreadable, notes
    our_charges = pl.concat(ours_parts, how="vertical_relaxed")
    meta_points = pl.concat(meta_parts, how="vertical_relaxed")
    con = con or duckdb.connect()
    con.register("our_charges", ArrowStream(our_charges))
    con.register("meta_points", ArrowStream(meta_points))
    try:
        compared = pl.DataFrame(con.sql(query("reconcile_aggregates")))
    finally:
        con.unregister("our_charges")
        con.unregister("meta_points")
    rows = _classified_aggregates(compared, compare_cost, settings)
    if outside := _outside_every_report(charges, points):
        notes.append(
            f"{plural(outside, 'charge')} of ours fall outside the periods of Meta's analytics (or have another "
            "pricing model): not compared at the aggregate level"
        )
    if not compare_cost:
        notes.append("costs not compared: our charges were not priced (no rate card)")
    return finished(rows), unreadable, notes


def _outside_every_report(charges: pl.DataFrame, points: pl.DataFrame) -> int:
    """How many charges no report covers: another pricing model, or outside every report's span."""
    spans = points.group_by("report_id").agg(pricing_model=pl.col("pricing_model").first(), first=pl.col("start").min(), last=pl.col("end").max())
    covered = pl.lit(False)
    for span in spans.iter_rows(named=True):
        covered = covered | (
            (pl.col("pricing_model") == span["pricing_model"]) & (pl.col("started_at") >= span["first"]) & (pl.col("started_at") < span["last"])
        )
    return charges.filter(~covered).height


def _report_buckets(report_id: str, report: pl.DataFrame, charges: pl.DataFrame, settings: Settings) -> tuple[pl.DataFrame, pl.DataFrame, list[str]]:
    """Our charges of one report's pricing model in its buckets and dimensions, and its points."""
    kind = report["report"][0]
    model = REPORT_PRICING_MODEL[kind]
    notes = []
    present = [d for d in _DIMENSIONS if report[d].is_not_null().any()]
    ours = charges.filter(pl.col("pricing_model") == model).with_columns(
        phone_number=pl.col("business_phone"),
        country=pl.col("user_country"),
        category=pl.col("category").replace({rules.FEP_CATEGORY: CBP_FREE_ENTRY_AS} if model == "CBP" else {}),
    )
    if model == "PMP":  # our pricing types in Meta's words of the charge's date (the table of the item level)
        day = local_time(settings, "started_at").dt.date()
        ours = in_metas_words(ours, local_date=day, pricing_type="pricing_type")
        # A free group delivery is Meta's free_group_customer_service, whichever free type of ours it is.
        free_group = pl.col("category").is_in(GROUP_CATEGORIES) & pl.col("pricing_type").is_in(["free_customer_service", "free_tier"])
        ours = ours.with_columns(pricing_type=pl.when(free_group).then(pl.lit(FREE_GROUP_CUSTOMER_SERVICE)).otherwise(pl.col("pricing_type")))
    if "phone_number" in present:
        theirs = set(report["phone_number"].drop_nulls().to_list())
        if not theirs <= set(ours["phone_number"].drop_nulls().to_list()):
            present.remove("phone_number")
            notes.append(
                f"{report_id}: Meta's phone numbers ({', '.join(sorted(theirs))}) are not the business_phone values of "
                "the input (webhooks name numbers by phone_number_id): compared over all numbers"
            )
    absent = [d for d in _DIMENSIONS if d not in present]
    span_start, span_end = report["start"].min(), report["end"].max()
    ours = ours.filter(pl.col("started_at").is_between(span_start, span_end, closed="left"))
    intervals = report.select("start", "end").unique().sort("start")
    granularity = report["granularity"].drop_nulls().mode().sort().first() if report["granularity"].drop_nulls().len() else None
    bucketed = ours.sort("started_at").join_asof(intervals, left_on="started_at", right_on="start", strategy="backward", check_sortedness=False)
    inside = pl.col("start").is_not_null() & (pl.col("started_at") < pl.col("end"))
    calendar_start, calendar_end = _calendar_bucket(granularity, settings.timezone)
    bucketed = bucketed.with_columns(
        period_start=pl.when(inside).then(pl.col("start")).otherwise(calendar_start),
        period_end=pl.when(inside).then(pl.col("end")).otherwise(calendar_end),
    )
    outside_meta = bucketed.filter(~inside).height
    if outside_meta and granularity in (DAILY, MONTHLY):
        starts = intervals["start"].dt.convert_time_zone(settings.timezone)
        if not (starts.dt.hour() == 0).all():
            notes.append(
                f"{report_id}: Meta's {granularity.lower()} buckets start at {starts[0]:%H:%M} in {settings.timezone}; "
                f"{outside_meta:,} of our charges fall outside them and are bucketed in {settings.timezone}: pass the "
                "WABA's time zone with --timezone"
            )
    ours_rows = bucketed.select(
        report_id=pl.lit(report_id),
        report=pl.lit(kind),
        pricing_model=pl.lit(model),
        granularity=pl.lit(granularity, pl.String),
        period_start=pl.col("period_start").dt.epoch("us"),
        period_end=pl.col("period_end").dt.epoch("us"),
        **{d: (pl.lit(None, pl.String) if d in absent else pl.col(d).cast(pl.String)) for d in _DIMENSIONS},
        billable="billable",
        cost=(pl.col("cost") if "cost" in charges.columns else pl.lit(None)).cast(_EXACT_COST),
        unpriced=(pl.col("billable") & pl.col("cost").is_null()) if "cost" in charges.columns else pl.lit(False),
        currency=(pl.col("currency") if "currency" in charges.columns else pl.lit(None)).cast(pl.String),
    )
    meta_rows = report.select(
        report_id=pl.lit(report_id),
        report="report",
        pricing_model="pricing_model",
        granularity=pl.coalesce("granularity", pl.lit(granularity, pl.String)),
        period_start=pl.col("start").dt.epoch("us"),
        period_end=pl.col("end").dt.epoch("us"),
        **{d: (pl.lit(None, pl.String) if d in absent else pl.col(d)) for d in _DIMENSIONS if d != "category"},
        category=pl.lit(None, pl.String)
        if "category" in absent
        else pl.col("category").replace(METAS_CATEGORIES).replace(settings.rule_book.choices.billed_category),
        meta_category="category",
        volume="volume",
        cost="cost",
        currency="currency",
    ).select(
        "report_id",
        "report",
        "pricing_model",
        "granularity",
        "period_start",
        "period_end",
        *_DIMENSIONS,
        "meta_category",
        "volume",
        "cost",
        "currency",
    )
    return ours_rows, meta_rows, notes


def _calendar_bucket(granularity: str | None, timezone: str) -> tuple[pl.Expr, pl.Expr]:
    """(start, end) of our own bucket for a charge outside Meta's data points: the half hour, or the
    day or month in the WABA time zone (billing-rules.md §2 Months)."""
    local = pl.col("started_at").dt.convert_time_zone(timezone)
    every = {HALF_HOUR: "30m", DAILY: "1d", MONTHLY: "1mo"}.get(granularity or "", "1d")
    start = local.dt.truncate(every)
    return start.dt.convert_time_zone(schema.UTC), start.dt.offset_by(every).dt.convert_time_zone(schema.UTC)


def _classified_aggregates(compared: pl.DataFrame, compare_cost: bool, settings: Settings) -> pl.DataFrame:
    """Status, reason and explanation of the compared buckets (module docstring, Reasons)."""
    compared = compared.with_columns(
        pl.col("ours_cost").cast(_EXACT_COST).round(COST_SCALE, mode=HALF_AWAY_FROM_ZERO).cast(COST_DTYPE),
        pl.col("meta_cost").cast(COST_DTYPE),
    )
    ours_volume, meta_volume = pl.col("ours_volume"), pl.col("meta_volume")
    cost_difference = pl.col("ours_cost") - pl.col("meta_cost")
    tolerance = pl.lit(COST_TOLERANCE, dtype=COST_DTYPE)
    # Categories and pricing types of Meta's that we do not know: reported with Meta's words, not compared.
    unmatched_types = pricing_type_meanings().filter(pl.col("ours_pricing_type").is_null())["meta_pricing_type"].unique()
    not_modelled = (
        (pl.col("category").is_not_null() & ~pl.col("category").is_in(MODELLED_CATEGORIES)) | pl.col("pricing_type").is_in(unmatched_types.to_list())
    ).fill_null(False)
    reason = (
        pl.when(not_modelled & ours_volume.is_null())
        .then(pl.lit(NOT_MODELLED))
        .when(meta_volume.is_null() | ours_volume.is_null() | (ours_volume != meta_volume))
        .then(pl.lit(VOLUME_DIFFERS))
        .when(pl.lit(not compare_cost))
        .then(pl.lit(AGREES))
        .when(pl.col("meta_cost").is_null())
        .then(pl.lit(COST_NOT_AVAILABLE))
        .when((pl.col("unpriced") > 0) | pl.col("ours_cost").is_null())
        .then(pl.lit(RATE_CARD_GAP))
        .when(cost_difference == 0)
        .then(pl.lit(AGREES))
        .when(cost_difference.abs() <= tolerance)
        .then(pl.lit(ROUNDING))
        .otherwise(pl.lit(COST_DIFFERS))
    )
    start = pl.from_epoch("period_start", time_unit="us").dt.replace_time_zone(schema.UTC)
    frame = compared.with_columns(
        period_start=start,
        period_end=pl.from_epoch("period_end", time_unit="us").dt.replace_time_zone(schema.UTC),
        reason=reason,
    ).with_columns(
        status=pl.when(meta_volume.is_null())
        .then(pl.lit(MISSING_META))
        .when(ours_volume.is_null())
        .then(pl.lit(MISSING_OURS))
        .when(pl.col("reason").is_in([AGREES, ROUNDING, COST_NOT_AVAILABLE]))
        .then(pl.lit(MATCH))
        .otherwise(pl.lit(DIFFERENT)),
        volume_difference=ours_volume.fill_null(0) - meta_volume.fill_null(0),
        volume_relative_difference=((ours_volume.fill_null(0) - meta_volume) / meta_volume).round(6),
        cost_difference=cost_difference if compare_cost else pl.lit(None, COST_DTYPE),
        cost_relative_difference=(
            (cost_difference.cast(pl.Float64) / pl.col("meta_cost").cast(pl.Float64)).round(6) if compare_cost else pl.lit(None, pl.Float64)
        ),
        local_date=start.dt.convert_time_zone(settings.timezone).dt.date(),
    )
    frame = markets.with_market(frame.with_columns(user_country=pl.col("country")), country="user_country")
    if not compare_cost:
        frame = frame.with_columns(ours_cost=pl.lit(None, COST_DTYPE))
    frame = frame.with_columns(
        pl.when(pl.col("country").is_null()).then(None).otherwise(pl.col("market")).alias("market"),
        cost_relative_difference=pl.when(pl.col("cost_relative_difference").is_infinite() | pl.col("cost_relative_difference").is_nan())
        .then(None)
        .otherwise(pl.col("cost_relative_difference")),
    )
    unit = pl.when(pl.col("pricing_model") == "CBP").then(pl.lit("conversation")).otherwise(pl.lit("message"))
    plural = pl.when(pl.col("meta_volume") == 1).then(pl.lit("")).otherwise(pl.lit("s"))
    costs = " and so do costs." if compare_cost else "; costs not compared (no rate card)."
    agrees = pl.format("Volumes agree ({} {}{}){}", "meta_volume", unit, plural, pl.lit(costs))
    merged = (pl.col("meta_categories") != pl.col("category")).fill_null(False)  # written out in full
    explanations = explained(frame, lambda row: explain_aggregate(row, compare_cost), agrees, (pl.col("reason") != AGREES) | merged)
    return frame.select(
        level=pl.lit(AGGREGATE),
        meta_source="report",
        business_phone="phone_number",
        period_start="period_start",
        period_end="period_end",
        granularity="granularity",
        country="country",
        market="market",
        ours_pricing_model="pricing_model",
        meta_pricing_model="pricing_model",
        ours_category="category",
        meta_category=pl.coalesce("meta_categories", "category"),
        ours_pricing_type="pricing_type",
        meta_pricing_type="pricing_type",
        ours_volume="ours_volume",
        meta_volume="meta_volume",
        volume_difference="volume_difference",
        volume_relative_difference="volume_relative_difference",
        ours_cost="ours_cost",
        meta_cost="meta_cost",
        cost_difference="cost_difference",
        cost_relative_difference="cost_relative_difference",
        currency=pl.coalesce("meta_currency", "ours_currency"),
        status="status",
        reason="reason",
        explanation=explanations,
    )
