"""Pricing: charges (contracts.md §2) and a rate card (§3) give money (§4).

`price` adds to every charge what it costs and where the rate came from; `costs` rolls priced
charges up to the §4 table; `invoice` (and `analytics.present.invoice_text.format_invoice`) give an invoice-style view per month,
WABA and business number. The steps, for each charge:

1. **Local date and month** of `started_at` in its WABA's time zone (`Settings.timezone_of`):
   a card's `effective_from` is midnight there, and volume tiers reset on the 1st there
   (billing-rules.md §2 Months; pricing-research.md G-4).
2. **Tier position** (pricing-research.md P-8): the n-th billable PMP message of its month, counted
   per business portfolio (`Settings.portfolios`, WABA -> portfolio; unlisted WABAs form one
   portfolio), market and category family (utility; authentication with
   authentication_international), in delivery order: `started_at`, then business_phone, user_id,
   opening_message_id. Graduated: the n-th message pays the rate of the row with the largest
   `tier_from` <= n, earlier messages keep theirs. Under CBP there are no volume tiers (n = 1).
   WABAs in different time zones of one portfolio count their own local months into one counter,
   as Meta's example 3 describes.
3. **Rate** in force: the card's rows for the currency, market and category with the latest
   `effective_from` <= local date, and among them the largest `tier_from` <= n. A row with an
   empty rate says the rate is not known there.
4. **Cost**: free charges cost zero and look up no rate. A billable charge costs
   `rate × (1 + markup_percent / 100) + markup_per_charge` (a provider's markup on Meta's card).
   A billable charge without a rate is a `MissingRateError` naming currency, market, category and
   date, unless `report_unpriced`: then its rate and cost stay empty and `costs` reports it on a
   separate line (`priced` false).
5. **Issue 17** (changes-2026-h2.md §2, §4-6): a group category without a row of its own pays
   its base category's rate (`ratecards.priced_as`, data/rules/priced_as.csv, Meta's "Groups API
   Pricing", Updated May 21, 2026) and counts toward no volume tier; a row whose `unit` is
   `million_tokens` (Meta Business Agent) costs `rate × tokens / 1,000,000`, at
   `Settings.agent_tokens_per_message` where the charge's tokens are not known (`estimated`); a
   marketing max price (`Settings.max_prices`) prices the marketing and group marketing charges it
   covers at min(list rate, max price) (`at_most`: an upper bound). `general_purpose_ai` has no
   rate on the shipped card (Meta's AI Provider figures are not known): unpriced, never zero.
   `costs` and `invoice` count such charges after the contract's columns (`tokens`,
   `estimated_charges`, `at_most_charges`).

Money is exact: rates are decimals with at most 6 places (`ratecards.RATE_SCALE`), the markup
percent at most 4 and the fixed markup at most 6, so a charge's cost is an exact decimal of scale
12 and sums are exact. Rounding happens once, at the end, half away from zero: `costs` to 6
decimals, `invoice` to cents. Invoice totals are the exact sum rounded, so lines may differ from
the total by a cent.

`price` runs in stages that other engines reuse (`analytics.pipeline.spark` runs them on partitions):
`priceable` (row by row: local date, month, portfolio, family), `tier_positions` (across charges:
`queries/tier_positions.sql`), `priced_rows` (row by row: lookups, markup, cost), then the
missing-rate check (`missing_rate_error`). The roll-ups go through exact partials
(`cost_partials`) that parts of the charges can compute apart, rounded once at the end.
`cost_partials_of_charges` gives the same partials without pricing each charge: what a charge
costs depends on a handful of its columns and its local date, so outside the tier counters one
charge of each such group is priced and its cost multiplied by the group's size (exact).

Why the lookups are Polars and not a DuckDB ASOF join: the rate depends only on (market,
category, local date) and, for tiered charges, the position, so the lookups run once per distinct
key on tables of a few thousand rows (`join_asof`) and the answer goes back to the charges as one
index into the card (a scatter and a gather, no join on strings). On 0.82 M charges (1.04 M
messages) the lookups took 0.2 s against 0.7-1.0 s for the same lookups as a DuckDB ASOF join over
every charge. Only the tier counter touches every counted charge, across charges: it is written
as SQL, `queries/tier_positions.sql` (one window per portfolio, market, family and month over the
billable PMP utility and authentication charges of markets whose card has tiers), which Spark runs
over partitions; here the same window is a Polars one, three times cheaper than DuckDB's at 10 M
messages (tests hold the two equal across tier boundaries).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import polars as pl

from analytics.bill.charges import charge_period
from analytics.core import schema
from analytics.core.errors import InputError, UsageError
from analytics.core.lookups import looked_up
from analytics.core.money import HALF_AWAY_FROM_ZERO
from analytics.core.times import local_time
from analytics.settings import Settings
from analytics.terms import rules
from analytics.terms.markets import UNKNOWN_MARKET, unknown_market_reason
from analytics.terms.ratecards import (
    GENERAL_PURPOSE_AI,
    GROUP_MARKETING,
    PER_MILLION_TOKENS,
    PER_TOKEN_CATEGORIES,
    RATE_SCALE,
    TIER_FAMILY,
    TOKENS_PER_UNIT,
    load_card,
    priced_as,
)

DEFAULT_PORTFOLIO = "default"
COST_SCALE = 12  # rate (6 places) × markup factor (6 places): exact
COST_DTYPE = pl.Decimal(38, COST_SCALE)
ROLLUP_DECIMALS = RATE_SCALE
INVOICE_DECIMALS = 2

# Delivery order inside a tier counter (pricing-research.md P-8; the free-tier order of charges.py).
DELIVERY_ORDER = ("started_at", "business_phone", "user_id", "opening_message_id")
TIER_COUNTER = ("portfolio", "market", "family", "month")  # one volume-tier counter
# The categories a marketing max price caps (changes-2026-h2.md §6): marketing, and its group deliveries.
MAX_PRICE_CATEGORIES = ("marketing", GROUP_MARKETING)

PRICED_SCHEMA: dict[str, pl.DataType] = {
    **schema.CHARGE_SCHEMA,
    "portfolio": pl.String(),
    "month": pl.String(),  # YYYY-MM in the WABA time zone, as Meta writes `effective_month`
    "tier_position": pl.Int64(),  # n-th billable message of the month in its tier counter; null if not counted
    "currency": pl.String(),
    "rate": pl.Decimal(38, RATE_SCALE),
    "rate_effective_from": pl.Date(),
    "tier_from": pl.Int64(),
    "rate_source": pl.String(),
    "rate_trust": pl.String(),
    "markup": COST_DTYPE,
    "cost": COST_DTYPE,
    # Issue 17: what a cost rests on beyond the card's rate per message.
    "rate_unit": pl.String(),  # the card row's unit: message or million_tokens (null: no row)
    "billed_tokens": pl.Int64(),  # per-token charges: the tokens priced (given, or agent_tokens_per_message)
    "estimated": pl.Boolean(),  # priced at agent_tokens_per_message: the charge's tokens are not known
    "max_price": pl.Decimal(38, RATE_SCALE),  # the marketing max price per message that covers the charge
    "at_most": pl.Boolean(),  # priced at min(list rate, max price): Meta may charge less
}
ROLLUP_SCHEMA: dict[str, pl.DataType] = {
    "month": pl.String(),
    "market": pl.String(),
    "category": pl.String(),
    "pricing_type": pl.String(),
    "charges": pl.Int64(),
    "billable_charges": pl.Int64(),
    "cost": pl.Decimal(38, ROLLUP_DECIMALS),
    "currency": pl.String(),
    "priced": pl.Boolean(),
    # Issue 17, after the contract's columns: tokens priced (null: no per-token charge), and how many
    # charges of the row have an estimated cost (tokens not known) or a cost that is an upper bound.
    "tokens": pl.Int64(),
    "estimated_charges": pl.Int64(),
    "at_most_charges": pl.Int64(),
}


class MissingRateError(InputError):
    """A billable charge whose currency, market, category and date the card has no rate for."""


# --- Pricing ---------------------------------------------------------------------------------------


def price(
    charges: pl.DataFrame,
    settings: Settings | None = None,
    *,
    card: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Charges (contracts.md §2) with what each costs (`PRICED_SCHEMA`), in the charges' order.

    `card` (from `ratecards.load_card`) overrides `settings.rate_card`, to price many runs
    with one card. The stages, each usable alone (`analytics.pipeline.spark` runs them on partitions):
    `priceable` (row by row), `tier_positions` (`queries/tier_positions.sql`, across charges),
    `priced_rows` (row by row again, given the positions), then the missing-rate check.
    """
    settings = settings or Settings()
    card = load_card(settings.rate_card) if card is None else card
    frame = priceable(charges, settings)
    currency = settings.currency or choose_currency(billable_keys(frame), card)
    rates = rates_in(card, currency)
    frame = frame.with_columns(tier_position=tier_positions(frame, rates))
    priced = priced_rows(frame, rates, settings, currency)
    without_rate = pl.col("billable") & pl.col("rate").is_null()
    if not settings.report_unpriced and priced.select(without_rate.any()).item():
        unpriced = priced.filter(without_rate)
        raise missing_rate_error(unpriced, unpriced_groups(unpriced), currency, settings)
    return priced.select(*PRICED_SCHEMA)


