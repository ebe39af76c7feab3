"""Budgets: what a month has cost so far, what it will cost by its end, and whether that exceeds
the budget the config file sets (`[[pricing.budget]]`, `analytics.settings.Budget`).

For the month `month` (default: the month of `as_of`) and each budget that applies to it — one
written for that month, else one for every month of the same scope (the whole traffic, a charge
`category`, a `waba_id`, or both) — `budget_status` gives one row (`BUDGET_SCHEMA`):

- `spent`: the cost of the scope's charges of that month (the charge's month in its WABA's time
  zone, as `costs` counts it) that started by `as_of` (default: the last charge of the traffic).
- `elapsed_share`: how much of the month has passed at `as_of`, in the settings' time zone.
- `projected`: the month's cost at the run rate so far, `spent / elapsed_share`. [choice] A run
  rate, not a model of weekdays or campaigns: a campaign sent early in the month is assumed to go
  on; the back-test below says how wrong that has been on this traffic. A month that is over
  (`elapsed_share` 1) is projected at what it cost.
- `projected_low`, `projected_high`: the band, as in `analytics.whatif.projection`: how wrong the
  method was on this traffic's own history, not a statistical interval. Every earlier month of the
  traffic that it covers from its first day (the first charge no later than one day after the
  month starts) is projected the same way from the same share of its own days, and compared with
  what that month cost in the end: `backtest_error` is the mean absolute relative error (MAPE) of
  those `backtest_months`, and the band is `projected × (1 ∓ backtest_error)`, never below `spent`.
  Without such a month the band is not known (null) and `outcome` rests on `projected` alone.
- `outcome`: `exceeded` (spent is above the budget already), `will_exceed` (projected above it),
  `may_exceed` (only the band's top above it), `within`.
- `unpriced_charges`: billable charges of the month so far without a rate (priced with
  `report_unpriced`), which `spent` cannot include: the line says so, never a silent zero.

Money is in the priced currency, rounded to cents; a budget that names another `currency` is a
usage error (price in its currency, or give it in this one).
"""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal
from zoneinfo import ZoneInfo

import polars as pl

from analytics.core.errors import UsageError
from analytics.core.money import money, rounded
from analytics.core.schema import INSTANT
from analytics.settings import Budget, Settings

CENTS = pl.Decimal(38, 2)
EXCEEDED, WILL_EXCEED, MAY_EXCEED, WITHIN = "exceeded", "will_exceed", "may_exceed", "within"
# An earlier month counts as covered from its first day when the traffic starts no later than this after it.
COVERED_FROM_START = dt.timedelta(days=1)

BUDGET_SCHEMA: dict[str, pl.DataType] = {
    "month": pl.String(),
    "category": pl.String(),
    "waba_id": pl.String(),
    "budget": CENTS,
    "currency": pl.String(),
    "as_of": INSTANT,
    "elapsed_share": pl.Float64(),
    "spent": CENTS,
    "projected": CENTS,
    "projected_low": CENTS,
    "projected_high": CENTS,
    "backtest_months": pl.Int64(),
    "backtest_error": pl.Float64(),
    "outcome": pl.String(),
    "unpriced_charges": pl.Int64(),  # billable charges of `spent` without a rate (`report_unpriced`): not in it
}


def budget_status(priced: pl.DataFrame, settings: Settings, *, month: str | None = None, as_of: dt.datetime | None = None) -> pl.DataFrame:
    """One row per budget of `settings` that applies to `month` (module docstring), for `priced`
    charges (`analytics.price.pricing.price`); empty without budgets or charges."""
    if not settings.budgets or priced.height == 0:
        return pl.DataFrame(schema=BUDGET_SCHEMA)
    as_of = as_of or priced["started_at"].max()
    zone = ZoneInfo(settings.timezone)
    month = month or as_of.astimezone(zone).strftime("%Y-%m")  # type: ignore[union-attr]
    currency = _currency(priced, settings)
    first_charge = priced["started_at"].min()
    rows = []
    for budget in applying(settings.budgets, month):
        if budget.currency and currency and budget.currency != currency:
            raise UsageError(
                f"[[pricing.budget]] of {budget.scope}: currency {budget.currency}, but the costs are priced in {currency}: "
                f"give the budget in {currency}, or price in {budget.currency} (--currency)"
            )
        scope = priced.filter(_in_scope(budget))
        rows.append(_status(scope, budget, month, as_of, zone, first_charge) | {"currency": currency})  # type: ignore[arg-type]
    return pl.DataFrame(rows, schema=BUDGET_SCHEMA).sort("month", "category", "waba_id", nulls_last=False)


def applying(budgets: tuple[Budget, ...], month: str) -> list[Budget]:
    """The budgets of `month`: each scope's budget for that month, else its every-month budget."""
    scopes = {(b.category, b.waba_id) for b in budgets if b.month == month}
    return [b for b in budgets if b.month == month or (b.month is None and (b.category, b.waba_id) not in scopes)]


def _in_scope(budget: Budget) -> pl.Expr:
    condition = pl.lit(True)
    if budget.category:
        condition &= pl.col("category") == budget.category
    if budget.waba_id:
        condition &= pl.col("waba_id") == budget.waba_id
    return condition


