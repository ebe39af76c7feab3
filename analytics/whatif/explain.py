"""Why the cost changed: one month's cost against another's, split into effects that add up exactly.

`explain(messages, "2026-10", against="2026-09")` compares month B (`month`) with month A
(`against`, default the month before B) and splits B's cost minus A's into seven effects, each a
switch between A's and B's value of one thing that decides the cost:

- **rules**: the rule set in force (billing-rules.md §1): the traffic billed by the engine
  (`analytics.bill.charges.bill`) under A's rule set or under B's (`Settings.replace(rules=...)`;
  a month billed under its own rule set is billed by date, as it was);
- **rates**: the card in force (contracts.md §3): the charges priced (`analytics.price.pricing`)
  at their own dates when the card is their own month's, else at the rates in force on the first
  day of the other month (`scenarios.card_in_force_on`), and under the marketing max prices in
  force that day (`max_prices_in_force_on`: a max price is a price, so one that starts is rates);
- **volume**: how many charges the traffic makes (messages under per-message pricing,
  conversations before it), and so how far free tiers go;
- **mix**: each market and category's share of those charges;
- **free_windows**: the share of a market and category's charges that a customer service or free
  entry point window made free (pricing types `free_customer_service`, `free_entry_point`);
- **volume_tiers**: the average volume-tier discount per charge of a market and category (the
  tier positions the month's traffic reached; pricing-research.md P-8);
- **currency**: always zero. Both months are priced in one currency (`Settings.currency`, else the
  one currency of the card that prices both months): no exchange rate is a fact this project has,
  so a difference across currencies is never computed. The row is written so every output has the
  same seven effects.

**The cost of a combination.** Each month's charges are billed under each rule set R (the months
by date, and each month under the other's rule set: three billing runs at most) and priced with each card K, with its
volume tiers and at list rates alone (the card's `tier_from` 1 rows). Per cell c (market and
category) of the charges of traffic x under rules R they give: `n` charges, `nf` charges outside
a free window, `list` their cost at list rates and `cost` their cost. For a set S of factors
switched to B (the others at A), with x_v, x_m, x_w, x_t the traffic (A or B) that `volume`,
`mix`, `free_windows`, `volume_tiers` choose, R and K what `rules` and `rates` choose:

    f(S) = Σ_c  N · s_c · q_c · (L_c − T_c)
    N    = Σ_c n(x_v, R)                          the volume
    s_c  = n_c(x_m, R) / Σ n(x_m, R)               the mix
    q_c  = nf_c(x_w, R) / n_c(x_w, R)              the share outside free windows
    L_c  = list_c(x_v, R, K) / nf_c(x_v, R)        the average list cost of a charge outside a window
    T_c  = (list_c − cost_c)(x_t, R, K) / nf_c(x_t, R)   the average volume-tier discount of one

With every factor at A, the product is each cell's own cost, so f(∅) is month A's actual cost and
f(all) month B's (tests hold both to `pricing.costs` of the months). A cell a chosen traffic does
not have (or has no charge outside a window in) takes the other traffic's value (none there
either: zero): it can only matter in a mixed combination, never at the ends.

**Attribution.** The six factors' effects are their Shapley values: factor i gets the average,
over every order of switching the factors from A to B one by one, of what switching i changed
(Σ over S ⊆ F∖{i} of |S|!(6−|S|−1)!/6! · (f(S ∪ {i}) − f(S)); 2⁶ = 64 combinations, each from the
cached billing and pricing runs). It does not depend on any order, and the effects sum to
f(all) − f(∅) exactly: they are computed as exact fractions, so no residual is left or hidden.

**Rounding.** The total is B's cost rounded to cents minus A's cost rounded to cents (what two
invoices show), half away from zero. Each effect is rounded to cents half away from zero; the few
cents by which these differ from the total (at most one per effect) go, one cent each, to the
effects whose rounding moved them furthest the other way (ties: in `EFFECTS` order; an effect that
is exactly zero, as currency always is, takes none), so the rows sum to the total to the cent.

**Billing a month under the other month's rules.** The messages from `lookback` before the month
(the longest free entry point offer and window, or conversation, of the rule book, plus a day for
time zones) to its end are billed, and the charges that start in the month (in the WABA's time
zone) kept: a window open when the month starts is seen, the month's free tiers count from zero.
A month billed under its own rules is billed by date from the whole history (or the charges
given), exactly as `wa-analytics costs` bills it. The rule set of a month is the one in force on
its first day (or `Settings.rules`, one rule set for all traffic: then the rules effect is zero).

**Unpriced charges.** The two months themselves follow the settings: a billable charge without a
rate is an error unless `report_unpriced`, and then it is left out of the cost. A combination
that prices a month's charges at the other month's card may meet a charge that card has no rate
for (a market added since): it costs nothing there, and `unpriced_in_replays` counts them so the
summary can say so.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction

import polars as pl

from analytics.bill import charges as engine
from analytics.core.errors import UsageError
from analytics.core.money import rounded
from analytics.core.times import local_time
from analytics.price import pricing
from analytics.settings import MaxPrice, Settings
from analytics.terms import rules
from analytics.terms.ratecards import load_card
from analytics.whatif.scenarios import card_in_force_on, conform_messages

VOLUME, MIX, RATES, RULES, FREE_WINDOWS, VOLUME_TIERS, CURRENCY = ("volume", "mix", "rates", "rules", "free_windows", "volume_tiers", "currency")
FACTORS = (VOLUME, MIX, RATES, RULES, FREE_WINDOWS, VOLUME_TIERS)  # switched between A and B
EFFECTS = (*FACTORS, CURRENCY)  # the rows, in this order, then TOTAL
TOTAL = "total"
TRAFFIC_FACTORS = (VOLUME, MIX, FREE_WINDOWS, VOLUME_TIERS)
WINDOW_FREE = ("free_customer_service", "free_entry_point")  # made free by a window (contracts.md §2)
CELL = ("market", "category")
CENTS = 2
DIFFERENCE_DTYPE = pl.Decimal(38, CENTS)
A, B = "A", "B"

# One row per effect, then the total (money to the cent, in `currency`).
EXPLAIN_SCHEMA: dict[str, pl.DataType] = {
    "month": pl.String(),
    "against": pl.String(),
    "effect": pl.String(),
    "cost_difference": DIFFERENCE_DTYPE,
    "currency": pl.String(),
}

_MONTH = re.compile(r"\d{4}-(0[1-9]|1[0-2])")


@dataclass(frozen=True)
class Explanation:
    """Month `month` (B) against `against` (A): the effects (`EFFECTS`, to the cent, summing to
    `total`), their exact values, and what the summary sentence says of each month."""

    month: str
    against: str
    currency: str | None
    cost: Decimal  # B's exact cost
    cost_against: Decimal  # A's exact cost
    effects: dict[str, Decimal]  # rounded to cents; they sum to `total`
    exact: dict[str, Fraction]  # the Shapley values; they sum to cost - cost_against
    rule_sets: tuple[str, str]  # (A's, B's)
    charges: tuple[int, int]  # (A's, B's)
    users: tuple[int, int]  # (A's, B's): users with a charge
    unpriced: tuple[int, int] = (0, 0)  # billable charges without a rate, left out of each month's cost
    unpriced_in_replays: int = 0
    combinations: int = 0  # f(S) evaluated
    table: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=EXPLAIN_SCHEMA))

    @property
    def total(self) -> Decimal:
        return rounded(self.cost, CENTS) - rounded(self.cost_against, CENTS)


def previous_month(month: str) -> str:
    """The month before `month` (YYYY-MM)."""
    year, number = int(month[:4]), int(month[5:7])
    return f"{year - 1:04d}-12" if number == 1 else f"{year:04d}-{number - 1:02d}"


def year_before(month: str) -> str:
    """The same month a year earlier."""
    return f"{int(month[:4]) - 1:04d}{month[4:]}"


def checked_month(text: str, option: str = "--month") -> str:
    """`text` if it is a month YYYY-MM, else a UsageError naming `option`."""
    if not isinstance(text, str) or not _MONTH.fullmatch(text.strip()):
        raise UsageError(f"{option} {text!r}: expected a month as YYYY-MM, e.g. 2026-10")
    return text.strip()


def explain(
    messages: pl.DataFrame | pl.LazyFrame,
    month: str,
    against: str | None = None,
    settings: Settings | None = None,
    *,
    charges: pl.DataFrame | None = None,
    card: pl.DataFrame | None = None,
) -> Explanation:
    """Why `month`'s cost differs from `against`'s (default: the month before): see the module
    docstring. `charges` are the messages' charges billed by date (e.g. `Traffic.charges`), billed
    here if not given; `card` a card from `ratecards.load_card`, else `settings.rate_card`'s."""
    settings = settings or Settings()
    month = checked_month(month, "--month")
    against = checked_month(against, "--against") if against is not None else previous_month(month)
    if against == month:
        raise UsageError(f"--against {against} is the month explained: give another month to compare it with")
    card = load_card(settings.rate_card) if card is None else card
    messages = conform_messages(messages)
    months = {A: against, B: month}
    _require_traffic(messages, months, settings)
    if charges is None:
        last_end = max(_bounds(m)[1] for m in months.values()) + dt.timedelta(days=1)
        charges = engine.bill(messages.filter(pl.col("timestamp") < last_end), settings)
    own = {side: _in_month(charges, months[side], settings) for side in (A, B)}
    rule_sets = {side: settings.rules or _rule_set_of(months[side], settings) for side in (A, B)}

    currency = settings.currency or pricing.choose_currency(
        pl.concat([pricing.billable_keys(pricing.priceable(own[side], settings)) for side in (A, B)]).unique(), card
    )
    cells, unpriced_own, unpriced_in_replays = _replays(messages, own, months, rule_sets, settings.replace(currency=currency), card)
    if not settings.report_unpriced:
        for side in (A, B):
            if unpriced_own[side]:
                pricing.price(own[side], settings.replace(currency=currency), card=card)  # raises MissingRateError naming the first charge

    def value(switched: frozenset[str]) -> Fraction:
        chosen = {factor: (B if factor in switched else A) for factor in FACTORS}
        return _value(cells, chosen)

    values = {frozenset(s): value(frozenset(s)) for size in range(len(FACTORS) + 1) for s in itertools.combinations(FACTORS, size)}
    exact = shapley(values, FACTORS)
    cost_against, cost = _exact_cost(cells[(A, A, A)]), _exact_cost(cells[(B, B, B)])
    total = rounded(cost, CENTS) - rounded(cost_against, CENTS)
    effects = rounded_to_total(exact, total) | {CURRENCY: Decimal(0)}
    exact[CURRENCY] = Fraction(0)
    table = pl.DataFrame(
        {
            "month": [month] * (len(EFFECTS) + 1),
            "against": [against] * (len(EFFECTS) + 1),
            "effect": [*EFFECTS, TOTAL],
            "cost_difference": [effects[e] for e in EFFECTS] + [total],
            "currency": [currency] * (len(EFFECTS) + 1),
        },
        schema=EXPLAIN_SCHEMA,
    )
    return Explanation(
        month=month,
        against=against,
        currency=currency,
        cost=cost,
        cost_against=cost_against,
        effects=effects,
        exact=exact,
        rule_sets=(rule_sets[A], rule_sets[B]),
        charges=(own[A].height, own[B].height),
        users=(own[A]["user_id"].n_unique(), own[B]["user_id"].n_unique()),
        unpriced=(unpriced_own[A], unpriced_own[B]),
        unpriced_in_replays=unpriced_in_replays,
        combinations=len(values),
        table=table,
    )


