"""Money below every stage: how many decimals an amount has, how it is rounded, how people read it.

Costs are exact decimals everywhere (`analytics.price.pricing`): rates have at most
`ratecards.RATE_SCALE` decimals, markups theirs, and a cost is rounded once, at the end, half away
from zero — in Polars (`HALF_AWAY_FROM_ZERO`, the `mode` of `Expr.round`) as in Python
(`rounded`: `decimal.ROUND_HALF_UP` is half away from zero). What is printed for people is rounded
to cents with thousands separators (`money`).
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

HALF_AWAY_FROM_ZERO = "half_away_from_zero"  # Polars' rounding mode of every cost


def decimal_places(number: Decimal) -> int:
    """How many decimals `number` is written with: 0.0245 has 4, 12 has 0 (a rate's or markup's scale)."""
    return -number.as_tuple().exponent  # type: ignore[operator,return-value]


def rounded(value: Decimal, places: int) -> Decimal:
    """`value` to `places` decimals, half away from zero."""
    return value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)


def money(value: object) -> str:
    """An amount to the cent, half away from zero, with thousands separators; None is 0.00."""
    amount = Decimal(0) if value is None else Decimal(value)  # type: ignore[arg-type]
    return f"{rounded(amount, 2):,.2f}"


def signed_money(value: object) -> str:
    """`money` with its sign always written: +1.50, -0.20."""
    amount = Decimal(value)  # type: ignore[arg-type]
    return ("+" if amount >= 0 else "-") + money(abs(amount))