RATE_KEYS = ("market", "category", "local_date")  # what the rate in force depends on, tiers apart

# What `priceable` adds to a charge, and `priced_rows` to that; the last two only explain a missing rate.
PRICEABLE_SCHEMA: dict[str, pl.DataType] = {
    **schema.CHARGE_SCHEMA,
    "local_date": pl.Date(),
    "month": pl.String(),
    "portfolio": pl.String(),
    "family": pl.String(),
    "rate_fallback": pl.String(),
    "then_fallback": pl.String(),
}
PRICED_ROW_SCHEMA: dict[str, pl.DataType] = {**PRICED_SCHEMA, "local_date": pl.Date(), "rate_note": pl.String()}


def priceable(charges: pl.DataFrame, settings: Settings) -> pl.DataFrame:
    """Stage 1, row by row: the charges with their local date and month (WABA time zone),
    portfolio, tier family and rate fallback (`PRICEABLE_SCHEMA`), in their order.

    The rules of each charge's rule-set period (data/rules/rule_sets.toml) decide two things here:
    only `volume_tier_categories` have a tier family (service never does, nor a group category:
    a group delivery counts toward no volume tier, a named choice, as Meta's "Groups API Pricing"
    page names no tiers), and a service message of a period with `service_rate_from` pays that
    category's list rate where the card has no service rate in force (`rate_fallback`;
    billing-rules.md §9). A group category pays its base category's rate where the card has no row
    of its own in force (`ratecards.priced_as`, data/rules/priced_as.csv: Meta, "Groups API
    Pricing", Updated May 21, 2026, "at the going marketing message rate for each recipient's
    country calling code"); group_service's base is service, which then falls back as service does
    (`then_fallback`)."""
    require_charge_columns(charges.columns)
    # One chunk: the columns added here and later come in one, and a frame whose columns are chunked
    # differently is realigned (copied whole) by every later operation. Column by column, since a
    # `select` of differently chunked columns realigns them first.
    frame = pl.DataFrame([charges.get_column(c).rechunk() for c in schema.CHARGE_SCHEMA])
    frame = frame.with_columns(local_date=local_date(settings))
    book = settings.rule_book
    tiered = _rule_property(book, lambda p: p.volume_tier_categories, lambda categories: pl.col("category").is_in(categories), False)
    fallback = _rule_property(book, lambda p: p.service_rate_from, lambda name: pl.lit(name or None, dtype=pl.String), None)
    base = looked_up(pl.col("category"), priced_as(), pl.String())
    frame = frame.with_columns(
        tiered=tiered.fill_null(False),
        rate_fallback=pl.when(pl.col("category") == rules.SERVICE).then(fallback).otherwise(base),
        then_fallback=pl.when(base == rules.SERVICE).then(fallback),
    )
    frame = frame.with_columns(family=pl.when("tiered").then(_tier_family(pl.col("category")))).drop("tiered")
    return frame.with_columns(
        month=_month_names(frame["local_date"]),
        portfolio=pl.col("waba_id").replace_strict(settings.portfolios, default=pl.lit(DEFAULT_PORTFOLIO), return_dtype=pl.String)
        if settings.portfolios
        else pl.lit(DEFAULT_PORTFOLIO, dtype=pl.String),
    ).select(*PRICEABLE_SCHEMA)