def _replays(
    messages: pl.DataFrame,
    own: Mapping[str, pl.DataFrame],
    months: Mapping[str, str],
    rule_sets: Mapping[str, str],
    settings: Settings,
    card: pl.DataFrame,
) -> tuple[dict[tuple[str, str, str], dict[tuple[str, str], _Cell]], dict[str, int], int]:
    """Every month's traffic x billed under every month's rules r and priced at every month's card
    k, as cells keyed by (x, r, k); the billable charges without a rate of each month as it was,
    and of the other combinations. A month under a rule set equal to its own is not billed again,
    nor priced again."""
    cells: dict[tuple[str, str, str], dict[tuple[str, str], _Cell]] = {}  # per (market, category)
    unpriced_own, unpriced_in_replays = {A: 0, B: 0}, 0
    for x, r in ((A, A), (B, B), (A, B), (B, A)):  # each month under its own rules first
        if r != x and rule_sets[r] == rule_sets[x]:
            cells.update({(x, r, k): cells[(x, x, k)] for k in (A, B)})
            continue
        billed = own[x] if r == x else _billed_under(messages, months[x], rule_sets[r], settings)
        counts = _counts(billed)
        for k in (A, B):
            on = dt.date.fromisoformat(f"{months[k]}-01")
            at_card = card if k == x else card_in_force_on(card, on)
            # a marketing max price is a price too: at the other month's card, its caps as they stood then
            prices = settings.replace(report_unpriced=True)
            if k != x:
                prices = dataclasses.replace(prices, max_prices=max_prices_in_force_on(settings.max_prices, on))
            full = _costs(billed, prices, at_card)
            listed = _costs(billed, prices, at_card.filter(pl.col("tier_from") == 1))
            if x == r == k:
                unpriced_own[x] = full["unpriced"]
            else:
                unpriced_in_replays += full["unpriced"]
            cells[(x, r, k)] = _cells(counts, full["by_cell"], listed["by_cell"])
    return cells, unpriced_own, unpriced_in_replays


