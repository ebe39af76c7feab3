"""Projection: what the next months will cost, by replaying recent history forward in time.

Meta's prices depend on windows and timing (billing-rules.md §2), so a projection is made of
messages, not of totals: `replay` builds the traffic of each future month from real history and
`project` bills and prices it like real traffic (`analytics.whatif.scenarios.compare`), under the rule
set in force at each future date (a projection across a switch date takes the next rule set, data/rules/rule_sets.toml) and the
card's rates for those dates (a rate the card does not know is reported unpriced, not invented).

How a future month F is built (`replay`), in the billing time zone:

1. **History** is the input up to the end of its last complete month (`history_end`; a last
   month that does not reach its final day is left out, and said so).
2. **Same month a year earlier**, when the history holds it: F's days 52 weeks earlier are
   shifted forward 52 weeks (whole weeks keep each message's weekday and hour). When the history
   also holds the 13 weeks before `history_end` a year earlier (65 weeks of history), volumes are
   scaled per category by how much those 13 weeks grew since (`analytics.whatif.strategies.growth`,
   whole users added or dropped); with less history last year's volume is replayed as it was,
   and the summary says so. On generated traffic of 22 months (benchmarks/engine.py's 1 M file)
   the year-ago replay halved the back-test error: MAPE of the monthly cost 18% against 34% for
   recent history alone, 9% against 30% from the origins that had the month a year earlier.
3. **Otherwise, recent history**: `history_months` windows of F's length, the latest that end
   by `history_end` and then each about a month earlier, each shifted forward by a whole number of
   weeks onto F. Each user (business number and user, billing-rules.md §2 Key) takes its messages
   from one window, drawn with a seeded hash, so F holds an average of the recent months made of
   whole users' real sequences.
4. Message ids get the suffix `~pYYYY-MM` of their month, so they are unique; the last 72 h of
   history come along (`context`) so that windows open at `history_end` carry into the first
   month, and the charges before `history_end` are left out.

A scenario's `growth` and strategies then apply to the projected traffic as to real traffic.

**Back-test** (`backtest`): for every origin month with at least `history_months` months before
it, the projection is built from the history before the origin alone and compared, month by month,
with what the real traffic of those months costs (billable charges and cost, all categories). The
error per horizon (1 = the first projected month) is reported as MAPE (mean absolute relative
error), and the band of `project` (`cost_low`, `cost_high`) is ± the cost MAPE of that horizon (or
of an earlier one, if larger): how wrong the method typically was on this traffic, not a
statistical interval; the summary says how often the actual fell inside it and the largest miss.
No trend is fitted: growth is a scenario's assumption (`growth`).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from zoneinfo import ZoneInfo

import polars as pl

from analytics.core import progress
from analytics.core.errors import UsageError
from analytics.core.money import rounded
from analytics.settings import Settings
from analytics.terms import rules
from analytics.whatif import strategies
from analytics.whatif.scenarios import BASELINE, COMPARE_SCHEMA, Comparison, Scenario, compare, conform_messages, load_cards
from analytics.whatif.strategies import KEY

WEEK = dt.timedelta(weeks=1)
YEAR_IN_WEEKS = 52
LEVEL_WEEKS = 13  # how much recent traffic grew: the last 13 weeks against the same weeks a year earlier
MONTH_IN_DAYS = 30.44
# The traffic before a projection that its first messages' windows can reach (the rules' longest).
CONTEXT = max(rules.shipped().longest(w) for w in ("ctwa_fep_window_up_to", "customer_service_window", "conversation_window"))
DEFAULT_HISTORY_MONTHS = 3
MAX_MONTHS = 60  # five years: every projected month is real traffic in memory

PROJECT_SCHEMA: dict[str, pl.DataType] = {
    "scenario": pl.String(),
    "month": pl.String(),
    "horizon": pl.Int64(),
    "category": pl.String(),
    "charges": pl.Int64(),
    "billable_charges": pl.Int64(),
    "cost": COMPARE_SCHEMA["cost"],
    "cost_low": COMPARE_SCHEMA["cost"],
    "cost_high": COMPARE_SCHEMA["cost"],
    "currency": pl.String(),
    "unpriced_charges": pl.Int64(),
    "charges_difference": pl.Int64(),
    "billable_charges_difference": pl.Int64(),
    "cost_difference": COMPARE_SCHEMA["cost"],
}


# --- Replaying history forward ---------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """Where one projected month's messages come from."""

    month: str  # YYYY-MM, projected
    windows: tuple[tuple[dt.datetime, dt.datetime], ...]  # history windows (UTC), one per share of users
    shifts_in_weeks: tuple[int, ...]
    seasonal: bool  # the same month a year earlier
    level: dict[str, float] | None  # growth factors applied (seasonal only; None: the history cannot tell)


