"""The reference billing engine: a plain state machine per (business_phone, user_id), the oracle.

Normative text: ../shared/domain/billing-rules.md, cited as §n. This module is the place to read
when a charge needs explaining; `analytics.charges` is the fast engine with the same signature and
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
  With `BillingConfig.rules` every row has that rule set.
- A template whose category is not one of `schema.TEMPLATE_CATEGORIES` raises ValueError: ingest
  quarantines it, and a guess would misbill it.
- A null `waba_id` is the default WABA (`schema.DEFAULT_WABA`), as ingest fills it.
- FEP offer (§2): an entry-point message sets `offer_until = t + 24 h`, replacing any earlier offer,
  taken up or not. The next delivered outbound message ends the offer whatever it does: if it comes
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
  set of the message: a `cbp-2022` conversation absorbs everything, a `cbp-2023` conversation of
  slot C absorbs C templates and every non-template. When several open conversations would absorb
  a message, the earliest opened takes it (§4.3 says so for non-templates).
- Authentication-international (§4.5) is decided at the opening message: its `user_country` and
  local date (a CBP conversation at its opening, a PMP row at delivery, FEP rows included).
- Free tiers are counted per rule set, per scope (WABA, or business phone for `pmp-2026-10`) and
  local calendar month of `started_at`, in the order started_at, business_phone, user_id,
  opening_message_id (strings byte-wise).
- `cbp-2023` service conversations: the free tier applies when the conversation opened (local date)
  before `rules.SERVICE_CONVERSATIONS_FREE_FROM`, `free_customer_service` from then on.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache
from zoneinfo import ZoneInfo

import polars as pl

from analytics import rules, schema
from analytics.markets import market_of
from analytics.rules import BillingConfig, RuleSet

# Rule set names of §1 (data/rules/rule_sets.csv), where the engine's behaviour depends on which one.
CBP_2022 = "cbp-2022"
CBP_2023 = "cbp-2023"
PMP_2025 = "pmp-2025"
PMP_2026_10 = "pmp-2026-10"

# Pricing types (contracts.md §2).
REGULAR = "regular"
FREE_TIER = "free_tier"
FREE_ENTRY_POINT = "free_entry_point"
FREE_CUSTOMER_SERVICE = "free_customer_service"

SERVICE = "service"
USER_INITIATED = "user_initiated"
BUSINESS_INITIATED = "business_initiated"

# §3.3, §4.4, §5: the size of each rule set's monthly free tier.
def free_tier_size(rule_set_name: str) -> int:
    """Free units a month of the counter of a rule set (§3.3, §4.4, §5), read from `rules` at call time."""
    return {
        CBP_2022: rules.CBP_2022_FREE_CONVERSATIONS,
        CBP_2023: rules.CBP_2023_FREE_SERVICE_CONVERSATIONS,
        PMP_2026_10: rules.PMP_2026_FREE_SERVICE_MESSAGES,
    }[rule_set_name]


def bill(messages: pl.DataFrame, config: BillingConfig = BillingConfig()) -> pl.DataFrame:
    """The charges table (contracts.md §2) for canonical, deduplicated messages (contracts.md §1).

    Raises ValueError for a message that has no rule set (before 2022-02-01 in its WABA time zone,
    §1) or a template without a known category: ingest quarantines both, the engine never drops them.
    """
    by_key: dict[tuple[str, str], list[Message]] = defaultdict(list)
    for message in _read_messages(messages, config):
        by_key[(message.business_phone, message.user_id)].append(message)

    charges: list[Charge] = []
    for key_messages in by_key.values():
        charges.extend(_walk_key(sorted(key_messages, key=_processing_order), config))

    _apply_free_tiers(charges)
    return _finish(charges, config)


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
    local_date: dt.date  # in the WABA time zone (§1, §2 Months)
    rule_set: RuleSet  # in force at the message's local date, or BillingConfig.rules

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
        """The category a template is billed as (§2: `marketing_lite` as `marketing`); `service` otherwise."""
        if not self.is_template:
            return SERVICE
        assert self.template_category is not None
        return rules.BILLED_CATEGORY.get(self.template_category, self.template_category)

    def describe(self) -> str:
        return _describe(self.__dict__)


def _describe(row: dict) -> str:
    """A message as an error names it: id, direction, time and key."""
    return (
        f"message {row['message_id']!r} ({row['direction']}, {row['timestamp'].isoformat()}, "
        f"business_phone {row['business_phone']!r}, user_id {row['user_id']!r})"
    )


def _read_messages(messages: pl.DataFrame, config: BillingConfig) -> Iterator[Message]:
    """Each row as a `Message`: local date in its WABA's time zone and rule set (§1)."""
    forced = rules.rule_set(config.rules) if config.rules is not None else None
    names = messages.columns  # an optional column may be absent (older canonical files): null
    rows = messages.select(
        [(pl.col(c) if c in names else pl.lit(None)).cast(t).alias(c) for c, t in schema.MESSAGE_SCHEMA.items()]
    )
    for row in rows.iter_rows(named=True):
        waba_id = row["waba_id"] if row["waba_id"] is not None else schema.DEFAULT_WABA
        timezone = config.timezone_of(waba_id)
        local_date = row["timestamp"].astimezone(_zone(timezone)).date()
        rule_set = forced or rules.rule_set_on(local_date)
        described = _describe(row)
        if rule_set is None:
            raise ValueError(
                f"{described} is dated {local_date} in {timezone}, before the first supported rule set "
                f"({rules.first_supported_date()}): notification-based pricing is not supported. "
                "Ingest quarantines such rows; remove it or bill with an explicit rule set (--rules)."
            )
        if row["message_type"] == schema.TEMPLATE and row["template_category"] not in schema.TEMPLATE_CATEGORIES:
            raise ValueError(
                f"{described} is a template with category {row['template_category']!r}: expected one of "
                f"{', '.join(schema.TEMPLATE_CATEGORIES)}. Ingest quarantines such rows."
            )
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
            local_date=local_date,
            rule_set=rule_set,
        )