def max_prices_in_force_on(max_prices: Sequence[MaxPrice], on: dt.date) -> tuple[MaxPrice, ...]:
    """The marketing max prices in force on `on` (per WABA and template, the latest `from` not after
    it), made to apply from the first supported date, as `card_in_force_on` does with the card's
    rates: pricing a month's charges "at the other month's card" prices them under the caps of that
    month too, so a max price is part of the rates effect, not of the traffic's."""
    latest: dict[tuple[str, str | None], MaxPrice] = {}
    for cap in max_prices:
        scope = (cap.waba_id, cap.template)
        if cap.from_date <= on and (scope not in latest or cap.from_date >= latest[scope].from_date):
            latest[scope] = cap
    return tuple(dataclasses.replace(cap, from_date=rules.first_supported_date()) for cap in latest.values())


# --- Shapley values and rounding -----------------------------------------------------------------


def shapley(values: Mapping[frozenset[str], Fraction], factors: Sequence[str]) -> dict[str, Fraction]:
    """Each factor's Shapley value of the game `values` (every subset of `factors` -> its value):
    the average over all orders of what adding the factor changed. They sum to
    values[all] - values[none] exactly."""
    n = len(factors)
    weights = [Fraction(math.factorial(size) * math.factorial(n - size - 1), math.factorial(n)) for size in range(n)]
    result = {}
    for factor in factors:
        others = [f for f in factors if f != factor]
        result[factor] = sum(
            (
                weights[size] * (values[frozenset(s) | {factor}] - values[frozenset(s)])
                for size in range(n)
                for s in itertools.combinations(others, size)
            ),
            Fraction(0),
        )
    return result


