"""Meta's billing rules as data: one file to change when Meta changes them.

Normative text: ../shared/domain/billing-rules.md (cited below as §n). The rule sets, their
amendments and billing-rules.md's **[choice]**s are `data/rules/rule_sets.toml`, read into a
`RuleBook`: the engines (`analytics.bill.reference`, the oracle, and `analytics.bill.charges`, the fast one),
pricing, reconciliation, strategies and the Spark path read `RuleSet` properties from it and never
a rule set's name. A business's own settings (time zones, authentication-international, the
service exemption, the free entry point model) are an `analytics.settings.Settings`, which carries
the book.

A `RuleSet` here is one *period* of a rule set: the rule set's properties as amended up to a date.
The charges say the rule set's `name`; the period only decides how a message is billed.

The markets where an AI Provider's non-template messages are charged (changes-2026-h2.md §6) are
data too: `data/rules/ai_providers.csv`, read by `ai_provider_listed` and `ai_provider_markets`.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from functools import cache
from pathlib import Path

from analytics.core.errors import excerpt
from analytics.core.resources import resource

HOUR = dt.timedelta(hours=1)

# Categories of contracts.md §2 that the rules name.
FEP_CATEGORY = "referral_conversion"
AUTH = "authentication"
AUTH_INTERNATIONAL = "authentication_international"
SERVICE = "service"
USER_INITIATED = "user_initiated"
BUSINESS_INITIATED = "business_initiated"
INITIATOR_CATEGORIES = (USER_INITIATED, BUSINESS_INITIATED, FEP_CATEGORY)  # one-slot conversations (§3)
CATEGORY_SLOTS = ("marketing", "utility", AUTH, SERVICE)  # per-category conversations (§4.1)
# Issue 17 (README, "How billing works"): a group delivery is billed as its base category with
# `group_` in front (Meta, "Groups API Pricing", Updated May 21, 2026); Meta Business Agent
# replies and AI Providers' messages are categories of their own (changes-2026-h2.md §2, §6).
GROUP_PREFIX = "group_"
GROUP_SERVICE = GROUP_PREFIX + SERVICE
GROUP_CATEGORIES = tuple(GROUP_PREFIX + c for c in ("marketing", "utility", SERVICE))
META_BUSINESS_AGENT = "meta_business_agent"
GENERAL_PURPOSE_AI = "general_purpose_ai"
SERVICE_CATEGORIES = (SERVICE, GROUP_SERVICE)  # §9 service exemption: both are service messages

# Pricing models, conversation kinds and free-tier scopes as the rules file spells them.
CBP, PMP = "CBP", "PMP"
ONE_SLOT, PER_CATEGORY, NO_CONVERSATIONS = "one_slot", "per_category", "none"
SCOPES = ("waba", "business_phone")
STATUSES = ("meta_documented", "reported", "unverified")
CROSSOVERS = ("all_categories", "utility")

# §9 [choice] How long a click-to-WhatsApp ad's free entry point window lasts since 2026-09-28.
FIXED_72H, FIXED_7D, EXTEND = "fixed-72h", "fixed-7d", "extend-24h-per-user-message"
FEP_MODELS = (FIXED_72H, FIXED_7D, EXTEND)
CTWA = "ctwa"


@dataclass(frozen=True)
class FreeTier:
    """Monthly free units (§3.3, §4.4, §5): the first `size` charges a month of `categories`, per
    WABA or business phone number, are `free_tier`."""

    name: str
    size: int
    scope: str
    categories: tuple[str, ...]


@dataclass(frozen=True)
class Choices:
    """billing-rules.md's **[choice]**s that belong to no rule set, read by both engines."""

    inbound_first_at_equal_time: bool = True  # §2 Order
    fep_reopens_inside_open_window: bool = False  # §2 FEP
    fep_counts_toward_free_tier: bool = False  # §2 FEP
    marketing_lite_billed_as: str = "marketing"  # §2 Template category
    crossover: str = "all_categories"  # §5 Crossover

    @property
    def direction_rank(self) -> dict[str, int]:
        """§2 Order at equal timestamps: the rank of each direction."""
        return {"inbound": 0, "outbound": 1} if self.inbound_first_at_equal_time else {"inbound": 1, "outbound": 0}

    @property
    def billed_category(self) -> dict[str, str]:
        """Template categories billed as another (§2: `marketing_lite` as `marketing`)."""
        return {"marketing_lite": self.marketing_lite_billed_as}


