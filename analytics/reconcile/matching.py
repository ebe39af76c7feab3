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
   to our charge whose `opening_message_id` is that wamid (a group send, `recipient_type: group`:
   an item per participant, matched to our charge of that wamid whose `user_id` is the participant,
   `recipient_participant_id`; Meta's `free_group_customer_service` agrees with our free types as
   the table below says). Meta's names for the categories of 2026 (`group_marketing`,
   `group_utility`, `group_service`, `general_purpose_ai`, and `pricing_analytics`'
   `GROUP_MARKETING_LITE`, `MARKETING_LITE_DYNAMIC`, `AI_BOT`: `outcomes.METAS_CATEGORIES`) are
   compared with ours like the others.
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
this package does not know — a category outside `MODELLED_CATEGORIES` (a new one of Meta's), a
pricing type none of ours corresponds to — is `not_modelled`: reported with Meta's own words,
never dropped, matched or not (unless the input lacks the message altogether: `status_missing`);
so is an analytics data point of such traffic that we have no charge for. Otherwise a matched item gets the first that
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

**Modules.** This module is the matching itself: which charge of ours each message belongs to,
Meta's items, the message and conversation levels, and `reconcile`, which runs every level. The
words every level answers in (statuses, reasons, the row schema) are in `outcomes`, the aggregate
level (`queries/reconcile_aggregates.sql`'s caller) in `aggregates`, the sentence of each row's
`explanation` column in `explanations`; the summary printed by `wa-analytics reconcile` is
`analytics.present.reconciliation_text`, and Meta's reports made up from our own charges (the
synthetic check) are `analytics.synthetic.meta_billing`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path

import duckdb
import polars as pl

from analytics.core import schema
from analytics.core.errors import UsageError
from analytics.core.times import local_time
from analytics.price import pricing
from analytics.read.ingest import JSON_SUFFIXES
from analytics.reconcile import meta_reports
from analytics.reconcile.aggregates import reconcile_aggregates
from analytics.reconcile.explanations import agrees_text, explain_item, explained
from analytics.reconcile.meta_reports import with_pricing_type_meaning
from analytics.reconcile.outcomes import (
    AGREES,
    CATEGORY_CHANGED,
    CONVERSATION,
    DIFFERENT,
    FAILED,
    FREE_TIER_COUNTED_BILLABLE,
    GROUP,
    MATCH,
    MESSAGE,
    METAS_CATEGORIES,
    MISSING_META,
    MISSING_OURS,
    MODELLED_CATEGORIES,
    NO_PRICING_MODEL,
    NOT_MODELLED,
    NOT_MODELLED_NBP,
    PAID_EXEMPT,
    PRICING_NOT_REPORTED,
    PRICING_TYPE_DIFFERS,
    QUARANTINED,
    RECONCILIATION_SCHEMA,
    RULE_MODEL_DIFFERS,
    SERVICE,
    STATUS_MISSING,
    STATUS_PRECEDENCE,
    TEMPLATE_FAMILY,
    UNREADABLE_SCHEMA,
    WINDOW_DIFFERS,
    WINDOW_TOLERANCE,
    Reconciliation,
    finished,
)
from analytics.settings import Settings
from analytics.terms import rules


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


def against_reports(
    messages: pl.DataFrame,
    charges: pl.DataFrame,
    *,
    input_paths: Sequence[str | Path],
    webhook_pricing: pl.DataFrame,
    reports: meta_reports.MetaReports,
    quarantine: pl.DataFrame | pl.LazyFrame | None,
    settings: Settings,
    notes: Sequence[str] = (),
) -> Reconciliation:
    """`reconcile` against everything Meta reported: the `pricing` objects of the webhook inputs
    (`webhook_pricing`), provider billing events among the JSON inputs (`input_paths`), and the
    analytics responses and events in `reports`. Our costs are compared at Meta's list rates where
    the analytics' currency is on the card; the summary says why not otherwise."""
    json_inputs = [p for p in input_paths if Path(p).suffix.lower() in JSON_SUFFIXES]
    among_inputs = meta_reports.read_reports(json_inputs, strict=False)
    meta_pricing = meta_reports.concat_pricing([webhook_pricing, among_inputs.pricing, reports.pricing])
    priced, why_not = priced_at_list_rates(charges, reports.analytics, settings)
    return reconcile(
        messages,
        charges,
        meta_pricing=meta_pricing,
        analytics=reports.analytics,
        quarantine=quarantine,
        priced=priced,
        settings=settings,
        notes=[*([why_not] if why_not else []), *notes],
    )


def priced_at_list_rates(charges: pl.DataFrame, analytics: pl.DataFrame, settings: Settings) -> tuple[pl.DataFrame | None, str | None]:
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
    # The opening message's user is the charge's: a group message's participants share its message_id.
    countries = messages.select("message_id", "user_id", "user_country").unique(["message_id", "user_id"], keep="first")
    return charges.join(countries, left_on=["opening_message_id", "user_id"], right_on=["message_id", "user_id"], how="left", maintain_order="left")


def _with_costs(charges: pl.DataFrame, priced: pl.DataFrame) -> pl.DataFrame:
    key = ["opening_message_id", "user_id"]  # one charge per participant of a group message
    costs = priced.select(*key, "cost", "currency").unique(key, keep="first")
    return charges.drop("cost", "currency", strict=False).join(costs, on=key, how="left", maintain_order="left")


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
    outbound = messages.filter((pl.col("direction") == "outbound") & pl.col("status").ne_missing(FAILED)).select(
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
            *[pl.col(c).drop_nulls().first() for c in ("business_phone", "user_id", "category", "pricing_type", "billable")],
            *[pl.col(c).drop_nulls().first() for c in ("pricing_subtype", "recipient_type", "recipient_participant_id")],
            message_ids=pl.col("message_id").sort_by("time", "message_id", nulls_last=True).unique(maintain_order=True),
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

# A group delivery's participant (module docstring, level 1), null one-to-one: the `user_id` of a charge whose
# opening message is a group message of the input (`group_id` given), and Meta's `recipient_participant_id`.
_PARTICIPANT = "_participant_key"
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
    group_wamids = messages.filter(pl.col("group_id").is_not_null())["message_id"].unique().to_list() if "group_id" in messages.columns else []
    ours = charges.select(
        "opening_message_id",
        pl.when(pl.col("opening_message_id").is_in(group_wamids)).then(pl.col("user_id")).alias(_PARTICIPANT),
        "rule_set",
        "expires_at",
        "business_phone",
        "user_id",
        "market",
        "user_country",
        "waba_id",
        *[pl.col(c).alias(a) for c, a in _OURS.items()],
    )
    message_rows = _message_level(pmp, ours, context)
    conversation_rows, candidates = _conversation_level(cbp, ours, context)
    paired = pl.concat(
        [message_rows.select("message_id", _PARTICIPANT), candidates.select("message_id", pl.lit(None, pl.String).alias(_PARTICIPANT))]
    ).unique()
    missing, notes = _missing_meta(ours, paired, pmp, cbp, meta_pricing)
    parts = [message_rows, conversation_rows, *([missing] if missing is not None else [])]
    rows = pl.concat(parts, how="diagonal_relaxed")
    rows = _with_meta_meaning(rows, settings)
    rows = _classified(rows, settings)
    return finished(rows), unreadable, notes


@dataclass(frozen=True)
class _MessageContext:
    """What the input says about a message: its status, whether it was quarantined and why, and
    which of our charges it belongs to."""

    messages: pl.DataFrame  # message_id, _status, _direction, _ours_message_category
    attributed: pl.DataFrame  # message_id -> our charge's opening id, with the charge's columns
    quarantined: pl.DataFrame  # message_id, _quarantine_reason

    @classmethod
    def of(cls, charges: pl.DataFrame, messages: pl.DataFrame, quarantine: pl.DataFrame | pl.LazyFrame | None, settings: Settings) -> _MessageContext:
        known = messages.select(
            "message_id",
            (pl.when(pl.col("group_id").is_not_null()).then(pl.col("user_id")) if "group_id" in messages.columns else pl.lit(None, pl.String)).alias(
                _PARTICIPANT
            ),
            _status="status",
            _direction="direction",
            _ours_message_category=pl.when(pl.col("message_type") == schema.TEMPLATE)
            .then(pl.col("template_category").replace(settings.rule_book.choices.billed_category))
            .otherwise(pl.when(pl.col("direction") == "outbound").then(pl.lit(SERVICE))),
        )
        attributed = (
            conversation_of_messages(charges, messages, settings)
            .join(
                charges.select(
                    "opening_message_id",
                    _absorbed_by_category="category",
                    _absorbed_by_started_at="started_at",
                    _absorbed_by_rule_set="rule_set",
                    _absorbed_by_model="pricing_model",
                ).unique("opening_message_id", keep="first", maintain_order=True),  # a group message: one charge per participant
                on="opening_message_id",
                how="left",
            )
            .unique("message_id", keep="first", maintain_order=True)
            .rename({"opening_message_id": "_absorbed_by"})
        )
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
        """`frame` with what the input says about the message in column `on` (and, for a group
        message, the participant in `_PARTICIPANT`: each has its own row and status)."""
        added = _PARTICIPANT not in frame.columns
        if added:
            frame = frame.with_columns(pl.lit(None, pl.String).alias(_PARTICIPANT))
        frame = frame.join(
            self.messages, left_on=[on, _PARTICIPANT], right_on=["message_id", _PARTICIPANT], how="left", maintain_order="left", nulls_equal=True
        )
        tables = (self.attributed, self.quarantined) if quarantine else (self.attributed,)
        for table in tables:
            frame = frame.join(table, left_on=on, right_on="message_id", how="left", maintain_order="left")
        return frame.drop(_PARTICIPANT) if added else frame


def _message_level(pmp: pl.DataFrame, ours: pl.DataFrame, context: _MessageContext) -> pl.DataFrame:
    """PMP items against the charge each wamid opened (module docstring, level 1); a group send's
    item of one participant against our charge of that participant."""
    # The participant as our user_id has it: the phone, else the BSUID the status gave (`webhooks.status_record`).
    participant = pl.coalesce("recipient_participant_id", "user_id")
    pmp = pmp.with_columns(pl.when(pl.col("recipient_type") == GROUP).then(participant).alias(_PARTICIPANT))
    joined = pmp.join(
        ours,
        left_on=["message_id", _PARTICIPANT],
        right_on=["opening_message_id", _PARTICIPANT],
        how="left",
        maintain_order="left",
        suffix="_ours",
        nulls_equal=True,
    )
    joined = context.describe(joined, "message_id")
    return joined.select(
        level=pl.lit(MESSAGE),
        meta_source="meta_source",
        message_id="message_id",
        **{_PARTICIPANT: _PARTICIPANT},
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
    explained = context.describe(wamids.select(*item, "_explained"), "_explained", quarantine=False).drop("_explained")
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
    unpaired = ours.join(paired, left_on=["opening_message_id", _PARTICIPANT], right_on=["message_id", _PARTICIPANT], how="anti", nulls_equal=True)
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
    matched_to = cbp.select("conversation_id", _meta_conversation_matched_to=pl.col("message_ids")).filter(pl.col("conversation_id").is_not_null())
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
    local_date = local_time(settings, "_meaning_at").dt.date()
    return with_pricing_type_meaning(
        dated.with_columns(_meaning_date=local_date), local_date=pl.col("_meaning_date"), pricing_type="meta_pricing_type"
    )


def _classified(rows: pl.DataFrame, settings: Settings) -> pl.DataFrame:
    """`status`, `reason` and `explanation` of item rows (module docstring, Reasons)."""
    defaults = {
        "_missing_meta": pl.Boolean,
        "_meta_conversation": pl.String,
        "_meta_model": pl.String,
        "_explained": pl.String,
        "_quarantined_wamid": pl.String,
        "_missing_wamids": pl.List(pl.String),
        "_meta_conversation_wamids": pl.List(pl.String),
        "_subtype": pl.String,
        "_recipient_type": pl.String,
        "_participant": pl.String,
        "agreeing_types": pl.List(pl.String),
        "meaning": pl.String,
    }
    rows = rows.with_columns(pl.lit(None, dtype).alias(c) for c, dtype in defaults.items() if c not in rows.columns)
    level_is = {level: pl.col("level") == level for level in (MESSAGE, CONVERSATION)}
    billed_as = settings.rule_book.choices.billed_category
    ours_category = pl.col("ours_category").replace(billed_as)
    meta_category = pl.col("meta_category").replace(METAS_CATEGORIES).replace(billed_as)
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
    # Reported, not compared: a category of Meta's we do not know, a pricing type none of ours matches.
    not_modelled = (
        (pl.col("meta_category").is_not_null() & ~pl.col("meta_category").is_in(MODELLED_CATEGORIES)) | (pl.col("agreeing_types").list.len() == 0)
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
    explanations = explained(rows, lambda row: explain_item(row, settings), agrees_text(), pl.col("reason") != AGREES)
    return rows.with_columns(explanation=explanations)


def _category_is_the_input(ours: pl.Expr, meta: pl.Expr) -> pl.Expr:
    """Whether a category difference is about the message itself (what the send log or template
    list say: template categories, or template against service), not about the rules."""
    relevant = [*TEMPLATE_FAMILY, SERVICE]
    return ours.is_in(relevant) & meta.is_in(relevant) & (ours.is_in(TEMPLATE_FAMILY) | meta.is_in(TEMPLATE_FAMILY))