@dataclass(frozen=True)
class Replay:
    """Projected traffic: canonical messages of the projected months plus the last `CONTEXT` of
    history (before `start`), and where each month comes from."""

    messages: pl.DataFrame
    start: dt.datetime  # the first projected instant (`history_end`)
    months: tuple[str, ...]
    sources: tuple[Source, ...]
    notes: tuple[str, ...] = ()

    def horizon(self, month: str) -> int:
        return self.months.index(month) + 1


def _month_start(year: int, month: int, zone: ZoneInfo) -> dt.datetime:
    year, month = year + (month - 1) // 12, (month - 1) % 12 + 1
    return dt.datetime(year, month, 1, tzinfo=zone).astimezone(dt.UTC)


def history_end(messages: pl.DataFrame, timezone: str) -> tuple[dt.datetime, tuple[str, ...]]:
    """The end of the last complete month of `messages` (local midnight, as UTC), and a note when
    a last, incomplete month is left out."""
    if messages.height == 0:
        raise UsageError("no messages to project from")
    zone = ZoneInfo(timezone)
    last = messages["timestamp"].max().astimezone(zone)  # type: ignore[union-attr]
    if (last + dt.timedelta(days=1)).month != last.month:
        return _month_start(last.year, last.month + 1, zone), ()
    end = _month_start(last.year, last.month, zone)
    return end, (f"{last:%Y-%m} is left out of the history: its messages end on {last:%Y-%m-%d}, before its last day",)


def replay(
    messages: pl.DataFrame | pl.LazyFrame,
    *,
    months: int,
    timezone: str = "UTC",
    history_months: int = DEFAULT_HISTORY_MONTHS,
    until: dt.datetime | None = None,
    seed: int = 0,
    seasonal: bool = True,
) -> Replay:
    """The traffic of the `months` months after the history (module docstring). `until` cuts the
    history there (a back-test's origin, a month start in `timezone`); `seasonal` False always
    replays recent history."""
    if not 1 <= months <= MAX_MONTHS:
        raise UsageError(f"--months {months}: project at least one month and at most {MAX_MONTHS} (each is built as traffic)")
    if history_months < 1:
        raise UsageError(f"--history-months {history_months}: use at least one month of history")
    frame = messages if isinstance(messages, pl.DataFrame) else messages.collect()
    frame = conform_messages(frame)
    if until is not None:
        frame = frame.filter(pl.col("timestamp") < until)
        end, notes = until, ()
    else:
        end, notes = history_end(frame, timezone)
        frame = frame.filter(pl.col("timestamp") < end)
    if frame.height == 0:
        raise UsageError("no complete month of history to project from")
    _check_size(frame, months)
    start = frame["timestamp"].min()
    zone = ZoneInfo(timezone)
    local_end = end.astimezone(zone)
    parts, sources = [frame.filter(pl.col("timestamp") >= end - CONTEXT)], []
    level = _recent_growth(frame, start, end) if seasonal else None
    for i in range(months):
        first, last = _month_start(local_end.year, local_end.month + i, zone), _month_start(local_end.year, local_end.month + i + 1, zone)
        label = f"{first.astimezone(zone):%Y-%m}"
        source, part = _month_from_history(frame, first, last, label, start, end, history_months, seed + i, seasonal, level)
        parts.append(part.with_columns(message_id=pl.col("message_id") + f"~p{label}"))
        sources.append(source)
    projected = pl.concat(parts, how="vertical")
    labels = tuple(s.month for s in sources)
    return Replay(conform_messages(projected), end, labels, tuple(sources), notes)


