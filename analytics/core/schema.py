"""The tables other tools rely on (../shared/contracts.md): canonical messages and charges.

Polars schemas are the single statement of column names and types; readers cast to them and the
engines produce them, so a frame that passed `conform()` can go anywhere in the package.
"""

from __future__ import annotations

import polars as pl

UTC = "UTC"
INSTANT = pl.Datetime("us", UTC)

# contracts.md §1, in the contract's order, then the optional extensions (README, canonical messages).
MESSAGE_SCHEMA: dict[str, pl.DataType] = {
    "message_id": pl.String(),
    "timestamp": INSTANT,
    "direction": pl.String(),
    "business_phone": pl.String(),
    "waba_id": pl.String(),
    "user_id": pl.String(),
    "user_phone": pl.String(),
    "user_country": pl.String(),
    "message_type": pl.String(),
    "template_category": pl.String(),
    "status": pl.String(),
    "entry_point": pl.String(),
    # Optional extension, last: the end Meta gave the free entry point window an outbound message was
    # delivered in (status webhook `conversation.expiration_timestamp`), null when Meta did not say.
    "fep_expires_at": INSTANT,
    # Optional extensions of 2026 (README, "New kinds of traffic"), each null where it does not apply:
    # - `group_id`: the group a group message was sent to or received in (Groups API). An outbound
    #   group message is one row per participant it was delivered to, with the same `message_id`
    #   and the participant as `user_id`.
    # - `sent_by`: who wrote an outbound message: empty (the business), `business`, or
    #   `meta_business_agent` (Meta Business Agent, charged per token from 2026-08-01).
    # - `tokens`: the tokens Meta billed for a Meta Business Agent reply; null when not known.
    # - `template_name`: the template's name, where the input names it (send log, export).
    "group_id": pl.String(),
    "sent_by": pl.String(),
    "tokens": pl.Int64(),
    "template_name": pl.String(),
}
REQUIRED_MESSAGE_COLUMNS = ("message_id", "timestamp", "direction", "business_phone", "user_id", "message_type")

DIRECTIONS = ("inbound", "outbound")
TEMPLATE = "template"
REACTION = "reaction"
TEMPLATE_CATEGORIES = ("marketing", "utility", "authentication", "marketing_lite")
STATUSES = ("delivered", "read", "sent", "failed", "received")
ENTRY_POINTS = ("ctwa", "page_cta")
SENDERS = ("business", "meta_business_agent")
META_BUSINESS_AGENT = "meta_business_agent"
DEFAULT_WABA = "default"

# contracts.md §2, in the contract's order.
CHARGE_SCHEMA: dict[str, pl.DataType] = {
    "rule_set": pl.String(),
    "pricing_model": pl.String(),
    "category": pl.String(),
    "pricing_type": pl.String(),
    "billable": pl.Boolean(),
    "started_at": INSTANT,
    "expires_at": INSTANT,
    "business_phone": pl.String(),
    "waba_id": pl.String(),
    "user_id": pl.String(),
    "market": pl.String(),
    "message_count": pl.Int64(),
    "opening_message_id": pl.String(),
    # Optional extensions of 2026 (README, "New kinds of traffic"), from the opening message, null
    # where they do not apply: the group, the tokens of a Meta Business Agent charge (null: not
    # known, pricing estimates them), the template's name.
    "group_id": pl.String(),
    "tokens": pl.Int64(),
    "template_name": pl.String(),
}
# The columns contracts.md §2 names, without the extensions.
CHARGE_CONTRACT_SCHEMA: dict[str, pl.DataType] = dict(list(CHARGE_SCHEMA.items())[:13])
CHARGE_ORDER = ("business_phone", "user_id", "started_at", "opening_message_id")

# `free_exempt` appears only for a business with a service exemption (billing-rules.md §9), so a
# run without one keeps to the four values of contracts.md §2.
PRICING_TYPES = ("regular", "free_tier", "free_entry_point", "free_customer_service", "free_exempt")

# Optional canonical column (an extension of contracts.md §1): the end Meta gave the free entry
# point window an outbound message was delivered in (status webhook `conversation.expiration_timestamp`).
FEP_EXPIRES_AT = "fep_expires_at"


def empty_messages() -> pl.DataFrame:
    return pl.DataFrame(schema=MESSAGE_SCHEMA)


def empty_charges() -> pl.DataFrame:
    return pl.DataFrame(schema=CHARGE_SCHEMA)


def with_charge_extensions(frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` with every optional extension column of CHARGE_SCHEMA it lacks, as null, in place order."""
    return frame.with_columns([pl.lit(None, dtype=t).alias(c) for c, t in CHARGE_SCHEMA.items() if c not in frame.columns])


def conform_charges(frame: pl.DataFrame) -> pl.DataFrame:
    """Charges in the contract's column order and types, sorted the one way every engine sorts; an
    optional extension column the frame lacks is null."""
    names = frame.columns
    return frame.select([(pl.col(c) if c in names else pl.lit(None)).cast(t).alias(c) for c, t in CHARGE_SCHEMA.items()]).sort(CHARGE_ORDER)
