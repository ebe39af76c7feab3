"""The config file (`--config`, the report's `config_file`): one schema for every table the package
reads, checked before any value of it is used.

The file holds what a business sets once: `[billing]` (with
`[billing.authentication_international]`) and `[pricing]` (with its array of `[[pricing.budget]]`
tables, `Tables`), both read by `analytics.settings.Settings.from_toml`. `load` reads the file and refuses, with a `UsageError` (exit
status 2) naming the file, the key and what is expected, anything the schema does not allow: an
unknown table or key (a misspelt `[biling]` is not silently ignored), a value of the wrong type,
or one out of range (`fep_window_hours = -5`). Values are checked, never converted: the readers
above convert them.
"""

from __future__ import annotations

import datetime as dt
import difflib
import math
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from analytics.core.errors import UsageError

# billing-rules.md §2, §8: 72 h, perhaps 24 h before 2023-03; a week is the longest window any model uses.
MAX_FEP_WINDOW_HOURS = 168
# The longest excerpt of a value or key from the file that a message quotes.
EXCERPT = 40


@dataclass(frozen=True)
class Value:
    """A setting: what to write (for the message) and the test a value must pass."""

    expected: str | Callable[[], str]  # a callable for what is only known once the package is loaded
    valid: Callable[[object], bool]

    def describe(self) -> str:
        return self.expected if isinstance(self.expected, str) else self.expected()


@dataclass(frozen=True)
class Entries:
    """A table of keys the user chooses (WABA ids, country codes), each key and value checked."""

    expected: str
    key: Value
    value: Value


@dataclass(frozen=True)
class Table:
    settings: Mapping[str, Value | Entries | Table | Tables]


@dataclass(frozen=True)
class Tables:
    """An array of tables (`[[pricing.max_price]]`): each table checked against `table`, with the
    `required` keys present."""

    expected: str
    table: Table
    required: tuple[str, ...]


def _is_text(value: object) -> bool:
    return isinstance(value, str)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_time_zone(value: object) -> bool:
    if not isinstance(value, str) or not value:
        return False
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name too long for a file
        return False
    return True


def _is_date(value: object) -> bool:
    if isinstance(value, dt.datetime):
        return False
    if isinstance(value, dt.date):
        return True
    if not isinstance(value, str):
        return False
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        return False
    return bool(re.fullmatch(r"\d{4}-\d{2}-\d{2}", value))


def _is_amount(value: object) -> bool:
    """A number >= 0, or one written as a string to keep its decimals exact ("0.002")."""
    if _is_number(value):
        return value >= 0  # type: ignore[operator]
    if isinstance(value, str):
        try:
            number = Decimal(value)
        except InvalidOperation:
            return False
        return number.is_finite() and number >= 0
    return False


def _is_max_price(value: object) -> bool:
    """A price per 1,000 messages above 0 with at most 3 decimals (so a price per message is a rate of 6)."""
    if not _is_amount(value):
        return False
    number = Decimal(str(value))
    return number > 0 and -number.as_tuple().exponent <= 3  # type: ignore[operator]


