"""Readable traffic for tests: one key's messages, written as hours from a start instant.

```python
traffic = Traffic(start="2024-03-04T00:00:00Z")
traffic.template(0, "marketing").user(4).text(5)      # m0001, m0002, m0003
charges = bill(traffic.frame())
assert rows(charges)[0] == ("marketing", "regular", True, traffic.at(0), traffic.at(24), 2, "m0001", "cbp-2023")
```

Message ids default to `<id_prefix><counter>` zero-padded in insertion order, so their byte-wise
order (billing-rules.md §2 Order) is the order they were written in. Give keys that are billed
together different `id_prefix`es (`merge` refuses repeated ids).

`Group` writes one group's messages the same way: an outbound message is one row per participant
(README, "How billing works": groups), with the same id.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal

import polars as pl

from analytics.core import schema
from analytics.terms import rules
from analytics.terms.ratecards import RATE_DTYPE, TIER_FAMILY, load_card

Hours = float | dt.timedelta

# The columns a test asserts, in this order (contracts.md §2).
ROW_COLUMNS = ("category", "pricing_type", "billable", "started_at", "expires_at", "message_count", "opening_message_id", "rule_set")


def instant(text: str) -> dt.datetime:
    """An ISO 8601 instant with its offset (`2025-06-30T20:00:00Z`), as an aware UTC datetime."""
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError(f"instant {text!r} has no offset: write it with Z or +hh:mm")
    return value.astimezone(dt.UTC)


class Traffic:
    """The messages of one (business_phone, user_id) key, built in the order they are written."""

    def __init__(
        self,
        start: str = "2024-03-04T00:00:00Z",
        business_phone: str = "B1",
        user_id: str = "393330000001",
        *,
        waba_id: str = schema.DEFAULT_WABA,
        user_country: str | None = "IT",
        id_prefix: str = "m",
    ):
        self.start = instant(start)
        self.business_phone = business_phone
        self.user_id = user_id
        self.waba_id = waba_id
        self.user_country = user_country
        self.id_prefix = id_prefix
        self.rows: list[dict[str, object]] = []

    def at(self, h: Hours) -> dt.datetime:
        """The instant `h` hours (or a timedelta) after the start."""
        return self.start + (h if isinstance(h, dt.timedelta) else dt.timedelta(hours=h))

    @property
    def last_id(self) -> str:
        return str(self.rows[-1]["message_id"])

    def user(self, h: Hours, entry_point: str | None = None, message_id: str | None = None) -> Traffic:
        """An inbound message; `entry_point` `ctwa` or `page_cta` makes a free entry point offer."""
        return self._add(h, message_id, direction="inbound", message_type="text", status="received", entry_point=entry_point)

    def template(self, h: Hours, category: str, message_id: str | None = None, template_name: str | None = None) -> Traffic:
        """A delivered template of `category` (marketing, utility, authentication, marketing_lite)."""
        return self._add(h, message_id, direction="outbound", message_type=schema.TEMPLATE, template_category=category, template_name=template_name)

    def text(self, h: Hours, message_id: str | None = None) -> Traffic:
        """A delivered non-template message."""
        return self._add(h, message_id, direction="outbound", message_type="text")

    def agent(self, h: Hours, tokens: int | None = None, message_id: str | None = None) -> Traffic:
        """A delivered Meta Business Agent reply (`sent_by` meta_business_agent), with the tokens Meta billed."""
        return self._add(h, message_id, direction="outbound", message_type="text", sent_by=schema.META_BUSINESS_AGENT, tokens=tokens)

    def reaction(self, h: Hours, message_id: str | None = None) -> Traffic:
        """A delivered reaction (a non-template message, §5)."""
        return self._add(h, message_id, direction="outbound", message_type=schema.REACTION)

    def failed_template(self, h: Hours, category: str, message_id: str | None = None) -> Traffic:
        """A template whose delivery failed: never billed, opens nothing (§2 Delivery)."""
        return self._add(h, message_id, direction="outbound", message_type=schema.TEMPLATE, template_category=category, status="failed")

    def frame(self) -> pl.DataFrame:
        """The canonical messages (contracts.md §1), in the order written."""
        return pl.DataFrame(self.rows, schema=schema.MESSAGE_SCHEMA)

    def _add(
        self,
        h: Hours,
        message_id: str | None,
        *,
        direction: str,
        message_type: str,
        template_category: str | None = None,
        status: str = "delivered",
        entry_point: str | None = None,
        **extensions: object,
    ) -> Traffic:
        self.rows.append(
            {
                "message_id": message_id if message_id is not None else f"{self.id_prefix}{len(self.rows) + 1:04d}",
                "timestamp": self.at(h),
                "direction": direction,
                "business_phone": self.business_phone,
                "waba_id": self.waba_id,
                "user_id": self.user_id,
                "user_phone": None,
                "user_country": self.user_country,
                "message_type": message_type,
                "template_category": template_category,
                "status": status,
                "entry_point": entry_point,
                **extensions,
            }
        )
        return self


class Group:
    """The messages of one group of a business number: `participants` maps user_id to country."""

    def __init__(
        self,
        start: str,
        participants: dict[str, str],
        group_id: str = "G1",
        business_phone: str = "B1",
        *,
        waba_id: str = schema.DEFAULT_WABA,
        id_prefix: str = "g",
    ):
        self.start = instant(start)
        self.participants = participants
        self.group_id = group_id
        self.business_phone = business_phone
        self.waba_id = waba_id
        self.id_prefix = id_prefix
        self.rows: list[dict[str, object]] = []
        self.sent = 0

    def at(self, h: Hours) -> dt.datetime:
        return self.start + (h if isinstance(h, dt.timedelta) else dt.timedelta(hours=h))

    def user(self, h: Hours, participant: str, entry_point: str | None = None) -> Group:
        """A participant's message to the group: it opens or refreshes the group's customer service window."""
        return self._add(h, [participant], (), direction="inbound", message_type="text", status="received", entry_point=entry_point)

    def template(self, h: Hours, category: str, failed: tuple[str, ...] = (), template_name: str | None = None) -> Group:
        """A template to every participant, delivered but to those in `failed`."""
        return self._add(
            h,
            list(self.participants),
            failed,
            direction="outbound",
            message_type=schema.TEMPLATE,
            template_category=category,
            template_name=template_name,
        )

    def text(self, h: Hours, failed: tuple[str, ...] = ()) -> Group:
        """A non-template message to every participant, delivered but to those in `failed`."""
        return self._add(h, list(self.participants), failed, direction="outbound", message_type="text")

    def frame(self) -> pl.DataFrame:
        return pl.DataFrame(self.rows, schema=schema.MESSAGE_SCHEMA)

    def _add(self, h: Hours, to: list[str], failed: tuple[str, ...], *, direction: str, status: str = "delivered", **values: object) -> Group:
        self.sent += 1
        for participant in to:
            self.rows.append(
                {
                    "message_id": f"{self.id_prefix}{self.sent:04d}",
                    "timestamp": self.at(h),
                    "direction": direction,
                    "business_phone": self.business_phone,
                    "waba_id": self.waba_id,
                    "user_id": participant,
                    "user_country": self.participants[participant],
                    "status": "failed" if participant in failed else status,
                    "group_id": self.group_id,
                    **values,
                }
            )
        return self


def merge(*traffics: Traffic | Group) -> pl.DataFrame:
    """Several keys' traffic as one canonical frame; message ids must not repeat across keys (a
    group's rows share their message's id)."""
    frame = pl.concat([t.frame() for t in traffics]) if traffics else schema.empty_messages()
    ids = pl.concat([t.frame()["message_id"].unique() for t in traffics]) if traffics else frame["message_id"]
    repeated = ids.filter(ids.is_duplicated()).unique().to_list()
    if repeated:
        raise ValueError(f"message ids repeat across keys: {sorted(repeated)[:5]}; give each Traffic its own id_prefix")
    return frame


def rows(charges: pl.DataFrame, columns: tuple[str, ...] = ROW_COLUMNS) -> list[tuple[object, ...]]:
    """The charges as tuples of `columns` (default: what a test asserts), in the table's order."""
    return charges.select(columns).rows()