def _rule_property(book: rules.RuleBook, value: Callable[[rules.RuleSet], Any], as_expr: Callable[[Any], pl.Expr], otherwise: object) -> pl.Expr:
    """`as_expr(value(period))` for each charge's rule-set period: by rule set where every period of
    it agrees (a few comparisons per charge), by period (`charges.charge_period`) where an
    amendment changes the value."""
    found = pl.lit(otherwise)
    by_value: dict[Any, list[str]] = {}
    for name in book.names:
        values = {value(p) for p in book.periods if p.name == name}
        if len(values) == 1:
            by_value.setdefault(values.pop(), []).append(name)
    for shared, names in by_value.items():
        found = pl.when(pl.col("rule_set").is_in(names)).then(as_expr(shared)).otherwise(found)
    mixed = [place for place, p in enumerate(book.periods) if not any(p.name in names for names in by_value.values())]
    if mixed:
        period = charge_period(book)
        for place in mixed:
            found = pl.when(period == place).then(as_expr(value(book.periods[place]))).otherwise(found)
    return found


def _month_names(dates: pl.Series) -> pl.Series:
    """`YYYY-MM` of each date, looked up by its day among the days from the first date to the last:
    formatting a few hundred days is cheaper than formatting, or even matching, millions of dates
    (0.05 s for 7 M charges, against 0.55 s for the distinct months and a `replace_strict`)."""
    if dates.len() == 0 or dates.null_count() == dates.len():
        return pl.repeat(None, dates.len(), dtype=pl.String, eager=True).rename("month")
    days = pl.date_range(dates.min(), dates.max(), eager=True)
    return days.dt.strftime("%Y-%m").gather(dates.to_physical() - days.to_physical()[0]).rename("month")


def _tier_family(category: pl.Expr) -> pl.Expr:
    """The volume-tier family of a category (`TIER_FAMILY`), null for the others."""
    return looked_up(category, TIER_FAMILY, pl.String())


def require_charge_columns(columns: Sequence[str]) -> None:
    """A UsageError unless `columns` hold the charges table's (contracts.md §2)."""
    missing = [c for c in schema.CHARGE_SCHEMA if c not in columns]
    if missing:
        raise UsageError(f"not a charges table (contracts.md §2): missing column {', '.join(missing)}")


def billable_keys(frame: pl.DataFrame) -> pl.DataFrame:
    """The distinct (market, category, local date) of the billable charges of a `priceable` frame."""
    return frame.lazy().filter("billable").select(*RATE_KEYS).unique().collect()  # lazy: filters three columns, not all


def rates_in(card: pl.DataFrame, currency: str | None) -> pl.DataFrame:
    """The card's rows in `currency` (none when there is nothing to price); an error if it has none."""
    rates = card.filter(pl.col("currency") == currency) if currency else card.clear()
    if currency and rates.height == 0:
        raise UsageError(
            f"the rate card has no {currency} rates: it has "
            + (", ".join(sorted(card["currency"].unique())) or "no rates at all (a header without rows)")
        )
    return rates


def tiered_families(rates: pl.DataFrame) -> pl.DataFrame:
    """The (market, family) pairs that `rates` has volume tiers for: `tier_from` above 1."""
    return rates.filter(pl.col("tier_from") > 1).select("market", family=_tier_family(pl.col("category"))).unique()


def tier_positions(frame: pl.DataFrame, rates: pl.DataFrame) -> pl.Series:
    """Stage 2, across charges: each charge's `tier_position` (pricing-research.md P-8) in the
    `priceable` frame; null where no volume tier counts it. It is `queries/tier_positions.sql`,
    the counter Spark runs, as a Polars window: on the 1 M counted charges of 10 M messages
    DuckDB's window took 0.9-1.0 s of CPU, the Polars window 0.3 s, 0.45 s with the filter before
    it (the two are held equal in tests/test_pricing.py)."""
    positions = pl.repeat(None, frame.height, dtype=pl.Int64, eager=True).alias("tier_position")
    tiered = tiered_families(rates)
    if tiered.height == 0 or frame.height == 0:
        return positions
    counted = (
        frame.lazy()
        .select(pl.int_range(pl.len(), dtype=pl.UInt32).alias("row"), *TIER_COUNTER, "billable", "pricing_model", *DELIVERY_ORDER)
        .filter(pl.col("billable") & (pl.col("pricing_model") == "PMP"))
        .join(tiered.lazy().unique(), on=["market", "family"], how="semi")
        .collect()  # before the window: in one query with it, the whole took twice as long
        .select(
            "row",
            tier_position=pl.int_range(1, pl.len() + 1, dtype=pl.Int64).over(
                TIER_COUNTER,
                order_by=list(DELIVERY_ORDER),
                nulls_last=True,  # as SQL's ORDER BY
            ),
        )
    )
    return positions.scatter(counted["row"], counted["tier_position"]) if counted.height else positions


