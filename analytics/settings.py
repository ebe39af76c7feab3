"""Everything a business sets, in one object: `Settings`.

Every stage takes the same `settings` (reading, billing, pricing, the what-ifs, reconciliation and
the report), so the time zone is given once and a choice made in the config file reaches every
stage the same way. Read it from the TOML config file (`Settings.from_toml`, whose tables
`[billing]` and `[pricing]` are checked first by `analytics.config_schema`), and override any
field by keyword: that is what the command line's options do, and what a notebook does with
`settings.replace(timezone="Europe/Rome")`.

Defaults follow billing-rules.md (cited as §n) exactly, and price with the shipped rate card.
`Settings` sits between Meta's terms (`analytics.terms`) and the stages: it carries the rule book,
and no stage reads the config file itself.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import tomllib
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from analytics import config_schema
from analytics.core.errors import UsageError
from analytics.terms import ratecards
from analytics.terms.rules import (
    CTWA,
    EXTEND,
    FEP_MODELS,
    FIXED_7D,
    FIXED_72H,
    AuthenticationInternational,
    RuleBook,
    RuleSet,
    load,
    shipped,
)

# Decimal places a markup may have: a charge's cost (rate scale 6) stays an exact decimal of scale 12.
MARKUP_PERCENT_SCALE = 4
MARKUP_PER_CHARGE_SCALE = 6
# A max price per 1,000 with at most 3 decimals is a price per message with at most 6: a rate (RATE_SCALE).
MAX_PRICE_SCALE = 3
# Meta Business Agent: "One message typically consumes about 20,000-25,000 tokens" (Meta, "Upcoming
# pricing updates for Meta Business Agent, service and utility messages", Updated: Jul 1, 2026): the
# top of that range, so a cost estimated for a message whose tokens are not known is not understated.
AGENT_TOKENS_PER_MESSAGE = 25_000


@dataclass(frozen=True)
class MaxPrice:
    """A marketing max price (Marketing Messages API, changes-2026-h2.md §6, CL#448): from `from_date`
    (in the WABA's time zone) Meta charges the marketing messages of `waba_id` (of `template`
    only, when given) at most `per_1000` / 1,000 each, in the currency the run prices in."""

    waba_id: str
    per_1000: Decimal
    from_date: dt.date
    template: str | None = None

    def __post_init__(self) -> None:
        where = f"max price of WABA {self.waba_id}" + (f", template {self.template}" if self.template else "")
        per_1000 = _amount(self.per_1000, f"{where}: per_1000", MAX_PRICE_SCALE)
        if per_1000 == 0:
            raise UsageError(f"{where}: per_1000 must be above 0 (a price per 1,000 marketing messages, such as 45.5)")
        object.__setattr__(self, "per_1000", per_1000)

    @property
    def per_message(self) -> Decimal:
        """The most one message costs: exact, at most 6 decimals (a rate of the card)."""
        return self.per_1000 / 1000


BUDGET_SCALE = 2  # a budget is money: cents


# The fields that decide the charges (the rest decide only what they cost): a charges file records
# these, and is priced only under the same ones (analytics/core/stages.py).
BILLING_FIELDS = (
    "timezone",
    "waba_timezones",
    "rules",
    "fep_window",
    "fep_model",
    "service_exempt_until",
    "authentication_international",
    "rule_book",
    "ai_provider",
)


@dataclass(frozen=True)
class Budget:
    """A monthly budget (`[[pricing.budget]]`, analytics/present/budget.py): `amount` in the priced
    currency (`currency`, when given, must be it) for `month` (YYYY-MM; None: every month), of the
    whole traffic or only the charges of `category` and/or `waba_id`."""

    amount: Decimal
    month: str | None = None
    category: str | None = None
    waba_id: str | None = None
    currency: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "amount", _amount(self.amount, "budget amount", BUDGET_SCALE))
        if self.currency is not None:
            object.__setattr__(self, "currency", self.currency.strip().upper())

    @property
    def scope(self) -> str:
        """What the budget covers, in words: `all traffic`, `marketing`, `WABA 1049...`, or both."""
        parts = [p for p in (self.category, f"WABA {self.waba_id}" if self.waba_id else None) if p]
        return ", ".join(parts) or "all traffic"


@dataclass(frozen=True)
class Settings:
    """What a business sets once, for every stage.

    Billing (billing-rules.md):
    - `timezone`: the WABA time zone that sets month and rule-set boundaries (§1, §2 Months);
      `waba_timezones` overrides it per WABA id.
    - `rules`: one rule set for all traffic (what-if), instead of the one in force at each message.
    - `fep_window`: a free entry point window length for every window, instead of the rules'
      (§8: perhaps 24 h before 2023-03); None: the rules' `fep_window_hours`.
    - `fep_model`: §9, how long a click-to-WhatsApp ad's window lasts where the rules allow more
      than `fep_window_hours`: `fixed-72h` (default: the documented minimum, so costs are never
      understated), `fixed-7d` (the most Meta allows), `extend-24h-per-user-message`.
    - `service_exempt_until`: §9, an eligible government or non-profit: service messages beyond
      the free tier are `free_exempt` up to and including this date (Meta: 2027-12-31). Default off.
    - `authentication_international`: §4.5; default, no such setting.
    - `rule_book`: the rules (data/rules/rule_sets.toml, or a file of your own).
    - `ai_provider`: the business is an "AI Provider" in WhatsApp's terms (a general-purpose AI
      assistant): its non-template messages to users of the markets in data/rules/ai_providers.csv
      are `general_purpose_ai` charges (changes-2026-h2.md §6). Default off.

    Pricing:
    - `rate_card`: a card CSV or a folder of them (default: the card shipped in data/rate_cards/).
    - `currency`: the card's currency to price in (default: the one currency whose rates price every
      billable charge; if none or several do, an error asks for it).
    - `portfolios`: WABA id -> business portfolio, for volume tiers; unlisted WABAs share one portfolio.
    - `markup_percent`, `markup_per_charge`: a provider's markup on every billable charge.
    - `report_unpriced`: a billable charge without a rate is reported as unpriced instead of failing.
    - `agent_tokens_per_message`: the tokens a Meta Business Agent charge whose tokens are not
      known is priced at (default 25,000, the top of Meta's "about 20,000-25,000"); its cost is
      marked as an estimate.
    - `max_prices`: marketing max prices (`MaxPrice`, config `[[pricing.max_price]]`): marketing and
      group marketing charges they cover are priced at min(list rate, max price), as "at most".
    - `budgets`: monthly budgets (`Budget`, `[[pricing.budget]]`), which `wa-analytics costs`,
      `Traffic.budget()` and the report hold the month's spending and projection against.
    """

    timezone: str = "UTC"
    waba_timezones: dict[str, str] = field(default_factory=dict)
    rules: str | None = None
    fep_window: dt.timedelta | None = None
    fep_model: str = FIXED_72H
    service_exempt_until: dt.date | None = None
    authentication_international: AuthenticationInternational = field(default_factory=AuthenticationInternational)
    rule_book: RuleBook = field(default_factory=shipped)
    ai_provider: bool = False
    rate_card: str | Path | None = None
    currency: str | None = None
    portfolios: dict[str, str] = field(default_factory=dict)
    markup_percent: Decimal = Decimal(0)
    markup_per_charge: Decimal = Decimal(0)
    report_unpriced: bool = False
    agent_tokens_per_message: int = AGENT_TOKENS_PER_MESSAGE
    max_prices: tuple[MaxPrice, ...] = ()
    budgets: tuple[Budget, ...] = ()

    def __post_init__(self) -> None:
        for tz in (self.timezone, *self.waba_timezones.values()):
            try:
                ZoneInfo(tz)
            except (ZoneInfoNotFoundError, ValueError, TypeError):
                raise ValueError(f"unknown time zone {tz!r}: use an IANA name such as 'Europe/Rome' or 'UTC'") from None
        if self.rules is not None:
            self.rule_book.rule_set(self.rules)
        if self.fep_model not in FEP_MODELS:
            raise ValueError(f"unknown fep_model {self.fep_model!r}: expected one of {', '.join(FEP_MODELS)}")
        if self.fep_window is not None and self.fep_window <= dt.timedelta(0):
            raise ValueError(f"fep_window must be positive, not {self.fep_window}")
        object.__setattr__(self, "markup_percent", _amount(self.markup_percent, "markup_percent", MARKUP_PERCENT_SCALE))
        object.__setattr__(self, "markup_per_charge", _amount(self.markup_per_charge, "markup_per_charge", MARKUP_PER_CHARGE_SCALE))
        if self.currency is not None:
            object.__setattr__(self, "currency", self.currency.strip().upper())
        if (
            isinstance(self.agent_tokens_per_message, bool)
            or not isinstance(self.agent_tokens_per_message, int)
            or self.agent_tokens_per_message <= 0
        ):
            raise UsageError(f"agent_tokens_per_message {self.agent_tokens_per_message!r} must be a whole number of tokens above 0, such as 25000")
        object.__setattr__(self, "max_prices", tuple(self.max_prices))
        object.__setattr__(self, "budgets", tuple(b if isinstance(b, Budget) else Budget(**b) for b in self.budgets))  # type: ignore[arg-type]

    def replace(self, **changes: object) -> Settings:
        """These settings with some fields changed, checked again; a value of None leaves a field as it is."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})  # type: ignore[arg-type]

    # --- billing ---

    def timezone_of(self, waba_id: str) -> str:
        return self.waba_timezones.get(waba_id, self.timezone)

    def period_on(self, local_date: dt.date) -> RuleSet | None:
        """The rule-set period that bills a message of this local date (§1, or the what-if `rules`)."""
        return self.rule_book.period_on(local_date, self.rules)

    def periods(self) -> tuple[RuleSet, ...]:
        """The periods this run can bill with, oldest first."""
        return self.rule_book.periods_for(self.rules)

    def fep_window_of(self, period: RuleSet, entry_point: str | None) -> tuple[dt.timedelta, dt.timedelta]:
        """§2, §9: a free entry point window's (initial length, longest length) when `period`
        bills its opening message and the offer came from `entry_point`. Page call-to-action
        windows and every window before the rules allow more keep `fep_window_hours`."""
        base = self.fep_window or period.fep_window
        up_to = max(base, period.ctwa_fep_window_up_to) if entry_point == CTWA else base
        if self.fep_model == FIXED_7D:
            return up_to, up_to
        if self.fep_model == EXTEND:
            return base, up_to
        return base, base

    def conversation_windows(self) -> tuple[dt.timedelta, dt.timedelta]:
        """(conversation window, free entry point window) of the latest conversation-based rules:
        what Meta's conversation reports (billing-rules.md §7) are read with."""
        latest = [p for p in self.rule_book.periods if p.is_cbp][-1]
        return latest.conversation_window, self.fep_window or latest.fep_window

    def exempt_on(self, local_date: dt.date) -> bool:
        return self.service_exempt_until is not None and local_date <= self.service_exempt_until

    # --- pricing ---

    @property
    def has_markup(self) -> bool:
        return bool(self.markup_percent or self.markup_per_charge)

    @classmethod
    def from_toml(cls, path: str | Path, **overrides: object) -> Settings:
        """Read the TOML config file; keyword overrides (from the command line) win, and an
        override of None leaves the file's value. Relative paths in the file (`rules_file`,
        `rate_card`) are relative to the file.

        ```toml
        [billing]
        timezone = "Europe/Rome"
        waba_timezones = { "104996122399160" = "America/Sao_Paulo" }
        fep_model = "fixed-72h"            # or "fixed-7d", "extend-24h-per-user-message"
        service_exempt_until = 2027-12-31  # an eligible government or non-profit
        ai_provider = false                # true: a general-purpose AI assistant (Meta's "AI Providers")
        rules_file = "my-rules.toml"       # relative to this file; default: the shipped rules
        [billing.authentication_international]
        home_country = "IT"
        start_dates = { IN = "2024-07-01", ID = "2024-06-01" }

        [pricing]
        rate_card = "cards/our-provider.csv"
        currency = "EUR"
        portfolios = { "104996122399150" = "retail", "104996122399160" = "retail" }
        markup_percent = 10
        markup_per_charge = 0.002
        report_unpriced = false
        agent_tokens_per_message = 25000   # Meta Business Agent charges without tokens: an estimate

        [[pricing.max_price]]              # a marketing max price, in the card's currency
        waba_id = "104996122399150"
        per_1000 = 45.5
        from = 2026-10-01
        template = "spring_sale"           # optional: only this template's messages
        [[pricing.budget]]                 # every month, the whole traffic
        amount = 1500
        [[pricing.budget]]                 # one month, one category (or waba_id = "...")
        month = "2026-11"
        category = "marketing"
        amount = 600
        ```
        """
        config_schema.load(path)  # UsageError naming the file, key and what is expected
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
        billing, pricing = document.get("billing", {}), document.get("pricing", {})
        auth = billing.get("authentication_international", {})
        values: dict[str, object] = {
            "timezone": billing.get("timezone", "UTC"),
            "waba_timezones": {str(k): v for k, v in billing.get("waba_timezones", {}).items()},
            "rules": billing.get("rules"),
            "fep_model": billing.get("fep_model", FIXED_72H),
            "service_exempt_until": _date(billing["service_exempt_until"]) if "service_exempt_until" in billing else None,
            "ai_provider": billing.get("ai_provider", False),
            "authentication_international": AuthenticationInternational(
                home_country=auth.get("home_country"),
                start_dates={k: _date(v) for k, v in auth.get("start_dates", {}).items()},
            ),
            "rate_card": str(Path(path).parent / pricing["rate_card"]) if "rate_card" in pricing else None,
            "currency": pricing.get("currency"),
            "portfolios": {str(k): str(v) for k, v in pricing.get("portfolios", {}).items()},
            "markup_percent": pricing.get("markup_percent", 0),
            "markup_per_charge": pricing.get("markup_per_charge", 0),
            "report_unpriced": bool(pricing.get("report_unpriced", False)),
            "agent_tokens_per_message": pricing.get("agent_tokens_per_message", AGENT_TOKENS_PER_MESSAGE),
            "max_prices": tuple(
                MaxPrice(
                    waba_id=str(table["waba_id"]),
                    per_1000=_exact(table["per_1000"]),
                    from_date=_date(table["from"]),
                    template=table.get("template"),
                )
                for table in pricing.get("max_price", [])
            ),
            "budgets": tuple(Budget(**budget) for budget in pricing.get("budget", [])),
        }
        if "fep_window_hours" in billing:
            values["fep_window"] = dt.timedelta(hours=billing["fep_window_hours"])
        if "rules_file" in billing:
            values["rule_book"] = load(Path(path).parent / billing["rules_file"])
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]


def _date(value: object) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))


def _exact(value: object) -> object:
    """A TOML number as the decimal it was written as (a float's repr: 45.5 stays 45.5)."""
    return Decimal(str(value)) if isinstance(value, float) else value


def _amount(value: object, name: str, places: int) -> Decimal:
    """A markup as an exact decimal >= 0 with at most `places` decimals, or a `UsageError` saying why not."""
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value))
    except InvalidOperation:
        raise UsageError(f"{name} {value!r} is not a number") from None
    if not number.is_finite() or number < 0:
        raise UsageError(f"{name} {value} must be a number >= 0")
    if number >= ratecards.RATE_LIMIT:  # a typo (1e308), and beyond what a cost's 38 digits hold
        raise UsageError(f"{name} {value} is implausibly large: give a number below {ratecards.RATE_LIMIT:,}")
    if number != number.quantize(Decimal(1).scaleb(-places)):  # trailing zeros (56.600000) are no decimals
        raise UsageError(f"{name} {value} has more than {places} decimals")
    return number