def _is_month(value: object) -> bool:
    return isinstance(value, str) and bool(re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", value))


def _rule_set_names() -> str:
    from analytics.terms.rules import rule_sets  # rules reads its config through this module

    return "the name of a rule set: " + ", ".join(f'"{r.name}"' for r in rule_sets()) + " (or of the rules_file's)"


def _fep_models() -> tuple[str, ...]:
    from analytics.terms.rules import FEP_MODELS

    return FEP_MODELS


TIME_ZONE = Value('an IANA time zone name such as "Europe/Rome" or "UTC"', _is_time_zone)
COUNTRY = Value('an ISO 3166-1 alpha-2 country code such as "IT"', lambda v: isinstance(v, str) and bool(re.fullmatch(r"[A-Z]{2}", v)))
DATE = Value("a date such as 2024-07-01", _is_date)

SCHEMA = Table(
    {
        "billing": Table(
            {
                "timezone": TIME_ZONE,
                "waba_timezones": Entries(
                    'a table of WABA id = time zone, such as { "104996122399160" = "America/Sao_Paulo" }',
                    key=Value("a WABA id", lambda k: bool(str(k).strip())),
                    value=TIME_ZONE,
                ),
                # a name of the rules file in use: Settings checks it against that file
                "rules": Value(_rule_set_names, lambda v: isinstance(v, str) and bool(v.strip())),
                "rules_file": Value("the path of a rules file in data/rules/rule_sets.toml's format, relative to the config file", _is_text),
                "fep_window_hours": Value(
                    f"a number of hours above 0 and at most {MAX_FEP_WINDOW_HOURS}, such as 72",
                    lambda v: _is_number(v) and 0 < v <= MAX_FEP_WINDOW_HOURS,  # type: ignore[operator]
                ),
                "fep_model": Value(lambda: "one of " + ", ".join(f'"{m}"' for m in _fep_models()), lambda v: v in _fep_models()),
                "service_exempt_until": Value(
                    "a TOML date such as 2026-10-01 (no quotes)", lambda v: isinstance(v, dt.date) and not isinstance(v, dt.datetime)
                ),
                # changes-2026-h2.md §6: a general-purpose AI assistant, billed general_purpose_ai where listed
                "ai_provider": Value("true or false", lambda v: isinstance(v, bool)),
                "authentication_international": Table(
                    {
                        "home_country": COUNTRY,
                        "start_dates": Entries('a table of country code = start date, such as { IN = "2024-07-01" }', key=COUNTRY, value=DATE),
                    }
                ),
            }
        ),
        "pricing": Table(
            {
                "rate_card": Value("the path of a rate card CSV or a folder of them, relative to the config file", _is_text),
                "currency": Value(
                    'an ISO 4217 currency code such as "EUR"', lambda v: isinstance(v, str) and bool(re.fullmatch(r"[A-Za-z]{3}", v.strip()))
                ),
                "portfolios": Entries(
                    'a table of WABA id = portfolio name, such as { "104996122399150" = "retail" }',
                    key=Value("a WABA id", lambda k: bool(str(k).strip())),
                    value=Value("a portfolio name (a string)", _is_text),
                ),
                "markup_percent": Value("a number >= 0, such as 10", _is_amount),
                "markup_per_charge": Value("a number >= 0, such as 0.002", _is_amount),
                "report_unpriced": Value("true or false", lambda v: isinstance(v, bool)),
                "agent_tokens_per_message": Value(
                    "a whole number of tokens above 0, such as 25000",
                    lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
                ),
                "max_price": Tables(
                    '[[pricing.max_price]] tables, each with waba_id = "...", per_1000 = 45.5, from = 2026-10-01 and optionally template = "..."',
                    Table(
                        {
                            "waba_id": Value('a WABA id (a string), such as "104996122399150"', lambda v: isinstance(v, str) and bool(v.strip())),
                            "per_1000": Value("a price per 1,000 marketing messages above 0, at most 3 decimals, such as 45.5", _is_max_price),
                            "from": Value("a date such as 2026-10-01", _is_date),
                            "template": Value("a template name (a string)", lambda v: isinstance(v, str) and bool(v.strip())),
                        }
                    ),
                    required=("waba_id", "per_1000", "from"),
                ),
                # analytics/present/budget.py: a budget per month, the whole traffic or one category or WABA of it
                "budget": Tables(
                    '[[pricing.budget]] tables, each with amount = 1500 and optionally month = "2026-11", category = "...", waba_id = "...", currency = "..."',
                    Table(
                        {
                            "amount": Value("a number >= 0, such as 1500 (in the priced currency)", _is_amount),
                            "month": Value('a month such as "2026-11" (leave it out for every month)', _is_month),
                            "category": Value(
                                'a charge category in lower case, such as "marketing"',
                                lambda v: isinstance(v, str) and bool(re.fullmatch(r"[a-z_]+", v)),
                            ),
                            "waba_id": Value("a WABA id (a string)", lambda v: isinstance(v, str) and bool(v.strip())),
                            "currency": Value(
                                'an ISO 4217 currency code such as "EUR"',
                                lambda v: isinstance(v, str) and bool(re.fullmatch(r"[A-Za-z]{3}", v.strip())),
                            ),
                        }
                    ),
                    required=("amount",),
                ),
            }
        ),
    }
)


def load(path: str | Path) -> dict[str, object]:
    """The config file at `path`, parsed and checked against `SCHEMA`; UsageError if it does not fit."""
    try:
        raw = Path(path).read_bytes()
    except OSError as error:
        raise UsageError(f"{path}: cannot read the config file: {error.strerror or type(error).__name__}") from None
    try:
        document = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise UsageError(f"{path}: not a TOML config file: invalid UTF-8 at byte {error.start}; save it as UTF-8 text") from None
    except tomllib.TOMLDecodeError as error:
        raise UsageError(f"{path}: not valid TOML: {error}") from None
    problem = check(document)
    if problem:
        raise UsageError(f"{path}: {problem}")
    return document


def check(document: Mapping[str, object], schema: Table = SCHEMA, where: tuple[str, ...] = ()) -> str | None:
    """The first way `document` breaks `schema`, as a message naming the key, or None if it fits."""
    for key, value in document.items():
        spec = schema.settings.get(key)
        if spec is None:
            return _unknown(key, schema, where)
        if isinstance(spec, Table):
            if not isinstance(value, dict):
                return f"{_name(where, key)} must be a table ([{'.'.join((*where, key))}]), not {_type(value)}"
            problem = check(value, spec, (*where, key))
        elif isinstance(spec, Entries):
            problem = _check_entries(value, spec, where, key)
        elif isinstance(spec, Tables):
            problem = _check_tables(value, spec, where, key)
        else:
            problem = None if spec.valid(value) else f"{_name(where, key)}: expected {spec.describe()}, got {excerpt(value)}"
        if problem:
            return problem
    return None


def _check_entries(value: object, spec: Entries, where: tuple[str, ...], key: str) -> str | None:
    if not isinstance(value, dict):
        return f"{_name(where, key)}: expected {spec.expected}, got {excerpt(value)}"
    for entry, entry_value in value.items():
        name = f'{_name(where, key)}."{excerpt(entry, quote=False)}"'
        if not spec.key.valid(entry):
            return f"{name}: expected the key to be {spec.key.describe()}"
        if not spec.value.valid(entry_value):
            return f"{name}: expected {spec.value.describe()}, got {excerpt(entry_value)}"
    return None


def _check_tables(value: object, spec: Tables, where: tuple[str, ...], key: str) -> str | None:
    name = f"[[{'.'.join((*where, key))}]]"
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        return f"{_name(where, key)}: expected {spec.expected}, got {excerpt(value)}"
    for place, table in enumerate(value, start=1):
        problem = check(table, spec.table, (*where, f"{key} number {place}"))  # first: a misspelt key is also a missing one
        if problem:
            return problem
        missing = [k for k in spec.required if k not in table]
        if missing:
            return f"{name} number {place}: missing {', '.join(missing)}: expected {spec.expected}"
    return None


def _unknown(key: str, schema: Table, where: tuple[str, ...]) -> str:
    known = list(schema.settings)
    close = difflib.get_close_matches(key, known, n=1)
    if not where:
        tables = " and ".join(f"[{k}]" for k in known)
        hint = f"did you mean [{close[0]}]? " if close else ""
        return f"unknown table [{excerpt(key, quote=False)}]: {hint}the config file holds {tables} (see the README)"
    hint = f"did you mean {close[0]}? " if close else ""
    return f"unknown key {excerpt(key, quote=False)} in [{'.'.join(where)}]: {hint}expected one of {', '.join(known)}"


def _name(where: tuple[str, ...], key: str) -> str:
    return f"[{'.'.join(where)}] {key}" if where else key


def _type(value: object) -> str:
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "an array", dict: "a table"}.get(
        type(value), type(value).__name__
    )


def excerpt(value: object, *, quote: bool = True) -> str:
    """A short, printable rendering of a value from the file: never more than EXCERPT characters."""
    if isinstance(value, dict | list):
        return _type(value)
    text = (repr(value) if quote and isinstance(value, str) else str(value)).encode("ascii", "backslashreplace").decode()
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= EXCERPT else text[: EXCERPT - 1] + "…"