def priced_rows(frame: pl.DataFrame, rates: pl.DataFrame, settings: Settings, currency: str | None) -> pl.DataFrame:
    """Stage 3, row by row: a `priceable` frame with `tier_position`, priced with `rates` (the card's
    rows in `currency`): the rate in force, markup and cost (`PRICED_ROW_SCHEMA`), in its order.
    A billable charge without a rate keeps a null rate and cost: `missing_rate_error` says why.

    Most charges cost their card row's rate, computed once per row of the card. Two kinds of
    charge cost something else (`_special_costs`): a charge whose row is per token (`unit`
    `million_tokens`: Meta Business Agent) costs `rate x tokens / 1,000,000`, with the charge's
    `tokens`, or where they are not known `settings.agent_tokens_per_message` (`estimated`); a
    marketing or group marketing charge that a marketing max price covers (`settings.max_prices`)
    costs min(list rate, max price) (`at_most`: Meta may charge less). A charge whose list rate is
    not known stays unpriced even under a max price: the cap is no rate."""
    frame = frame.with_row_index("row")
    card_row = _card_rows(frame, billable_keys(frame), rates)
    # What a charge costs depends on its card row only: compute it once per row of the card.
    factor = Decimal(1) + settings.markup_percent / Decimal(100)
    card_cost = pl.col("rate").cast(COST_DTYPE)
    markup = card_cost * pl.lit(factor, dtype=COST_DTYPE) - card_cost + pl.lit(settings.markup_per_charge, dtype=COST_DTYPE)
    looked_up = rates.select(
        rate="rate",
        rate_effective_from="effective_from",
        tier_from="tier_from",
        rate_source="source",
        rate_trust="trust",
        rate_note="note",
        rate_unit="unit",
        row_markup=markup.cast(COST_DTYPE),
        row_cost=(card_cost + markup).cast(COST_DTYPE),
    )[card_row]
    frame = pl.concat([frame, looked_up], how="horizontal")
    per_token = pl.col("billable") & (pl.col("rate_unit") == PER_MILLION_TOKENS).fill_null(False)
    frame = frame.with_columns(
        billed_tokens=pl.when(per_token).then(pl.col("tokens").fill_null(settings.agent_tokens_per_message)),
        estimated=per_token & pl.col("tokens").is_null(),
        max_price=_max_price(settings),
    )
    frame = _special_costs(frame, settings)
    free = pl.lit(Decimal(0), dtype=COST_DTYPE)
    return frame.select(
        *schema.CHARGE_SCHEMA,
        "portfolio",
        "month",
        "tier_position",
        currency=pl.lit(currency, dtype=pl.String),
        rate="rate",
        rate_effective_from="rate_effective_from",
        tier_from="tier_from",
        rate_source="rate_source",
        rate_trust="rate_trust",
        markup=pl.when(pl.col("billable")).then(pl.col("row_markup")).otherwise(free),
        cost=pl.when(pl.col("billable")).then(pl.col("row_cost")).otherwise(free),
        rate_unit="rate_unit",
        billed_tokens="billed_tokens",
        estimated="estimated",
        max_price="max_price",
        at_most=pl.col("max_price").is_not_null() & pl.col("rate").is_not_null(),
        local_date="local_date",
        rate_note="rate_note",
    )


def _max_price(settings: Settings) -> pl.Expr:
    """The marketing max price per message (`Settings.max_prices`) that covers each billable
    marketing or group marketing charge, null for the others. Where several cover a charge, one
    naming its template wins over one for the whole WABA, and a later `from` over an earlier (a
    new bid replaces the old): a named choice, Meta's changelog (CL#448) says nothing of overlaps."""
    found = pl.lit(None, dtype=PRICED_SCHEMA["max_price"])
    eligible = pl.col("billable") & pl.col("category").is_in(MAX_PRICE_CATEGORIES)
    # when/then chains: the last one added is tried first, so add the weakest first
    for cap in sorted(settings.max_prices, key=lambda c: (c.template is not None, c.from_date)):
        covers = eligible & (pl.col("waba_id") == cap.waba_id) & (pl.col("local_date") >= cap.from_date)
        if cap.template is not None:
            covers = covers & (pl.col("template_name") == cap.template)
        found = pl.when(covers.fill_null(False)).then(pl.lit(cap.per_message, dtype=PRICED_SCHEMA["max_price"])).otherwise(found)
    return found


def _special_costs(frame: pl.DataFrame, settings: Settings) -> pl.DataFrame:
    """`row_cost` and `row_markup` of the charges priced per token or under a max price, in exact
    decimals: computed once per distinct (rate, tokens, max price) and put back by row.

    A per-token cost `rate x tokens / 1,000,000` is exact at 12 decimals (a rate has at most 6);
    so is a capped rate (6). A percent markup on a per-token cost may need more than
    `COST_SCALE` decimals: it is rounded half away from zero to `COST_SCALE` (1e-12, the one
    rounding before the roll-ups')."""
    special = frame.filter(
        pl.col("billable") & pl.col("rate").is_not_null() & (pl.col("billed_tokens").is_not_null() | pl.col("max_price").is_not_null())
    )
    if special.height == 0:
        return frame
    percent = settings.markup_percent / Decimal(100)
    quantum = Decimal(1).scaleb(-COST_SCALE)
    keys = special.select("rate", "billed_tokens", "max_price").unique()
    costs, markups = [], []
    for rate, tokens, cap in keys.iter_rows():
        card_cost = rate * tokens / TOKENS_PER_UNIT if tokens is not None else min(rate, cap)
        markup = (card_cost * percent + settings.markup_per_charge).quantize(quantum, rounding=ROUND_HALF_UP)
        costs.append(card_cost + markup)
        markups.append(markup)
    keys = keys.with_columns(special_cost=pl.Series(costs, dtype=COST_DTYPE), special_markup=pl.Series(markups, dtype=COST_DTYPE))
    found = special.select("row", "rate", "billed_tokens", "max_price").join(
        keys, on=["rate", "billed_tokens", "max_price"], how="left", nulls_equal=True
    )
    return frame.with_columns(
        row_cost=frame["row_cost"].scatter(found["row"], found["special_cost"]),
        row_markup=frame["row_markup"].scatter(found["row"], found["special_markup"]),
    )