@cache
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def _processing_order(message: Message) -> tuple[dt.datetime, int, bytes]:
    """§2 Order: timestamp, inbound before outbound at equal timestamps, then message_id byte-wise."""
    return (message.timestamp, rules.DIRECTION_RANK.get(message.direction, 1), message.message_id.encode())


# --- Step 2: the state machine of one key -----------------------------------------------------------


@dataclass(eq=False)
class Charge:
    """One row of the charges table in the making: a CBP conversation or a PMP message.

    `pricing_type` is None while the row waits for its free tier (step 3). `slot` is the CBP slot a
    conversation occupies: the billed category under `cbp-2023` (§4.1), None under `cbp-2022` (one
    slot, §3.1) and for FEP conversations.
    """

    rule_set: RuleSet
    category: str
    pricing_type: str | None
    opening: Message
    expires_at: dt.datetime | None
    slot: str | None = None
    message_count: int = 1

    @property
    def started_at(self) -> dt.datetime:
        return self.opening.timestamp

    def is_open_at(self, t: dt.datetime) -> bool:
        return self.expires_at is not None and self.started_at <= t < self.expires_at

    def absorbs(self, message: Message) -> bool:
        """§3.1, §4.2-4.3, §5 Crossover: what this conversation takes by its own rules, whatever the
        rule set of the message: `cbp-2022` everything; `cbp-2023` templates of its slot and every
        non-template."""
        if self.rule_set.name == CBP_2022:
            return True
        return not message.is_template or message.billed_category == self.slot


