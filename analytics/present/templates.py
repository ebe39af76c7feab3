"""Cost by template, and templates billed in another category than the one written.

Where the input names templates (a `template_name` column, or a send log / template list with
webhooks), each charge carries the name of the template that opened it (`template_name` of
contracts.md §2's extensions). Two answers come from that:

1. `cost_by_template`: per month (the charge's month in its WABA's time zone), template and
   category, the charges, billable charges and cost of the charges each template opened. Charges
   no template opened (service, or a template the input does not name) are left out and counted
   by `unnamed_template_charges`.

2. `recategorised`: templates billed in another category than the one the input gives them (the
   *intended* category, `template_category` of contracts.md §1: what the business wrote, the send
   log or the template list). The *billed* category of a message is, first that says:
   - Meta's `pricing.category` on its status webhook, where reconciliation finds it differs
     (`analytics.reconcile.matching`, reason `category_changed`, message level; a category that
     is no template category, such as `service`, is not a recategorisation and is left to the
     reconciliation);
   - else the category of the latest `template_category_update` webhook of its template name
     (`analytics.read.template_updates`) in force at the message's time. [choice] Canonical
     messages carry no language, so an update of any language of the name applies; an update
     names its WABA, and applies to messages of that WABA (or of the `default` WABA, when the
     input names none).
   [choice] `marketing_lite` and `marketing` are one category here, as Meta bills them alike
   (the rules' `marketing_lite_billed_as`).

   What the difference cost is found by billing the traffic again with the billed categories and
   pricing it with the same card and currency (`analytics.bill.charges`, `analytics.price.pricing`,
   as the what-ifs do, never by scaling a total): `cost_as_intended` and `cost_as_billed` are the
   costs of the charges the recategorised messages open in each. [choice] Knock-on effects on
   other messages (a volume tier reached earlier, a conversation another message no longer
   opens) are not attributed to a template.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import polars as pl

from analytics.bill import charges as engine
from analytics.core.schema import TEMPLATE, TEMPLATE_CATEGORIES
from analytics.core.times import local_time
from analytics.price import pricing
from analytics.read.template_updates import read_category_updates
from analytics.reconcile import matching
from analytics.reconcile.outcomes import CATEGORY_CHANGED, MESSAGE
from analytics.settings import Settings

PRICING_OBJECT = "pricing_object"  # evidence: Meta's pricing.category on the message's status webhook
CATEGORY_UPDATE = "template_category_update"  # evidence: the template's category update in force at send time
SAME_AS = {"marketing_lite": "marketing"}  # billed alike (module docstring)
MONEY = pricing.COST_DTYPE

TEMPLATE_COST_SCHEMA: dict[str, pl.DataType] = {
    "month": pl.String(),
    "template_name": pl.String(),
    "category": pl.String(),
    "charges": pl.Int64(),
    "billable_charges": pl.Int64(),
    "cost": MONEY,
    "currency": pl.String(),
}
BILLED_CATEGORY_SCHEMA: dict[str, pl.DataType] = {
    "message_id": pl.String(),
    "billed_category": pl.String(),
    "evidence": pl.String(),
}
RECATEGORISED_SCHEMA: dict[str, pl.DataType] = {
    "month": pl.String(),
    "template_name": pl.String(),
    "intended_category": pl.String(),
    "billed_category": pl.String(),
    "evidence": pl.String(),
    "messages": pl.Int64(),
    "cost_as_intended": MONEY,
    "cost_as_billed": MONEY,
    "cost_difference": MONEY,
    "unpriced_charges": pl.Int64(),  # billable charges of either side the card has no rate for
    "currency": pl.String(),
}


def with_template_names(priced: pl.DataFrame, messages: pl.DataFrame | None) -> pl.DataFrame:
    """`priced` with each charge's `template_name` taken from its opening message where the charge
    has none (charges billed before the engines carried the name)."""
    if messages is None or "template_name" not in messages.columns:
        return priced
    names = messages.filter(pl.col("template_name").is_not_null()).select("message_id", _name="template_name").unique("message_id", keep="first")
    return (
        priced.join(names, left_on="opening_message_id", right_on="message_id", how="left", maintain_order="left")
        .with_columns(template_name=pl.coalesce("template_name", "_name"))
        .drop("_name")
    )


def cost_by_template(priced: pl.DataFrame, messages: pl.DataFrame | None = None) -> pl.DataFrame:
    """Per month, template and category: charges, billable charges and cost (`TEMPLATE_COST_SCHEMA`),
    most expensive first within a month. Unpriced charges count, without a cost. `messages` name
    the templates of charges that carry no name (`with_template_names`)."""
    named = with_template_names(priced, messages).filter(pl.col("template_name").is_not_null())
    return (
        named.group_by("month", "template_name", "category", "currency")
        .agg(
            charges=pl.len().cast(pl.Int64),
            billable_charges=pl.col("billable").sum().cast(pl.Int64),
            cost=pl.col("cost").sum().cast(MONEY),
        )
        .select(list(TEMPLATE_COST_SCHEMA))
        .sort(["month", "cost", "template_name", "category"], descending=[False, True, False, False], nulls_last=True)
    )


def top_templates(by_month: pl.DataFrame, month: str, top: int = 10) -> pl.DataFrame:
    """The `top` templates by cost in `month` (all categories of a template summed)."""
    return (
        by_month.filter(pl.col("month") == month)
        .group_by("template_name", "currency")
        .agg(pl.col("charges").sum(), pl.col("billable_charges").sum(), pl.col("cost").sum().cast(MONEY))
        .sort(["cost", "template_name"], descending=[True, False], nulls_last=True)
        .head(top)
        .select("template_name", "charges", "billable_charges", "cost", "currency")
    )


def unnamed_template_charges(priced: pl.DataFrame, messages: pl.DataFrame | None = None) -> int:
    """Charges of template categories whose opening message names no template."""
    template_families = [c for c in TEMPLATE_CATEGORIES if c != "marketing_lite"] + ["authentication_international"]
    return with_template_names(priced, messages).filter(pl.col("template_name").is_null() & pl.col("category").is_in(template_families)).height


# --- recategorised templates -----------------------------------------------------------------------


def billed_categories(messages: pl.DataFrame, reconciliation_rows: pl.DataFrame | None, updates: pl.DataFrame | None) -> pl.DataFrame:
    """Per outbound template message whose billed category is known to differ from its intended
    one: `message_id`, `billed_category`, `evidence` (BILLED_CATEGORY_SCHEMA; module docstring)."""
    templates = messages.filter((pl.col("direction") == "outbound") & (pl.col("message_type") == TEMPLATE)).select(
        "message_id", "timestamp", "waba_id", "template_name", intended=_family(pl.col("template_category"))
    )
    found = [pl.DataFrame(schema=BILLED_CATEGORY_SCHEMA)]
    if reconciliation_rows is not None and reconciliation_rows.height:
        meta = reconciliation_rows.filter(
            (pl.col("level") == MESSAGE)
            & (pl.col("reason") == CATEGORY_CHANGED)
            & pl.col("meta_category").str.to_lowercase().is_in(TEMPLATE_CATEGORIES)
        ).select("message_id", billed_category=pl.col("meta_category").str.to_lowercase(), evidence=pl.lit(PRICING_OBJECT))
        found.append(meta.unique("message_id", keep="first", maintain_order=True))
    if updates is not None and updates.height:
        found.append(_from_updates(templates, updates).join(found[-1].select("message_id"), on="message_id", how="anti"))
    billed = pl.concat(found)
    return (
        billed.join(templates.select("message_id", "intended"), on="message_id")
        .filter(_family(pl.col("billed_category")) != pl.col("intended"))
        .select(list(BILLED_CATEGORY_SCHEMA))
        .sort("message_id")
    )


def _from_updates(templates: pl.DataFrame, updates: pl.DataFrame) -> pl.DataFrame:
    """The category of the latest update of each message's template name in force at its time."""
    usable = updates.filter(pl.col("category").is_in(TEMPLATE_CATEGORIES)).with_row_index("update_order")
    candidates = templates.filter(pl.col("template_name").is_not_null()).join(
        usable.select("template_name", "category", "effective_from", "update_order", update_waba=pl.col("waba_id")), on="template_name"
    )
    same_waba = pl.col("update_waba").is_null() | (pl.col("update_waba") == pl.col("waba_id")) | (pl.col("waba_id") == "default")
    in_force = candidates.filter(same_waba & (pl.col("effective_from") <= pl.col("timestamp")))
    return (
        in_force.sort("update_order")
        .group_by("message_id", maintain_order=True)
        .last()
        .select("message_id", billed_category=pl.col("category"), evidence=pl.lit(CATEGORY_UPDATE))
    )