def local_date(settings: Settings) -> pl.Expr:
    """The calendar date of `started_at` in the charge's WABA time zone (`core.times.local_time`)."""
    return local_time(settings, "started_at").dt.date()


def choose_currency(needed: pl.DataFrame, card: pl.DataFrame) -> str | None:
    """The one currency whose rates price every billable (market, category, local date) of
    `needed` at its list rate (tier 1).

    None when nothing is billable and the card has several currencies (nothing to price). When
    none or several currencies price everything, an error says how far each one goes.

    A group category counts as priced where its base category is (`ratecards.priced_as`). Categories
    that no currency of the card has a row for, nor their base (general_purpose_ai on the shipped
    card: Meta's AI Provider rates are not known), do not decide the currency: their charges are
    unpriced in any of them.
    """
    available = sorted(card["currency"].unique().to_list())
    if len(available) == 1:
        return available[0]
    carded = set(card["category"].unique().to_list())
    decides = [c for c in needed["category"].unique().to_list() if c in carded or priced_as().get(c) in carded]
    if needed.filter(pl.col("category").is_in(decides)).height:
        needed = needed.filter(pl.col("category").is_in(decides))
    if needed.height == 0:
        return None
    coverage = {}
    for currency in available:
        coverage[currency] = _priced_keys(needed, card.filter(pl.col("currency") == currency))
    complete = [c for c in available if coverage[c] == needed.height]
    if len(complete) == 1:
        return complete[0]
    if complete:
        raise UsageError(
            f"the rate card prices this traffic in {' and '.join(complete)}: choose one with --currency "
            f"(or `currency` in the [pricing] table of the config file)"
        )
    if not available:
        raise UsageError("the rate card has no rates: give a card with rows of rates (contracts.md §3, data/rate_cards/README.md)")
    described = ", ".join(f"{c} {coverage[c]:,}" for c in available)
    unknown = needed.filter(pl.col("market") == UNKNOWN_MARKET).height
    no_market = f"; {unknown:,} of them are of users whose market is unknown (the run summary says why)" if unknown else ""
    raise UsageError(
        f"no currency of the rate card prices every billable charge (of {needed.height:,} market, category and "
        f"day combinations, each currency prices: {described}{no_market}): choose one with --currency (`costs` then needs "
        f"--report-unpriced to report the charges it has no rate for; `compare` and `project` count them as unpriced)"
    )


def _priced_keys(needed: pl.DataFrame, rates: pl.DataFrame) -> int:
    """How many (market, category, local date) keys of `needed` `rates` has a list rate for, or,
    for a category priced as another (`ratecards.priced_as`), its base category has."""
    tier_one = rates.filter(pl.col("tier_from") == 1, pl.col("rate").is_not_null())
    own = _effective_dates(needed, rates).join(tier_one, on=["market", "category", "effective_from"], how="semi")
    rest = needed.join(own.select(*RATE_KEYS), on=list(RATE_KEYS), how="anti")
    base = rest.select("market", category=looked_up(pl.col("category"), priced_as(), pl.String()), local_date="local_date").drop_nulls("category")
    by_base = _effective_dates(base.unique(), rates).join(tier_one, on=["market", "category", "effective_from"], how="semi")
    return own.height + base.join(by_base.select(*RATE_KEYS), on=list(RATE_KEYS), how="semi").height


def _effective_dates(keys: pl.DataFrame, rates: pl.DataFrame) -> pl.DataFrame:
    """`keys` with `effective_from`: the latest card date <= local_date for its market and category."""
    dates = rates.select("market", "category", "effective_from").unique().sort("effective_from")
    return keys.sort("local_date").join_asof(
        dates,
        left_on="local_date",
        right_on="effective_from",
        by=["market", "category"],
        strategy="backward",
        check_sortedness=False,
    )


