"""The invoice-style summary `wa-analytics costs` prints: per month, WABA and number, by category and market.

Text for people, so it is in the presentation layer; `analytics.price.pricing` computes the
figures it is written from (`cost_partials`: sums per month, WABA, number, market, category, rule
set and rate trust, exact) and the same figures for machines (`invoice`, `costs`).
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

import polars as pl

from analytics.core.money import money
from analytics.core.text import aligned
from analytics.price.pricing import cost_partials
from analytics.settings import Settings
from analytics.terms import ratecards, rules

_CATEGORY_COLUMNS = (
    "marketing",
    "utility",
    rules.AUTH,
    rules.AUTH_INTERNATIONAL,
    "service",
    ratecards.GROUP_MARKETING,
    ratecards.GROUP_UTILITY,
    ratecards.GROUP_SERVICE,
    ratecards.META_BUSINESS_AGENT,
    ratecards.GENERAL_PURPOSE_AI,
)
ESTIMATED_MARK = "~"  # an amount that holds charges priced at assumed tokens
AT_MOST_MARK = "≤"  # an amount that holds charges priced under a marketing max price


def format_invoice(priced: pl.DataFrame, settings: Settings | None = None, *, card_name: str = "", rule_book: rules.RuleBook | None = None) -> str:
    """An invoice-style summary for stderr: per month a line per WABA and business number with
    charges, billable charges, cost by category and total, then cost by market; a grand total,
    the share of cost by rate trust, unpriced charges, and a warning for cost that depends on a
    rule set whose rules are not all `meta_documented` in `rule_book` (default: the shipped rules)."""
    return format_invoice_from_partials(cost_partials(priced), settings, card_name=card_name, rule_book=rule_book)


def format_invoice_from_partials(
    partials: pl.DataFrame, settings: Settings | None = None, *, card_name: str = "", rule_book: rules.RuleBook | None = None
) -> str:
    """`format_invoice` of the charges whose `cost_partials` these are (of all parts, concatenated)."""
    settings = settings or Settings()
    currency = partials["currency"].drop_nulls().first() if partials.height else None
    unit = currency or "(no currency)"
    with_cost = partials.with_columns(cost=pl.col("cost").fill_null(Decimal(0)))
    billed = set(partials.filter("billable")["category"].to_list())
    categories = [c for c in _CATEGORY_COLUMNS if c in billed]
    categories += sorted(billed - set(categories))
    header = ["", "charges", "billable", *categories, "total"]
    lines = [f"Costs in {unit}{f' from {card_name}' if card_name else ''}" + _markup_text(settings) + ":"]
    for month in sorted(partials["month"].unique().to_list()):
        in_month = with_cost.filter(pl.col("month") == month)
        table: list[list[str]] = [[month, *header[1:]]]
        for waba_id in sorted(in_month["waba_id"].unique().to_list()):
            table.append([f"  WABA {waba_id}", *([""] * (len(header) - 1))])
            of_waba = in_month.filter(pl.col("waba_id") == waba_id)
            for phone in sorted(of_waba["business_phone"].unique().to_list()):
                table.append([f"    number {phone}", *_amounts(of_waba.filter(pl.col("business_phone") == phone), categories)])
        table.append(["  month total", *_amounts(in_month, categories)])
        lines += aligned(table)
        by_market = in_month.filter("billable").group_by("market").agg(pl.col("cost").sum()).sort("cost", "market", descending=[True, False])
        if by_market.height:
            lines.append("  by market: " + ", ".join(f"{r['market']} {money(r['cost'])}" for r in by_market.iter_rows(named=True)))
    total = with_cost["cost"].sum() if partials.height else Decimal(0)
    charged = int(partials["charges"].sum()) if partials.height else 0
    billable = int(partials["billable_charges"].sum()) if partials.height else 0
    lines.append(
        f"Total: {charged:,} charges, {billable:,} billable, {money(total)} {unit}"
        + (f" (markup {money(partials['markup'].sum())})" if settings.has_markup and charged else "")
    )
    lines += _trust_lines(partials, total)
    lines += _estimate_lines(partials, unit, settings)
    lines += _unpriced_lines(partials)
    lines += _reported_rule_lines(with_cost, total, unit, rule_book or rules.shipped())
    lines.append("Amounts are exact sums rounded half away from zero to cents; a line may differ from a total by a cent.")
    return "\n".join(lines)


def _markup_text(settings: Settings) -> str:
    if not settings.has_markup:
        return ""
    return f", with a markup of {settings.markup_percent}% + {settings.markup_per_charge} per billable charge"


def _amounts(partials: pl.DataFrame, categories: Sequence[str]) -> list[str]:
    billable = partials.filter("billable")
    by_category = {
        category: (cost, estimated, at_most)
        for category, cost, estimated, at_most in billable.group_by("category")
        .agg(pl.col("cost").sum(), pl.col("estimated_charges").sum(), pl.col("at_most_charges").sum())
        .iter_rows()
    }
    return [
        f"{int(partials['charges'].sum()):,}",
        f"{int(billable['charges'].sum()):,}",
        *(_marked(*by_category.get(c, (Decimal(0), 0, 0))) for c in categories),
        _marked(billable["cost"].sum(), int(billable["estimated_charges"].sum()), int(billable["at_most_charges"].sum())),
    ]


def _marked(cost: Decimal, estimated: int, at_most: int) -> str:
    """An amount, with `ESTIMATED_MARK` if it holds an estimate and `AT_MOST_MARK` if an upper bound."""
    return (ESTIMATED_MARK if estimated else "") + (AT_MOST_MARK if at_most else "") + money(cost)


def _estimate_lines(partials: pl.DataFrame, unit: str, settings: Settings) -> list[str]:
    """What of the total is an estimate (Meta Business Agent charges whose tokens are not known) and
    what an upper bound (charges under a marketing max price)."""
    lines = []
    estimated = partials.filter(pl.col("estimated_charges") > 0)
    if estimated.height:
        lines.append(
            f"{ESTIMATED_MARK} Estimated: {int(estimated['estimated_charges'].sum()):,} per-token charges (Meta Business Agent) "
            f"without their tokens are priced at {settings.agent_tokens_per_message:,} tokens each (agent_tokens_per_message): "
            f"{money(estimated['estimated_cost'].sum())} {unit} of the total is an estimate."
        )
    capped = partials.filter(pl.col("at_most_charges") > 0)
    if capped.height:
        lines.append(
            f"{AT_MOST_MARK} At most: {int(capped['at_most_charges'].sum()):,} marketing charges under a max price are priced at "
            f"min(list rate, max price): {money(capped['at_most_cost'].sum())} {unit} of the total is an upper bound (Meta may charge less)."
        )
    return lines


def _trust_lines(partials: pl.DataFrame, total: Decimal) -> list[str]:
    paid = partials.filter(pl.col("billable") & pl.col("priced"))
    if paid.height == 0 or not total:
        return []
    shares = paid.group_by("rate_trust").agg(pl.col("cost").sum()).sort("rate_trust", nulls_last=True)
    parts = []
    for trust, cost in shares.iter_rows():
        label = f"trust {trust}" if trust else "no trust rating"
        parts.append(f"{label} {Decimal(cost) / Decimal(total):.1%}")
    return ["Cost by rate trust (data/rate_cards/README.md: A Meta's CSV, B transcription, C secondary, D derived): " + ", ".join(parts)]


def _unpriced_lines(partials: pl.DataFrame) -> list[str]:
    unpriced = partials.filter(pl.col("billable") & pl.col("priced").not_())
    if unpriced.height == 0:
        return []
    groups = unpriced.group_by("month", "market", "category").agg(pl.col("charges").sum()).sort("month", "market", "category")
    listed = ", ".join(f"{m} {market} {c} {n:,}" for m, market, c, n in groups.head(12).iter_rows())
    more = f", ... ({groups.height - 12} more)" if groups.height > 12 else ""
    return [f"Unpriced: {int(unpriced['charges'].sum()):,} billable charges have no rate in the card and are not in the total: {listed}{more}"]


def _reported_rule_lines(partials: pl.DataFrame, total: Decimal, unit: str, book: rules.RuleBook) -> list[str]:
    reported = sorted({r.name for r in book.periods if r.status != "meta_documented"})
    depends = partials.filter(pl.col("billable") & pl.col("rule_set").is_in(reported))
    if depends.height == 0:
        return []
    cost = depends["cost"].sum()
    share = f" ({Decimal(cost) / Decimal(total):.1%} of the total)" if total else ""
    names = ", ".join(sorted(set(depends["rule_set"].to_list())))
    return [
        f"Warning: {money(cost)} {unit}{share} is for {int(depends['charges'].sum()):,} billable charges under rule set {names}, "
        "whose rules are not all read on Meta's own pages (data/rules/rule_sets.toml `status`): verify before relying on it."
    ]