def rounded_to_total(exact: Mapping[str, Fraction], total: Decimal) -> dict[str, Decimal]:
    """`exact` to cents, half away from zero, then the cents the rounded values miss of `total`
    (the rounded difference of the two months) given one each to the values whose rounding moved
    them furthest the other way (a value that is exactly zero last), ties in `exact`'s order: the
    result sums to `total`."""
    cent = Fraction(1, 10**CENTS)
    cents = {k: _half_away(v / cent) for k, v in exact.items()}
    missing = int(total.scaleb(CENTS)) - sum(cents.values())
    step = 1 if missing > 0 else -1
    # the rounding error each way: exact - rounded, in cents; a value rounded down has room to go up
    # an effect that is exactly zero gets a cent only when no other can take it
    order = sorted(exact, key=lambda k: (exact[k] == 0, -step * (exact[k] / cent - cents[k])))
    if abs(missing) > len(order):  # cannot happen when `exact` sums to the unrounded difference
        raise AssertionError(f"the effects miss the total by {missing} cents")
    for k in order[: abs(missing)]:
        cents[k] += step
    return {k: Decimal(cents[k]).scaleb(-CENTS) for k in exact}


def _half_away(value: Fraction) -> int:
    whole = math.floor(abs(value) + Fraction(1, 2))
    return whole if value >= 0 else -whole