def _card_rows(frame: pl.DataFrame, needed: pl.DataFrame, rates: pl.DataFrame) -> pl.Series:
    """For every billable charge, the position in `rates` of the row in force (null if the card has
    none); null for free charges. Lookups run once per distinct key, then scatter to the charges."""
    card_row = pl.repeat(None, frame.height, dtype=pl.UInt32, eager=True)
    if needed.height == 0 or rates.height == 0:
        return card_row
    indexed = rates.select("market", "category", "effective_from", "tier_from").with_row_index("card_row")
    effective = _effective_dates(needed, rates)
    list_rows = effective.join(indexed.filter(pl.col("tier_from") == 1).drop("tier_from"), on=["market", "category", "effective_from"], how="left")
    billable = frame.lazy().filter("billable").select("row", *RATE_KEYS, "tier_position", "rate_fallback", "then_fallback").collect()
    by_list = billable.filter(pl.col("tier_position").is_null()).join(list_rows.select(*RATE_KEYS, "card_row"), on=list(RATE_KEYS), how="left")
    card_row = card_row.scatter(by_list["row"], by_list["card_row"])
    # No row of its own in force at all: the list rate of the category it is priced as (a group
    # category's base, §9's service_rate_from for service), then that one's (group_service).
    pending = by_list.filter(pl.col("card_row").is_null())
    for fallback in ("rate_fallback", "then_fallback"):
        pending = pending.filter(pl.col(fallback).is_not_null())
        if pending.height == 0:
            break
        fallback_keys = pending.select("row", "market", category=fallback, local_date="local_date")
        effective_fallback = _effective_dates(fallback_keys.select(*RATE_KEYS).unique(), rates).join(
            indexed.filter(pl.col("tier_from") == 1).drop("tier_from"), on=["market", "category", "effective_from"], how="left"
        )
        by_fallback = fallback_keys.join(effective_fallback.select(*RATE_KEYS, "card_row"), on=list(RATE_KEYS), how="left")
        card_row = card_row.scatter(by_fallback["row"], by_fallback["card_row"])
        pending = pending.join(by_fallback.filter(pl.col("card_row").is_null()).select("row"), on="row", how="semi")
    tiered = billable.filter(pl.col("tier_position").is_not_null())
    if tiered.height:
        # Graduated tiers: the row with the largest tier_from <= position, among the rows in force.
        by_tier = (
            tiered.join(effective, on=list(RATE_KEYS), how="left")
            .sort("tier_position")
            .join_asof(
                indexed.sort("tier_from"),
                left_on="tier_position",
                right_on="tier_from",
                by=["market", "category", "effective_from"],
                strategy="backward",
                check_sortedness=False,
            )
        )
        card_row = card_row.scatter(by_tier["row"], by_tier["card_row"])
    return card_row


def unpriced_groups(unpriced: pl.DataFrame) -> pl.DataFrame:
    """Billable charges without a rate per market and category: how many, first and last local date."""
    return unpriced.group_by("market", "category").agg(
        charges=pl.len().cast(pl.Int64), first_date=pl.col("local_date").min(), last_date=pl.col("local_date").max()
    )


def missing_rate_error(unpriced: pl.DataFrame, groups: pl.DataFrame, currency: str | None, settings: Settings) -> MissingRateError:
    """The error for billable charges without a rate, from `unpriced` (`priced_rows` rows without a
    rate: all of them, or any sample that holds the first in delivery order) and `groups`
    (`unpriced_groups` of all of them): the first one, why it has no rate, and how many more."""
    first = unpriced.sort(*DELIVERY_ORDER).row(0, named=True)
    tz = settings.timezone_of(first["waba_id"])
    what = f"{currency} {first['market']} {first['category']} on {first['local_date']} (time zone {tz})"
    if first["tier_position"] is not None and first["tier_from"] is not None and first["tier_from"] > 1:
        what += f", message {first['tier_position']:,} of {first['month']} in its volume-tier counter"
    if first["market"] == UNKNOWN_MARKET:
        why = f": the user's market is not known: {unknown_market_reason(first.get('user_id'))}"
    elif first["rate_note"]:
        why = f": the card says {first['rate_note']!r}"
    elif first["category"] == GENERAL_PURPOSE_AI and first["rate_effective_from"] is None:
        why = ": Meta's AI Provider rate card is not known (no figures in any source): give a card with general_purpose_ai rows"
    elif first["rate_effective_from"] is None:
        why = f": the card has no {currency} rate for {first['market']} {first['category']} on or before that date"
    else:
        why = ""
    total = int(groups["charges"].sum())
    rest = ""
    if total > 1:
        listed = "; ".join(
            f"{r['market']} {r['category']} {r['charges']:,} from {r['first_date']} to {r['last_date']}"
            for r in groups.sort("charges", "market", "category", descending=[True, False, False]).head(5).iter_rows(named=True)
        )
        rest = f". In all {total:,} billable charges have no rate ({listed})"
    return MissingRateError(
        f"no rate for {what}, charge {first['opening_message_id']} at {first['started_at']}{why}{rest}. "
        f"Give a card with these rates (--rate-card), another currency (--currency), or report such charges "
        f"as unpriced (--report-unpriced)"
    )


# --- Roll-ups --------------------------------------------------------------------------------------
#
# In two steps, so that parts of the charges (Spark partitions) can be summed apart and rounded once:
# `cost_partials` sums exactly, `*_from_partials` sum the sums and round. Exact sums of exact sums are
# the sums, so `costs(priced)` is `costs_from_partials(cost_partials(priced))` whatever the parts.

PARTIAL_KEYS = (
    "month",
    "waba_id",
    "business_phone",
    "market",
    "category",
    "pricing_type",
    "billable",
    "rule_set",
    "rate_trust",
    "currency",
    "priced",
)
PARTIAL_SCHEMA: dict[str, pl.DataType] = {
    "month": pl.String(),
    "waba_id": pl.String(),
    "business_phone": pl.String(),
    "market": pl.String(),
    "category": pl.String(),
    "pricing_type": pl.String(),
    "billable": pl.Boolean(),
    "rule_set": pl.String(),
    "rate_trust": pl.String(),
    "currency": pl.String(),
    "priced": pl.Boolean(),  # false: billable charges without a rate (`report_unpriced`)
    "charges": pl.Int64(),
    "billable_charges": pl.Int64(),
    "card_cost": COST_DTYPE,  # what the card's rates come to
    "markup": COST_DTYPE,
    "cost": COST_DTYPE,
    "tokens": pl.Int64(),  # tokens of per-token charges (null: none)
    "estimated_charges": pl.Int64(),  # charges priced at agent_tokens_per_message
    "estimated_cost": COST_DTYPE,
    "at_most_charges": pl.Int64(),  # charges priced under a marketing max price: an upper bound
    "at_most_cost": COST_DTYPE,
}


