"""The reference billing engine: a plain state machine per (business_phone, user_id), the oracle.

Normative text: ../shared/domain/billing-rules.md, cited as §n. This module is the place to read
when a charge needs explaining; `analytics.bill.charges` is the fast engine with the same signature and
is held to this one by property tests. Slow is fine here, clarity is the point.

`bill()` runs four steps, in this order:

1. `_read_messages`: each canonical message with its local date (WABA time zone) and rule set.
2. `_walk_key`: per key, the messages in the order of §2, through `KeyState` (customer service
   window, free entry point offer and window, open conversations). Out come `Charge` records: a
   conversation under CBP, a delivered message under PMP. Records subject to a free tier leave
   this step without a pricing type.
3. `_apply_free_tiers`: the monthly counters over all keys (§3.3, §4.4, §5).
4. `_finish`: authentication-international (§4.5), market (§2 Market), the charges table
   (contracts.md §2).

Decisions where billing-rules.md is silent (the fast engine implements the same):

- Only `direction == "inbound"` is inbound; every other row is outbound. Outbound `failed` rows are
  ignored entirely: no charge, they open nothing, consume no FEP offer, count nowhere. `sent` is
  billed as delivered. An inbound row acts whatever its status.
- Every row, failed and inbound ones included, must have a rule set (§1): a row before the first
  rule set (2022-02-01, WABA time zone) raises ValueError naming it, it is never dropped silently.
  With `Settings.rules` every row has that rule set, in the period (amendment) of its date.
- What a message does is decided by the rule-set *period* of its own local date
  (`analytics.terms.rules.RuleSet`): the customer service window an inbound message opens, the offer
  and window lengths of a free entry point, the conversations and pricing types of an outbound
  message. The code reads the period's properties and never a rule set's name.
- A template whose category is not one of `schema.TEMPLATE_CATEGORIES` raises ValueError: ingest
  quarantines it, and a guess would misbill it.
- A null `waba_id` is the default WABA (`schema.DEFAULT_WABA`), as ingest fills it.
- FEP offer (§2): an entry-point message sets `offer_until = t + 24 h`, replacing any earlier offer,
  taken up or not; the window it leads to has the length `Settings.fep_window_of` gives for
  the opener's period and the offer's entry point (§9 `fep_model`). Under
  `extend-24h-per-user-message` an inbound message inside an extendable window moves its end to
  `max(end, t + 24 h)`, never past the longest length. A delivered message that carries Meta's own
  end of its window (`fep_expires_at`, §9 "Meta's own window wins") sets the end of the key's
  latest window when it falls inside that window as Meta tells it (`fep_start <= t < fep_expires_at`). The next delivered outbound message ends the offer whatever it does: if it comes
  while the offer lasts it takes it up (opening an FEP window unless one is open,
  `rules.FEP_REOPENS_INSIDE_OPEN_WINDOW`); if it comes later the offer lapses.
- Opening an FEP window closes every open conversation of the key at that instant, whatever its
  rule set and whatever the opener's: its `expires_at` becomes the opener's timestamp (its real
  end) and it absorbs nothing more. §2 says so for CBP; for a PMP opener and a conversation carried
  over from CBP (§5) it is our choice, so that one rule holds in every era.
- The FEP window belongs to the rule set of its opening message. Opened under CBP it is a
  `referral_conversion` conversation that absorbs every message inside it, also messages of a
  later PMP rule set (no row for them). Opened under PMP it is no conversation: each message
  inside it is its own `free_entry_point` row.
- Crossover (§5): an open conversation absorbs what its own rules would absorb, whatever the rule
  set of the message: a one-slot conversation absorbs everything, a per-category conversation of
  slot C absorbs C templates and every non-template (with the choice `crossover = "utility"`,
  only utility conversations absorb messages of a later rule set). When several open conversations would absorb
  a message, the earliest opened takes it (§4.3 says so for non-templates).
- Authentication-international (§4.5) is decided at the opening message: its `user_country` and
  local date (a CBP conversation at its opening, a PMP row at delivery, FEP rows included).
- Free tiers are counted per rule set and tier, per scope (WABA or business phone, as the tier
  says) and local calendar month of `started_at`, in the order started_at, business_phone,
  user_id, opening_message_id (strings byte-wise).
- Free tiers count the charges of the categories a tier names, per rule set (amendments share
  their rule set's counters). FEP charges only take places in a counter when the choice
  `fep_counts_toward_free_tier` says so, and stay `free_entry_point`; reactions never count where
  the rules make them free.
- Service exemption (§9): a PMP service charge that would be `regular` (beyond the free tier, or
  with no free tier) is `free_exempt` while `Settings.service_exempt_until` lasts; a group service
  delivery is a service message too (`rules.SERVICE_CATEGORIES`).

Groups, Meta Business Agent and AI Providers (issue 17; README, "How billing works"; Meta, "Groups
API Pricing", Updated May 21, 2026; changes-2026-h2.md §2, §6):

- A row with a `group_id` is a group message. Its key is (business_phone, group_id): every
  participant's inbound message opens or refreshes the group's customer service window, which one-
  to-one windows never see, and vice versa. Each delivered outbound row (one per participant) is
  one charge, with the participant as `user_id` and market; a failed row is none. Within a key,
  rows at the same instant and direction are in message_id, then user_id order.
- A group delivery's category is its billed template category with `group_` in front
  (`marketing_lite` as `group_marketing`), `group_service` for a non-template, and it is priced
  from the period's lists like any category. Groups open no free entry point offer and take none
  up. A group row (any status) under a rule set without `bills_groups`, or a group authentication
  template, raises ValueError naming the message: ingest quarantines both.
- A delivered outbound one-to-one non-template with `sent_by = meta_business_agent` is of the
  period's `meta_business_agent_category` (from 2026-08-01), else a service message. A group row
  is a group message whoever sent it (our choice).
- With `Settings.ai_provider`, a delivered outbound one-to-one non-template that is not a
  reaction nor a Business Agent reply, to a user whose `user_country` is listed on the message's
  local date (`rules.ai_provider_listed`), is of the period's `ai_provider_category`.
- A category in the period's `never_free` is `regular` whatever else holds: inside a customer
  service window, inside a free entry point window (the message still takes up an offer and
  opens the window: it is a delivered outbound message), no free tier counts it.
- `group_id`, `tokens` and `template_name` of a charge are its opening message's.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache
from zoneinfo import ZoneInfo

import polars as pl

from analytics.core import schema
from analytics.settings import Settings
from analytics.terms import rules
from analytics.terms.markets import market_of
from analytics.terms.rules import RuleSet

# Pricing types (contracts.md §2; `free_exempt` only with Settings.service_exempt_until).
REGULAR = "regular"
FREE_TIER = "free_tier"
FREE_ENTRY_POINT = "free_entry_point"
FREE_CUSTOMER_SERVICE = "free_customer_service"
FREE_EXEMPT = "free_exempt"


def bill(messages: pl.DataFrame, settings: Settings | None = None) -> pl.DataFrame:
    """The charges table (contracts.md §2) for canonical, deduplicated messages (contracts.md §1).

    Raises ValueError for a message that has no rule set (before 2022-02-01 in its WABA time zone,
    §1), a template without a known category, a group message under a rule set that bills no
    groups or a group authentication template: ingest quarantines them, the engine never drops them.
    """
    settings = settings or Settings()
    by_key: dict[tuple[str, str | None, str | None], list[Message]] = defaultdict(list)
    for message in _read_messages(messages, settings):
        by_key[message.key].append(message)

    rank = settings.rule_book.choices.direction_rank
    charges: list[Charge] = []
    for key_messages in by_key.values():
        ordered = sorted(
            key_messages, key=lambda m: (m.timestamp, rank.get(m.direction, rank["outbound"]), m.message_id.encode(), m.user_id.encode())
        )
        charges.extend(_walk_key(ordered, settings))

    _apply_free_tiers(charges, settings)
    return _finish(charges, settings)


# --- Step 1: messages with their local date and rule set -------------------------------------------


@dataclass(frozen=True)
class Message:
    """One canonical message (contracts.md §1), with what the rules need to know about it."""

    message_id: str
    timestamp: dt.datetime  # UTC
    direction: str
    business_phone: str
    waba_id: str
    user_id: str
    user_country: str | None
    message_type: str
    template_category: str | None
    status: str | None
    entry_point: str | None
    fep_expires_at: dt.datetime | None  # Meta's end of the FEP window it was delivered in (§9)
    local_date: dt.date  # in the WABA time zone (§1, §2 Months)
    rule_set: RuleSet  # the period in force at the message's local date, or of Settings.rules
    billed_as: dict[str, str]  # §2 [choice]: template categories billed as another
    group_id: str | None = None
    tokens: int | None = None
    template_name: str | None = None
    non_template_category: str = rules.SERVICE  # decided when read (`_non_template_category`)

    @property
    def key(self) -> tuple[str, str | None, str | None]:
        """§2 Key: (business_phone, user_id) one-to-one, (business_phone, group_id) for a group."""
        return (self.business_phone, None, self.group_id) if self.group_id is not None else (self.business_phone, self.user_id, None)

    @property
    def is_inbound(self) -> bool:
        return self.direction == "inbound"

    @property
    def is_delivered_outbound(self) -> bool:
        """§2 Delivery: outbound and not failed (`sent` counts as delivered)."""
        return not self.is_inbound and self.status != "failed"

    @property
    def is_template(self) -> bool:
        return self.message_type == schema.TEMPLATE

    @property
    def is_reaction(self) -> bool:
        return self.message_type == schema.REACTION

    @property
    def billed_category(self) -> str:
        """The category a template is billed as (§2: `marketing_lite` as `marketing`), with `group_`
        in front for a group delivery; a non-template's category otherwise (`service` unless
        issue 17's rules say another)."""
        if not self.is_template:
            return self.non_template_category
        assert self.template_category is not None
        category = self.billed_as.get(self.template_category, self.template_category)
        return rules.GROUP_PREFIX + category if self.group_id is not None else category

    def describe(self) -> str:
        return _describe(self.__dict__)