def _check_size(history: pl.DataFrame, months: int) -> None:
    """Refuse, before building it, a projection whose months (each about an average month of the
    history) this machine could not bill."""
    days = (history["timestamp"].max() - history["timestamp"].min()).days + 1  # type: ignore[operator]
    estimate = int(history.height / max(days, 1) * MONTH_IN_DAYS * months)
    memory = strategies.physical_memory()
    if memory is not None and estimate * strategies.BYTES_PER_MESSAGE > memory:
        raise UsageError(
            f"--months {months}: the projection would hold about {estimate:,} messages, which need about "
            f"{estimate * strategies.BYTES_PER_MESSAGE / 1e9:,.0f} GB to bill, more than this machine's "
            f"{memory / 1e9:,.0f} GB of memory: project fewer months"
        )


def _month_from_history(
    frame: pl.DataFrame,
    first: dt.datetime,
    last: dt.datetime,
    label: str,
    history_start: dt.datetime,
    history_end_: dt.datetime,
    history_months: int,
    seed: int,
    seasonal: bool,
    level: dict[str, float] | None,
) -> tuple[Source, pl.DataFrame]:
    """One projected month: a year-ago replay scaled by `level` (recent growth; None when the
    history cannot tell) if `seasonal` and the history holds the month a year earlier, else
    `history_months` recent windows."""
    year = YEAR_IN_WEEKS * WEEK
    if seasonal and first - year >= history_start and last - year <= history_end_:
        part = _shifted(frame, first - year, last - year, year)
        if level:
            spec = strategies.STRATEGIES["growth"]
            try:
                part = strategies.sent(spec.function(part.lazy(), factors=level, seed=seed)).collect()
            except ValueError as error:  # a year-ago month too thin to scale from, or growth beyond memory
                raise UsageError(f"projecting {label} from the same month a year earlier: {error}") from None
        return Source(label, ((first - year, last - year),), (YEAR_IN_WEEKS,), True, level), part
    base = math.ceil((last - history_end_) / WEEK)
    shifts = []
    for j in range(history_months):
        weeks = base + round(j * MONTH_IN_DAYS / 7)
        if first - weeks * WEEK >= history_start:
            shifts.append(weeks)
    if not shifts:
        days = (last - first).days
        raise UsageError(
            f"the history ({history_start:%Y-%m-%d} to {history_end_:%Y-%m-%d}) is too short to replay {label} in whole "
            f"weeks: a month of {days} days needs up to {days + 6} days of history before {history_end_:%Y-%m-%d}"
        )
    draw = pl.struct(*KEY).hash(seed) % len(shifts)
    parts = [_shifted(frame.filter(draw == j), first - weeks * WEEK, last - weeks * WEEK, weeks * WEEK) for j, weeks in enumerate(shifts)]
    windows = tuple((first - w * WEEK, last - w * WEEK) for w in shifts)
    return Source(label, windows, tuple(shifts), False, {}), pl.concat(parts, how="vertical")


def _shifted(frame: pl.DataFrame, start: dt.datetime, end: dt.datetime, shift: dt.timedelta) -> pl.DataFrame:
    window = frame.filter((pl.col("timestamp") >= start) & (pl.col("timestamp") < end))
    return window.with_columns(pl.col("timestamp") + shift)


def _recent_growth(frame: pl.DataFrame, history_start: dt.datetime, end: dt.datetime) -> dict[str, float] | None:
    """Per category, the last `LEVEL_WEEKS` weeks' volume over the same weeks a year earlier (the
    categories whose volume changed); None when the history does not reach that far back."""
    recent_start = end - LEVEL_WEEKS * WEEK
    year = YEAR_IN_WEEKS * WEEK
    if recent_start - year < history_start:
        return None
    recent = strategies.volumes(frame.filter(pl.col("timestamp").is_between(recent_start, end, closed="left")))
    earlier = strategies.volumes(frame.filter(pl.col("timestamp").is_between(recent_start - year, end - year, closed="left")))
    return {c: round(recent.get(c, 0) / earlier[c], 4) for c in strategies.GROWTH_CATEGORIES if earlier.get(c) and recent.get(c, 0) != earlier[c]}