def cost_partials(priced: pl.DataFrame) -> pl.DataFrame:
    """Priced charges summed exactly, without rounding, per `PARTIAL_KEYS` (`PARTIAL_SCHEMA`): what
    `costs`, `invoice` and `present.invoice_text.format_invoice` need. Partials of parts of the charges may be
    concatenated and given to `costs_from_partials` and the others as they are."""
    return (
        priced.lazy()
        .with_columns(priced=pl.col("cost").is_not_null())
        .group_by(*PARTIAL_KEYS)
        .agg(
            charges=pl.len().cast(pl.Int64),
            billable_charges=pl.col("billable").sum().cast(pl.Int64),
            card_cost=(pl.col("cost") - pl.col("markup")).sum().cast(COST_DTYPE),
            markup=pl.col("markup").sum().cast(COST_DTYPE),
            cost=pl.col("cost").sum().cast(COST_DTYPE),
            tokens=pl.when(pl.col("billed_tokens").is_not_null().any()).then(pl.col("billed_tokens").sum()).cast(pl.Int64),
            estimated_charges=pl.col("estimated").sum().cast(pl.Int64),
            estimated_cost=pl.col("cost").filter("estimated").sum().cast(COST_DTYPE),
            at_most_charges=pl.col("at_most").sum().cast(pl.Int64),
            at_most_cost=pl.col("cost").filter("at_most").sum().cast(COST_DTYPE),
        )
        .select(*PARTIAL_SCHEMA)
        .collect(engine="streaming")  # twice as fast as the in-memory group-by on 7 M priced charges
    )


# What a charge outside every tier counter costs depends on these columns and its local date alone
# (`priceable` reads no other, `priced_rows` adds nothing else but the tier position): with the
# other keys of `PARTIAL_KEYS`, one charge of each such group is priced for all of them.
GROUP_KEYS = (
    "rule_set",
    "pricing_model",
    "category",
    "pricing_type",
    "billable",
    "business_phone",
    "waba_id",
    "market",
    "tokens",  # a per-token charge's cost (`_cost_keys`: null for the others)
    "template_name",  # a marketing max price may name the template (`_cost_keys`: null where none does)
)


def _cost_keys(settings: Settings) -> dict[str, pl.Expr]:
    """`tokens` and `template_name` where they can change a charge's cost, null elsewhere: so they
    split the groups of `cost_partials_of_charges` only there (a template's name on every
    template charge would otherwise multiply the groups, and the charges priced one by one)."""
    names_template = any(cap.template is not None for cap in settings.max_prices)
    return {
        "tokens": pl.when(pl.col("category").is_in(PER_TOKEN_CATEGORIES)).then(pl.col("tokens")),
        "template_name": pl.when(pl.col("category").is_in(MAX_PRICE_CATEGORIES)).then(pl.col("template_name"))
        if names_template
        else pl.lit(None, dtype=pl.String),
    }


