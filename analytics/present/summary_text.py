"""The paragraph at the top of the monthly report: the month's cost, the change against the month
before, what drove it most, and where the month stands against its budget.

`month_summary` takes the cost rows of `pricing.costs` (exact decimals, `priced` marking the
charges the card has a rate for) and two optional results that other parts of the package compute:

- `drivers`: the change in cost against the previous month split by effect (`volume`, `mix`,
  `rates`, `rules`, `free_windows`, `volume_tiers`, `currency`: `analytics.whatif.explain`), one
  amount per effect in the report's currency; the sentence names the largest by size;
- `budget`: the month's budget in the report's currency (the budgets of the settings); the
  sentence says how much of it the month used, or by how much it went over.

Without them, those two sentences are left out: the paragraph says only what the costs say.
Named choices: amounts to the cent as the invoice prints them (`analytics.core.money`); the change
is given in money and as a share of the previous month's cost; a month with costs in more than one
currency gets one sentence per currency and no change (the amounts do not add up).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

import polars as pl

from analytics.core.money import money, rounded
from analytics.core.text import plural

# How an effect of the explanation reads in a sentence: "the biggest driver was {words}".
EFFECT_WORDS: dict[str, str] = {
    "volume": "volume (more or fewer billable charges)",
    "mix": "mix (the share of each category and market)",
    "rates": "rates (the rate card's prices)",
    "rules": "rules (Meta's billing rules in force)",
    "free_windows": "free windows (free entry points and customer service windows)",
    "volume_tiers": "volume tiers (the card's tier discounts)",
    "currency": "currency (the exchange into the report's currency)",
}


def previous_month(month: str) -> str:
    """The `YYYY-MM` before `month`."""
    year, number = int(month[:4]), int(month[5:7])
    return f"{year - 1:04d}-12" if number == 1 else f"{year:04d}-{number - 1:02d}"


def month_summary(costs: pl.DataFrame, month: str, *, drivers: Mapping[str, Decimal] | None = None, budget: Decimal | None = None) -> str:
    """One paragraph on `month` (YYYY-MM) from the cost rows of `pricing.costs` (see the module's
    docstring for `drivers` and `budget`)."""
    totals = _totals(costs, month)
    before = _totals(costs, previous_month(month))
    if not totals:
        return f"No billable charges in {month}."
    sentences = []
    if len(totals) > 1:
        for currency, (cost, billable, _) in sorted(totals.items()):
            sentences.append(f"In {month} the {plural(billable, 'billable charge')} in {currency} cost {currency} {money(cost)}.")
    else:
        ((currency, (cost, billable, _)),) = totals.items()
        sentences.append(f"In {month} the traffic cost {currency} {money(cost)} ({plural(billable, 'billable charge')})")
        sentences[-1] += _change(cost, currency, before.get(currency), previous_month(month))
        if drivers:
            sentences.append(_driver(drivers, currency))
        if budget is not None:
            sentences.append(_budget(cost, budget, currency))
    unpriced = sum(u for _, _, u in totals.values())
    if unpriced:
        sentences.append(f"{plural(unpriced, 'billable charge')} had no rate in the card and are not in the cost.")
    return " ".join(sentences)


def _totals(costs: pl.DataFrame, month: str) -> dict[str, tuple[Decimal, int, int]]:
    """Per currency: the priced cost, the billable charges and the unpriced ones of `month`."""
    in_month = costs.filter((pl.col("month") == month) & (pl.col("billable_charges") > 0))
    summed = in_month.group_by("currency").agg(
        cost=pl.col("cost").filter(pl.col("priced")).sum(),
        billable=pl.col("billable_charges").sum(),
        unpriced=pl.col("billable_charges").filter(~pl.col("priced")).sum(),
    )
    return {row["currency"]: (Decimal(row["cost"] or 0), row["billable"], row["unpriced"]) for row in summed.iter_rows(named=True)}


def _change(cost: Decimal, currency: str, before: tuple[Decimal, int, int] | None, month_before: str) -> str:
    """The change against the month before, or why there is none to give; a month before whose
    cost leaves unpriced charges out says so."""
    if before is None or before[1] == 0:
        return f", and nothing was billable in {currency} in {month_before} to compare it with."
    previous, _, unpriced = before
    if previous == 0 and unpriced:
        return f", and none of the billable charges of {month_before} had a rate in the card to compare it with."
    left_out = f" The cost of {month_before} leaves out {plural(unpriced, 'unpriced billable charge')}." if unpriced else ""
    difference = rounded(cost, 2) - rounded(previous, 2)  # what the two invoices show, as `explain`'s total
    if difference == 0:
        return f", the same as in {month_before}.{left_out}"
    share = f" ({abs(difference) / previous:.1%})" if previous else ""
    direction = "more" if difference > 0 else "less"
    return f", {currency} {money(abs(difference))}{share} {direction} than in {month_before} ({currency} {money(previous)}).{left_out}"


def _driver(drivers: Mapping[str, Decimal], currency: str) -> str:
    effect, amount = max(drivers.items(), key=lambda item: (abs(item[1]), item[0]))
    words = EFFECT_WORDS.get(effect, effect.replace("_", " "))
    sign = "+" if amount >= 0 else "-"
    return f"The biggest driver of the change was {words}: {sign}{currency} {money(abs(amount))}."


def _budget(cost: Decimal, budget: Decimal, currency: str) -> str:
    if budget <= 0:
        return f"The month's budget is {currency} {money(budget)}: every billed cent is over it."
    if cost > budget:
        return f"That is {currency} {money(cost - budget)} over the month's budget of {currency} {money(budget)} ({cost / budget:.0%} of it)."
    return f"That is {cost / budget:.0%} of the month's budget of {currency} {money(budget)}, {currency} {money(budget - cost)} left."
