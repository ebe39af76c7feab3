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
}
REQUIRED_MESSAGE_COLUMNS = ("message_id", "timestamp", "direction", "business_phone", "user_id", "message_type")

DIRECTIONS = ("inbound", "outbound")
TEMPLATE = "template"
REACTION = "reaction"
TEMPLATE_CATEGORIES = ("marketing", "utility", "authentication", "marketing_lite")
STATUSES = ("delivered", "read", "sent", "failed", "received")
ENTRY_POINTS = ("ctwa", "page_cta")
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
}
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


def conform_charges(frame: pl.DataFrame) -> pl.DataFrame:
    """Charges in the contract's column order and types, sorted the one way every engine sorts."""
    return frame.select([pl.col(c).cast(t) for c, t in CHARGE_SCHEMA.items()]).sort(CHARGE_ORDER)