def _describe(row: dict) -> str:
    """A message as an error names it: id, direction, time and key."""
    group = f", group_id {row['group_id']!r}" if row.get("group_id") is not None else ""
    return (
        f"message {row['message_id']!r} ({row['direction']}, {row['timestamp'].isoformat()}, "
        f"business_phone {row['business_phone']!r}, user_id {row['user_id']!r}{group})"
    )


def _read_messages(messages: pl.DataFrame, settings: Settings) -> Iterator[Message]:
    """Each row as a `Message`: local date in its WABA's time zone and rule-set period (§1)."""
    book = settings.rule_book
    names = messages.columns  # an optional column may be absent (older canonical files): null
    rows = messages.select([(pl.col(c) if c in names else pl.lit(None)).cast(t).alias(c) for c, t in schema.MESSAGE_SCHEMA.items()])
    for row in rows.iter_rows(named=True):
        waba_id = row["waba_id"] if row["waba_id"] is not None else schema.DEFAULT_WABA
        timezone = settings.timezone_of(waba_id)
        local_date = row["timestamp"].astimezone(_zone(timezone)).date()
        period = settings.period_on(local_date)
        described = _describe(row)
        if period is None:
            raise ValueError(
                f"{described} is dated {local_date} in {timezone}, before the first supported rule set "
                f"({book.first_supported_date()}): notification-based pricing is not supported. "
                "Ingest quarantines such rows; remove it or bill with an explicit rule set (--rules)."
            )
        if row["message_type"] == schema.TEMPLATE and row["template_category"] not in schema.TEMPLATE_CATEGORIES:
            raise ValueError(
                f"{described} is a template with category {row['template_category']!r}: expected one of "
                f"{', '.join(schema.TEMPLATE_CATEGORIES)}. Ingest quarantines such rows."
            )
        if row["group_id"] is not None:
            _refuse_unbillable_group(row, period, described)
        yield Message(
            message_id=row["message_id"],
            timestamp=row["timestamp"],
            direction=row["direction"],
            business_phone=row["business_phone"],
            waba_id=waba_id,
            user_id=row["user_id"],
            user_country=row["user_country"],
            message_type=row["message_type"],
            template_category=row["template_category"],
            status=row["status"],
            entry_point=row["entry_point"],
            fep_expires_at=row.get("fep_expires_at"),
            local_date=local_date,
            rule_set=period,
            billed_as=book.choices.billed_category,
            group_id=row["group_id"],
            tokens=row["tokens"],
            template_name=row["template_name"],
            non_template_category=_non_template_category(row, period, local_date, settings),
        )


