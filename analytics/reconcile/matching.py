"""Reconciliation: our charges against what Meta reported, item by item and in aggregate.

A cost estimate is trusted once it matches the bill. Meta's own view (billing-rules.md §7) comes as
per-message pricing objects (status webhooks, Gupshup events: `analytics.reconcile.meta_reports`) and as
aggregates (`conversation_analytics`, `pricing_analytics`). Each of Meta's items is compared with
what `analytics.bill.charges` computed from the same traffic, and gets one row with a `status`:

- `match`: Meta billed it as we computed it (possibly with a note);
- `missing_ours`: Meta reported it and we have no charge for it;
- `missing_meta`: we charge it and no report of Meta's mentions it;
- `different`: both have it and they differ;

a `reason` (one of `REASONS`) and an `explanation` in plain language with the figures of the row.

**Levels.**
1. `message` (PMP, per message): Meta's item is a wamid with `pricing_model: PMP`; it is matched
   to our charge whose `opening_message_id` is that wamid (a group send: an item per participant).
   Category (`marketing_lite` is billed as marketing, the choice `marketing_lite_billed_as`, so
   the two are the same), pricing type and billing are compared. Meta's `type` is read with the meaning in force at
   the message's date in its WABA's time zone (data/rules/webhook_pricing_types.csv, from Meta's
   status webhook reference): through 2026-09-30 `free_customer_service` is our
   `free_customer_service` (inside the customer service window); from 2026-10-01 it is our
   `free_tier` (a service message inside the 1,000 free a month) or, for a reaction,
   `free_customer_service`, and `regular` covers utility inside the window. `billable`, which Meta
   deprecates, is read only where `type` is absent (§7). `subtype: paid_exempt` marks a service
   message Meta does not charge (an exempt government or non-profit, billing-rules.md §9).
2. `conversation` (CBP): Meta's conversation id groups the wamids of its statuses. It is matched to
   our conversation whose opening message is among them, the one whose window starts nearest to
   Meta's: `expiration_timestamp` minus the window (24 h; the FEP window for `referral_conversion`).
   Meta rounds the expiration up to the minute, so windows agree within `WINDOW_TOLERANCE` (60 s).
   `billable: true` on a conversation we count `free_tier` (or `free_customer_service`) is no
   difference: Meta marks every conversation but free entry point ones billable, free tier
   included (§7) — a `match` with the note `free_tier_counted_billable`.
3. `aggregate`: per data point of an analytics response, our charges of the same pricing model
   rolled up to the same bucket (Meta's `start`/`end`, in Unix time), country, phone number,
   category and pricing type — on the dimensions the response has; the others are summed over,
   as are tiers and conversation directions (`queries/reconcile_aggregates.sql`). Our pricing
   types are put in Meta's words of the charge's date (`meta_reports.in_metas_words`: from
   2026-10-01 our `free_tier` is Meta's `free_customer_service`, as `pricing_analytics` has no
   free-tier type). Volumes and, when our charges are priced, costs are compared; where Meta gives
   no cost (a partner's credit line) the row says so instead of showing a zero. [choice] CBP free
   entry point conversations count as `service`, as in Meta's example response; Meta's
   `marketing_lite` counts as marketing.

Each source of Meta's (webhook, Gupshup message event, Gupshup billing event, each analytics file)
is compared on its own, so one message may have a row per source. Our charges that no item of any
source matches are `missing_meta`, but only inside the period Meta's items cover (earliest to
latest); the rest is not compared and the summary says how many.

**Reasons** (constants below; `REASONS` holds the one-line text of each). Any item of Meta's that
this package reads and keeps but does not bill yet — a group send (`recipient_type: group`), a
category outside `MODELLED_CATEGORIES` (`group_*`, `general_purpose_ai`), a pricing type none of
ours corresponds to (`free_group_customer_service`) — is `not_modelled`, matched or not (unless the
input lacks the message altogether: `status_missing`); so is an analytics data point of such
traffic that we have no charge for. Otherwise a matched item gets the first that
applies in this order:
- `rule_model_differs`: another pricing model (per message against per conversation: --timezone,
  the crossover of §5), or a category difference the rules decide (authentication-international,
  free entry point, user- against business-initiated, a category this package does not model);
- `category_changed`: Meta billed another category than the input gives the message (a template
  recategorised, or a send log that says template where Meta billed service, or the reverse);
- `pricing_type_differs`: same category, another pricing type or billable flag;
- `window_differs`: Meta's conversation opened more than 60 s from ours; `status_missing` instead
  when Meta's conversation holds messages the input lacks (the one that opened it was lost);
- otherwise `agrees`, or `free_tier_counted_billable` (a match with the note of §7).
An item of Meta's without a charge of ours (`missing_ours`): `quarantined` (the input has it, but
ingest set it aside), `status_missing` (no status of it in the input, or it failed there), or
`rule_model_differs` / `category_changed` (the input has it in another charge of ours). A charge
of ours without an item of Meta's (`missing_meta`): `pricing_not_reported`, or `rule_model_differs`
when Meta does mention its message, in another conversation. Aggregates: `volume_differs`, then,
volumes agreeing, `cost_not_available` (Meta gives no cost), `rate_card_gap` (our rate unknown),
`agrees`, `rounding` (within `COST_TOLERANCE`) or `cost_differs`.

**Synthetic check.** `meta_pricing_objects` turns our own charges into the pricing objects Meta
would send (expirations rounded up to the minute, CBP `billable: true` on free tier), and
`meta_analytics_response` into an analytics response; `perturb` changes them, and our traffic, in
known ways (`Perturbation`). Reconciling the result must report exactly those perturbations.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal

import duckdb
import polars as pl

from analytics.bill import charges as engine
from analytics.terms import markets, rules
from analytics.price import pricing
from analytics.core import schema
from analytics.core.errors import UsageError
from analytics.reconcile.meta_reports import (
    COST_DTYPE,
    COST_SCALE,
    CONVERSATION_ANALYTICS,
    DAILY,
    HALF_HOUR,
    MONTHLY,
    PRICING_ANALYTICS,
    PRICING_SCHEMA,
    REPORT_PRICING_MODEL,
    WEBHOOK,
    in_metas_words,
    pricing_type_meanings,
    with_pricing_type_meaning,
)
from analytics.core.resources import ArrowStream, query
from analytics.settings import Settings

# --- Statuses, reasons, tolerances ------------------------------------------------------------------

MATCH, MISSING_OURS, MISSING_META, DIFFERENT = "match", "missing_ours", "missing_meta", "different"
STATUSES = (MATCH, DIFFERENT, MISSING_OURS, MISSING_META)
MESSAGE, CONVERSATION, AGGREGATE = "message", "conversation", "aggregate"
LEVELS = (MESSAGE, CONVERSATION, AGGREGATE)

AGREES = "agrees"
FREE_TIER_COUNTED_BILLABLE = "free_tier_counted_billable"
STATUS_MISSING = "status_missing"
QUARANTINED = "quarantined"
PRICING_NOT_REPORTED = "pricing_not_reported"
CATEGORY_CHANGED = "category_changed"
PRICING_TYPE_DIFFERS = "pricing_type_differs"
WINDOW_DIFFERS = "window_differs"
RULE_MODEL_DIFFERS = "rule_model_differs"
VOLUME_DIFFERS = "volume_differs"
COST_DIFFERS = "cost_differs"
RATE_CARD_GAP = "rate_card_gap"
COST_NOT_AVAILABLE = "cost_not_available"
ROUNDING = "rounding"
NOT_MODELLED = "not_modelled"

REASONS: dict[str, str] = {
    AGREES: "Meta's figures agree with ours",
    FREE_TIER_COUNTED_BILLABLE: "CBP billable:true on a conversation we count free: Meta marks free-tier conversations billable (§7); no difference",
    STATUS_MISSING: "Meta billed a message the input has no delivered or sent status of (a lost webhook), or has as failed",
    QUARANTINED: "Meta billed a message that is in the input but was quarantined",
    PRICING_NOT_REPORTED: "we charge it and no report of Meta's mentions the message",
    CATEGORY_CHANGED: "Meta billed another category than the input gives: a recategorised template, or a wrong send log",
    PRICING_TYPE_DIFFERS: "same category, another pricing type or billable flag (customer service window, free entry point, free tier)",
    WINDOW_DIFFERS: "the conversation opened at another time than we computed, beyond 60 s",
    RULE_MODEL_DIFFERS: "a rule we model differently: pricing model, crossover, attribution, or a category we do not model",
    VOLUME_DIFFERS: "aggregate: Meta counts another number of conversations or messages",
    COST_DIFFERS: "aggregate: volumes agree, costs differ beyond rounding (the card's rates are not Meta's here)",
    RATE_CARD_GAP: "aggregate: cost differs where our rate is unknown (the card has no rate)",
    COST_NOT_AVAILABLE: "aggregate: Meta gives no cost (a WABA on a partner's credit line)",
    ROUNDING: "aggregate: volumes agree, costs differ by no more than rounding",
    NOT_MODELLED: (
        "Meta billed a category, pricing type or group send this package reads and keeps but does not bill yet "
        "(group messages, AI providers): not compared"
    ),
}

WINDOW_TOLERANCE = dt.timedelta(seconds=60)  # §7: expiration_timestamp is rounded up to the minute
COST_TOLERANCE = Decimal("0.01")  # aggregate costs within a cent agree (Meta's analytics are approximate, §7)
TEMPLATE_FAMILY = ("marketing", "utility", "authentication")
SERVICE = "service"
CBP_FREE_ENTRY_AS = SERVICE  # [choice] a CBP FEP conversation in conversation_analytics, as in Meta's example
FAILED = "failed"
# Categories our charges can carry (contracts.md §2) and Meta's marketing_lite, which we bill as marketing;
# any other category of Meta's (group_*, general_purpose_ai, ...) is `NOT_MODELLED`.
MODELLED_CATEGORIES = (*rules.INITIATOR_CATEGORIES, *rules.CATEGORY_SLOTS, rules.AUTH_INTERNATIONAL, "marketing_lite")
GROUP = "group"
PAID_EXEMPT = "paid_exempt"  # webhook pricing.subtype: an exempt government or non-profit's service message
# Which status's pricing object stands for a message when several carry one: the one that bills it.
STATUS_PRECEDENCE = {"delivered": 0, "read": 1, "played": 1, "sent": 2}

RECONCILIATION_SCHEMA: dict[str, pl.DataType] = {
    "level": pl.String(),
    "meta_source": pl.String(),
    "message_id": pl.String(),
    "conversation_id": pl.String(),
    "business_phone": pl.String(),
    "user_id": pl.String(),
    "period_start": schema.INSTANT,
    "period_end": schema.INSTANT,
    "granularity": pl.String(),
    "country": pl.String(),
    "market": pl.String(),
    "ours_pricing_model": pl.String(),
    "meta_pricing_model": pl.String(),
    "ours_category": pl.String(),
    "meta_category": pl.String(),
    "ours_pricing_type": pl.String(),
    "meta_pricing_type": pl.String(),
    "ours_billable": pl.Boolean(),
    "meta_billable": pl.Boolean(),
    "ours_started_at": schema.INSTANT,
    "meta_started_at": schema.INSTANT,
    "ours_volume": pl.Int64(),
    "meta_volume": pl.Int64(),
    "volume_difference": pl.Int64(),
    "volume_relative_difference": pl.Float64(),
    "ours_cost": COST_DTYPE,
    "meta_cost": COST_DTYPE,
    "cost_difference": COST_DTYPE,
    "cost_relative_difference": pl.Float64(),
    "currency": pl.String(),
    "status": pl.String(),
    "reason": pl.String(),
    "explanation": pl.String(),
}
UNREADABLE_SCHEMA: dict[str, pl.DataType] = {
    "meta_source": pl.String(),
    "source_file": pl.String(),
    "source_row": pl.Int64(),
    "message_id": pl.String(),
    "problem": pl.String(),
}
NOT_MODELLED_NBP = "notification-based pricing (NBP, before 2022-02-01) is not modelled"
NO_PRICING_MODEL = "neither a pricing model nor a conversation: nothing to compare"


@dataclass(frozen=True)
class Reconciliation:
    """The rows (RECONCILIATION_SCHEMA), Meta's rows that could not be compared, and notes."""

    rows: pl.DataFrame
    unreadable: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=UNREADABLE_SCHEMA))
    notes: tuple[str, ...] = ()

    def summary(self) -> str:
        return format_summary(self)


