"""Tables for people: a Polars frame shown as an HTML table in a report or a notebook.

`table(frame, money=[...])` returns a `Table`, which Jupyter (and so the HTML report) shows through
`_repr_html_`: a real `<table>`, column names in words, numbers right-aligned with thousands
separators, money columns with their currency and two decimals, text left-aligned and escaped.
Its plain-text form (`repr`, the `text/plain` of the notebook output) is the frame as CSV with
every value exact: what nbval compares in a checked cell and what a test reads back, never what the
report page shows (the renderer prefers `text/html`).

Named choices (README: "The monthly report"):
- money is shown as the ISO code before the amount, `USD 1,234.57`, to the cent, half away from
  zero (`analytics.core.money`, as the invoice); the exact value stays in the plain text;
- a `signed` money column (a difference) always shows its sign: `+USD 40.61`, `-USD 1.16`;
- when money columns are given, the `currency` column is not shown (each amount carries it); a
  row without a currency shows the bare amount;
- a null is shown as an empty cell; other floats with up to four decimals, trailing zeros dropped
  (`0.0795`, `12.5`).
"""

from __future__ import annotations

import decimal
import html
from collections.abc import Sequence
from dataclasses import dataclass, field

import polars as pl

from analytics.core import money as core_money

CURRENCY = "currency"
FLOAT_DECIMALS = 4
# Words for column names that a title-cased name would get wrong.
HEADINGS: dict[str, str] = {"rule_set": "Rule set", "len": "Items", "cost_difference": "Cost against baseline"}


@dataclass(frozen=True)
class Table:
    """A frame to show: `money` names the columns that are amounts in the row's `currency`, `signed`
    those of them that are differences."""

    frame: pl.DataFrame
    money: tuple[str, ...] = ()
    signed: tuple[str, ...] = ()
    caption: str | None = None
    headings: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = [c for c in (*self.money, *self.signed) if c not in self.frame.columns]
        if missing:
            raise ValueError(f"table: money column(s) {', '.join(missing)} not in the frame's columns {', '.join(self.frame.columns)}")

    def __repr__(self) -> str:
        return self.frame.write_csv()

    def _repr_html_(self) -> str:
        return to_html(self)


def table(
    frame: pl.DataFrame,
    *,
    money: Sequence[str] = (),
    signed: Sequence[str] = (),
    caption: str | None = None,
    headings: dict[str, str] | None = None,
) -> Table:
    """`frame` as a table for people (see the module's docstring): `money` columns are amounts in
    the row's currency, `signed` ones differences (money too); `headings` overrides the words of
    some column names."""
    return Table(frame, tuple(dict.fromkeys((*money, *signed))), tuple(signed), caption, dict(headings or {}))


def to_html(shown: Table) -> str:
    """The `<table>` of a Table: `class="num"` on the cells that are numbers (right-aligned by the
    report's style sheet, and by the inline style for a notebook without it)."""
    frame = shown.frame
    columns = [c for c in frame.columns if not (shown.money and c == CURRENCY)]
    numeric = {c for c in columns if frame.schema[c].is_numeric()}
    words = HEADINGS | shown.headings
    head = "".join(f'<th{_NUMBER if c in numeric else _TEXT} scope="col">{html.escape(words.get(c, heading(c)))}</th>' for c in columns)
    currencies = frame[CURRENCY].to_list() if CURRENCY in frame.columns else [None] * frame.height
    body = []
    for row, currency in zip(frame.select(columns).iter_rows(), currencies, strict=True):
        cells = []
        for column, value in zip(columns, row, strict=True):
            if column in shown.money:
                text = money(value, currency, signed=column in shown.signed)
            else:
                text = number(value) if column in numeric else _plain(value)
            cells.append(f"<td{_NUMBER if column in numeric else _TEXT}>{html.escape(text)}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    caption = f"<caption>{html.escape(shown.caption)}</caption>" if shown.caption else ""
    return f'<table class="figures">{caption}<thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


_NUMBER = ' class="num" style="text-align: right"'
_TEXT = ' style="text-align: left"'


def heading(column: str) -> str:
    """A column name in words: `billable_charges` is `Billable charges`."""
    return column.replace("_", " ").capitalize()


def number(value: object) -> str:
    """A number with thousands separators: `12,345`, `0.0795`, `-1,160.5`; empty for null."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    exact = decimal.Decimal(str(value)).quantize(decimal.Decimal(1).scaleb(-FLOAT_DECIMALS), rounding=decimal.ROUND_HALF_EVEN)
    text = f"{exact:,f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def money(value: object, currency: str | None, *, signed: bool = False) -> str:
    """An amount with its currency, to the cent (`analytics.core.money`): `USD 1,234.57`,
    `USD -1.16`, or `signed`: `+USD 1.50`, `-USD 1.16`, `USD 0.00`; empty for null."""
    if value is None:
        return ""
    exact = decimal.Decimal(str(value))
    amount = core_money.money(abs(exact) if signed else exact)
    shown = f"{currency} {amount}" if currency else amount
    if not signed or amount == core_money.money(0):
        return shown
    return ("+" if exact > 0 else "-") + shown


def _plain(value: object) -> str:
    return "" if value is None else str(value)