def _refuse_unbillable_group(row: dict, period: RuleSet, described: str) -> None:
    """Meta bills groups per message (`bills_groups`) and supports no authentication template in a
    group ("Groups API", Updated Jun 16, 2026): either is an error, never a guess."""
    if not period.bills_groups:
        raise ValueError(
            f"{described} is a group message under {period.name}, which bills no groups (Meta: groups use per-message "
            "pricing). Ingest quarantines such rows; remove it or bill with a per-message rule set (--rules)."
        )
    if row["message_type"] == schema.TEMPLATE and row["template_category"] == rules.AUTH:
        raise ValueError(f"{described} is an authentication template in a group, which Meta does not support. Ingest quarantines such rows.")


def _non_template_category(row: dict, period: RuleSet, local_date: dt.date, settings: Settings) -> str:
    """A non-template's category (issue 17): `group_service` in a group; a Meta Business Agent
    reply's category where the period names one; an AI Provider's message to a listed market's
    user (not a reaction); else `service`."""
    if row["group_id"] is not None:
        return rules.GROUP_SERVICE
    if row["sent_by"] == schema.META_BUSINESS_AGENT:
        return period.meta_business_agent_category or rules.SERVICE
    if (
        settings.ai_provider
        and period.ai_provider_category
        and row["message_type"] != schema.REACTION
        and rules.ai_provider_listed(row["user_country"], local_date)
    ):
        return period.ai_provider_category
    return rules.SERVICE