@dataclass(frozen=True)
class RuleSet:
    """One period of a rule set: its properties in force from `effective_from` (data/rules/rule_sets.toml
    says what each means)."""

    name: str
    effective_from: dt.date  # 00:00 in the WABA time zone
    pricing_model: str
    status: str
    source: str
    note: str
    conversations: str
    conversation_window: dt.timedelta
    customer_service_window: dt.timedelta
    fep_offer_window: dt.timedelta
    fep_window: dt.timedelta
    ctwa_fep_window_up_to: dt.timedelta
    ctwa_fep_extension: dt.timedelta
    free_in_customer_service_window: tuple[str, ...]
    free_categories: tuple[str, ...]
    reactions_free: bool
    free_tiers: tuple[FreeTier, ...]
    volume_tier_categories: tuple[str, ...]
    service_rate_from: str
    amended: bool = False  # a period an amendment starts, not the rule set's first
    label: str = ""  # an amendment's name on a chart
    # Optional properties of issue 17 (data/rules/rule_sets.toml says what each means).
    bills_groups: bool = False
    meta_business_agent_category: str = ""
    ai_provider_category: str = ""
    never_free: tuple[str, ...] = ()

    @property
    def is_cbp(self) -> bool:
        return self.pricing_model == CBP

    def free_tier_of(self, category: str) -> FreeTier | None:
        """The free tier that counts charges of `category`, if any."""
        return next((tier for tier in self.free_tiers if category in tier.categories), None)


@dataclass(frozen=True)
class RuleBook:
    """Every period of every rule set, oldest first, and the choices (data/rules/rule_sets.toml)."""

    periods: tuple[RuleSet, ...]
    choices: Choices = field(default_factory=Choices)
    source: str = "data/rules/rule_sets.toml"

    @property
    def names(self) -> tuple[str, ...]:
        """The rule sets' names, oldest first."""
        return tuple(dict.fromkeys(p.name for p in self.periods))

    def first_periods(self) -> tuple[RuleSet, ...]:
        """Each rule set as it came into force, oldest first."""
        return tuple(p for p in self.periods if not p.amended)

    def rule_set(self, name: str) -> RuleSet:
        """The rule set `name` as it came into force; ValueError naming the known ones."""
        for period in self.periods:
            if period.name == name:
                return period
        raise ValueError(f"unknown rule set {name!r}: expected one of {', '.join(self.names)}")

    def first_supported_date(self) -> dt.date:
        """Traffic before this date was billed per notification, which this package does not model (§1)."""
        return self.periods[0].effective_from

    def first_group_date(self) -> dt.date | None:
        """The first date of a period that bills group messages (`bills_groups`), None if none does."""
        return next((p.effective_from for p in self.periods if p.bills_groups), None)

    def period_on(self, local_date: dt.date, forced: str | None = None) -> RuleSet | None:
        """The period in force on a date of the WABA time zone (None before the first, §1). With
        `forced` (a what-if for all traffic), that rule set's period in force on the date, or its
        first period before it came into force."""
        candidates = [p for p in self.periods if forced is None or p.name == forced]
        if forced is not None and not candidates:
            self.rule_set(forced)  # raises naming the known rule sets
        current = candidates[0] if forced is not None else None
        for period in candidates:
            if period.effective_from <= local_date:
                current = period
        return current

    def periods_for(self, forced: str | None) -> tuple[RuleSet, ...]:
        """The periods a run can meet: every one, or those of the forced rule set."""
        return tuple(p for p in self.periods if forced is None or p.name == forced)

    def longest(self, window: str) -> dt.timedelta:
        """The longest `window` (a RuleSet timedelta property) of any period."""
        return max(getattr(p, window) for p in self.periods)

    def counters(self) -> tuple[tuple[str, FreeTier], ...]:
        """Every free-tier counter: (counter name, tier). Counters are per rule set, so a month that
        straddles a switch counts each rule set apart; amendments of a rule set share its counters."""
        found: dict[str, FreeTier] = {}
        for period in self.periods:
            for tier in period.free_tiers:
                found.setdefault(f"{period.name}/{tier.name}", tier)
        return tuple(found.items())

    @classmethod
    def from_toml(cls, text: str, source: str) -> RuleBook:
        return _read_book(tomllib.loads(text), source)