def _currency(priced: pl.DataFrame, settings: Settings) -> str | None:
    currencies = priced["currency"].drop_nulls().unique()
    return currencies.item() if currencies.len() == 1 else settings.currency


def month_bounds(month: str, zone: ZoneInfo) -> tuple[dt.datetime, dt.datetime]:
    """The month's first instant and the next month's, in `zone`, as UTC instants."""
    year, number = map(int, month.split("-"))
    start = dt.datetime(year, number, 1, tzinfo=zone)
    end = dt.datetime(year + number // 12, number % 12 + 1, 1, tzinfo=zone)
    return start.astimezone(dt.UTC), end.astimezone(dt.UTC)


def _cost(frame: pl.DataFrame, month: str, until: dt.datetime | None = None) -> Decimal:
    chosen = frame.filter(pl.col("month") == month)
    if until is not None:
        chosen = chosen.filter(pl.col("started_at") <= until)
    total = chosen["cost"].sum()
    return Decimal(total) if total is not None else Decimal(0)


def _status(scope: pl.DataFrame, budget: Budget, month: str, as_of: dt.datetime, zone: ZoneInfo, first_charge: dt.datetime) -> dict:
    start, end = month_bounds(month, zone)
    share = min(max((as_of - start) / (end - start), 0.0), 1.0)
    spent = _cost(scope, month, as_of)
    low = high = error = None
    months = 0
    if share >= 1:
        projected = low = high = spent
    elif share > 0:
        projected = spent / Decimal(share)
        errors = _backtest(scope, month, share, zone, first_charge)
        months = len(errors)
        if errors:
            error = sum(errors) / len(errors)
            low = max(spent, projected * Decimal(1 - error))
            high = projected * Decimal(1 + error)
    else:
        projected = None
    return {
        "month": month,
        "category": budget.category,
        "waba_id": budget.waba_id,
        "budget": budget.amount,
        "as_of": min(as_of, end),
        "elapsed_share": share,
        "spent": rounded(spent, 2),
        "projected": None if projected is None else rounded(projected, 2),
        "projected_low": None if low is None else rounded(low, 2),
        "projected_high": None if high is None else rounded(high, 2),
        "backtest_months": months,
        "backtest_error": error,
        "outcome": _outcome(budget.amount, spent, projected, high),
        "unpriced_charges": scope.filter(
            (pl.col("month") == month) & (pl.col("started_at") <= as_of) & pl.col("billable") & pl.col("cost").is_null()
        ).height,
    }


def _backtest(scope: pl.DataFrame, month: str, share: float, zone: ZoneInfo, first_charge: dt.datetime) -> list[float]:
    """The relative error of the run-rate projection at `share` of each earlier month covered from its first day."""
    errors = []
    for earlier in sorted(m for m in scope["month"].drop_nulls().unique() if m < month):
        start, end = month_bounds(earlier, zone)
        if first_charge > start + COVERED_FROM_START:
            continue
        actual = _cost(scope, earlier)
        so_far = _cost(scope, earlier, start + (end - start) * share)
        if actual > 0:
            errors.append(float(abs(so_far / Decimal(share) - actual) / actual))
    return errors


def _outcome(amount: Decimal, spent: Decimal, projected: Decimal | None, high: Decimal | None) -> str:
    if spent > amount:
        return EXCEEDED
    if projected is not None and projected > amount:
        return WILL_EXCEED
    if high is not None and high > amount:
        return MAY_EXCEED
    return WITHIN


OUTCOME_WORDS = {
    EXCEEDED: "EXCEEDED already",
    WILL_EXCEED: "will be exceeded",
    MAY_EXCEED: "may be exceeded (within the band)",
    WITHIN: "within budget",
}


def format_budget(status: pl.DataFrame) -> str:
    """The budget lines `wa-analytics costs` prints: spent, projected with its band, budget, outcome."""
    lines = []
    for row in status.iter_rows(named=True):
        if row["unpriced_charges"]:
            lines.append(f"Budget {row['month']}: {row['unpriced_charges']:,} billable charges have no rate and are not in what is spent below")
        scope = ", ".join(p for p in (row["category"], f"WABA {row['waba_id']}" if row["waba_id"] else None) if p) or "all traffic"
        currency = row["currency"] or ""
        head = f"Budget {row['month']} ({scope}): {money(row['budget'])} {currency}; spent {money(row['spent'])} by {row['as_of']:%Y-%m-%d %H:%M} UTC"
        if row["elapsed_share"] >= 1:
            lines.append(f"{head} (month over): {OUTCOME_WORDS[row['outcome']]}")
            continue
        if row["projected"] is None:
            lines.append(f"{head}; nothing of the month has passed to project from: {OUTCOME_WORDS[row['outcome']]}")
            continue
        band = (
            f"band {money(row['projected_low'])} to {money(row['projected_high'])}, ±{row['backtest_error']:.0%} "
            f"back-tested on {row['backtest_months']} earlier month{'s' if row['backtest_months'] != 1 else ''}"
            if row["projected_low"] is not None
            else "no band: no earlier month to back-test the run rate on"
        )
        lines.append(
            f"{head} ({math.floor(row['elapsed_share'] * 100)}% of the month); projected {money(row['projected'])} at month end ({band}): "
            f"{OUTCOME_WORDS[row['outcome']]}"
        )
    return "\n".join(lines)
