"""What `wa-analytics compare` and `project` print: each scenario's totals and explanations, and how a projection was made.

Text for people, so it is in the presentation layer. `analytics.whatif` computes the figures
(`scenarios.Comparison`, `projection.Projection`, `projection.BackTest`, `projection.Source`) and
the explanations table (`Comparison.explanations`, a column of the `--explanations` output, so it
stays with the scenarios); the summaries printed on stderr are written here.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import polars as pl

from analytics.core.money import money
from analytics.core.text import plural
from analytics.whatif.projection import BackTest, Projection, Source
from analytics.whatif.scenarios import Comparison


def format_comparison(comparison: Comparison) -> str:
    """The summary `wa-analytics compare` prints: per scenario its total, difference and explanation."""
    lines = []
    for result in comparison.results:
        lines.append(f"{result.name}:")
        for row in comparison.explanations.filter(pl.col("scenario") == result.name).iter_rows(named=True):
            lines.append(f"  {row['explanation']}")
    return "\n".join(lines)


def describe_source(source: Source, timezone: str) -> str:
    zone = ZoneInfo(timezone)
    spans = ", ".join(f"{start.astimezone(zone):%Y-%m-%d}..{(end.astimezone(zone) - dt.timedelta(days=1)):%Y-%m-%d}" for start, end in source.windows)
    weeks = "/".join(str(w) for w in source.shifts_in_weeks)
    if source.seasonal:
        if source.level is None:
            level = "not known (less than 65 weeks of history): last year's volume as it was"
        else:
            level = ", ".join(f"{k} ×{v:.2f}" for k, v in source.level.items()) or "none"
        return f"{source.month}: the same month a year earlier ({spans}, +{weeks} weeks), recent growth {level}"
    return f"{source.month}: {len(source.windows)} recent window(s) ({spans}), shifted +{weeks} weeks"


def format_method(projection: Projection, timezone: str) -> str:
    """How the projection was made: which history each month replays, and the back-test."""
    count = len(projection.replay.months)
    lines = [f"Projected {plural(count, 'month')} from {projection.replay.months[0]}:"]
    lines += [f"  {describe_source(s, timezone)}" for s in projection.replay.sources]
    lines += [f"  note: {n}" for n in projection.replay.notes]
    if projection.backtest is not None:
        lines.append(format_backtest(projection.backtest))
    return "\n".join(lines)


def format_projection(projection: Projection, timezone: str) -> str:
    """The summary `wa-analytics project` prints: the method (`format_method`), and each scenario's totals."""
    lines = [format_method(projection, timezone)]
    for name in projection.table["scenario"].unique(maintain_order=True).to_list():
        rows = projection.table.filter(pl.col("scenario") == name)
        unit = next(iter(rows["currency"].drop_nulls()), "")
        lines.append(f"{name}:")
        for month in projection.replay.months:
            of_month = rows.filter(pl.col("month") == month)
            cost, low, high = (of_month[c].sum() for c in ("cost", "cost_low", "cost_high"))
            band = f" (band {money(low)} to {money(high)})" if of_month["cost_low"].null_count() == 0 and of_month.height else ""
            lines.append(f"  {month}: {money(cost)} {unit}{band}, {int(of_month['billable_charges'].sum()):,} billable charges")
        for row in projection.comparison.explanations.filter(pl.col("scenario") == name).iter_rows(named=True):
            lines.append(f"  {row['explanation']}")
    return "\n".join(lines)


def format_backtest(backtest: BackTest) -> str:
    if backtest.errors.height == 0:
        return "Back-test: the history is too short (no origin with enough months before it): no band."
    origins = backtest.errors["origin"].unique().sort().to_list()
    unpriced = backtest.errors["cost_error"].null_count()
    lines = [
        f"Back-test: {len(origins)} origins ({origins[0]} to {origins[-1]}), each projected from the history before it "
        f"and compared with the real months: MAPE billable charges {_percent(backtest.mape_billable_charges)}, "
        f"cost {_percent(backtest.mape_cost)}",
    ]
    if backtest.mape_cost is not None:
        lines.append(
            f"  the band (± cost MAPE) held the actual cost in {backtest.coverage:.0%} of these months; largest miss "
            f"{backtest.errors['cost_error'].abs().max():.1%} ({_worst(backtest)})"
        )
    if unpriced:
        lines.append(
            f"  cost not compared in {unpriced} of {backtest.errors.height} months: their cost is incomplete (charges without "
            f"a rate{f' in {backtest.currency}' if backtest.currency else ''} in the card are unpriced){'; no band' if backtest.mape_cost is None else ''}"
        )
    lines.append("  horizon  origins  MAPE billable  MAPE cost  band (±)")
    for row in backtest.by_horizon.iter_rows(named=True):
        lines.append(
            f"  {row['horizon']:>7}  {row['origins']:>7}  {_percent(row['mape_billable_charges']):>13}  "
            f"{_percent(row['mape_cost']):>9}  {_percent(row['band']):>8}"
        )
    return "\n".join(lines)


def _worst(backtest: BackTest) -> str:
    row = backtest.errors.drop_nulls("cost_error").sort(pl.col("cost_error").abs(), descending=True).row(0, named=True)
    return f"{row['month']} projected from {row['origin']}: {row['cost_error']:+.1%}"


def _percent(value: float | None) -> str:
    return f"{value:.1%}" if value is not None else "n/a"