# --- Back-test -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackTest:
    """Projections from earlier origins against what the traffic really cost.

    `errors`: one row per origin and projected month (`horizon` 1 = first), with actual and
    projected billable charges and cost and their relative errors (projected / actual - 1).
    `by_horizon`: per horizon the number of origins, MAPE of billable charges and of cost, and
    `band`: the cost MAPE at that horizon or, if larger, at an earlier one (a band that does not
    narrow further ahead).
    """

    errors: pl.DataFrame
    by_horizon: pl.DataFrame
    currency: str | None

    def band(self, horizon: int) -> float | None:
        widest = self.by_horizon.filter(pl.col("horizon") <= horizon)["band"].max()
        return float(widest) if widest is not None else None  # type: ignore[arg-type]

    @property
    def mape_cost(self) -> float | None:
        mean = self.errors["cost_error"].abs().mean()
        return float(mean) if mean is not None else None  # type: ignore[arg-type]

    @property
    def mape_billable_charges(self) -> float | None:
        return float(self.errors["billable_charges_error"].abs().mean()) if self.errors.height else None  # type: ignore[arg-type]

    @property
    def coverage(self) -> float | None:
        """The share of back-test months whose actual cost fell inside the band."""
        if self.mape_cost is None:
            return None
        bands = self.errors.select(pl.col("horizon").map_elements(self.band, return_dtype=pl.Float64)).to_series()
        return float((self.errors["cost_error"].abs() <= bands).mean())  # type: ignore[arg-type]


def backtest(
    messages: pl.DataFrame | pl.LazyFrame,
    *,
    horizon: int,
    settings: Settings | None = None,
    history_months: int = DEFAULT_HISTORY_MONTHS,
    seed: int = 0,
    actual: Comparison | None = None,
    cards: Mapping[tuple[object, dt.date | None], pl.DataFrame] | None = None,
    baseline: Scenario | None = None,
    seasonal: bool = True,
) -> BackTest:
    """Project from every origin with `history_months` months before it, `horizon` months ahead
    at most, and compare with the real months (module docstring). `actual` is the real traffic's
    comparison when it has been computed already (its baseline is used); `baseline` is the scenario
    both are billed and priced by (default: rules by date, the run's card)."""
    settings = settings or Settings()
    frame = conform_messages(messages if isinstance(messages, pl.DataFrame) else messages.collect())
    end, _ = history_end(frame, settings.timezone)
    frame = frame.filter(pl.col("timestamp") < end)
    baseline = [baseline or Scenario(BASELINE)]
    cards = cards or load_cards(baseline, settings)
    actual = actual or compare(frame, baseline, settings, cards=cards)
    real = _monthly(actual)
    zone = ZoneInfo(settings.timezone)
    first = frame["timestamp"].min().astimezone(zone)  # type: ignore[union-attr]
    local_end = end.astimezone(zone)
    month_count = (local_end.year - first.year) * 12 + local_end.month - first.month
    rows = []
    for k in progress.track(range(history_months, month_count), "Back-test", unit="origins"):
        origin = _month_start(first.year, first.month + k, zone)
        ahead = min(horizon, month_count - k)
        try:
            projected = replay(
                frame,
                months=ahead,
                timezone=settings.timezone,
                history_months=history_months,
                until=origin,
                seed=seed,
                seasonal=seasonal,
            )
        except UsageError:  # too little history before this origin for a month of whole weeks
            continue
        result = compare(projected.messages, baseline, settings, keep_from=projected.start, cards=cards)
        totals = _monthly(result).join(real, on="month", suffix="_actual")
        for row in totals.iter_rows(named=True):
            rows.append(
                {
                    "origin": projected.months[0],
                    "horizon": projected.horizon(row["month"]),
                    "month": row["month"],
                    "actual_billable_charges": row["billable_charges_actual"],
                    "projected_billable_charges": row["billable_charges"],
                    "billable_charges_error": _relative(row["billable_charges"], row["billable_charges_actual"]),
                    "actual_cost": row["cost_actual"],
                    "projected_cost": row["cost"],
                    # a cost with unpriced charges on either side is incomplete: not compared, not zero
                    "cost_error": None if row["unpriced_charges"] or row["unpriced_charges_actual"] else _relative(row["cost"], row["cost_actual"]),
                }
            )
    errors = pl.DataFrame(rows, schema=_ERRORS_SCHEMA).sort("origin", "horizon")
    by_horizon = (
        errors.group_by("horizon")
        .agg(
            origins=pl.len(),
            mape_billable_charges=pl.col("billable_charges_error").abs().mean(),
            mape_cost=pl.col("cost_error").abs().mean(),
        )
        .sort("horizon")
        .with_columns(band=pl.col("mape_cost").cum_max())
    )
    return BackTest(errors, by_horizon, actual.baseline.currency)