@dataclass
class KeyState:
    """What §2 makes a key remember between its messages.

    - `csw_until`: end of the customer service window, 24 h after the latest inbound message.
    - `offer_until`: end of the pending free entry point offer, None when there is none.
    - `fep_start`, `fep_until`: the latest FEP window; `fep_conversation` is its conversation when
      it was opened under CBP (None under PMP).
    - `open_conversations`: CBP conversations that may still be open, in opening order.
    - `charges`: every record this key has produced, in the order produced.
    """

    config: BillingConfig
    csw_until: dt.datetime | None = None
    offer_until: dt.datetime | None = None
    fep_start: dt.datetime | None = None
    fep_until: dt.datetime | None = None
    fep_conversation: Charge | None = None
    open_conversations: list[Charge] = field(default_factory=list)
    charges: list[Charge] = field(default_factory=list)

    def csw_open_at(self, t: dt.datetime) -> bool:
        return self.csw_until is not None and t < self.csw_until

    def inside_fep_window(self, t: dt.datetime) -> bool:
        return self.fep_start is not None and self.fep_until is not None and self.fep_start <= t < self.fep_until

    # Inbound ------------------------------------------------------------------------------------

    def receive(self, message: Message) -> None:
        """§2: an inbound message opens or refreshes the CSW; with an entry point it makes an FEP offer
        (replacing any earlier one). It never opens a conversation."""
        t = message.timestamp
        self.csw_until = t + rules.CUSTOMER_SERVICE_WINDOW
        if message.entry_point:
            self.offer_until = t + rules.FEP_OFFER_WINDOW

    # Outbound -----------------------------------------------------------------------------------

    def deliver(self, message: Message) -> None:
        """One delivered outbound message, by §2 Precedence: FEP window, then an open conversation,
        then the rule set in force at its timestamp."""
        t = message.timestamp
        self.open_conversations = [c for c in self.open_conversations if c.is_open_at(t)]
        self._take_up_offer(message)

        if self.inside_fep_window(t):
            self._bill_inside_fep_window(message)
            return
        absorbing = next((c for c in self.open_conversations if c.absorbs(message)), None)
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
        an open one (`rules.FEP_REOPENS_INSIDE_OPEN_WINDOW`)."""
        if self.offer_until is None:
            return
        t = message.timestamp
        taken_up = t < self.offer_until
        self.offer_until = None
        if taken_up and (rules.FEP_REOPENS_INSIDE_OPEN_WINDOW or not self.inside_fep_window(t)):
            self._open_fep_window(message)

    def _open_fep_window(self, opener: Message) -> None:
        """§2 FEP, Precedence: a window of `config.fep_window` from the opener. It closes every open
        conversation now (any rule set); under CBP it is itself a `referral_conversion` conversation."""
        t = opener.timestamp
        self.fep_start, self.fep_until = t, t + self.config.fep_window
        for conversation in self.open_conversations:
            conversation.expires_at = t  # closed by the FEP window: its real end
        self.open_conversations = []
        self.fep_conversation = None
        if not opener.rule_set.is_cbp:
            return
        self.fep_conversation = Charge(
            rule_set=opener.rule_set,
            category=rules.FEP_CATEGORY,
            pricing_type=FREE_ENTRY_POINT,
            opening=opener,
            expires_at=self.fep_until,
            message_count=0,  # the opener is inside its own window: deliver() counts it like the rest
        )
        self.charges.append(self.fep_conversation)

    def _bill_inside_fep_window(self, message: Message) -> None:
        """§2: everything delivered inside the FEP window is free. A CBP window is one conversation
        (it absorbs the message, whatever the message's rule set); a PMP window makes one
        `free_entry_point` row per message, with the message's own category."""
        if self.fep_conversation is not None:
            self.fep_conversation.message_count += 1
            return
        self.charges.append(
            Charge(
                rule_set=message.rule_set,
                category=message.billed_category,
                pricing_type=FREE_ENTRY_POINT,
                opening=message,
                expires_at=None,
            )
        )

    def _open_conversation(self, message: Message) -> None:
        """§3.2 (`cbp-2022`) and §4.2-4.4 (`cbp-2023`): a 24 h conversation opened by this message.

        `cbp-2022`: `user_initiated` if the CSW is open, else `business_initiated`; free tier later.
        `cbp-2023`: the template's billed category (`regular`) or `service` for a non-template;
        service waits for the free tier before `rules.SERVICE_CONVERSATIONS_FREE_FROM` and is
        `free_customer_service` from then on.
        """
        t = message.timestamp
        if message.rule_set.name == CBP_2022:
            category = USER_INITIATED if self.csw_open_at(t) else BUSINESS_INITIATED
            pricing_type, slot = None, None
        elif message.rule_set.name == CBP_2023:
            category = slot = message.billed_category
            if category != SERVICE:
                pricing_type = REGULAR
            elif message.local_date < rules.SERVICE_CONVERSATIONS_FREE_FROM:
                pricing_type = None
            else:
                pricing_type = FREE_CUSTOMER_SERVICE
        else:
            raise ValueError(f"rule set {message.rule_set.name!r} has no conversation rules ({message.describe()})")
        conversation = Charge(
            rule_set=message.rule_set,
            category=category,
            pricing_type=pricing_type,
            opening=message,
            expires_at=t + rules.CONVERSATION_WINDOW,
            slot=slot,
        )
        self.open_conversations.append(conversation)
        self.charges.append(conversation)

    def _pmp_charge(self, message: Message) -> Charge:
        """§5: one row per delivered message that no FEP window or open conversation took.

        marketing, authentication: `regular`. utility: `pmp-2025` free inside the CSW, `pmp-2026-10`
        always `regular`. Non-template: `pmp-2025` `free_customer_service`; `pmp-2026-10` reactions
        `free_customer_service`, other non-templates wait for the free tier.
        """
        category = message.billed_category
        if category == "utility":
            free_in_csw = message.rule_set.name == PMP_2025 and self.csw_open_at(message.timestamp)
            pricing_type: str | None = FREE_CUSTOMER_SERVICE if free_in_csw else REGULAR
        elif category != SERVICE:
            pricing_type = REGULAR
        elif message.rule_set.name == PMP_2026_10 and not message.is_reaction:
            pricing_type = None
        else:
            pricing_type = FREE_CUSTOMER_SERVICE
        return Charge(
            rule_set=message.rule_set,
            category=category,
            pricing_type=pricing_type,
            opening=message,
            expires_at=None,
        )


def _walk_key(messages: Iterable[Message], config: BillingConfig) -> list[Charge]:
    """Walk one key's messages, already in §2 order, and return its charge records."""
    state = KeyState(config)
    for message in messages:
        if message.is_inbound:
            state.receive(message)
        elif message.is_delivered_outbound:
            state.deliver(message)
    return state.charges


# --- Step 3: monthly counters -----------------------------------------------------------------------


def _free_tier_counter(charge: Charge) -> tuple[str, str, str]:
    """The monthly counter a record waits for: (rule set, scope, local month of started_at).

    §3.3 `cbp-2022` and §4.4 `cbp-2023` count per WABA; §5 `pmp-2026-10` per business phone number.
    Months are calendar months in the WABA time zone (§2 Months).
    """
    opening = charge.opening
    scope = opening.business_phone if charge.rule_set.name == PMP_2026_10 else opening.waba_id
    return (charge.rule_set.name, scope, opening.local_date.strftime("%Y-%m"))


def _free_tier_order(charge: Charge) -> tuple[dt.datetime, bytes, bytes, bytes]:
    opening = charge.opening
    return (opening.timestamp, opening.business_phone.encode(), opening.user_id.encode(), opening.message_id.encode())


def _apply_free_tiers(charges: list[Charge]) -> None:
    """§3.3, §4.4, §5: the first N records of each counter are `free_tier`, the rest `regular`.

    Only records left without a pricing type by the walk wait for a counter: non-FEP `cbp-2022`
    conversations, `cbp-2023` service conversations opened before 2024-11-01, and `pmp-2026-10`
    non-template messages other than reactions and FEP rows. Counters are per rule set, so a month
    that straddles a switch counts each rule set apart.
    """
    counters: dict[tuple[str, str, str], list[Charge]] = defaultdict(list)
    for charge in charges:
        if charge.pricing_type is None:
            counters[_free_tier_counter(charge)].append(charge)
    for (rule_set_name, _scope, _month), waiting in counters.items():
        for position, charge in enumerate(sorted(waiting, key=_free_tier_order)):
            charge.pricing_type = FREE_TIER if position < free_tier_size(rule_set_name) else REGULAR


# --- Step 4: category, market and the table ---------------------------------------------------------


def _finish(charges: list[Charge], config: BillingConfig) -> pl.DataFrame:
    """§4.5 authentication-international, §2 market, and the charges table of contracts.md §2."""
    if not charges:
        return schema.empty_charges()
    rows = []
    for charge in charges:
        opening = charge.opening
        category = charge.category
        if category == rules.AUTH and config.authentication_international.applies(opening.user_country, opening.local_date):
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
            }
        )
    return schema.conform_charges(pl.DataFrame(rows, schema=schema.CHARGE_SCHEMA))