def low_tier_card() -> pl.DataFrame:
    """The shipped card's USD list rates with made-up volume tiers from the 3rd and the 8th utility
    and authentication message of a month, so that small traffic crosses tier boundaries."""
    listed = load_card().filter(pl.col("currency") == "USD", pl.col("tier_from") == 1)
    tiered = listed.filter(pl.col("category").is_in(list(TIER_FAMILY)))
    return pl.concat(
        [
            listed,
            tiered.with_columns(tier_from=pl.lit(3, dtype=pl.Int64), rate=pl.lit(Decimal("0.0011"), dtype=RATE_DTYPE)),
            tiered.with_columns(tier_from=pl.lit(8, dtype=pl.Int64), rate=pl.lit(Decimal("0.000501"), dtype=RATE_DTYPE)),
        ]
    ).sort("currency", "market", "category", "effective_from", "tier_from")


def with_free_tier_size(book: rules.RuleBook, size: int, choices: rules.Choices | None = None) -> rules.RuleBook:
    """`book` with every free tier `size` units a month (so small traffic crosses them), and `choices`."""
    periods = tuple(dataclasses.replace(p, free_tiers=tuple(dataclasses.replace(t, size=size) for t in p.free_tiers)) for p in book.periods)
    return dataclasses.replace(book, periods=periods, choices=choices or book.choices)
