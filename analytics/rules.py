"""Meta's billing rules as data and named constants: one place to change when Meta changes them.

Normative text: ../shared/domain/billing-rules.md (cited below as §n). Every **[choice]** of that
document is a constant or a `BillingConfig` option here; the engines (`analytics.reference`, the
oracle, and `analytics.charges`, the fast one) read them from this module and nowhere else.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from analytics import config_schema
from analytics.resources import resource

HOUR = dt.timedelta(hours=1)

# §2 Windows. All are half-open: a window opened at s with length L contains t iff s <= t < s + L.
CONVERSATION_WINDOW = 24 * HOUR  # §3, §4: a conversation lasts 24 h from its opening message
CUSTOMER_SERVICE_WINDOW = 24 * HOUR  # §2: 24 h from the user's latest message
FEP_OFFER_WINDOW = 24 * HOUR  # §2: an entry-point message is an offer the business must take up in 24 h
FEP_WINDOW = 72 * HOUR  # §2: the free entry point window; §8 notes it may have been 24 h before 2023-03

# §2 [choice] An outbound message that takes up an offer inside an already open FEP window opens nothing.
FEP_REOPENS_INSIDE_OPEN_WINDOW = False
# §2 [choice] FEP conversations never count toward a free tier. (States the choice: both engines
# implement this value only; changing it needs a change to their free-tier counters.)
FEP_COUNTS_TOWARD_FREE_TIER = False
# §2 [choice] marketing_lite templates are billed as marketing.
BILLED_CATEGORY = {"marketing_lite": "marketing"}
# §5 [choice] a conversation open at a rule-set switch absorbs what its own rules would absorb, every
# category. (States the choice: both engines implement this value only.)
CROSSOVER_ALL_CATEGORIES = True

# Free tiers: (size, counted per). §3.3, §4.4, §5.
CBP_2022_FREE_CONVERSATIONS = 1_000  # per WABA per month, both types
CBP_2023_FREE_SERVICE_CONVERSATIONS = 1_000  # per WABA per month, service only, until SERVICE_FREE_FROM
SERVICE_CONVERSATIONS_FREE_FROM = dt.date(2024, 11, 1)  # §1, §4.4: every service conversation free
PMP_2026_FREE_SERVICE_MESSAGES = 1_000  # per business phone number per month, reactions not counted

# Categories (contracts.md §2).
CBP_2022_CATEGORIES = ("user_initiated", "business_initiated", "referral_conversion")
CBP_2023_SLOTS = ("marketing", "utility", "authentication", "service")
FEP_CATEGORY = "referral_conversion"
AUTH = "authentication"
AUTH_INTERNATIONAL = "authentication_international"

# §2 [choice] Order of a key's messages: timestamp, inbound before outbound, then message_id byte-wise.
DIRECTION_RANK = {"inbound": 0, "outbound": 1}


@dataclass(frozen=True)
class RuleSet:
    name: str
    effective_from: dt.date  # 00:00 in the WABA time zone
    pricing_model: str  # CBP or PMP
    status: str  # meta_documented or reported (§1: say so wherever results depend on a reported rule set)
    source: str
    note: str

    @property
    def is_cbp(self) -> bool:
        return self.pricing_model == "CBP"


@cache
def rule_sets() -> tuple[RuleSet, ...]:
    """The dated rule sets of §1, oldest first, from data/rules/rule_sets.csv."""
    text = resource("data", "rules", "rule_sets.csv").read_text(encoding="utf-8")
    rows = [
        RuleSet(
            name=r["rule_set"],
            effective_from=dt.date.fromisoformat(r["effective_from"]),
            pricing_model=r["pricing_model"],
            status=r["status"],
            source=r["source"],
            note=r["note"],
        )
        for r in csv.DictReader(io.StringIO(text))
    ]
    return tuple(sorted(rows, key=lambda r: r.effective_from))


def rule_set(name: str) -> RuleSet:
    for candidate in rule_sets():
        if candidate.name == name:
            return candidate
    known = ", ".join(r.name for r in rule_sets())
    raise ValueError(f"unknown rule set {name!r}: expected one of {known}")


def first_supported_date() -> dt.date:
    """Traffic before this date was billed per notification, which this package does not model (§1)."""
    return rule_sets()[0].effective_from


def rule_set_on(local_date: dt.date) -> RuleSet | None:
    """The rule set in force on a date of the WABA time zone, or None before the first one (§1)."""
    current = None
    for candidate in rule_sets():
        if candidate.effective_from <= local_date:
            current = candidate
    return current


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


@dataclass(frozen=True)
class BillingConfig:
    """Everything a billing run may be told. Defaults follow billing-rules.md exactly.

    - `timezone`: the WABA time zone that sets month and rule-set boundaries (§1, §2 Months);
      `waba_timezones` overrides it per WABA id.
    - `rules`: one rule set for all traffic (what-if), instead of the one in force at each message.
    - `fep_window`: length of the free entry point window (§8: perhaps 24 h before 2023-03).
    - `authentication_international`: §4.5; default, no such setting.
    """

    timezone: str = "UTC"
    waba_timezones: dict[str, str] = field(default_factory=dict)
    rules: str | None = None
    fep_window: dt.timedelta = FEP_WINDOW
    authentication_international: AuthenticationInternational = field(default_factory=AuthenticationInternational)

    def __post_init__(self) -> None:
        for tz in (self.timezone, *self.waba_timezones.values()):
            try:
                ZoneInfo(tz)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {tz!r}: use an IANA name such as 'Europe/Rome' or 'UTC'") from None
        if self.rules is not None:
            rule_set(self.rules)

    def timezone_of(self, waba_id: str) -> str:
        return self.waba_timezones.get(waba_id, self.timezone)

    @classmethod
    def from_toml(cls, path: str | Path, **overrides: object) -> BillingConfig:
        """Read the `[billing]` table of a TOML config file; keyword overrides (from the CLI) win.

        ```toml
        [billing]
        timezone = "Europe/Rome"
        waba_timezones = { "104996122399160" = "America/Sao_Paulo" }
        fep_window_hours = 72
        [billing.authentication_international]
        home_country = "IT"
        start_dates = { IN = "2024-07-01", ID = "2024-06-01" }
        ```
        """
        config_schema.load(path)  # UsageError naming the file, key and what is expected
        with open(path, "rb") as handle:
            table = tomllib.load(handle).get("billing", {})
        auth = table.get("authentication_international", {})
        values: dict[str, object] = {
            "timezone": table.get("timezone", "UTC"),
            "waba_timezones": {str(k): v for k, v in table.get("waba_timezones", {}).items()},
            "rules": table.get("rules"),
            "fep_window": dt.timedelta(hours=table.get("fep_window_hours", FEP_WINDOW / HOUR)),
            "authentication_international": AuthenticationInternational(
                home_country=auth.get("home_country"),
                start_dates={k: _date(v) for k, v in auth.get("start_dates", {}).items()},
            ),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]


def _date(value: object) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))