# --- Reading the rules file -------------------------------------------------------------------------

_WINDOWS = {
    "conversation_window_hours": "conversation_window",
    "customer_service_window_hours": "customer_service_window",
    "fep_offer_hours": "fep_offer_window",
    "fep_window_hours": "fep_window",
    "ctwa_fep_window_up_to_hours": "ctwa_fep_window_up_to",
    "ctwa_fep_extension_hours": "ctwa_fep_extension",
}
_LISTS = ("free_in_customer_service_window", "free_categories", "volume_tier_categories", "never_free")
_PROPERTIES = (*_WINDOWS, *_LISTS[:3], "conversations", "reactions_free", "free_tiers", "service_rate_from")
# Properties a rules file may leave out (older files): the RuleSet defaults bill none of their traffic.
_OPTIONAL_PROPERTIES = ("bills_groups", "meta_business_agent_category", "ai_provider_category", "never_free")
_CATEGORY_PROPERTIES = {"meta_business_agent_category": ("", META_BUSINESS_AGENT), "ai_provider_category": ("", GENERAL_PURPOSE_AI)}
_DESCRIBED = ("status", "source", "note")
MAX_WINDOW_HOURS = 24 * 366  # a window of the rules lasts at most a year
_OPTIONAL = ("label",)


class RulesFileError(ValueError):
    """A rules file that does not say what the engines need, with where and what to fix."""


def _read_book(document: Mapping[str, object], source: str) -> RuleBook:
    choices = Choices(**_known(document.get("choices", {}), {f.name for f in fields(Choices)}, f"{source} [choices]"))
    if choices.crossover not in CROSSOVERS:
        raise RulesFileError(f"{source} [choices]: crossover {excerpt(choices.crossover)} is not one of {', '.join(CROSSOVERS)}")
    periods: list[RuleSet] = []
    raw = document.get("rule_set", [])
    if not isinstance(raw, list) or not raw:
        raise RulesFileError(f"{source}: no [[rule_set]] tables")
    for table in raw:
        if not isinstance(table, dict):
            raise RulesFileError(f"{source}: each [[rule_set]] must be a table")
        where = f"{source} rule set {excerpt(table.get('name'))}"
        allowed = {"name", "effective_from", "pricing_model", "amendment", *_DESCRIBED, *_PROPERTIES, *_OPTIONAL_PROPERTIES}
        _known(table, allowed, where)
        missing = [k for k in ("name", "effective_from", "pricing_model", *_DESCRIBED, *_PROPERTIES) if k not in table]
        if missing:
            raise RulesFileError(f"{where}: missing {', '.join(missing)}")
        period = _period(table, where, base=None)
        periods.append(period)
        for amendment in _list(table.get("amendment", []), "amendment", where):
            at = f"{where} amendment of {excerpt(amendment.get('effective_from') if isinstance(amendment, dict) else amendment)}"
            _known(amendment, {"effective_from", *_DESCRIBED, *_OPTIONAL, *_PROPERTIES, *_OPTIONAL_PROPERTIES}, at)
            period = _period({**amendment, "name": period.name, "pricing_model": period.pricing_model}, at, base=period)
            periods.append(period)
    periods.sort(key=lambda p: p.effective_from)
    return RuleBook(periods=tuple(periods), choices=choices, source=source)