def cost_partials_of_charges(
    charges: pl.DataFrame,
    settings: Settings | None = None,
    *,
    card: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """`cost_partials(price(charges, ...))`, the same sums, without pricing every charge on its own:
    what `wa-analytics costs` needs.

    Charges that no volume tier can count are grouped by local date and `GROUP_KEYS`; the stages of
    `price` run on one charge of each group (the earliest), and its cost times the group's size is
    the group's cost (exact: decimals times a count). Only the billable PMP charges of a category
    with a tier family, in a market whose card has tiers, go through the stages one by one, since
    their tier position (across charges) decides their rate. A billable charge without a rate
    (and not `report_unpriced`) is reported by `price` itself, with its first charge."""
    settings = settings or Settings()
    card = load_card(settings.rate_card) if card is None else card
    require_charge_columns(charges.columns)
    groups = (
        charges.lazy()
        .group_by(*(k for k in GROUP_KEYS if k not in ("tokens", "template_name")), **_cost_keys(settings), local_date=local_date(settings))
        .agg(started_at=pl.col("started_at").min(), charges=pl.len().cast(pl.Int64))
        .collect(engine="streaming")
    )
    one_of_each = groups.select(
        pl.col(c) if c in (*GROUP_KEYS, "started_at") else pl.lit(None, dtype=t).alias(c) for c, t in schema.CHARGE_SCHEMA.items()
    )
    frame = priceable(one_of_each, settings).with_columns(charges=groups["charges"])
    currency = settings.currency or choose_currency(billable_keys(frame), card)
    rates = rates_in(card, currency)
    counted = _maybe_counted(tiered_families(rates))
    by_group = priced_rows(frame.filter(~counted).with_columns(tier_position=pl.lit(None, dtype=pl.Int64)), rates, settings, currency).with_columns(
        charges=frame.filter(~counted)["charges"]
    )
    one_by_one = priceable(charges.filter(counted), settings)
    one_by_one = one_by_one.with_columns(tier_position=tier_positions(one_by_one, rates))
    by_charge = priced_rows(one_by_one, rates, settings, currency)
    without_rate = pl.col("billable") & pl.col("rate").is_null()
    if not settings.report_unpriced and (by_group.select(without_rate.any()).item() or by_charge.select(without_rate.any()).item()):
        price(charges, settings, card=card)  # raises MissingRateError with the first charge
    return pl.concat([_weighted_partials(by_group), cost_partials(by_charge.select(*PRICED_SCHEMA))])


def _maybe_counted(tiered: pl.DataFrame) -> pl.Expr:
    """Whether a charge can be in a volume-tier counter (`queries/tier_positions.sql`): billable,
    PMP, of a category with a tier family in a market whose card has tiers for that family."""
    in_tiered_market = pl.lit(False)
    for family, markets in tiered.group_by("family").agg("market").iter_rows():
        categories = [c for c, f in TIER_FAMILY.items() if f == family]
        in_tiered_market = in_tiered_market | (pl.col("category").is_in(categories) & pl.col("market").is_in(markets))
    return pl.col("billable") & (pl.col("pricing_model") == "PMP") & in_tiered_market


def _weighted_partials(priced: pl.DataFrame) -> pl.DataFrame:
    """`cost_partials` of priced rows that each stand for `charges` charges of one cost."""
    count = pl.col("charges").cast(pl.Decimal(38, 0))
    return (
        priced.lazy()
        .with_columns(priced=pl.col("cost").is_not_null())
        .group_by(*PARTIAL_KEYS)
        .agg(
            charges=pl.col("charges").sum().cast(pl.Int64),
            billable_charges=pl.col("charges").filter(pl.col("billable")).sum().cast(pl.Int64),
            card_cost=((pl.col("cost") - pl.col("markup")) * count).sum().cast(COST_DTYPE),
            markup=(pl.col("markup") * count).sum().cast(COST_DTYPE),
            cost=(pl.col("cost") * count).sum().cast(COST_DTYPE),
            tokens=pl.when(pl.col("billed_tokens").is_not_null().any()).then((pl.col("billed_tokens") * pl.col("charges")).sum()).cast(pl.Int64),
            estimated_charges=pl.col("charges").filter("estimated").sum().cast(pl.Int64),
            estimated_cost=(pl.col("cost") * count).filter("estimated").sum().cast(COST_DTYPE),
            at_most_charges=pl.col("charges").filter("at_most").sum().cast(pl.Int64),
            at_most_cost=(pl.col("cost") * count).filter("at_most").sum().cast(COST_DTYPE),
        )
        .select(*PARTIAL_SCHEMA)
        .collect()
    )


def costs(priced: pl.DataFrame) -> pl.DataFrame:
    """contracts.md §4: one row per month, market, category and pricing type (`ROLLUP_SCHEMA`).

    Unpriced billable charges (`report_unpriced`) are a separate row with `priced` false and no cost.
    """
    return costs_from_partials(cost_partials(priced))


def costs_from_partials(partials: pl.DataFrame) -> pl.DataFrame:
    """`costs` of the charges whose `cost_partials` these are (of all parts, concatenated)."""
    return (
        partials.group_by("month", "market", "category", "pricing_type", "currency", "priced")
        .agg(
            charges=pl.col("charges").sum().cast(pl.Int64),
            billable_charges=pl.col("billable_charges").sum().cast(pl.Int64),
            cost=pl.when(pl.col("priced").first()).then(pl.col("cost").sum()),
            **_marks(),
        )
        .select(
            "month",
            "market",
            "category",
            "pricing_type",
            "charges",
            "billable_charges",
            pl.col("cost").round(ROLLUP_DECIMALS, mode=HALF_AWAY_FROM_ZERO).cast(ROLLUP_SCHEMA["cost"]),
            "currency",
            "priced",
            "tokens",
            "estimated_charges",
            "at_most_charges",
        )
        .sort("month", "market", "category", "pricing_type", pl.col("priced").not_())
    )


def invoice(priced: pl.DataFrame) -> pl.DataFrame:
    """Invoice lines: one per month, WABA, business number, category and market, amounts in cents.

    `card_cost` is what the card's rates come to, `markup` the provider's part, `cost` their sum;
    each is the line's exact sum rounded half away from zero to `INVOICE_DECIMALS`.
    """
    return invoice_from_partials(cost_partials(priced))


def invoice_from_partials(partials: pl.DataFrame) -> pl.DataFrame:
    """`invoice` of the charges whose `cost_partials` these are (of all parts, concatenated)."""
    cents = pl.Decimal(38, INVOICE_DECIMALS)
    priced = pl.col("priced")
    return (
        partials.group_by("month", "waba_id", "business_phone", "category", "market", "currency")
        .agg(
            charges=pl.col("charges").sum().cast(pl.Int64),
            billable_charges=pl.col("billable_charges").sum().cast(pl.Int64),
            unpriced_charges=pl.col("charges").filter(~priced).sum().cast(pl.Int64),
            card_cost=pl.col("card_cost").filter(priced).sum(),
            markup=pl.col("markup").filter(priced).sum(),
            cost=pl.col("cost").filter(priced).sum(),
            **_marks(),
        )
        .with_columns(pl.col(c).round(INVOICE_DECIMALS, mode=HALF_AWAY_FROM_ZERO).cast(cents) for c in ("card_cost", "markup", "cost"))
        .select(
            "month",
            "waba_id",
            "business_phone",
            "category",
            "market",
            "charges",
            "billable_charges",
            "unpriced_charges",
            "card_cost",
            "markup",
            "cost",
            "currency",
            "tokens",
            "estimated_charges",
            "at_most_charges",
        )
        .sort("month", "waba_id", "business_phone", "category", "market")
    )


def _marks() -> dict[str, pl.Expr]:
    """What marks a roll-up line's cost (issue 17): the tokens priced (null where the line has no
    per-token charge), and how many of its charges have an estimated cost (Meta Business Agent
    without tokens, at `agent_tokens_per_message`) or a cost that is an upper bound (a marketing
    max price: "at most")."""
    return {
        "tokens": pl.when(pl.col("tokens").is_not_null().any()).then(pl.col("tokens").sum()).cast(pl.Int64),
        "estimated_charges": pl.col("estimated_charges").sum().cast(pl.Int64),
        "at_most_charges": pl.col("at_most_charges").sum().cast(pl.Int64),
    }