def recategorised(
    messages: pl.DataFrame,
    priced: pl.DataFrame,
    billed: pl.DataFrame,
    settings: Settings,
    *,
    card: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Per month, template, intended and billed category and evidence: the messages billed in
    another category (`billed`, from `billed_categories`) and what they cost as intended (from
    `priced`, the traffic as written) and as billed (the traffic billed and priced again with the
    billed categories, at `priced`'s currency): RECATEGORISED_SCHEMA, largest difference first."""
    if billed.height == 0:
        return pl.DataFrame(schema=RECATEGORISED_SCHEMA)
    currencies = priced["currency"].drop_nulls().unique()
    currency = currencies.item() if currencies.len() == 1 else settings.currency
    as_billed_messages = (
        messages.join(billed.select("message_id", "billed_category"), on="message_id", how="left")
        .with_columns(template_category=pl.coalesce("billed_category", "template_category"))
        .drop("billed_category")
    )
    as_billed = pricing.price(engine.bill(as_billed_messages, settings), settings.replace(currency=currency, report_unpriced=True), card=card)
    changed = messages.join(billed, on="message_id").select(
        "message_id",
        "user_id",  # a group message: one row, and one charge, per participant
        "template_name",
        "billed_category",
        "evidence",
        intended_category=pl.col("template_category"),
        month=local_time(settings, "timestamp").dt.strftime("%Y-%m"),
    )
    cost_as_intended = _cost_of_openings(priced, "intended")
    cost_as_billed = _cost_of_openings(as_billed, "billed")
    zero = pl.lit(Decimal(0), dtype=MONEY)
    return (
        changed.join(cost_as_intended, left_on=["message_id", "user_id"], right_on=["opening_message_id", "user_id"], how="left")
        .join(cost_as_billed, left_on=["message_id", "user_id"], right_on=["opening_message_id", "user_id"], how="left")
        .group_by("month", "template_name", "intended_category", "billed_category", "evidence")
        .agg(
            messages=pl.len().cast(pl.Int64),
            cost_as_intended=pl.col("cost_intended").fill_null(zero).sum().cast(MONEY),
            cost_as_billed=pl.col("cost_billed").fill_null(zero).sum().cast(MONEY),
            unpriced_charges=(pl.col("unpriced_intended").fill_null(0) + pl.col("unpriced_billed").fill_null(0)).sum().cast(pl.Int64),
        )
        .with_columns(cost_difference=(pl.col("cost_as_billed") - pl.col("cost_as_intended")).cast(MONEY), currency=pl.lit(currency, dtype=pl.String))
        .select(list(RECATEGORISED_SCHEMA))
        .sort(["cost_difference", "month", "template_name"], descending=[True, False, False], nulls_last=True)
    )


def _cost_of_openings(priced: pl.DataFrame, side: str) -> pl.DataFrame:
    """Per opening message and user (a group message's participants share it): the cost of the charges
    it opened, and how many billable ones have no rate."""
    return priced.group_by("opening_message_id", "user_id").agg(
        pl.col("cost").sum().cast(MONEY).alias(f"cost_{side}"),
        (pl.col("billable") & pl.col("rate").is_null()).sum().cast(pl.Int64).alias(f"unpriced_{side}"),
    )


def _family(category: pl.Expr) -> pl.Expr:
    lower = category.str.to_lowercase()
    return lower.replace(SAME_AS)


def template_costs(
    messages: pl.DataFrame,
    priced: pl.DataFrame,
    settings: Settings,
    *,
    reconciliation_rows: pl.DataFrame | None = None,
    sources: Sequence[str | Path] = (),
    card: pl.DataFrame | None = None,
) -> TemplateCosts:
    """Both answers of the module docstring: `priced` are the charges of `messages` priced,
    `reconciliation_rows` what reconciliation found of Meta's pricing objects (`category_differences`),
    `sources` the input files, whose JSON ones are searched for `template_category_update` webhooks."""
    updates = read_category_updates(sources)
    billed = billed_categories(messages, reconciliation_rows, updates.updates)
    return TemplateCosts(
        by_month=cost_by_template(priced, messages),
        recategorised=recategorised(messages, priced, billed, settings, card=card),
        unnamed_charges=unnamed_template_charges(priced, messages),
        notes=tuple(f"template_category_update not read: {problem}" for problem in updates.unreadable),
    )


def category_differences(messages: pl.DataFrame, charges: pl.DataFrame, meta_pricing: pl.DataFrame | None, settings: Settings) -> pl.DataFrame | None:
    """The reconciliation of `charges` with Meta's webhook pricing objects (None without any)."""
    if meta_pricing is None or meta_pricing.height == 0:
        return None
    return matching.reconcile(messages, charges, meta_pricing=meta_pricing, settings=settings).rows


# --- text ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TemplateCosts:
    """`Traffic.template_costs()`: cost by template and month, the recategorised templates, and notes
    (what the input lacked, update events that could not be read)."""

    by_month: pl.DataFrame
    recategorised: pl.DataFrame
    unnamed_charges: int
    notes: tuple[str, ...] = ()

    def top(self, month: str | None = None, top: int = 10) -> pl.DataFrame:
        """The `top` templates by cost in `month` (default: the latest month)."""
        month = month or self.latest_month()
        return top_templates(self.by_month, month, top) if month else self.by_month.head(0)

    def latest_month(self) -> str | None:
        return self.by_month["month"].max() if self.by_month.height else None  # type: ignore[return-value]

    def describe(self, month: str | None = None, top: int = 5) -> str:
        """A few lines: the top templates of `month` (default: the latest), the recategorised ones
        (of `month` when given, else of every month)."""
        recategorised = self.recategorised if month is None else self.recategorised.filter(pl.col("month") == month)
        month = month or self.latest_month()
        top_rows = self.top(month, top) if month else self.by_month.head(0)
        if self.by_month.is_empty():
            lines = ["Templates: the input names no template (give a template_name column, or --send-log with template_name)."]
        elif top_rows.is_empty():
            lines = [f"Templates by cost, {month}: no charge of the month names a template."]
        else:
            lines = [f"Templates by cost, {month}:"]
            for row in top_rows.iter_rows(named=True):
                lines.append(
                    f"  {row['template_name']}: {row['billable_charges']:,} billable of {row['charges']:,}, {_money(row['cost'], row['currency'])}"
                )
        if self.unnamed_charges:
            lines.append(f"  {self.unnamed_charges:,} template charges of all months name no template (not in the table).")
        if recategorised.height:
            lines.append("Templates billed in another category than written:")
            for row in recategorised.iter_rows(named=True):
                lines.append(
                    f"  {row['month']} {row['template_name'] or '(no name)'}: written {row['intended_category']}, billed {row['billed_category']} "
                    f"({row['evidence']}), {row['messages']:,} messages, {_money(row['cost_as_intended'], row['currency'])} as written, "
                    f"{_money(row['cost_as_billed'], row['currency'])} as billed ({_signed(row['cost_difference'], row['currency'])})"
                )
        else:
            lines.append("No template billed in another category than written (as far as Meta's pricing objects and category updates say).")
        return "\n".join([*lines, *self.notes])


def _money(value: Decimal | None, currency: str | None) -> str:
    return "unpriced" if value is None else f"{value:,.2f} {currency or ''}".rstrip()


def _signed(value: Decimal | None, currency: str | None) -> str:
    return "difference unknown" if value is None else f"{value:+,.2f} {currency or ''}".rstrip()