# --- The cost of one combination ----------------------------------------------------------------


@dataclass(frozen=True)
class _Cell:
    charges: int  # n
    outside_windows: int  # nf
    list_cost: Fraction
    cost: Fraction


def _value(cells: Mapping[tuple[str, str, str], Mapping[tuple[str, str], _Cell]], chosen: Mapping[str, str]) -> Fraction:
    """f(S) of the module docstring, for the A/B choice of every factor."""
    rules, rates = chosen[RULES], chosen[RATES]

    def per_cell(factor: str, key: tuple[str, str], measure: Callable[[_Cell], Fraction], defined: Callable[[_Cell], bool]) -> Fraction:
        """`measure` of the cell in the traffic `factor` chooses, else in the other traffic, else 0."""
        for traffic in (chosen[factor], B if chosen[factor] == A else A):
            cell = cells[(traffic, rules, rates)].get(key)
            if cell is not None and defined(cell):
                return measure(cell)
        return Fraction(0)

    volume = sum(c.charges for c in cells[(chosen[VOLUME], rules, rates)].values())
    mixed = cells[(chosen[MIX], rules, rates)]
    size = sum(c.charges for c in mixed.values())
    total = Fraction(0)
    for key, cell in mixed.items():
        if not cell.charges:
            continue
        share = Fraction(cell.charges, size)
        outside = per_cell(FREE_WINDOWS, key, lambda c: Fraction(c.outside_windows, c.charges), lambda c: c.charges > 0)
        list_cost = per_cell(VOLUME, key, lambda c: c.list_cost / c.outside_windows, lambda c: c.outside_windows > 0)
        discount = per_cell(VOLUME_TIERS, key, lambda c: (c.list_cost - c.cost) / c.outside_windows, lambda c: c.outside_windows > 0)
        total += volume * share * outside * (list_cost - discount)
    return total


