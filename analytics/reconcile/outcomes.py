"""What reconciliation answers in: levels, statuses, reasons and the row schema.

The vocabulary of `analytics.reconcile.matching` (its docstring says what each status and reason
means and in which order they apply), in a module of its own because every part of reconciliation
speaks it: the item level (`matching`), the aggregate level (`aggregates`), the sentences of the
`explanation` column (`explanations`), the synthetic check (`analytics.synthetic.meta_billing`), and
the summary, rollups and charts of `analytics.present`. It holds no logic but the one order rows
are written in (`finished`) and the agreement table of the summary.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal

import polars as pl

from analytics.core import schema
from analytics.reconcile.meta_reports import COST_DTYPE
from analytics.terms import rules

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
    NOT_MODELLED: ("Meta billed a category or pricing type this package does not know (a new one of Meta's): reported, not compared"),
}

WINDOW_TOLERANCE = dt.timedelta(seconds=60)  # §7: expiration_timestamp is rounded up to the minute
COST_TOLERANCE = Decimal("0.01")  # aggregate costs within a cent agree (Meta's analytics are approximate, §7)
TEMPLATE_FAMILY = ("marketing", "utility", "authentication")
SERVICE = "service"
CBP_FREE_ENTRY_AS = SERVICE  # [choice] a CBP FEP conversation in conversation_analytics, as in Meta's example
FAILED = "failed"
# The categories of 2026 (issue 17's design; changes-2026-h2.md §4-§6): a group delivery's, Meta Business
# Agent's, and an AI provider's message (Meta's webhook `pricing.category` names them alike).
GROUP_CATEGORIES = ("group_marketing", "group_utility", "group_service")
CATEGORIES_2026 = (*GROUP_CATEGORIES, "meta_business_agent", "general_purpose_ai")
# Meta's other names (lower case) for categories we bill as one of ours [choice: marketing_lite is billed as
# marketing, billing-rules.md §2, so its group and dynamic variants are too]: `pricing_analytics`
# `pricing_category` values (changes-2026-h2.md §4, Meta's business SDK enums; §6 for AI_BOT).
METAS_CATEGORIES = {
    "group_marketing_lite": "group_marketing",
    "marketing_lite_dynamic": "marketing",
    "ai_bot": "general_purpose_ai",
}
# Categories our charges can carry (contracts.md §2, and those of 2026), Meta's marketing_lite, which we bill as
# marketing, and Meta's names of METAS_CATEGORIES; any other category of Meta's is `NOT_MODELLED`: reported.
MODELLED_CATEGORIES = (
    *rules.INITIATOR_CATEGORIES,
    *rules.CATEGORY_SLOTS,
    rules.AUTH_INTERNATIONAL,
    "marketing_lite",
    *CATEGORIES_2026,
    *METAS_CATEGORIES,
)
GROUP = "group"
# Meta's pricing type of a free group delivery (webhooks, pricing_analytics): ours are the one-to-one
# types (data/rules/webhook_pricing_types.csv), so a group charge's free type is this in Meta's words.
FREE_GROUP_CUSTOMER_SERVICE = "free_group_customer_service"
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


ROW_ORDER = (
    "_level",
    "meta_source",
    "period_start",
    "_started_at",
    "country",
    "business_phone",
    "_category",
    "pricing_type",
    "message_id",
    "conversation_id",
)


def finished(rows: pl.DataFrame) -> pl.DataFrame:
    """RECONCILIATION_SCHEMA, sorted one way: level, source, period or time, then the keys."""
    frame = rows.select([(pl.col(c) if c in rows.columns else pl.lit(None)).cast(t).alias(c) for c, t in RECONCILIATION_SCHEMA.items()])
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


def agreement_by_category(rows: pl.DataFrame) -> pl.DataFrame:
    """Per level and category (ours, else Meta's): rows compared, matches, and the agreement rate."""
    return (
        rows.with_columns(
            category=pl.coalesce(pl.col("ours_category").replace(rules.shipped().choices.billed_category), "meta_category").fill_null("(all)")
        )
        .group_by("level", "category")
        .agg(compared=pl.len(), matched=(pl.col("status") == MATCH).sum())
        .with_columns(agreement=(pl.col("matched") / pl.col("compared")).round(4))
        .with_columns(level_order=pl.col("level").replace_strict({level: i for i, level in enumerate(LEVELS)}, return_dtype=pl.Int8))
        .sort("level_order", "category")
        .drop("level_order")
    )