@cache
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


# --- Step 2: the state machine of one key -----------------------------------------------------------


@dataclass(eq=False)
class Charge:
    """One row of the charges table in the making: a CBP conversation or a PMP message.

    `pricing_type` is None while the row waits for its free tier (step 3). `slot` is the CBP slot a
    conversation occupies: the billed category of a per-category conversation (§4.1), None for a
    one-slot conversation (§3.1) and for FEP conversations. `counted` says a free-entry-point
    charge takes a place in its free tier's counter (the choice `fep_counts_toward_free_tier`).
    """

    rule_set: RuleSet
    category: str
    pricing_type: str | None
    opening: Message
    expires_at: dt.datetime | None
    slot: str | None = None
    message_count: int = 1
    counted: bool = False

    @property
    def started_at(self) -> dt.datetime:
        return self.opening.timestamp

    def is_open_at(self, t: dt.datetime) -> bool:
        return self.expires_at is not None and self.started_at <= t < self.expires_at

    def absorbs(self, message: Message, crossover: str) -> bool:
        """§3.1, §4.2-4.3, §5 Crossover: what this conversation takes by its own rules, whatever the
        rule set of the message: one slot, everything; per category, templates of its slot and every
        non-template. With the choice `crossover = "utility"`, only a utility conversation takes
        messages of a later rule set."""
        if message.rule_set.name != self.rule_set.name and crossover != "all_categories" and self.slot != "utility":
            return False
        if self.rule_set.conversations == rules.ONE_SLOT:
            return True
        return not message.is_template or message.billed_category == self.slot