def reconcile(
    messages: pl.DataFrame | pl.LazyFrame,
    charges: pl.DataFrame,
    *,
    meta_pricing: pl.DataFrame | None = None,
    analytics: pl.DataFrame | None = None,
    quarantine: pl.DataFrame | pl.LazyFrame | None = None,
    priced: pl.DataFrame | None = None,
    settings: Settings | None = None,
    con: duckdb.DuckDBPyConnection | None = None,
    notes: Sequence[str] = (),
) -> Reconciliation:
    """Every level of the module docstring for the reports given.

    - `messages`, `charges`: canonical messages (contracts.md §1) and their charges (§2).
    - `meta_pricing`: Meta's per-message billing (meta_reports.PRICING_SCHEMA).
    - `analytics`: Meta's aggregates (meta_reports.ANALYTICS_SCHEMA).
    - `quarantine`: ingest's quarantine (`message_id`, `reason`), to say why a billed message is missing.
    - `priced`: `pricing.price(charges, ...)`, to compare costs; without it volumes only.
    - `notes`: what the caller has to add to the summary (e.g. what report files held besides).
    """
    settings = settings or Settings()
    messages = messages.lazy().collect() if isinstance(messages, pl.LazyFrame) else messages
    ours = with_user_country(charges, messages)
    parts, unreadable, notes = [], [], list(notes)
    if meta_pricing is not None and meta_pricing.height:
        items, items_unreadable, items_notes = reconcile_items(ours, meta_pricing, messages, quarantine=quarantine, settings=settings)
        parts.append(items)
        unreadable.append(items_unreadable)
        notes += items_notes
    if analytics is not None and analytics.height:
        costed = ours if priced is None else _with_costs(ours, priced)
        totals, totals_unreadable, totals_notes = reconcile_aggregates(costed, analytics, settings=settings, con=con)
        parts.append(totals)
        unreadable.append(totals_unreadable)
        notes += totals_notes
    if not parts:
        notes.append("no pricing objects or analytics from Meta in the input: nothing to compare")
    rows = pl.concat(parts, how="vertical") if parts else pl.DataFrame(schema=RECONCILIATION_SCHEMA)
    unreadable_rows = pl.concat(unreadable) if unreadable else pl.DataFrame(schema=UNREADABLE_SCHEMA)
    return Reconciliation(rows=rows, unreadable=unreadable_rows, notes=tuple(notes))


def priced_at_list_rates(
    charges: pl.DataFrame, analytics: pl.DataFrame, settings: Settings
) -> tuple[pl.DataFrame | None, str | None]:
    """Our charges priced at Meta's list rates (no markup), in the analytics' currency unless
    `settings` names one, for the aggregate level; (None, why) when there are no analytics or
    no currency fits, and reconciliation compares volumes only."""
    if analytics.height == 0:
        return None, None
    settings = settings or Settings()
    currencies = analytics["currency"].drop_nulls()
    currency = settings.currency or (currencies.mode().sort().first() if currencies.len() else None)
    settings = replace(settings, currency=currency, markup_percent=Decimal(0), markup_per_charge=Decimal(0), report_unpriced=True)
    try:
        return pricing.price(charges, settings), None
    except UsageError as error:
        return None, f"Costs not compared (volumes only): {error}"


def with_user_country(charges: pl.DataFrame, messages: pl.DataFrame) -> pl.DataFrame:
    """Charges with `user_country`: the country of the message that opened the charge."""
    if "user_country" in charges.columns:
        return charges
    countries = messages.select("message_id", "user_country").unique("message_id", keep="first")
    return charges.join(countries, left_on="opening_message_id", right_on="message_id", how="left", maintain_order="left")


def _with_costs(charges: pl.DataFrame, priced: pl.DataFrame) -> pl.DataFrame:
    costs = priced.select("opening_message_id", "cost", "currency").unique("opening_message_id", keep="first")
    return charges.drop("cost", "currency", strict=False).join(costs, on="opening_message_id", how="left", maintain_order="left")


# --- Our side: which charge each message belongs to ---------------------------------------------------


def conversation_of_messages(charges: pl.DataFrame, messages: pl.DataFrame, settings: Settings | None = None) -> pl.DataFrame:
    """`message_id` -> `opening_message_id` of the charge each delivered outbound message belongs to.

    A message that opened a charge (a CBP conversation, a PMP row) belongs to it. Any other was
    absorbed by an open CBP conversation of its key, by the rules `analytics.bill.reference` follows:
    a conversation contains `t` if `started_at <= t < expires_at` (an FEP opening ends others early:
    `expires_at` is the real end); an FEP conversation and a one-slot one absorb everything, a
    per-category one the templates of its slot and every non-template; the FEP conversation first,
    then the earliest opened (§2 Precedence, §4.3, §5 Crossover). Failed and inbound messages
    belong to nothing and are not listed.
    """
    settings = settings or Settings()
    outbound = messages.filter(
        (pl.col("direction") == "outbound") & pl.col("status").ne_missing(FAILED)
    ).select(
        "message_id",
        "business_phone",
        "user_id",
        "timestamp",
        is_template=pl.col("message_type") == schema.TEMPLATE,
        slot=pl.col("template_category").replace(settings.rule_book.choices.billed_category),
    )
    openers = charges.select("opening_message_id")
    own = outbound.join(openers, left_on="message_id", right_on="opening_message_id", how="semi").select(
        "message_id", opening_message_id="message_id"
    )
    rest = outbound.join(openers, left_on="message_id", right_on="opening_message_id", how="anti")
    conversations = charges.filter(pl.col("pricing_model") == "CBP").select(
        "business_phone",
        "user_id",
        "started_at",
        "expires_at",
        "opening_message_id",
        # An FEP conversation, and any of the 2022 categories' rule set (user-/business-initiated), takes all.
        takes_all=pl.col("category").is_in(rules.INITIATOR_CATEGORIES),
        is_fep=pl.col("category") == rules.FEP_CATEGORY,
        conversation_slot=pl.col("category").replace({rules.AUTH_INTERNATIONAL: rules.AUTH}),
    )
    absorbed = (
        rest.join(conversations, on=["business_phone", "user_id"], how="inner")
        .filter(
            (pl.col("started_at") <= pl.col("timestamp"))
            & (pl.col("timestamp") < pl.col("expires_at"))
            & (pl.col("takes_all") | ~pl.col("is_template") | (pl.col("slot") == pl.col("conversation_slot")))
        )
        .sort("message_id", pl.col("is_fep").not_(), "started_at", "opening_message_id")
        .unique("message_id", keep="first", maintain_order=True)
        .select("message_id", "opening_message_id")
    )
    return pl.concat([own, absorbed]).sort("message_id")


# --- Meta's side: items ---------------------------------------------------------------------------------


