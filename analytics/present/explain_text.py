"""What `wa-analytics explain` prints, and the report's sentence: why one month cost more or less than another.

Text for people, so it is in the presentation layer; `analytics.whatif.explain` computes the
effects (`Explanation`), this module says them in a sentence.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

from analytics.core.errors import UsageError
from analytics.core.money import money, rounded, signed_money
from analytics.core.text import plural
from analytics.whatif.explain import CURRENCY, EFFECTS, RULES, Explanation, explain, months_with_traffic, previous_month, year_before

if TYPE_CHECKING:
    from analytics.present.report import NotShown
    from analytics.present.report import Traffic as ReportTraffic
    from analytics.settings import Settings

# How each effect reads in a sentence.
EFFECT_WORDS = {
    "volume": "volume",
    "mix": "mix of markets and categories",
    "rates": "rates",
    "rules": "rules",
    "free_windows": "free windows",
    "volume_tiers": "volume tiers",
    "currency": "currency",
}


def sentence(explained: Explanation) -> str:
    """One paragraph: the two months' costs, the difference, and each effect, largest first."""
    unit = f" {explained.currency}" if explained.currency else ""
    total = explained.total
    share = f" ({total / _rounded(explained.cost_against):+.1%})" if _rounded(explained.cost_against) else ""
    text = (
        f"{explained.month} cost {money(explained.cost)}{unit} against {money(explained.cost_against)}{unit} in "
        f"{explained.against}: {signed_money(total)}{unit}{share}."
    )
    moved = sorted(((e, v) for e, v in explained.effects.items() if v and e != CURRENCY), key=lambda item: (-abs(item[1]), EFFECTS.index(item[0])))
    if not moved:
        return text + " No effect moved it by a cent."
    parts = [f"{EFFECT_WORDS[e]} {signed_money(v)}" + (_rules_words(explained) if e == RULES else "") for e, v in moved]
    text += f" By effect, largest first: {', '.join(parts)}."
    largest, value = moved[0]
    direction = "raised" if value > 0 else "lowered"
    text += f" The {EFFECT_WORDS[largest]} {direction} it most."
    before, after = explained.charges
    users_before, users_after = explained.users
    text += f" Charges {before:,} → {after:,}, users with a charge {users_before:,} → {users_after:,}."
    return text


def format_explanation(explained: Explanation) -> str:
    """What `wa-analytics explain` prints on stderr: the sentence, one line per effect, and notes."""
    unit = f" {explained.currency}" if explained.currency else ""
    lines = [sentence(explained)]
    width = max(len(e) for e in EFFECTS)
    lines += [f"  {e:<{width}}  {signed_money(explained.effects[e]):>12}{unit}" for e in EFFECTS]
    lines.append(f"  {'total':<{width}}  {signed_money(explained.total):>12}{unit}")
    lines.append(
        f"  each effect is its Shapley value over {plural(explained.combinations, 'combination')} of the two months' "
        "traffic, rules and card (README: explain); the rows add up to the total"
    )
    if explained.unpriced_in_replays:
        lines.append(
            f"  note: {explained.unpriced_in_replays:,} billable charges had no rate in a combination that prices a month at "
            "the other month's card; they cost nothing there"
        )
    if any(explained.unpriced):
        before, after = explained.unpriced
        lines.append(
            f"  note: billable charges without a rate in the card, left out of the cost: {before:,} in {explained.against}, "
            f"{after:,} in {explained.month}"
        )
    return "\n".join(lines)


def _rules_words(explained: Explanation) -> str:
    before, after = explained.rule_sets
    return f" ({before} → {after})" if before != after else ""


def _rounded(value: Decimal) -> Decimal:
    return rounded(value, 2)


def for_report(traffic: ReportTraffic, settings: Settings, against: str | None = None) -> Explanation | NotShown:
    """The report month against `against` (default: the month before; `explain.explain` of the
    report's prepared traffic and charges, priced under `settings`), or `NotShown` saying why not:
    an input that starts after that month has nothing to compare with, and that is a report, not a
    failure."""
    from analytics.present.report import NotShown

    month = traffic.period.month
    against = against or previous_month(month)
    if against not in months_with_traffic(traffic.messages, settings):
        return NotShown(f"No comparison with {against}: the input has no messages in that month.")
    try:
        return explain(traffic.messages, month, against, settings, charges=traffic.charges)
    except UsageError as error:
        return NotShown(f"No comparison with {against}: {error}.")


def report_text(traffic: ReportTraffic, settings: Settings, against_previous: Explanation | NotShown) -> str:
    """What the report says under the waterfall: the report month against the month before
    (`against_previous`, from `for_report`), then against the same month a year earlier where the
    history has it (or why not)."""
    a_year_before = for_report(traffic, settings, year_before(traffic.period.month))
    return "\n\n".join(sentence(e) if isinstance(e, Explanation) else e.reason for e in (against_previous, a_year_before))