@dataclass
class KeyState:
    """What §2 makes a key remember between its messages.

    - `csw_until`: end of the customer service window, set by the latest inbound message.
    - `offer_until`, `offer_entry_point`: the pending free entry point offer, None when there is none.
    - `fep_start`, `fep_until`: the latest FEP window; `fep_up_to`, how far user messages may still
      extend it (§9 `extend-24h-per-user-message`), and `fep_extension`, by how much;
      `fep_conversation` is its conversation when it was opened under CBP (None under PMP).
    - `open_conversations`: CBP conversations that may still be open, in opening order.
    - `charges`: every record this key has produced, in the order produced.
    """

    settings: Settings
    csw_until: dt.datetime | None = None
    offer_until: dt.datetime | None = None
    offer_entry_point: str | None = None
    fep_start: dt.datetime | None = None
    fep_until: dt.datetime | None = None
    fep_up_to: dt.datetime | None = None
    fep_extension: dt.timedelta = dt.timedelta(0)
    fep_conversation: Charge | None = None
    open_conversations: list[Charge] = field(default_factory=list)
    charges: list[Charge] = field(default_factory=list)

    def csw_open_at(self, t: dt.datetime) -> bool:
        return self.csw_until is not None and t < self.csw_until

    def inside_fep_window(self, t: dt.datetime) -> bool:
        return self.fep_start is not None and self.fep_until is not None and self.fep_start <= t < self.fep_until

    def _set_fep_until(self, until: dt.datetime) -> None:
        self.fep_until = until
        if self.fep_conversation is not None:
            self.fep_conversation.expires_at = until

    # Inbound ------------------------------------------------------------------------------------

    def receive(self, message: Message) -> None:
        """§2: an inbound message opens or refreshes the CSW; with an entry point it makes an FEP offer
        (replacing any earlier one). It never opens a conversation. §9: inside an extendable FEP
        window it moves the window's end."""
        t, period = message.timestamp, message.rule_set
        self.csw_until = t + period.customer_service_window
        if message.entry_point and message.group_id is None:  # no free entry points in groups
            self.offer_until = t + period.fep_offer_window
            self.offer_entry_point = message.entry_point
        if self.inside_fep_window(t) and self.fep_up_to is not None and self.fep_until is not None:
            self._set_fep_until(min(max(self.fep_until, t + self.fep_extension), self.fep_up_to))

    # Outbound -----------------------------------------------------------------------------------

    def deliver(self, message: Message) -> None:
        """One delivered outbound message, by §2 Precedence: FEP window, then an open conversation,
        then the rule set in force at its timestamp."""
        t = message.timestamp
        self.open_conversations = [c for c in self.open_conversations if c.is_open_at(t)]
        self._take_up_offer(message)
        reported = message.fep_expires_at
        if reported is not None and self.fep_start is not None and self.fep_start <= t < reported:
            self._set_fep_until(reported)  # §9: Meta's own window wins, and user messages no longer move it
            self.fep_up_to = None

        if self.inside_fep_window(t):
            self._bill_inside_fep_window(message)
            return
        crossover = self.settings.rule_book.choices.crossover
        absorbing = next((c for c in self.open_conversations if c.absorbs(message, crossover)), None)
        if absorbing is not None:
            absorbing.message_count += 1  # §3.1, §4.2-4.3, §5 Crossover: no charge of its own
            return
        if message.rule_set.is_cbp:
            self._open_conversation(message)
        else:
            self.charges.append(self._pmp_charge(message))

    def _take_up_offer(self, message: Message) -> None:
        """§2 FEP: the first delivered outbound message after an offer ends it; if the offer still
        lasts, the message takes it up and opens an FEP window from itself, unless it falls inside
        an open one (the choice `fep_reopens_inside_open_window`)."""
        if self.offer_until is None:
            return
        t = message.timestamp
        taken_up = t < self.offer_until
        self.offer_until = None
        reopens = self.settings.rule_book.choices.fep_reopens_inside_open_window
        if taken_up and (reopens or not self.inside_fep_window(t)):
            self._open_fep_window(message)

    def _open_fep_window(self, opener: Message) -> None:
        """§2 FEP, Precedence: a window from the opener, as long as `Settings.fep_window_of`
        says. It closes every open conversation now (any rule set); under CBP it is itself a
        `referral_conversion` conversation."""
        t, period = opener.timestamp, opener.rule_set
        length, up_to = self.settings.fep_window_of(period, self.offer_entry_point)
        self.fep_start, self.fep_until = t, t + length
        self.fep_up_to = t + up_to if up_to > length else None
        self.fep_extension = period.ctwa_fep_extension
        for conversation in self.open_conversations:
            conversation.expires_at = t  # closed by the FEP window: its real end
        self.open_conversations = []
        self.fep_conversation = None
        if not period.is_cbp:
            return
        self.fep_conversation = Charge(
            rule_set=period,
            category=rules.FEP_CATEGORY,
            pricing_type=FREE_ENTRY_POINT,
            opening=opener,
            expires_at=self.fep_until,
            message_count=0,  # the opener is inside its own window: deliver() counts it like the rest
            counted=self._fep_counted(period, rules.FEP_CATEGORY, opener),
        )
        self.charges.append(self.fep_conversation)

    def _fep_counted(self, period: RuleSet, category: str, message: Message) -> bool:
        """§2 [choice]: a free entry point charge takes a place in the free tier of its category
        only when `fep_counts_toward_free_tier`; a free reaction never does."""
        if not self.settings.rule_book.choices.fep_counts_toward_free_tier:
            return False
        if message.is_reaction and period.reactions_free and not period.is_cbp:
            return False
        return period.free_tier_of(category) is not None

    def _bill_inside_fep_window(self, message: Message) -> None:
        """§2: everything delivered inside the FEP window is free. A CBP window is one conversation
        (it absorbs the message, whatever the message's rule set); a PMP window makes one
        `free_entry_point` row per message, with the message's own category."""
        if self.fep_conversation is not None:
            self.fep_conversation.message_count += 1
            return
        category = message.billed_category
        never_free = category in message.rule_set.never_free  # a paid message inside the window
        self.charges.append(
            Charge(
                rule_set=message.rule_set,
                category=category,
                pricing_type=REGULAR if never_free else FREE_ENTRY_POINT,
                opening=message,
                expires_at=None,
                counted=not never_free and self._fep_counted(message.rule_set, category, message),
            )
        )

    def _pricing_type(self, period: RuleSet, category: str, message: Message) -> str | None:
        """§3-5 from the period's properties: free reactions, always-free categories, categories
        free inside the customer service window, then a free tier's counter (None: step 3
        decides), else `regular` (or `free_exempt`, §9). A `never_free` category is `regular` first."""
        if category in period.never_free:
            return REGULAR
        if message.is_reaction and period.reactions_free and not period.is_cbp:
            return FREE_CUSTOMER_SERVICE
        if category in period.free_categories:
            return FREE_CUSTOMER_SERVICE
        if category in period.free_in_customer_service_window and self.csw_open_at(message.timestamp):
            return FREE_CUSTOMER_SERVICE
        if period.free_tier_of(category) is not None:
            return None
        return _beyond_free_tier(period, category, message.local_date, self.settings)

    def _open_conversation(self, message: Message) -> None:
        """§3.2 (one slot) and §4.2-4.4 (per category): a conversation opened by this message.

        One slot: `user_initiated` if the CSW is open, else `business_initiated`. Per category: the
        template's billed category, or `service` for a non-template. Its pricing type follows the
        period (`_pricing_type`).
        """
        t, period = message.timestamp, message.rule_set
        if period.conversations == rules.ONE_SLOT:
            category = rules.USER_INITIATED if self.csw_open_at(t) else rules.BUSINESS_INITIATED
            slot = None
        elif period.conversations == rules.PER_CATEGORY:
            category = slot = message.billed_category
        else:
            raise ValueError(f"rule set {period.name!r} has no conversation rules ({message.describe()})")
        conversation = Charge(
            rule_set=period,
            category=category,
            pricing_type=self._pricing_type(period, category, message),
            opening=message,
            expires_at=t + period.conversation_window,
            slot=slot,
        )
        self.open_conversations.append(conversation)
        self.charges.append(conversation)

    def _pmp_charge(self, message: Message) -> Charge:
        """§5: one row per delivered message that no FEP window or open conversation took."""
        category = message.billed_category
        return Charge(
            rule_set=message.rule_set,
            category=category,
            pricing_type=self._pricing_type(message.rule_set, category, message),
            opening=message,
            expires_at=None,
        )