def meta_items(meta_pricing: pl.DataFrame, settings: Settings | None = None) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(PMP items, CBP items, unreadable rows) of Meta's per-message billing.

    PMP: one item per (source, wamid, group participant), the values of the status that bills it
    (`STATUS_PRECEDENCE`). CBP (`pricing_model` CBP, or no model on any status of the message but
    a conversation id, as CBP-2022 webhooks without `pricing` have): one item per (source,
    conversation id), with its wamids, category (pricing category, else the conversation's origin),
    billable flag and window start (expiration minus the window).
    """
    settings = settings or Settings()
    # A status with a conversation but no pricing takes its message's model from the message's other
    # statuses (v24+ keeps the conversation inside free entry point windows, P3); else it is CBP-2022.
    model = pl.coalesce(
        pl.col("pricing_model"),
        pl.col("pricing_model").drop_nulls().first().over("meta_source", "message_id"),
        pl.when(pl.col("conversation_id").is_not_null()).then(pl.lit("CBP")),
    )
    rows = meta_pricing.with_columns(
        model=model,
        problem=pl.coalesce(
            pl.col("problem"),
            pl.when(model == "NBP").then(pl.lit(NOT_MODELLED_NBP)),
            pl.when(model.is_null()).then(pl.lit(NO_PRICING_MODEL)),
        ),
        # Billing events carry no status: they stand for the message as much as a delivered status.
        rank=pl.col("status").replace_strict(STATUS_PRECEDENCE, default=3, return_dtype=pl.Int8).fill_null(0),
    )
    unreadable = rows.filter(pl.col("problem").is_not_null()).select(list(UNREADABLE_SCHEMA))
    usable = rows.filter(pl.col("problem").is_null()).sort("rank", "time", "source_row", nulls_last=True)

    # A group send has one status per participant (P3): an item each.
    pmp = (
        usable.filter(pl.col("model") == "PMP")
        .group_by("meta_source", "message_id", "recipient_participant_id", maintain_order=True)
        .agg(
            *[pl.col(c).drop_nulls().first() for c in ("business_phone", "user_id", "category", "pricing_type", "billable", "time")],
            *[pl.col(c).drop_nulls().first() for c in ("pricing_subtype", "recipient_type")],
            pl.col("source_file", "source_row").first(),
        )
        .with_columns(meta_pricing_model=pl.lit("PMP"))
    )
    conversation_window, fep_window_length = settings.conversation_windows()
    fep_window = int(fep_window_length.total_seconds())
    window = int(conversation_window.total_seconds())
    cbp = (
        usable.filter(pl.col("model") == "CBP")
        .with_columns(
            conversation_key=pl.coalesce("conversation_id", pl.format("message {}", "message_id")),
            category=pl.coalesce("category", "conversation_origin"),
        )
        .group_by("meta_source", "conversation_key", maintain_order=True)
        .agg(
            pl.col("conversation_id").first(),
            message_ids=pl.col("message_id").sort_by("time", "message_id", nulls_last=True).unique(maintain_order=True),
            *[pl.col(c).drop_nulls().first() for c in ("business_phone", "user_id", "category", "pricing_type", "billable")],
            *[pl.col(c).drop_nulls().first() for c in ("pricing_subtype", "recipient_type", "recipient_participant_id")],
            expires_at=pl.col("conversation_expires_at").min(),
            first_time=pl.col("time").min(),
            last_time=pl.col("time").max(),
            source_file=pl.col("source_file").first(),
            source_row=pl.col("source_row").first(),
        )
        .with_columns(
            meta_pricing_model=pl.lit("CBP"),
            meta_opening=pl.col("message_ids").list.first(),
            window_start=pl.col("expires_at")
            - pl.duration(seconds=pl.when(pl.col("category") == rules.FEP_CATEGORY).then(fep_window).otherwise(window)),
        )
    )
    return pmp, cbp, unreadable


# --- Item level: messages and conversations -------------------------------------------------------------

_OURS = {
    "pricing_model": "ours_pricing_model",
    "category": "ours_category",
    "pricing_type": "ours_pricing_type",
    "billable": "ours_billable",
    "started_at": "ours_started_at",
    "message_count": "ours_volume",
}


def reconcile_items(
    charges: pl.DataFrame,
    meta_pricing: pl.DataFrame,
    messages: pl.DataFrame,
    *,
    quarantine: pl.DataFrame | pl.LazyFrame | None = None,
    settings: Settings | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame, list[str]]:
    """(rows at the message and conversation levels, Meta's unreadable rows, notes)."""
    settings = settings or Settings()
    charges = with_user_country(charges, messages)
    pmp, cbp, unreadable = meta_items(meta_pricing, settings)
    context = _MessageContext.of(charges, messages, quarantine, settings)
    ours = charges.select(
        "opening_message_id", "rule_set", "expires_at", "business_phone", "user_id", "market", "user_country", "waba_id",
        *[pl.col(c).alias(a) for c, a in _OURS.items()],
    )
    message_rows = _message_level(pmp, ours, context)
    conversation_rows, candidates = _conversation_level(cbp, ours, context)
    paired = pl.concat([message_rows.select("message_id"), candidates.select("message_id")]).unique()
    missing, notes = _missing_meta(ours, paired, pmp, cbp, meta_pricing)
    parts = [message_rows, conversation_rows, *([missing] if missing is not None else [])]
    rows = pl.concat(parts, how="diagonal_relaxed")
    rows = _with_meta_meaning(rows, settings)
    rows = _classified(rows, settings)
    return _finished(rows), unreadable, notes


@dataclass(frozen=True)
class _MessageContext:
    """What the input says about a message: its status, whether it was quarantined and why, and
    which of our charges it belongs to."""

    messages: pl.DataFrame  # message_id, _status, _direction, _ours_message_category
    attributed: pl.DataFrame  # message_id -> our charge's opening id, with the charge's columns
    quarantined: pl.DataFrame  # message_id, _quarantine_reason

    @classmethod
    def of(
        cls, charges: pl.DataFrame, messages: pl.DataFrame, quarantine: pl.DataFrame | pl.LazyFrame | None, settings: Settings
    ) -> _MessageContext:
        known = messages.select(
            "message_id",
            _status="status",
            _direction="direction",
            _ours_message_category=pl.when(pl.col("message_type") == schema.TEMPLATE)
            .then(pl.col("template_category").replace(settings.rule_book.choices.billed_category))
            .otherwise(pl.when(pl.col("direction") == "outbound").then(pl.lit(SERVICE))),
        )
        attributed = conversation_of_messages(charges, messages, settings).join(
            charges.select(
                "opening_message_id",
                _absorbed_by_category="category",
                _absorbed_by_started_at="started_at",
                _absorbed_by_rule_set="rule_set",
                _absorbed_by_model="pricing_model",
            ),
            on="opening_message_id",
            how="left",
        ).rename({"opening_message_id": "_absorbed_by"})
        if quarantine is None:
            quarantined = pl.DataFrame(schema={"message_id": pl.String, "_quarantine_reason": pl.String})
        else:
            quarantined = (
                quarantine.lazy()
                .select("message_id", _quarantine_reason="reason")
                .filter(pl.col("message_id").is_not_null())
                .unique("message_id", keep="first")
                .collect()
            )
        return cls(known, attributed, quarantined)

    def describe(self, frame: pl.DataFrame, on: str, *, quarantine: bool = True) -> pl.DataFrame:
        """`frame` with what the input says about the message in column `on`."""
        tables = (self.messages, self.attributed, self.quarantined) if quarantine else (self.messages, self.attributed)
        for table in tables:
            frame = frame.join(table, left_on=on, right_on="message_id", how="left", maintain_order="left")
        return frame


def _message_level(pmp: pl.DataFrame, ours: pl.DataFrame, context: _MessageContext) -> pl.DataFrame:
    """PMP items against the charge each wamid opened (module docstring, level 1)."""
    joined = pmp.join(ours, left_on="message_id", right_on="opening_message_id", how="left", maintain_order="left", suffix="_ours")
    joined = context.describe(joined, "message_id")
    return joined.select(
        level=pl.lit(MESSAGE),
        meta_source="meta_source",
        message_id="message_id",
        conversation_id=pl.lit(None, pl.String),
        meta_started_at="time",
        meta_volume=pl.lit(1, pl.Int64),
        _wamids=pl.concat_list(pl.col("message_id")),
        _missing_wamids=pl.concat_list(pl.col("message_id")).list.head(0),
        _status="_status",
        _absorbed_by_model="_absorbed_by_model",
        **_joined_item_columns(),
    )


def _joined_item_columns() -> dict[str, str | pl.Expr]:
    """The columns an item row takes alike at both levels from Meta's item joined to our charge
    (suffix `_ours`) and to what the input says of the message (`_MessageContext.describe`)."""
    return {
        "business_phone": pl.coalesce("business_phone_ours", "business_phone"),
        "user_id": pl.coalesce("user_id_ours", "user_id"),
        "country": "user_country",
        "market": "market",
        **{a: a for a in _OURS.values()},
        "meta_pricing_model": "meta_pricing_model",
        "meta_category": "category",
        "meta_pricing_type": "pricing_type",
        "meta_billable": "billable",
        "_paired": pl.col("ours_pricing_model").is_not_null(),
        "_rule_set": "rule_set",
        "_direction": "_direction",
        "_ours_message_category": "_ours_message_category",
        "_absorbed_by": "_absorbed_by",
        "_absorbed_by_category": "_absorbed_by_category",
        "_absorbed_by_started_at": "_absorbed_by_started_at",
        "_absorbed_by_rule_set": "_absorbed_by_rule_set",
        "_quarantine_reason": "_quarantine_reason",
        "waba_id": "waba_id",
        "_subtype": "pricing_subtype",
        "_recipient_type": "recipient_type",
        "_participant": "recipient_participant_id",
    }


def _conversation_level(cbp: pl.DataFrame, ours: pl.DataFrame, context: _MessageContext) -> tuple[pl.DataFrame, pl.DataFrame]:
    """CBP conversations against ours (module docstring, level 2); also the charges they paired."""
    item = ["meta_source", "conversation_key"]
    exploded = cbp.select(*item, "window_start", message_id="message_ids").explode("message_id")
    candidates = (
        exploded.join(
            ours.select("opening_message_id", "ours_pricing_model", "ours_started_at"),
            left_on="message_id",
            right_on="opening_message_id",
            how="inner",
        )
        .with_columns(gap=(pl.col("ours_started_at") - pl.col("window_start")).dt.total_microseconds().abs().fill_null(0))
        .sort(*item, pl.col("ours_pricing_model") != "CBP", "gap", "ours_started_at", "message_id")
        .unique(item, keep="first", maintain_order=True)
        .select(*item, "message_id")
    )
    # What the input says about Meta's wamids of each conversation.
    in_input = pl.col("_status").is_not_null() | pl.col("_direction").is_not_null()
    delivered = in_input & pl.col("_status").ne_missing(FAILED)
    wamids = (
        context.describe(exploded.select(*item, "message_id"), "message_id")
        .group_by(item, maintain_order=True)
        .agg(
            _missing_wamids=pl.col("message_id").filter(~in_input),
            _quarantine_reason=pl.col("_quarantine_reason").drop_nulls().first(),
            _quarantined_wamid=pl.col("message_id").filter(pl.col("_quarantine_reason").is_not_null()).first(),
            _any_failed=(pl.col("_status") == FAILED).any(),
            # The first of them the input has delivered: where we put it explains a missing conversation.
            _explained=pl.col("message_id").filter(delivered).first(),
        )
    )
    explained = context.describe(
        wamids.select(*item, "_explained"), "_explained", quarantine=False
    ).drop("_explained")
    joined = (
        cbp.join(candidates, on=item, how="left", maintain_order="left")
        .join(ours, left_on="message_id", right_on="opening_message_id", how="left", maintain_order="left", suffix="_ours")
        .join(wamids, on=item, how="left", maintain_order="left")
        .join(explained, on=item, how="left", maintain_order="left")
    )
    rows = joined.select(
        level=pl.lit(CONVERSATION),
        meta_source="meta_source",
        message_id=pl.coalesce("message_id", "meta_opening"),
        conversation_id="conversation_id",
        meta_started_at="window_start",
        meta_volume=pl.col("message_ids").list.len().cast(pl.Int64),
        _missing_wamids="_missing_wamids",
        _quarantined_wamid="_quarantined_wamid",
        _status=pl.when(pl.col("_explained").is_null() & pl.col("_any_failed")).then(pl.lit(FAILED)).otherwise("_status"),
        _explained="_explained",
        **_joined_item_columns(),
    )
    return rows, candidates.select("message_id")


def _missing_meta(
    ours: pl.DataFrame, paired: pl.DataFrame, pmp: pl.DataFrame, cbp: pl.DataFrame, meta_pricing: pl.DataFrame
) -> tuple[pl.DataFrame | None, list[str]]:
    """Our charges that no item of Meta's matched, inside the period Meta's items cover."""
    times = pl.concat(
        [
            pmp.select(t="time"),
            cbp.select(t=pl.coalesce("window_start", "first_time")),
            cbp.select(t="last_time"),
        ]
    )["t"].drop_nulls()
    if times.is_empty():
        return None, []
    first, last = times.min(), times.max()
    unpaired = ours.join(paired, left_on="opening_message_id", right_on="message_id", how="anti")
    inside = unpaired.filter(pl.col("ours_started_at").is_between(first, last))
    notes = []
    if outside := unpaired.height - inside.height:
        notes.append(
            f"{outside:,} of our charges fall outside the period Meta's pricing objects cover "
            f"({first:%Y-%m-%d %H:%M} to {last:%Y-%m-%d %H:%M} UTC): not compared"
        )
    # Where Meta does mention the opening message: in which conversation or as which item.
    mentioned = (
        meta_pricing.filter(pl.col("problem").is_null())
        .group_by("message_id")
        .agg(
            _meta_conversation=pl.col("conversation_id").drop_nulls().first(),
            _meta_model=pl.col("pricing_model").drop_nulls().first(),
        )
    )
    matched_to = cbp.select("conversation_id", _meta_conversation_matched_to=pl.col("message_ids")).filter(
        pl.col("conversation_id").is_not_null()
    )
    rows = (
        inside.join(mentioned, left_on="opening_message_id", right_on="message_id", how="left", maintain_order="left")
        .join(matched_to.unique("conversation_id"), left_on="_meta_conversation", right_on="conversation_id", how="left", maintain_order="left")
        .select(
            level=pl.when(pl.col("ours_pricing_model") == "CBP").then(pl.lit(CONVERSATION)).otherwise(pl.lit(MESSAGE)),
            meta_source=pl.lit(None, pl.String),
            message_id="opening_message_id",
            conversation_id=pl.lit(None, pl.String),
            business_phone="business_phone",
            user_id="user_id",
            country="user_country",
            market="market",
            **{a: a for a in _OURS.values()},
            waba_id="waba_id",
            _paired=pl.lit(True),
            _missing_meta=pl.lit(True),
            _rule_set="rule_set",
            _meta_conversation="_meta_conversation",
            _meta_model="_meta_model",
            _meta_conversation_wamids="_meta_conversation_matched_to",
        )
    )
    return rows, notes


def _with_meta_meaning(rows: pl.DataFrame, settings: Settings) -> pl.DataFrame:
    """Item rows with what Meta's pricing type meant at the message's date in its WABA's time zone
    (`meta_reports.with_pricing_type_meaning`: `agreeing_types`, `meaning`, `meaning_from`), the
    one place where the date decides how Meta's `pricing.type` is read (billing-rules.md §9)."""
    dated = rows.with_columns(
        _meaning_at=pl.coalesce("ours_started_at", "meta_started_at"),
        waba_id=pl.col("waba_id").fill_null(schema.DEFAULT_WABA),
    )
    local_date = engine.local_time(settings, "_meaning_at").dt.date()
    return with_pricing_type_meaning(
        dated.with_columns(_meaning_date=local_date), local_date=pl.col("_meaning_date"), pricing_type="meta_pricing_type"
    )


def _classified(rows: pl.DataFrame, settings: Settings) -> pl.DataFrame:
    """`status`, `reason` and `explanation` of item rows (module docstring, Reasons)."""
    defaults = {
        "_missing_meta": pl.Boolean, "_meta_conversation": pl.String, "_meta_model": pl.String,
        "_explained": pl.String, "_quarantined_wamid": pl.String, "_missing_wamids": pl.List(pl.String),
        "_meta_conversation_wamids": pl.List(pl.String), "_subtype": pl.String, "_recipient_type": pl.String,
        "_participant": pl.String, "agreeing_types": pl.List(pl.String), "meaning": pl.String,
    }
    rows = rows.with_columns(pl.lit(None, dtype).alias(c) for c, dtype in defaults.items() if c not in rows.columns)
    level_is = {level: pl.col("level") == level for level in (MESSAGE, CONVERSATION)}
    billed_as = settings.rule_book.choices.billed_category
    ours_category = pl.col("ours_category").replace(billed_as)
    meta_category = pl.col("meta_category").replace(billed_as)
    is_cbp = pl.col("meta_pricing_model") == "CBP"
    # [choice] Under PMP a free entry point message may come as category referral_conversion (Gupshup lists
    # it among PMP categories); we give it the message's own category (billing-rules.md §2): the same thing.
    meta_category = (
        pl.when(~is_cbp & (meta_category == rules.FEP_CATEGORY) & (pl.col("ours_pricing_type") == "free_entry_point"))
        .then(ours_category)
        .otherwise(meta_category)
    )
    lacks_wamids = pl.col("_missing_wamids").list.len().fill_null(0) > 0

    # Paired: model, category, pricing, window (then the note of §7).
    model_differs = pl.col("ours_pricing_model") != pl.col("meta_pricing_model")
    category_differs = ours_category != meta_category
    cbp_pricing_differs = (
        pl.when(pl.col("meta_pricing_type").is_in(["free_tier", "free_entry_point"]))
        .then(pl.col("meta_pricing_type") != pl.col("ours_pricing_type"))
        .when(pl.col("meta_billable").is_null())
        .then(False)
        .when(pl.col("ours_pricing_type") == "free_entry_point")
        .then(pl.col("meta_billable"))
        .when(pl.col("ours_pricing_type").is_in(["regular", "free_tier"]))
        .then(pl.col("meta_billable").not_())
        .otherwise(False)  # free_customer_service: Meta may say either (service conversations, from 2024-11)
    )
    # Meta's type, read with the meaning in force at the message's date (`_with_meta_meaning`), wins over
    # `billable`, which Meta deprecates and which is read only where `type` is absent (§7, §9). An
    # exempt service message (`subtype: paid_exempt`) is one Meta does not charge.
    pmp_pricing_differs = (
        pl.when(pl.col("_subtype") == PAID_EXEMPT)
        .then(pl.col("ours_billable"))
        .when(pl.col("meta_pricing_type").is_not_null() & pl.col("agreeing_types").is_not_null())
        .then(~pl.col("agreeing_types").list.contains(pl.col("ours_pricing_type")))
        .when(pl.col("meta_pricing_type").is_not_null())
        .then(pl.col("meta_pricing_type") != pl.col("ours_pricing_type"))
        .when(pl.col("meta_billable").is_not_null())
        .then(pl.col("meta_billable") != pl.col("ours_billable"))
        .otherwise(False)
    )
    # Read and kept, not billed here yet: a group send, a category we do not bill, a pricing type none of ours matches.
    not_modelled = (
        (pl.col("_recipient_type") == GROUP)
        | (pl.col("meta_category").is_not_null() & ~pl.col("meta_category").is_in(MODELLED_CATEGORIES))
        | (pl.col("agreeing_types").list.len() == 0)
    ).fill_null(False)
    gap = (pl.col("ours_started_at") - pl.col("meta_started_at")).dt.total_microseconds().abs()
    window_differs = is_cbp & (gap > WINDOW_TOLERANCE // dt.timedelta(microseconds=1)).fill_null(False)
    free_of_ours = pl.col("ours_pricing_type").is_in(["free_tier", "free_customer_service"])
    paired_reason = (
        pl.when(not_modelled)
        .then(pl.lit(NOT_MODELLED))
        .when(model_differs.fill_null(False))
        .then(pl.lit(RULE_MODEL_DIFFERS))
        .when((category_differs & _category_is_the_input(ours_category, meta_category)).fill_null(False))
        .then(pl.lit(CATEGORY_CHANGED))
        .when(category_differs.fill_null(False))
        .then(pl.lit(RULE_MODEL_DIFFERS))
        .when(pl.when(is_cbp).then(cbp_pricing_differs).otherwise(pmp_pricing_differs).fill_null(False))
        .then(pl.lit(PRICING_TYPE_DIFFERS))
        .when(window_differs & lacks_wamids)
        .then(pl.lit(STATUS_MISSING))
        .when(window_differs)
        .then(pl.lit(WINDOW_DIFFERS))
        .when(is_cbp & pl.col("meta_billable").fill_null(False) & free_of_ours)
        .then(pl.lit(FREE_TIER_COUNTED_BILLABLE))
        .otherwise(pl.lit(AGREES))
    )
    # Meta's items without a charge of ours: what the input says about their messages.
    message_category = pl.col("_ours_message_category")
    lost = pl.col("_quarantine_reason").is_null() & (pl.col("_status").is_null() | (pl.col("_status") == FAILED))
    unpaired_reason = (
        pl.when(level_is[MESSAGE] & lost)
        .then(pl.lit(STATUS_MISSING))
        .when(not_modelled)
        .then(pl.lit(NOT_MODELLED))
        .when(level_is[CONVERSATION] & pl.col("_explained").is_null())
        .then(pl.when(pl.col("_quarantine_reason").is_not_null()).then(pl.lit(QUARANTINED)).otherwise(pl.lit(STATUS_MISSING)))
        .when(level_is[MESSAGE] & pl.col("_quarantine_reason").is_not_null())
        .then(pl.lit(QUARANTINED))
        .when(level_is[MESSAGE] & (pl.col("_status").is_null() | (pl.col("_status") == FAILED)))
        .then(pl.lit(STATUS_MISSING))
        .when(level_is[CONVERSATION] & lacks_wamids)
        .then(pl.lit(STATUS_MISSING))
        .when(((message_category != meta_category) & _category_is_the_input(message_category, meta_category)).fill_null(False))
        .then(pl.lit(CATEGORY_CHANGED))
        .otherwise(pl.lit(RULE_MODEL_DIFFERS))
    )
    # Our charges without an item of Meta's: does Meta mention the message elsewhere?
    missing_meta_reason = (
        pl.when(pl.col("_meta_model").is_not_null() | pl.col("_meta_conversation").is_not_null())
        .then(pl.lit(RULE_MODEL_DIFFERS))
        .otherwise(pl.lit(PRICING_NOT_REPORTED))
    )
    missing_meta = pl.col("_missing_meta").fill_null(False)
    rows = rows.with_columns(
        reason=pl.when(missing_meta).then(missing_meta_reason).when(pl.col("_paired")).then(paired_reason).otherwise(unpaired_reason),
        _gap_seconds=gap // 1_000_000,
    ).with_columns(
        status=pl.when(missing_meta)
        .then(pl.lit(MISSING_META))
        .when(~pl.col("_paired"))
        .then(pl.lit(MISSING_OURS))
        .when(pl.col("reason").is_in([AGREES, FREE_TIER_COUNTED_BILLABLE]))
        .then(pl.lit(MATCH))
        .otherwise(pl.lit(DIFFERENT)),
    )
    explanations = _explanations(rows, lambda row: _explain_item(row, settings), _agrees_text(), pl.col("reason") != AGREES)
    return rows.with_columns(explanation=explanations)


def _agrees_text() -> pl.Expr:
    return (
        pl.when(pl.col("level") == MESSAGE)
        .then(pl.lit("Meta billed it as we computed it."))
        .otherwise(pl.lit("Meta's conversation matches ours: opening message, window (within 60 s), category and billing."))
    )


def _explanations(rows: pl.DataFrame, explain, plain: pl.Expr, written: pl.Expr) -> pl.Series:
    """`explain(row)` for the rows where `written` holds; the cheap `plain` text for the others (most
    rows agree, and a text per row in Python is what costs)."""
    texts = rows.select(plain.alias("explanation"))["explanation"]
    others = rows.with_row_index("_position").filter(written)
    if others.height == 0:
        return texts
    return texts.scatter(others["_position"], pl.Series([explain(row) for row in others.iter_rows(named=True)], dtype=pl.String))


def _category_is_the_input(ours: pl.Expr, meta: pl.Expr) -> pl.Expr:
    """Whether a category difference is about the message itself (what the send log or template
    list say: template categories, or template against service), not about the rules."""
    relevant = [*TEMPLATE_FAMILY, SERVICE]
    return ours.is_in(relevant) & meta.is_in(relevant) & (ours.is_in(TEMPLATE_FAMILY) | meta.is_in(TEMPLATE_FAMILY))


ROW_ORDER = (
    "_level", "meta_source", "period_start", "_started_at", "country", "business_phone", "_category", "pricing_type",
    "message_id", "conversation_id",
)


def _finished(rows: pl.DataFrame) -> pl.DataFrame:
    """RECONCILIATION_SCHEMA, sorted one way: level, source, period or time, then the keys."""
    frame = rows.select(
        [(pl.col(c) if c in rows.columns else pl.lit(None)).cast(t).alias(c) for c, t in RECONCILIATION_SCHEMA.items()]
    )
    return (
        frame.with_columns(
            _level=pl.col("level").replace_strict({level: i for i, level in enumerate(LEVELS)}, return_dtype=pl.Int8),
            _started_at=pl.coalesce("ours_started_at", "meta_started_at"),
            _category=pl.coalesce("ours_category", "meta_category"),
            pricing_type=pl.coalesce("ours_pricing_type", "meta_pricing_type"),
        )
        .sort(ROW_ORDER, nulls_last=True)
        .select(list(RECONCILIATION_SCHEMA))
    )


# --- Explanations of item rows ----------------------------------------------------------------------------


def _explain_item(row: dict, settings: Settings) -> str:
    reason = row["reason"]
    what = _what(row)
    if reason == FREE_TIER_COUNTED_BILLABLE:
        return (
            f"Agrees. Meta marks the conversation billable, as it marks every conversation but free entry point ones, "
            f"free tier included (billing-rules.md §7); we count it {row['ours_pricing_type']}: no charge on either side."
        )
    if reason == NOT_MODELLED:
        return _explain_not_modelled(row)
    if reason == QUARANTINED:
        wamid = row.get("_quarantined_wamid") or row["message_id"]
        return (
            f"Meta billed {what}; message {wamid} is in the input but was quarantined "
            f"({row['_quarantine_reason']}): fix the input and run again."
        )
    if reason == STATUS_MISSING:
        return _explain_status_missing(row, what)
    if reason == PRICING_NOT_REPORTED:
        kind = "conversation" if row["ours_pricing_model"] == "CBP" else "message"
        return (
            f"We charge {_a(row['ours_category'])} {kind} ({row['ours_pricing_type']}, {row['_rule_set']}) opened by "
            f"{row['message_id']} at {_time(row['ours_started_at'])}, and no report of Meta's mentions that message: "
            f"its status webhooks carried no pricing object, or they are not in the input."
        )
    if reason == CATEGORY_CHANGED:
        return _explain_category(row)
    if reason == PRICING_TYPE_DIFFERS:
        return _explain_pricing_type(row)
    if reason == WINDOW_DIFFERS:
        return (
            f"Meta's conversation opened at {_time(row['meta_started_at'])} (its expiration minus the window), ours at "
            f"{_time(row['ours_started_at'])}: {_duration(row['_gap_seconds'])} apart, beyond the 60 s tolerance. "
            "Meta's conversation was probably opened by an earlier message, or closed, differently from ours."
        )
    return _explain_rule_model(row, settings)


def _what(row: dict) -> str:
    category = row.get("meta_category")
    if row["level"] == CONVERSATION:
        conversation = f" {row['conversation_id']}" if row.get("conversation_id") else ""
        return f"{_a(category) if category else 'a'} conversation{conversation}"
    category = category or "category unknown"
    kind = f", {row['meta_pricing_type']}" if row.get("meta_pricing_type") else ""
    return f"message {row['message_id']} ({category}{kind})"


def _explain_status_missing(row: dict, what: str) -> str:
    missing = ", ".join(row.get("_missing_wamids") or [])
    if row["level"] == CONVERSATION and row.get("_paired"):
        return (
            f"Meta's conversation {row['conversation_id']} opened at {_time(row['meta_started_at'])}, ours at "
            f"{_time(row['ours_started_at'])} ({_duration(row['_gap_seconds'])} apart); Meta counts messages the input "
            f"does not have ({missing}): the webhooks of the message that opened it were probably lost."
        )
    if row["level"] == CONVERSATION and row.get("_explained"):
        return (
            f"Meta's {what} holds messages the input does not have ({missing}), probably the one that opened it (a "
            f"lost webhook); we count {row['_explained']} in our {row.get('_absorbed_by_category')} conversation "
            f"opened by {row.get('_absorbed_by')} at {_time(row.get('_absorbed_by_started_at'))}."
        )
    if row.get("_status") == FAILED:
        return (
            f"Meta billed {what}, but the input has {'its messages' if row['level'] == CONVERSATION else 'the message'} "
            "as failed, which is never billed: a delivered or read status is probably missing from the input."
        )
    return (
        f"Meta billed {what}, but the input has no status of "
        f"{'its messages' if row['level'] == CONVERSATION else 'the message'}: a lost webhook, or a message "
        "sent from another system. Add its statuses to the input."
    )


def _explain_category(row: dict) -> str:
    meta = row["meta_category"]
    ours = row["ours_category"] if row.get("_paired") else row.get("_ours_message_category")
    subject = f"message {row['message_id']}" if row["level"] == MESSAGE else f"conversation {row.get('conversation_id') or ''}".rstrip()
    if meta == SERVICE:
        return (
            f"Meta billed {subject} as a service (non-template) message, where the input has {_a(ours)} template: "
            "check the message type in the send log."
        )
    if ours == SERVICE:
        return (
            f"Meta billed {subject} as {_a(meta)} template, where the input has a non-template message: "
            "check the message type in the send log."
        )
    return (
        f"Meta billed {subject} as {meta}, where the input gives the template as {ours}: the template was probably "
        "recategorised (Meta bills the category at the time of sending; see template_category_update webhooks), "
        "or the send log or template list is out of date."
    )


def _explain_pricing_type(row: dict) -> str:
    ours, meta = row["ours_pricing_type"], row["meta_pricing_type"]
    if row.get("_subtype") == PAID_EXEMPT:
        return (
            f"Meta marks it {meta or 'billed'} with subtype paid_exempt: an eligible government or non-profit's service "
            f"message beyond the free tier, which Meta does not charge until 2027-12-31 (changes-2026-h2.md §4); we "
            f"computed {ours} ({row['_rule_set']}): set the business's service exemption ([billing] service_exempt_until in the "
            "config file)."
        )
    meta_text = meta or ("billable" if row["meta_billable"] else "not billable")
    text = f"Meta billed it {meta_text} where we computed {ours} ({row['_rule_set']})"
    if meta and row.get("meaning"):
        when = row["_meaning_date"].strftime("%Y-%m") if row.get("_meaning_date") else "then"
        text += f" (in {when} Meta's {meta} means {row['meaning']})"
    kinds = {ours, meta, *(row.get("agreeing_types") or [])}
    if "free_entry_point" in kinds or (row["meta_pricing_model"] == "CBP" and row["meta_billable"] is False):
        hint = (
            "the free entry point window differs: the user's Click-to-WhatsApp or Page entry may be missing from the "
            "input, or the window length differs (billing-rules.md §2, §8)"
        )
    elif "free_tier" in kinds and row.get("meaning_from") is not None:
        hint = (
            "the free tier of service messages is counted in another order: we give it to the first delivered in time "
            "order each month per business number, and Meta does not say which messages get it "
            "(changes-2026-h2.md §7, open question 2)"
        )
    elif "free_tier" in kinds:
        hint = "the monthly free tier counts differently (its size and scope, per WABA or per business number, are in data/rules/rule_sets.toml)"
    elif row.get("ours_category") == "utility":
        hint = (
            "whether the customer service window was open differs: the user's last message may be missing from the "
            "input, or free utility templates in the window began on another date for this business (billing-rules.md §8)"
        )
    elif (status := _rule_set_status(row.get("_rule_set"))) not in (None, "meta_documented"):
        hint = f"the rules of {row['_rule_set']} are {status}, not read on Meta's own page (billing-rules.md §1)"
    else:
        hint = "check the rule set in force (--timezone, --rules)"
    return f"{text}: {hint}."


def _rule_sets_with(settings: Settings, conversations: str) -> str:
    return " and ".join(sorted({p.name for p in settings.rule_book.periods if p.conversations == conversations}))


def _switch_to(settings: Settings, conversations: str) -> str:
    return str(next(p.effective_from for p in settings.rule_book.periods if p.conversations == conversations))


def _rule_set_status(name: str | None) -> str | None:
    """The status of a rule set (meta_documented, reported, ...) as its data says, None if unknown."""
    statuses = {p.status for p in rules.shipped().periods if p.name == name}
    return None if not statuses else "meta_documented" if statuses == {"meta_documented"} else "partly reported"


def _explain_not_modelled(row: dict) -> str:
    category, pricing_type = row.get("meta_category"), row.get("meta_pricing_type")
    billed = ", ".join(v for v in (category, pricing_type) if v) or "no category"
    if row.get("_recipient_type") == GROUP:
        to = f" to participant {row['_participant']}" if row.get("_participant") else ""
        return (
            f"Meta billed group message {row['message_id']}{to} ({billed}): group sends are read and kept, but this "
            "package does not bill them yet (one charge per delivered participant, group categories and windows): "
            "not compared."
        )
    if category is not None and category not in MODELLED_CATEGORIES:
        return (
            f"Meta billed message {row['message_id']} as category {category} ({billed}), which this package reads and "
            "keeps but does not model yet (an AI provider's or group rate): not compared."
        )
    meaning = f" ({row['meaning']})" if row.get("meaning") else ""
    return (
        f"Meta's pricing type {pricing_type}{meaning} has no counterpart among our charges yet: category not modelled "
        "yet, not compared."
    )


def _explain_rule_model(row: dict, settings: Settings) -> str:
    meta_model, ours_model = row.get("meta_pricing_model"), row.get("ours_pricing_model")
    if row.get("_missing_meta"):
        if row.get("_meta_conversation"):
            where = f"in its conversation {row['_meta_conversation']}"
            wamids = row.get("_meta_conversation_wamids") or []
            if wamids and wamids[0] != row["message_id"]:
                where += f", which {wamids[0]} opened"
        else:
            where = f"as a {row.get('_meta_model') or 'per-message'} item"
        return (
            f"We opened {_a(row['ours_category'])} {'conversation' if ours_model == 'CBP' else 'charge'} with "
            f"{row['message_id']} at {_time(row['ours_started_at'])}; Meta counts that message {where}, "
            "so Meta saw one conversation where we count two."
        )
    if row.get("_paired") and meta_model and ours_model and meta_model != ours_model:
        if meta_model == "PMP":
            return (
                f"Meta bills it per message (PMP) where we computed a conversation under {row['_rule_set']}: check "
                "--timezone (the WABA time zone sets when per-message pricing began, 2025-07-01) and --rules."
            )
        return (
            f"Meta counts it in a conversation (CBP) where we bill it per message under {row['_rule_set']}: a "
            "conversation open at the switch to per-message pricing keeps absorbing messages (billing-rules.md §5), "
            "or --timezone puts the switch elsewhere."
        )
    if not row.get("_paired"):
        opener = row.get("_absorbed_by")
        if opener:
            message = row.get("_explained") or row["message_id"]
            return (
                f"Meta bills {message} {'on its own (PMP)' if meta_model == 'PMP' else 'in a conversation of its own'}; "
                f"we count it in our {row.get('_absorbed_by_category')} conversation opened by {opener} at "
                f"{_time(row.get('_absorbed_by_started_at'))} ({row.get('_absorbed_by_rule_set')}), still open then "
                "(billing-rules.md §4, §5 crossover)."
            )
        return f"Meta billed {_what(row)}; the input has the message ({row.get('_direction')}) but we charge nothing for it."
    meta, ours = row.get("meta_category"), row.get("ours_category")
    pair = {meta, ours}
    if pair == {rules.AUTH, rules.AUTH_INTERNATIONAL}:
        return (
            f"Meta billed {meta} where we computed {ours}: set the business's authentication-international countries "
            "and start dates ([billing.authentication_international] in the config file, billing-rules.md §4.5)."
        )
    if rules.FEP_CATEGORY in pair:
        return (
            f"Meta billed {meta} where we computed {ours}: the free entry point window is modelled differently — the "
            "user's entry may be missing from the input, or the window was shorter (billing-rules.md §2, §8)."
        )
    era_2022 = {meta in rules.INITIATOR_CATEGORIES, ours in rules.INITIATOR_CATEGORIES}
    if era_2022 == {True, False} and rules.FEP_CATEGORY not in pair:
        return (
            f"Meta billed {meta} where we computed {ours} under {row['_rule_set']}: one side uses the categories of "
            f"{_rule_sets_with(settings, rules.ONE_SLOT)} (user- and business-initiated), the other those of "
            f"{_rule_sets_with(settings, rules.PER_CATEGORY)}; the switch was {_switch_to(settings, rules.PER_CATEGORY)} in the "
            "WABA time zone (check --timezone)."
        )
    if pair <= {"user_initiated", "business_initiated"}:
        return (
            f"Meta says {meta} where we computed {ours}: whether a customer service window was open differs — the "
            "user's message that opened it may be missing from the input."
        )
    if meta not in MODELLED_CATEGORIES:
        return f"Meta billed category {meta}, which this package does not model (e.g. an AI provider's or group rate)."
    return f"Meta billed {meta} where we computed {ours} under {row['_rule_set']}: a rule modelled differently."


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def _a(word: str) -> str:
    """The word with its article, for the category names this module writes (a utility, an authentication)."""
    return f"{'an' if word[:1].lower() in 'aeio' else 'a'} {word}"


def _time(value: dt.datetime | None) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S} UTC" if value is not None else "an unknown time"


def _duration(seconds: int | None) -> str:
    if seconds is None:
        return "an unknown time"
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


# --- Aggregate level ----------------------------------------------------------------------------------------

_DIMENSIONS = ("phone_number", "country", "category", "pricing_type")
_EXACT_COST = pl.Decimal(38, 12)  # pricing.COST_SCALE: summed exactly, rounded once


def reconcile_aggregates(
    charges: pl.DataFrame,
    analytics: pl.DataFrame,
    *,
    settings: Settings | None = None,
    con: duckdb.DuckDBPyConnection | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame, list[str]]:
    """Rows of the aggregate level, Meta's unreadable data points, and notes.

    `charges`: contracts.md §2 with `user_country` (`with_user_country`) and, to compare costs,
    `cost` and `currency` (`pricing.price`; a null cost on a billable charge is an unknown rate).
    Without `cost` volumes alone are compared.
    """
    settings = settings or Settings()
    unreadable = analytics.filter(pl.col("problem").is_not_null()).select(
        meta_source="report", source_file="source_file", source_row="source_row",
        message_id=pl.lit(None, pl.String), problem="problem",
    )
    points = analytics.filter(pl.col("problem").is_null()).with_columns(
        report_id=pl.format("{} {}", pl.col("source_file").fill_null("(response)"), "report")
    )
    compare_cost = "cost" in charges.columns
    notes: list[str] = []
    ours_parts, meta_parts = [], []
    for (report_id,), report in points.group_by("report_id", maintain_order=True):
        ours, meta, report_notes = _report_buckets(str(report_id), report, charges, settings)
        ours_parts.append(ours)
        meta_parts.append(meta)
        notes += report_notes
    if not meta_parts:
        return pl.DataFrame(schema=RECONCILIATION_SCHEMA), unreadable, notes
    our_charges = pl.concat(ours_parts, how="vertical_relaxed")
    meta_points = pl.concat(meta_parts, how="vertical_relaxed")
    con = con or duckdb.connect()
    con.register("our_charges", ArrowStream(our_charges))
    con.register("meta_points", ArrowStream(meta_points))
    try:
        compared = pl.DataFrame(con.sql(query("reconcile_aggregates")))
    finally:
        con.unregister("our_charges")
        con.unregister("meta_points")
    rows = _classified_aggregates(compared, compare_cost, settings)
    if outside := _outside_every_report(charges, points):
        notes.append(
            f"{_plural(outside, 'charge')} of ours fall outside the periods of Meta's analytics (or have another "
            "pricing model): not compared at the aggregate level"
        )
    if not compare_cost:
        notes.append("costs not compared: our charges were not priced (no rate card)")
    return _finished(rows), unreadable, notes


def _outside_every_report(charges: pl.DataFrame, points: pl.DataFrame) -> int:
    """How many charges no report covers: another pricing model, or outside every report's span."""
    spans = points.group_by("report_id").agg(
        pricing_model=pl.col("pricing_model").first(), first=pl.col("start").min(), last=pl.col("end").max()
    )
    covered = pl.lit(False)
    for span in spans.iter_rows(named=True):
        covered = covered | (
            (pl.col("pricing_model") == span["pricing_model"])
            & (pl.col("started_at") >= span["first"])
            & (pl.col("started_at") < span["last"])
        )
    return charges.filter(~covered).height


def _report_buckets(
    report_id: str, report: pl.DataFrame, charges: pl.DataFrame, settings: Settings
) -> tuple[pl.DataFrame, pl.DataFrame, list[str]]:
    """Our charges of one report's pricing model in its buckets and dimensions, and its points."""
    kind = report["report"][0]
    model = REPORT_PRICING_MODEL[kind]
    notes = []
    present = [d for d in _DIMENSIONS if report[d].is_not_null().any()]
    ours = charges.filter(pl.col("pricing_model") == model).with_columns(
        phone_number=pl.col("business_phone"),
        country=pl.col("user_country"),
        category=pl.col("category").replace(
            {rules.FEP_CATEGORY: CBP_FREE_ENTRY_AS} if model == "CBP" else {}
        ),
    )
    if model == "PMP":  # our pricing types in Meta's words of the charge's date (the table of the item level)
        day = engine.local_time(settings, "started_at").dt.date()
        ours = in_metas_words(ours, local_date=day, pricing_type="pricing_type")
    if "phone_number" in present:
        theirs = set(report["phone_number"].drop_nulls().to_list())
        if not theirs <= set(ours["phone_number"].drop_nulls().to_list()):
            present.remove("phone_number")
            notes.append(
                f"{report_id}: Meta's phone numbers ({', '.join(sorted(theirs))}) are not the business_phone values of "
                "the input (webhooks name numbers by phone_number_id): compared over all numbers"
            )
    absent = [d for d in _DIMENSIONS if d not in present]
    span_start, span_end = report["start"].min(), report["end"].max()
    ours = ours.filter(pl.col("started_at").is_between(span_start, span_end, closed="left"))
    intervals = report.select("start", "end").unique().sort("start")
    granularity = report["granularity"].drop_nulls().mode().sort().first() if report["granularity"].drop_nulls().len() else None
    bucketed = ours.sort("started_at").join_asof(
        intervals, left_on="started_at", right_on="start", strategy="backward", check_sortedness=False
    )
    inside = pl.col("start").is_not_null() & (pl.col("started_at") < pl.col("end"))
    calendar_start, calendar_end = _calendar_bucket(granularity, settings.timezone)
    bucketed = bucketed.with_columns(
        period_start=pl.when(inside).then(pl.col("start")).otherwise(calendar_start),
        period_end=pl.when(inside).then(pl.col("end")).otherwise(calendar_end),
    )
    outside_meta = bucketed.filter(~inside).height
    if outside_meta and granularity in (DAILY, MONTHLY):
        starts = intervals["start"].dt.convert_time_zone(settings.timezone)
        if not (starts.dt.hour() == 0).all():
            notes.append(
                f"{report_id}: Meta's {granularity.lower()} buckets start at {starts[0]:%H:%M} in {settings.timezone}; "
                f"{outside_meta:,} of our charges fall outside them and are bucketed in {settings.timezone}: pass the "
                "WABA's time zone with --timezone"
            )
    ours_rows = bucketed.select(
        report_id=pl.lit(report_id),
        report=pl.lit(kind),
        pricing_model=pl.lit(model),
        granularity=pl.lit(granularity, pl.String),
        period_start=pl.col("period_start").dt.epoch("us"),
        period_end=pl.col("period_end").dt.epoch("us"),
        **{d: (pl.lit(None, pl.String) if d in absent else pl.col(d).cast(pl.String)) for d in _DIMENSIONS},
        billable="billable",
        cost=(pl.col("cost") if "cost" in charges.columns else pl.lit(None)).cast(_EXACT_COST),
        unpriced=(pl.col("billable") & pl.col("cost").is_null()) if "cost" in charges.columns else pl.lit(False),
        currency=(pl.col("currency") if "currency" in charges.columns else pl.lit(None)).cast(pl.String),
    )
    meta_rows = report.select(
        report_id=pl.lit(report_id),
        report="report",
        pricing_model="pricing_model",
        granularity=pl.coalesce("granularity", pl.lit(granularity, pl.String)),
        period_start=pl.col("start").dt.epoch("us"),
        period_end=pl.col("end").dt.epoch("us"),
        **{d: (pl.lit(None, pl.String) if d in absent else pl.col(d)) for d in _DIMENSIONS if d != "category"},
        category=pl.lit(None, pl.String) if "category" in absent else pl.col("category").replace(settings.rule_book.choices.billed_category),
        meta_category="category",
        volume="volume",
        cost="cost",
        currency="currency",
    ).select(
        "report_id", "report", "pricing_model", "granularity", "period_start", "period_end", *_DIMENSIONS,
        "meta_category", "volume", "cost", "currency",
    )
    return ours_rows, meta_rows, notes


def _calendar_bucket(granularity: str | None, timezone: str) -> tuple[pl.Expr, pl.Expr]:
    """(start, end) of our own bucket for a charge outside Meta's data points: the half hour, or the
    day or month in the WABA time zone (billing-rules.md §2 Months)."""
    local = pl.col("started_at").dt.convert_time_zone(timezone)
    every = {HALF_HOUR: "30m", DAILY: "1d", MONTHLY: "1mo"}.get(granularity or "", "1d")
    start = local.dt.truncate(every)
    return start.dt.convert_time_zone(schema.UTC), start.dt.offset_by(every).dt.convert_time_zone(schema.UTC)


def _classified_aggregates(compared: pl.DataFrame, compare_cost: bool, settings: Settings) -> pl.DataFrame:
    """Status, reason and explanation of the compared buckets (module docstring, Reasons)."""
    compared = compared.with_columns(
        pl.col("ours_cost").cast(_EXACT_COST).round(COST_SCALE, mode="half_away_from_zero").cast(COST_DTYPE),
        pl.col("meta_cost").cast(COST_DTYPE),
    )
    ours_volume, meta_volume = pl.col("ours_volume"), pl.col("meta_volume")
    cost_difference = pl.col("ours_cost") - pl.col("meta_cost")
    tolerance = pl.lit(COST_TOLERANCE, dtype=COST_DTYPE)
    # Meta's group and AI traffic (categories we do not bill, pricing types none of ours match): read, not compared.
    unmatched_types = pricing_type_meanings().filter(pl.col("ours_pricing_type").is_null())["meta_pricing_type"].unique()
    not_modelled = (
        (pl.col("category").is_not_null() & ~pl.col("category").is_in(MODELLED_CATEGORIES))
        | pl.col("pricing_type").is_in(unmatched_types.to_list())
    ).fill_null(False)
    reason = (
        pl.when(not_modelled & ours_volume.is_null())
        .then(pl.lit(NOT_MODELLED))
        .when(meta_volume.is_null() | ours_volume.is_null() | (ours_volume != meta_volume))
        .then(pl.lit(VOLUME_DIFFERS))
        .when(pl.lit(not compare_cost))
        .then(pl.lit(AGREES))
        .when(pl.col("meta_cost").is_null())
        .then(pl.lit(COST_NOT_AVAILABLE))
        .when((pl.col("unpriced") > 0) | pl.col("ours_cost").is_null())
        .then(pl.lit(RATE_CARD_GAP))
        .when(cost_difference == 0)
        .then(pl.lit(AGREES))
        .when(cost_difference.abs() <= tolerance)
        .then(pl.lit(ROUNDING))
        .otherwise(pl.lit(COST_DIFFERS))
    )
    start = pl.from_epoch("period_start", time_unit="us").dt.replace_time_zone(schema.UTC)
    frame = compared.with_columns(
        period_start=start,
        period_end=pl.from_epoch("period_end", time_unit="us").dt.replace_time_zone(schema.UTC),
        reason=reason,
    ).with_columns(
        status=pl.when(meta_volume.is_null())
        .then(pl.lit(MISSING_META))
        .when(ours_volume.is_null())
        .then(pl.lit(MISSING_OURS))
        .when(pl.col("reason").is_in([AGREES, ROUNDING, COST_NOT_AVAILABLE]))
        .then(pl.lit(MATCH))
        .otherwise(pl.lit(DIFFERENT)),
        volume_difference=ours_volume.fill_null(0) - meta_volume.fill_null(0),
        volume_relative_difference=((ours_volume.fill_null(0) - meta_volume) / meta_volume).round(6),
        cost_difference=cost_difference if compare_cost else pl.lit(None, COST_DTYPE),
        cost_relative_difference=(
            (cost_difference.cast(pl.Float64) / pl.col("meta_cost").cast(pl.Float64)).round(6) if compare_cost else pl.lit(None, pl.Float64)
        ),
        local_date=start.dt.convert_time_zone(settings.timezone).dt.date(),
    )
    frame = markets.with_market(frame.with_columns(user_country=pl.col("country")), country="user_country")
    if not compare_cost:
        frame = frame.with_columns(ours_cost=pl.lit(None, COST_DTYPE))
    frame = frame.with_columns(
        pl.when(pl.col("country").is_null()).then(None).otherwise(pl.col("market")).alias("market"),
        cost_relative_difference=pl.when(pl.col("cost_relative_difference").is_infinite() | pl.col("cost_relative_difference").is_nan())
        .then(None)
        .otherwise(pl.col("cost_relative_difference")),
    )
    unit = pl.when(pl.col("pricing_model") == "CBP").then(pl.lit("conversation")).otherwise(pl.lit("message"))
    plural = pl.when(pl.col("meta_volume") == 1).then(pl.lit("")).otherwise(pl.lit("s"))
    costs = " and so do costs." if compare_cost else "; costs not compared (no rate card)."
    agrees = pl.format("Volumes agree ({} {}{}){}", "meta_volume", unit, plural, pl.lit(costs))
    merged = (pl.col("meta_categories") != pl.col("category")).fill_null(False)  # written out in full
    explanations = _explanations(
        frame, lambda row: _explain_aggregate(row, compare_cost), agrees, (pl.col("reason") != AGREES) | merged
    )
    return frame.select(
        level=pl.lit(AGGREGATE),
        meta_source="report",
        business_phone="phone_number",
        period_start="period_start",
        period_end="period_end",
        granularity="granularity",
        country="country",
        market="market",
        ours_pricing_model="pricing_model",
        meta_pricing_model="pricing_model",
        ours_category="category",
        meta_category=pl.coalesce("meta_categories", "category"),
        ours_pricing_type="pricing_type",
        meta_pricing_type="pricing_type",
        ours_volume="ours_volume",
        meta_volume="meta_volume",
        volume_difference="volume_difference",
        volume_relative_difference="volume_relative_difference",
        ours_cost="ours_cost",
        meta_cost="meta_cost",
        cost_difference="cost_difference",
        cost_relative_difference="cost_relative_difference",
        currency=pl.coalesce("meta_currency", "ours_currency"),
        status="status",
        reason="reason",
        explanation=explanations,
    )


def _explain_aggregate(row: dict, compare_cost: bool) -> str:
    reason, ours, meta = row["reason"], row["ours_volume"], row["meta_volume"]
    unit = "conversation" if row["pricing_model"] == "CBP" else "message"
    if reason == NOT_MODELLED:
        what = ", ".join(v for v in (row.get("meta_categories") or row.get("category"), row.get("pricing_type")) if v)
        return (
            f"Meta counts {_plural(meta, unit)} ({what}) that this package reads but does not bill yet (group "
            "messages, AI providers): not compared."
        )
    merged = ""
    if row.get("meta_categories") and row["meta_categories"] != row.get("category"):
        merged = f" (Meta's {row['meta_categories']} together, billed alike)"
    if reason == VOLUME_DIFFERS:
        if meta is None:
            return (
                f"Meta's report has no data point where we count {_plural(ours, unit)}{merged}: is this period, number "
                "or country in its request?"
            )
        if ours is None:
            return f"Meta counts {_plural(meta, unit)}{merged} where we have none: is this traffic in the input?"
        return (
            f"Meta counts {_plural(meta, unit)}, we count {ours:,} ({row['volume_difference']:+,}){merged}: the message "
            "and conversation rows of this period say which items differ."
        )
    volumes = f"Volumes agree ({_plural(meta, unit)}){merged}"
    if reason == AGREES:
        return f"{volumes} and so do costs." if compare_cost else f"{volumes}; costs not compared (no rate card)."
    if reason == COST_NOT_AVAILABLE:
        return f"{volumes}; Meta gives no cost here (a WABA on a partner's credit line): compare with the partner's invoice."
    if reason == RATE_CARD_GAP:
        return (
            f"{volumes}; our rate card has no rate for {_plural(row['unpriced'], 'billable ' + unit)} here, so our cost is unknown "
            f"against Meta's {row['meta_cost']}: add the rate (--rate-card)."
        )
    if reason == ROUNDING:
        return f"{volumes}; costs differ by {row['cost_difference']}, within rounding ({COST_TOLERANCE})."
    share = f" ({row['cost_relative_difference']:+.1%})" if row.get("cost_relative_difference") is not None else ""
    return (
        f"{volumes}; our cost {row['ours_cost']} against Meta's {row['meta_cost']}{share}: the card's rates are not what "
        "Meta charged here (another card date or currency, volume tiers, or a provider's price)."
    )


# --- Meta-style reports from our own charges, and known perturbations ---------------------------------------


def conversation_id_of(opening_message_id: str) -> str:
    """A made-up Meta conversation id for our conversation opened by this message (stable)."""
    return hashlib.sha1(opening_message_id.encode()).hexdigest()[:32]


def meta_pricing_objects(charges: pl.DataFrame, messages: pl.DataFrame, settings: Settings | None = None) -> pl.DataFrame:
    """The pricing objects Meta would send for our own charges, as webhook rows (PRICING_SCHEMA).

    Each delivered outbound message gets a `sent` row and, unless it only reached `sent`, a row of
    its status. PMP: `pricing_model`, category (`marketing_lite` as Meta writes it), `type` in
    Meta's words of the day (`meta_reports.in_metas_words`) and `billable`, no conversation. CBP:
    the conversation's category, `billable` true unless it is a
    free entry point conversation (§7), a conversation id, and on the `sent` row only the expiration
    (opening + window, rounded up to the next whole minute, as Meta has been seen to do).
    """
    settings = settings or Settings()
    attributed = conversation_of_messages(charges, messages, settings)
    rows = (
        messages.join(attributed, on="message_id", how="inner")
        .join(
            charges.select(
                "opening_message_id", "pricing_model", "category", "pricing_type", "started_at",
                charge_business_phone="business_phone",
            ),
            on="opening_message_id",
            how="left",
        )
    )
    rows = in_metas_words(rows, local_date=engine.local_time(settings, "started_at").dt.date(), pricing_type="pricing_type")
    cbp = pl.col("pricing_model") == "CBP"
    conversation_window, fep_window = settings.conversation_windows()
    window = pl.when(pl.col("category") == rules.FEP_CATEGORY).then(pl.lit(fep_window)).otherwise(pl.lit(conversation_window))
    nominal_end = pl.col("started_at") + window
    rounded_end = nominal_end.dt.truncate("1m") + pl.when(nominal_end.dt.truncate("1m") == nominal_end).then(
        pl.duration(minutes=0)
    ).otherwise(pl.duration(minutes=1))
    category = pl.when(
        ~cbp & (pl.col("category") == "marketing") & (pl.col("template_category") == "marketing_lite")
    ).then(pl.lit("marketing_lite")).otherwise(pl.col("category"))
    base = rows.select(
        meta_source=pl.lit(WEBHOOK),
        message_id="message_id",
        time="timestamp",
        business_phone="business_phone",
        user_id="user_id",
        pricing_model="pricing_model",
        category=category,
        pricing_type=pl.when(cbp).then(None).otherwise(pl.col("pricing_type")),
        billable=pl.when(cbp).then(pl.col("pricing_type") != "free_entry_point").otherwise(pl.col("pricing_type") == "regular"),
        conversation_id=pl.when(cbp).then(
            pl.col("opening_message_id").map_elements(conversation_id_of, return_dtype=pl.String)
        ),
        conversation_origin=pl.when(cbp).then(pl.col("category")),
        _expires=pl.when(cbp).then(rounded_end),
        _status=pl.col("status").fill_null("delivered"),
    )
    sent = base.with_columns(status=pl.lit("sent"), conversation_expires_at=pl.col("_expires"))
    later = base.filter(pl.col("_status") != "sent").with_columns(
        status=pl.col("_status"), conversation_expires_at=pl.lit(None, schema.INSTANT)
    )
    frame = pl.concat([sent, later], how="diagonal_relaxed").sort("message_id", "status")
    frame = frame.with_columns(
        source_file=pl.lit("synthetic"),
        source_row=pl.int_range(1, pl.len() + 1, dtype=pl.Int64),
        problem=pl.lit(None, pl.String),
    )
    columns = frame.columns  # subtype and group recipients: none in our own charges
    return frame.select([(pl.col(c) if c in columns else pl.lit(None)).cast(t).alias(c) for c, t in PRICING_SCHEMA.items()])


def meta_analytics_response(
    charges: pl.DataFrame, *, granularity: str = DAILY, timezone: str = "UTC", report: str = PRICING_ANALYTICS
) -> dict:
    """What Meta's `pricing_analytics` (or `conversation_analytics`) would answer for our charges:
    one data point per bucket (WABA time zone), country, category and type, with `volume` (or
    `conversation`) and, when the charges are priced, `cost` as a number. `charges` need
    `user_country` (`with_user_country`)."""
    model = REPORT_PRICING_MODEL[report]
    every = {HALF_HOUR: "30m", DAILY: "1d", MONTHLY: "1mo"}[granularity]
    local = pl.col("started_at").dt.convert_time_zone(timezone).dt.truncate(every)
    priced = "cost" in charges.columns
    ours = charges.filter(pl.col("pricing_model") == model)
    if model == "PMP":  # in Meta's words of the day (from 2026-10-01 our free_tier is FREE_CUSTOMER_SERVICE)
        day = pl.col("started_at").dt.convert_time_zone(timezone).dt.date()
        ours = in_metas_words(ours, local_date=day, pricing_type="pricing_type")
    points = (
        ours
        .with_columns(start=local.dt.epoch("s"), end=local.dt.offset_by(every).dt.epoch("s"))
        .group_by("start", "end", "user_country", "category", "pricing_type")
        .agg(volume=pl.len(), **({"cost": pl.col("cost").sum()} if priced else {}))
        .sort("start", "user_country", "category", "pricing_type")
    )
    count_key = "conversation" if report == CONVERSATION_ANALYTICS else "volume"
    data_points = []
    for point in points.iter_rows(named=True):
        item = {
            "start": point["start"],
            "end": point["end"],
            "country": point["user_country"],
            f"{'conversation' if report == CONVERSATION_ANALYTICS else 'pricing'}_type": point["pricing_type"].upper(),
            f"{'conversation' if report == CONVERSATION_ANALYTICS else 'pricing'}_category": point["category"].upper(),
            count_key: point["volume"],
        }
        if priced:
            item["cost"] = float(point["cost"])
        data_points.append(item)
    return {report: {"data": [{"data_points": data_points}]}, "id": "synthetic"}


# Kinds of perturbation, and what reconciliation must say about each.
RECATEGORISED = "recategorised"
PRICING_TYPE_CHANGED = "pricing_type_changed"
PRICING_DROPPED = "pricing_dropped"
STATUS_DROPPED = "status_dropped"
WINDOW_SHIFTED = "window_shifted"
WINDOW_SHIFT = dt.timedelta(hours=2)


@dataclass(frozen=True)
class Perturbation:
    """One known change: what was done to which message, and the row reconciliation must report."""

    kind: str
    level: str
    message_id: str  # the wamid the output row carries (the opening message for a conversation)
    status: str
    reason: str


@dataclass(frozen=True)
class Perturbed:
    messages: pl.DataFrame  # our traffic, with the dropped messages gone
    meta_pricing: pl.DataFrame  # Meta's pricing objects, changed
    perturbations: tuple[Perturbation, ...]


_EXPECTED = {
    RECATEGORISED: (DIFFERENT, CATEGORY_CHANGED),
    PRICING_TYPE_CHANGED: (DIFFERENT, PRICING_TYPE_DIFFERS),
    PRICING_DROPPED: (MISSING_META, PRICING_NOT_REPORTED),
    STATUS_DROPPED: (MISSING_OURS, STATUS_MISSING),
    WINDOW_SHIFTED: (DIFFERENT, WINDOW_DIFFERS),
}
_OTHER_CATEGORY = {"marketing": "utility", "utility": "marketing", "authentication": "marketing"}


def perturb(
    messages: pl.DataFrame, meta_pricing: pl.DataFrame, charges: pl.DataFrame, *, seed: int = 0, per_kind: int = 2
) -> Perturbed:
    """Change `per_kind` items of each kind, chosen by `seed` among those a change touches alone:

    - `recategorised`: Meta's category of a regular template message (PMP) or conversation (CBP)
      becomes another template category -> `different` / `category_changed`;
    - `pricing_type_changed`: a regular PMP message becomes `free_customer_service` (not billable),
      a regular CBP conversation not billable -> `different` / `pricing_type_differs`;
    - `pricing_dropped`: every pricing object of a message or conversation is gone ->
      `missing_meta` / `pricing_not_reported`;
    - `status_dropped`: a message is gone from our traffic (a lost webhook): a regular marketing,
      utility or authentication template that opened a charge alone (a PMP row, or a conversation of
      one message), in a key without entry points, so that nothing else changes ->
      `missing_ours` / `status_missing`;
    - `window_shifted`: a CBP conversation's expiration moves `WINDOW_SHIFT` later ->
      `different` / `window_differs`.

    Items at the very start or end of the traffic are not chosen (unmatched charges are only
    reported inside the period Meta's items cover). No item is changed twice.
    """
    first, last = charges["started_at"].min(), charges["started_at"].max()
    inner = charges.filter((pl.col("started_at") > first) & (pl.col("started_at") < last))
    entry_keys = messages.filter(pl.col("entry_point").is_not_null()).select("business_phone", "user_id").unique()
    regular_templates = inner.filter(
        (pl.col("pricing_type") == "regular") & pl.col("category").is_in(list(_OTHER_CATEGORY))
    )
    chosen: set[str] = set()
    plan: list[Perturbation] = []

    def pick(kind: str, model: str, candidates: pl.DataFrame) -> list[str]:
        pool = candidates.filter(
            (pl.col("pricing_model") == model) & ~pl.col("opening_message_id").is_in(list(chosen))
        ).sort("opening_message_id")
        if pool.height == 0:
            return []
        taken = pool.sample(n=min(per_kind, pool.height), seed=seed + len(plan))["opening_message_id"].to_list()
        chosen.update(taken)
        level = CONVERSATION if model == "CBP" else MESSAGE
        plan.extend(Perturbation(kind, level, m, *_EXPECTED[kind]) for m in sorted(taken))
        return taken

    one_message = regular_templates.filter(pl.col("message_count") == 1).join(entry_keys, on=["business_phone", "user_id"], how="anti")
    for model in ("PMP", "CBP"):
        pick(RECATEGORISED, model, regular_templates)
        pick(PRICING_TYPE_CHANGED, model, regular_templates)
        pick(PRICING_DROPPED, model, inner)
        pick(STATUS_DROPPED, model, one_message)
    pick(WINDOW_SHIFTED, "CBP", inner)

    members = conversation_of_messages(charges, messages)
    targets = {p.message_id: p for p in plan}
    of_kind = {kind: [m for m, p in targets.items() if p.kind == kind] for kind in _EXPECTED}

    def wamids(kind: str) -> list[str]:
        return members.filter(pl.col("opening_message_id").is_in(of_kind[kind]))["message_id"].to_list()

    meta = meta_pricing.with_columns(
        category=pl.when(pl.col("message_id").is_in(wamids(RECATEGORISED)))
        .then(pl.col("category").replace(rules.shipped().choices.billed_category).replace(_OTHER_CATEGORY))
        .otherwise(pl.col("category")),
        pricing_type=pl.when(pl.col("message_id").is_in(wamids(PRICING_TYPE_CHANGED)) & (pl.col("pricing_model") == "PMP"))
        .then(pl.lit("free_customer_service"))
        .otherwise(pl.col("pricing_type")),
        billable=pl.when(pl.col("message_id").is_in(wamids(PRICING_TYPE_CHANGED))).then(False).otherwise(pl.col("billable")),
        conversation_expires_at=pl.when(pl.col("message_id").is_in(wamids(WINDOW_SHIFTED)))
        .then(pl.col("conversation_expires_at") + WINDOW_SHIFT)
        .otherwise(pl.col("conversation_expires_at")),
    ).filter(~pl.col("message_id").is_in(wamids(PRICING_DROPPED)))
    traffic = messages.filter(~pl.col("message_id").is_in(of_kind[STATUS_DROPPED]))
    return Perturbed(messages=traffic, meta_pricing=meta, perturbations=tuple(sorted(plan, key=lambda p: (p.kind, p.message_id))))


# --- The summary printed by `wa-analytics reconcile` ---------------------------------------------------------


def agreement_by_category(rows: pl.DataFrame) -> pl.DataFrame:
    """Per level and category (ours, else Meta's): rows compared, matches, and the agreement rate."""
    return (
        rows.with_columns(category=pl.coalesce(pl.col("ours_category").replace(rules.shipped().choices.billed_category), "meta_category").fill_null("(all)"))
        .group_by("level", "category")
        .agg(compared=pl.len(), matched=(pl.col("status") == MATCH).sum())
        .with_columns(agreement=(pl.col("matched") / pl.col("compared")).round(4))
        .with_columns(level_order=pl.col("level").replace_strict({l: i for i, l in enumerate(LEVELS)}, return_dtype=pl.Int8))
        .sort("level_order", "category")
        .drop("level_order")
    )


def format_summary(result: Reconciliation) -> str:
    """For stderr: rows by level and status, agreement by category, differences by reason, notes."""
    rows = result.rows
    lines = [f"Reconciliation: {_plural(rows.height, 'row')} compared"]
    for level in LEVELS:
        of_level = rows.filter(pl.col("level") == level)
        if of_level.height == 0:
            continue
        counts = dict(of_level.group_by("status").len().iter_rows())
        parts = ", ".join(f"{status} {counts[status]:,}" for status in STATUSES if counts.get(status))
        lines.append(f"  {level:<13} {of_level.height:>9,}: {parts}")
    agreement = agreement_by_category(rows)
    if agreement.height:
        lines.append("Agreement by category (rows that match / rows compared):")
        for row in agreement.iter_rows(named=True):
            lines.append(
                f"  {row['level']:<13} {row['category']:<30} {row['agreement']:>7.1%}  ({row['matched']:,} of {row['compared']:,})"
            )
    reasons = (
        rows.filter(pl.col("reason") != AGREES).group_by("reason").len().sort("len", "reason", descending=[True, False])
    )
    if reasons.height:
        lines.append("Reasons other than agreement:")
        for reason, count in reasons.iter_rows():
            lines.append(f"  {count:>9,}  {reason}: {REASONS.get(reason, '')}")
    if result.unreadable.height:
        lines.append(f"{result.unreadable.height:,} of Meta's rows could not be compared:")
        for row in result.unreadable.head(5).iter_rows(named=True):
            where = f"{row['source_file']}, row {row['source_row']}" if row["source_file"] else "(no file)"
            lines.append(f"  {where}: {row['problem']}")
        if result.unreadable.height > 5:
            lines.append(f"  ... and {result.unreadable.height - 5:,} more")
    if result.notes:
        lines.append("Notes:")
        lines += [f"  - {note}" for note in result.notes]
    return "\n".join(lines)