_ERRORS_SCHEMA: dict[str, pl.DataType] = {
    "origin": pl.String(),
    "horizon": pl.Int64(),
    "month": pl.String(),
    "actual_billable_charges": pl.Int64(),
    "projected_billable_charges": pl.Int64(),
    "billable_charges_error": pl.Float64(),
    "actual_cost": pl.Float64(),
    "projected_cost": pl.Float64(),
    "cost_error": pl.Float64(),
}


def _monthly(comparison: Comparison) -> pl.DataFrame:
    """The baseline's billable charges and cost per month, all categories."""
    return (
        comparison.baseline.rollup.group_by("month")
        .agg(pl.col("billable_charges", "unpriced_charges").sum(), cost=pl.col("cost").sum().cast(pl.Float64))
        .sort("month")
    )


def _relative(projected: float, actual: float) -> float | None:
    return (projected - actual) / actual if actual else None


# --- Projecting scenarios --------------------------------------------------------------------------


@dataclass
class Projection:
    """Scenarios on the projected traffic (`PROJECT_SCHEMA`), with the replay and the back-test."""

    table: pl.DataFrame
    comparison: Comparison
    replay: Replay
    backtest: BackTest | None


def project(
    messages: pl.DataFrame | pl.LazyFrame,
    scenarios: Sequence[Scenario],
    *,
    months: int,
    settings: Settings | None = None,
    history_months: int = DEFAULT_HISTORY_MONTHS,
    run_backtest: bool = True,
    seed: int = 0,
    cards: Mapping[tuple[object, dt.date | None], pl.DataFrame] | None = None,
) -> Projection:
    """`scenarios` (one named `baseline`) on the `months` months after the history, with the band
    from a back-test on the same history."""
    settings = settings or Settings()
    frame = conform_messages(messages if isinstance(messages, pl.DataFrame) else messages.collect())
    projected = replay(frame, months=months, timezone=settings.timezone, history_months=history_months, seed=seed)
    cards = cards or load_cards(scenarios, settings)
    comparison = compare(projected.messages, scenarios, settings, keep_from=projected.start, cards=cards)
    checked = None
    if run_backtest:
        checked = backtest(
            frame,
            horizon=months,
            settings=settings,
            history_months=history_months,
            seed=seed,
            cards=cards,
            baseline=next(s for s in scenarios if s.name == BASELINE),
        )
    return Projection(_with_band(comparison.table, projected, checked), comparison, projected, checked)


def _with_band(table: pl.DataFrame, projected: Replay, checked: BackTest | None) -> pl.DataFrame:
    horizons = {m: projected.horizon(m) for m in projected.months}
    bands = {h: (checked.band(h) if checked else None) for h in horizons.values()}
    cost_dtype = PROJECT_SCHEMA["cost"]

    def bound(sign: int) -> pl.Expr:
        factor = pl.col("horizon").replace_strict(
            {h: _decimal(1 + sign * b) if b is not None else None for h, b in bands.items()}, return_dtype=pl.Decimal(38, 6)
        )
        scaled = pl.max_horizontal(pl.col("cost") * factor, pl.lit(Decimal(0), dtype=cost_dtype)).round(6)
        return pl.when(factor.is_not_null()).then(scaled).cast(cost_dtype)

    return (
        table.with_columns(horizon=pl.col("month").replace_strict(horizons, default=None, return_dtype=pl.Int64))
        .with_columns(cost_low=bound(-1), cost_high=bound(1))
        .select(list(PROJECT_SCHEMA))
        .cast(PROJECT_SCHEMA)  # type: ignore[arg-type]
    )


def _decimal(value: float) -> Decimal:
    return rounded(Decimal(str(value)), 6)