def _beyond_free_tier(period: RuleSet, category: str, local_date: dt.date, settings: Settings) -> str:
    """What a charge past every free unit pays: `regular`, or `free_exempt` for a PMP service message
    of an exempt business (§9)."""
    if category in rules.SERVICE_CATEGORIES and not period.is_cbp and settings.exempt_on(local_date):
        return FREE_EXEMPT
    return REGULAR


def _walk_key(messages: Iterable[Message], settings: Settings) -> list[Charge]:
    """Walk one key's messages, already in §2 order, and return its charge records."""
    state = KeyState(settings)
    for message in messages:
        if message.is_inbound:
            state.receive(message)
        elif message.is_delivered_outbound:
            state.deliver(message)
    return state.charges


# --- Step 3: monthly counters -----------------------------------------------------------------------


def _free_tier_counter(charge: Charge) -> tuple[str, str, str] | None:
    """The monthly counter a record takes a place in: (rule set and tier, scope, local month of
    started_at), or None. §3.3, §4.4, §5: scope per WABA or per business phone number, as the tier
    says; months are calendar months in the WABA time zone (§2 Months)."""
    if charge.pricing_type is not None and not charge.counted:
        return None
    tier = charge.rule_set.free_tier_of(charge.category)
    assert tier is not None
    opening = charge.opening
    scope = opening.business_phone if tier.scope == "business_phone" else opening.waba_id
    return (f"{charge.rule_set.name}/{tier.name}", scope, opening.local_date.strftime("%Y-%m"))