def _known(table: object, allowed: set[str], where: str) -> dict:
    if not isinstance(table, dict):
        raise RulesFileError(f"{where}: expected a table")
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise RulesFileError(f"{where}: unknown key {excerpt(unknown[0])} (known: {', '.join(sorted(allowed))})")
    return table


def _period(table: Mapping[str, object], where: str, base: RuleSet | None) -> RuleSet:
    values: dict[str, object] = {} if base is None else {f.name: getattr(base, f.name) for f in fields(RuleSet)}
    values["amended"] = base is not None
    for key, value in table.items():
        if key == "amendment":
            continue
        if key in _WINDOWS:
            if not isinstance(value, int | float) or isinstance(value, bool) or not 0 < value <= MAX_WINDOW_HOURS:
                raise RulesFileError(f"{where}: {key} must be a number of hours above 0 and at most {MAX_WINDOW_HOURS}, not {excerpt(value)}")
            values[_WINDOWS[key]] = dt.timedelta(hours=value)
        elif key in _LISTS:
            values[key] = tuple(_strings(value, key, where))
        elif key == "free_tiers":
            values[key] = tuple(_free_tier(t, where) for t in _list(value, key, where))
        elif key == "effective_from":
            if not isinstance(value, dt.date):
                raise RulesFileError(f"{where}: effective_from must be a TOML date (2027-01-01), not {excerpt(value)}")
            values[key] = value
        elif key in ("reactions_free", "bills_groups"):
            if not isinstance(value, bool):
                raise RulesFileError(f"{where}: {key} must be true or false")
            values[key] = value
        else:
            values[key] = str(value)
    period = RuleSet(**values)  # type: ignore[arg-type]
    checks = {
        "pricing_model": (period.pricing_model, (CBP, PMP)),
        "status": (period.status, STATUSES),
        "conversations": (period.conversations, (ONE_SLOT, PER_CATEGORY) if period.is_cbp else (NO_CONVERSATIONS,)),
        **{key: (getattr(period, key), allowed) for key, allowed in _CATEGORY_PROPERTIES.items()},
    }
    for key, (value, allowed) in checks.items():
        if value not in allowed:
            raise RulesFileError(f"{where}: {key} {excerpt(value)} is not one of {', '.join(repr(a) for a in allowed)}")
    if period.is_cbp and (period.bills_groups or period.meta_business_agent_category or period.ai_provider_category):
        raise RulesFileError(f"{where}: groups, Meta Business Agent and AI Provider categories are per-message rules, not for a CBP rule set")
    return period


def _list(value: object, key: str, where: str) -> list:
    if not isinstance(value, list):
        raise RulesFileError(f"{where}: {key} must be a list")
    return value


def _strings(value: object, key: str, where: str) -> list[str]:
    items = _list(value, key, where)
    if not all(isinstance(v, str) for v in items):
        raise RulesFileError(f"{where}: {key} must be a list of category names")
    return items


def _free_tier(table: object, where: str) -> FreeTier:
    _known(table, {"name", "size", "scope", "categories"}, f"{where} free tier")
    assert isinstance(table, dict)
    size, scope = table.get("size"), table.get("scope")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise RulesFileError(f"{where}: a free tier's size must be a whole number >= 0, not {excerpt(size)}")
    if scope not in SCOPES:
        raise RulesFileError(f"{where}: a free tier's scope must be one of {', '.join(SCOPES)}, not {excerpt(scope)}")
    return FreeTier(name=str(table.get("name", "")), size=size, scope=scope, categories=tuple(_strings(table.get("categories"), "categories", where)))


