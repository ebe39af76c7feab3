"""Money below every stage: amounts as people read them.

Costs are exact decimals everywhere (`analytics.price.pricing`); only what is printed for people
is rounded to cents, half away from zero (`decimal.ROUND_HALF_UP` is half away from zero), with
thousands separators.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

CENT = Decimal("0.01")


def money(value: object) -> str:
    """An amount to the cent, half away from zero, with thousands separators; None is 0.00."""
    amount = Decimal(0) if value is None else Decimal(value)  # type: ignore[arg-type]
    return f"{amount.quantize(CENT, rounding=ROUND_HALF_UP):,.2f}"


def signed_money(value: object) -> str:
    """`money` with its sign always written: +1.50, -0.20."""
    amount = Decimal(value)  # type: ignore[arg-type]
    return ("+" if amount >= 0 else "-") + money(abs(amount))