def _free_tier_order(charge: Charge) -> tuple[dt.datetime, bytes, bytes, bytes]:
    opening = charge.opening
    return (opening.timestamp, opening.business_phone.encode(), opening.user_id.encode(), opening.message_id.encode())


def _apply_free_tiers(charges: list[Charge], settings: Settings) -> None:
    """§3.3, §4.4, §5: the first N places of each counter are `free_tier`, the rest `regular` (or
    `free_exempt`, §9). Only records left without a pricing type by the walk are decided; FEP
    records the choice counts take places and stay `free_entry_point`."""
    counters: dict[tuple[str, str, str], list[Charge]] = defaultdict(list)
    for charge in charges:
        counter = _free_tier_counter(charge)
        if counter is not None:
            counters[counter].append(charge)
    for waiting in counters.values():
        for position, charge in enumerate(sorted(waiting, key=_free_tier_order)):
            if charge.pricing_type is not None:
                continue
            tier = charge.rule_set.free_tier_of(charge.category)
            assert tier is not None
            if position < tier.size:
                charge.pricing_type = FREE_TIER
            else:
                charge.pricing_type = _beyond_free_tier(charge.rule_set, charge.category, charge.opening.local_date, settings)


# --- Step 4: category, market and the table ---------------------------------------------------------


def _finish(charges: list[Charge], settings: Settings) -> pl.DataFrame:
    """§4.5 authentication-international, §2 market, and the charges table of contracts.md §2."""
    if not charges:
        return schema.empty_charges()
    rows = []
    for charge in charges:
        opening = charge.opening
        category = charge.category
        if category == rules.AUTH and settings.authentication_international.applies(opening.user_country, opening.local_date):
            category = rules.AUTH_INTERNATIONAL
        rows.append(
            {
                "rule_set": charge.rule_set.name,
                "pricing_model": charge.rule_set.pricing_model,
                "category": category,
                "pricing_type": charge.pricing_type,
                "billable": charge.pricing_type == REGULAR,
                "started_at": charge.started_at,
                "expires_at": charge.expires_at,
                "business_phone": opening.business_phone,
                "waba_id": opening.waba_id,
                "user_id": opening.user_id,
                "market": market_of(opening.user_country, opening.local_date),
                "message_count": charge.message_count,
                "opening_message_id": opening.message_id,
                "group_id": opening.group_id,
                "tokens": opening.tokens,
                "template_name": opening.template_name,
            }
        )
    return schema.conform_charges(pl.DataFrame(rows, schema=schema.CHARGE_SCHEMA))