@cache
def shipped() -> RuleBook:
    """The rules this package ships (data/rules/rule_sets.toml)."""
    return RuleBook.from_toml(resource("data", "rules", "rule_sets.toml").read_text(encoding="utf-8"), "data/rules/rule_sets.toml")


def load(path: str | Path) -> RuleBook:
    """A rules file of your own, in the shipped file's format (what-if rules, or Meta's next change
    before this package ships it)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise RulesFileError(f"cannot read rules file {path}: {getattr(error, 'strerror', None) or 'not UTF-8 text'}") from None
    try:
        return RuleBook.from_toml(text, str(path))
    except tomllib.TOMLDecodeError as error:
        raise RulesFileError(f"rules file {path} is not valid TOML: {error}") from None
    except TypeError as error:  # a value of the wrong kind where a table was expected
        raise RulesFileError(f"rules file {path}: {error}") from None


# The shipped book's views, for code that has no Settings at hand.
def rule_sets() -> tuple[RuleSet, ...]:
    """The shipped rule sets as each came into force, oldest first (§1)."""
    return shipped().first_periods()


def rule_set(name: str) -> RuleSet:
    return shipped().rule_set(name)


def first_supported_date() -> dt.date:
    return shipped().first_supported_date()


def first_group_date() -> dt.date | None:
    return shipped().first_group_date()


# --- AI Providers' markets (data/rules/ai_providers.csv) ----------------------------------------------


@dataclass(frozen=True)
class AiProviderMarket:
    """A country where Meta charges an AI Provider's non-template messages, from `effective_from`
    until `until` (exclusive; None: still charged), dates at 00:00 in the WABA time zone."""

    country: str  # ISO 3166-1 alpha-2
    effective_from: dt.date
    until: dt.date | None
    source: str


@cache
def ai_provider_markets() -> tuple[AiProviderMarket, ...]:
    """The shipped list (data/rules/ai_providers.csv), checked: a bad row names its line."""
    where = "data/rules/ai_providers.csv"
    text = resource("data", "rules", "ai_providers.csv").read_text(encoding="utf-8")
    markets = []
    for line, row in enumerate(csv.DictReader(io.StringIO(text)), start=2):
        try:
            start = dt.date.fromisoformat(row["from"])
            until = dt.date.fromisoformat(row["until"]) if row["until"] else None
        except (KeyError, TypeError, ValueError):
            raise RulesFileError(f"{where} line {line}: from and until must be dates (2026-03-11; until may be empty)") from None
        country = (row.get("country") or "").strip().upper()
        if len(country) != 2 or not country.isalpha() or not (row.get("source") or "").strip() or (until is not None and until <= start):
            raise RulesFileError(f"{where} line {line}: expected an ISO country code, from before until, and a source")
        markets.append(AiProviderMarket(country=country, effective_from=start, until=until, source=row["source"]))
    return tuple(markets)


def ai_provider_listed(country: str | None, on: dt.date) -> bool:
    """Whether an AI Provider's non-template message to a user of `country` (ISO alpha-2, any
    case) is charged on the local date `on` (changes-2026-h2.md §6)."""
    code = (country or "").strip().upper()
    return any(m.country == code and m.effective_from <= on and (m.until is None or on < m.until) for m in ai_provider_markets())


# --- A business's settings ----------------------------------------------------------------------------


@dataclass(frozen=True)
class AuthenticationInternational:
    """§4.5: the business's authentication-international setting, as Meta tells it per business.

    `home_country` is the primary business location (ISO 3166-1 alpha-2); authentication to a user of
    a country in `start_dates` is billed authentication-international from that country's start date
    (00:00 WABA time zone), except to the home country.
    """

    home_country: str | None = None
    start_dates: dict[str, dt.date] = field(default_factory=dict)

    def applies(self, user_country: str | None, local_date: dt.date) -> bool:
        if not user_country or user_country == self.home_country:
            return False
        start = self.start_dates.get(user_country)
        return start is not None and local_date >= start