def _exact_cost(cells: Mapping[tuple[str, str], _Cell]) -> Decimal:
    total = sum((c.cost for c in cells.values()), Fraction(0))
    scale = pricing.COST_SCALE  # costs are decimals of this scale: the sum is one too, exactly
    return Decimal(total.numerator * (10**scale // total.denominator)).scaleb(-scale)


def _counts(charges: pl.DataFrame) -> pl.DataFrame:
    return charges.group_by(*CELL).agg(
        charges=pl.len().cast(pl.Int64), outside_windows=(~pl.col("pricing_type").is_in(WINDOW_FREE)).sum().cast(pl.Int64)
    )


def _costs(charges: pl.DataFrame, settings: Settings, card: pl.DataFrame) -> dict[str, object]:
    """The charges' cost per cell at `card` (unpriced charges cost nothing) and how many billable
    charges have no rate."""
    partials = pricing.cost_partials_of_charges(charges, settings, card=card)
    by_cell = partials.filter("priced").group_by(*CELL).agg(pl.col("cost").sum())
    unpriced = int(partials.filter(~pl.col("priced"))["billable_charges"].sum() or 0)
    return {"by_cell": by_cell, "unpriced": unpriced}


def _cells(counts: pl.DataFrame, costs: pl.DataFrame, listed: pl.DataFrame) -> dict[tuple[str, str], _Cell]:
    joined = counts.join(costs, on=list(CELL), how="left").join(listed.rename({"cost": "list_cost"}), on=list(CELL), how="left")
    return {
        (market, category): _Cell(n, nf, _fraction(list_cost), _fraction(cost))
        for market, category, n, nf, cost, list_cost in joined.select(*CELL, "charges", "outside_windows", "cost", "list_cost").iter_rows()
    }


def _fraction(value: Decimal | None) -> Fraction:
    return Fraction(value) if value is not None else Fraction(0)


# --- Months and billing ---------------------------------------------------------------------------


def _bounds(month: str) -> tuple[dt.datetime, dt.datetime]:
    """The month as UTC instants, widened by a day each side for the WABAs' time zones."""
    first = dt.datetime.fromisoformat(f"{month}-01T00:00:00+00:00")
    following = (first.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    return first - dt.timedelta(days=1), following + dt.timedelta(days=1)


def _local_month(settings: Settings, column: str) -> pl.Expr:
    return local_time(settings, column).dt.strftime("%Y-%m")


def _in_month(charges: pl.DataFrame, month: str, settings: Settings) -> pl.DataFrame:
    """The charges that start in `month` in their WABA's time zone (billing-rules.md §2 Months)."""
    start, end = _bounds(month)
    near = charges.filter((pl.col("started_at") >= start) & (pl.col("started_at") < end))
    return near.filter(_local_month(settings, "started_at") == month)


def months_with_traffic(messages: pl.DataFrame, settings: Settings) -> set[str]:
    """The months (YYYY-MM, in each WABA's time zone) that `messages` have a message in."""
    return set(messages.select(_local_month(settings, "timestamp").unique()).to_series().drop_nulls().to_list())


def _require_traffic(messages: pl.DataFrame, months: Mapping[str, str], settings: Settings) -> None:
    present = months_with_traffic(messages, settings)
    for side, option in ((B, "--month"), (A, "--against")):
        if months[side] not in present:
            held = f"it holds {min(present)} to {max(present)}" if present else "it holds no messages"
            raise UsageError(f"{option} {months[side]}: the traffic has no messages in that month ({settings.timezone}); {held}")


def _rule_set_of(month: str, settings: Settings) -> str:
    period = settings.period_on(dt.date.fromisoformat(f"{month}-01"))
    if period is None:
        raise UsageError(f"{month}: no rule set is in force then (the first starts {settings.rule_book.first_supported_date()})")
    return period.name


def lookback(settings: Settings) -> dt.timedelta:
    """How far before a month its messages are billed from under other rules: the longest free
    entry point offer and window, conversation or customer service window of the rules, and a day."""
    longest = max(
        max(p.fep_offer_window + max(settings.fep_window or p.fep_window, p.ctwa_fep_window_up_to), p.conversation_window, p.customer_service_window)
        for p in settings.rule_book.periods
    )
    return longest + dt.timedelta(days=1)


def _billed_under(messages: pl.DataFrame, month: str, rule_set: str, settings: Settings) -> pl.DataFrame:
    """The charges of `month` when its traffic is billed under `rule_set`."""
    start, end = _bounds(month)
    window = messages.filter((pl.col("timestamp") >= start - lookback(settings)) & (pl.col("timestamp") < end))
    return _in_month(engine.bill(window, settings.replace(rules=rule_set)), month, settings)
