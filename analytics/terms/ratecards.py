"""Rate cards (contracts.md §3): what one billable unit costs, by currency, market, category, date and tier.

A card is a CSV with one row per rate, any number of currencies and effective dates in one file:

```
effective_from,currency,market,category,tier_from,rate,source,note
2026-04-01,USD,Italy,utility,1,0.0300,https://developers.facebook.com/...,trust A; Meta's CSV verbatim
2026-04-01,USD,Italy,utility,100001,0.0285,https://developers.facebook.com/...,trust A; Meta's CSV verbatim
```

- `effective_from`: from 00:00 of this date in the WABA time zone, until a later row for the same
  currency, market and category. Rates are looked up by date, whatever the rule set.
- `tier_from` (optional, default 1): the n-th billable message of a month, counted per business
  portfolio, market and category family, is priced by the row with the largest `tier_from` <= n
  (`analytics.price.pricing`). Only utility, authentication and authentication_international have tiers.
- `rate`: a decimal number >= 0 with at most `RATE_SCALE` decimals, in `currency` per unit. An
  **empty rate means "not known"** from that date (or, with `tier_from` > 1, from that tier on):
  it stops an earlier row from carrying over to a date it does not cover, so a charge there is
  unpriced (an error, or an "unpriced" line) instead of priced with a rate that was never in force.
- `source` (URL or document) and `note` (optional): where the rate comes from. A note that starts
  with `trust A`..`trust D` gives the rate's trust rating (data/rate_cards/README.md); it becomes
  the `trust` column.
- `unit` (optional, default `message`): what the rate is per. `message` (one billable unit of
  contracts.md §2) or `million_tokens` (per 1,000,000 tokens: Meta Business Agent, charged per
  token from 2026-08-01, changes-2026-h2.md §2); `million_tokens` only for `meta_business_agent`.
- `market` `global` (`GLOBAL_MARKET`): the rate of every market, for Meta's one global rate (Meta
  Business Agent). A card's own row for a market wins over the global row of the same date: the
  global row stands for a row of every market (`MARKETS` and `Unknown`) that has none of its own
  for that currency, category, date and tier, and is loaded as such.

`load_card` reads a card (a CSV file, or a folder whose `*.csv` files together form one card; the
default is the card shipped in data/rate_cards/) and validates it: required columns, dates,
currencies, markets (`analytics.terms.markets.MARKETS`), categories (contracts.md §2), tiers, negative
rates, duplicates. Every problem names the file and line.

`import_meta_card` reads the CSV files Meta publishes on its pricing page (a list-rate file and a
volume-tier file, any currency) as they are: preamble rows, multi-line headers, market names only on
a tier group's first row, thousands separators, `n/a` and `--`. A tier band "From a To b" becomes
`tier_from = max(a, 1)` (contracts.md §3); bands must follow each other without gap or overlap, and
a tier file's list rates must agree with the rate file's.
"""

from __future__ import annotations

import csv
import datetime as dt
import difflib
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from functools import cache
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import polars as pl

from analytics.core import outputs
from analytics.core.errors import InputError, UsageError, excerpt, found_names
from analytics.core.money import decimal_places
from analytics.core.resources import resource
from analytics.terms import rules
from analytics.terms.markets import MARKETS, UNKNOWN_MARKET

CARD_COLUMNS = ("effective_from", "currency", "market", "category", "tier_from", "rate")
PROVENANCE_COLUMNS = ("source", "note")
UNIT_COLUMN = "unit"  # optional, after the contract's columns: what a rate is per
PER_MESSAGE = "message"
PER_MILLION_TOKENS = "million_tokens"
UNITS = (PER_MESSAGE, PER_MILLION_TOKENS)
TOKENS_PER_UNIT = 1_000_000  # a `million_tokens` rate is per this many tokens
GLOBAL_MARKET = "global"  # a card row for every market: Meta's one global rate
REQUIRED_COLUMNS = ("effective_from", "currency", "market", "category", "rate")

RATE_SCALE = 6  # decimals a rate may have; costs are exact decimals (analytics.price.pricing)
# A rate per message at or above this is a typo (1e308): Meta's highest list rates are a few
# thousand (IDR, COP); the bound also keeps every cost inside RATE_DTYPE's 38 digits.
RATE_LIMIT = Decimal(1_000_000)
RATE_DTYPE = pl.Decimal(38, RATE_SCALE)

CARD_SCHEMA: dict[str, pl.DataType] = {
    "effective_from": pl.Date(),
    "currency": pl.String(),
    "market": pl.String(),
    "category": pl.String(),
    "tier_from": pl.Int64(),
    "rate": RATE_DTYPE,
    "source": pl.String(),
    "note": pl.String(),
    "unit": pl.String(),
    "trust": pl.String(),
}

# Categories of 2026 (issue 17, changes-2026-h2.md §2, §4-6): group deliveries, Meta Business Agent
# (per token) and AI Providers' general-purpose AI messages.
GROUP_MARKETING = "group_marketing"
GROUP_UTILITY = "group_utility"
GROUP_SERVICE = "group_service"
META_BUSINESS_AGENT = "meta_business_agent"
GENERAL_PURPOSE_AI = "general_purpose_ai"
PER_TOKEN_CATEGORIES = (META_BUSINESS_AGENT,)  # the categories a `million_tokens` rate may price

# contracts.md §2: every category a charge can have, in the order cards list them.
CATEGORIES = (
    "marketing",
    "utility",
    rules.AUTH,
    rules.AUTH_INTERNATIONAL,
    "service",
    *rules.INITIATOR_CATEGORIES,
    GROUP_MARKETING,
    GROUP_UTILITY,
    GROUP_SERVICE,
    META_BUSINESS_AGENT,
    GENERAL_PURPOSE_AI,
)
# contracts.md §3: volume tiers count utility, and authentication with authentication_international.
TIER_FAMILY = {"utility": "utility", rules.AUTH: rules.AUTH, rules.AUTH_INTERNATIONAL: rules.AUTH}

_TRUST = re.compile(r"^trust ([A-D])\b")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_MAX_PROBLEMS = 10


# --- Loading and validating a card ----------------------------------------------------------------


def shipped_card() -> Traversable:
    """The folder of the card shipped with the package (data/rate_cards/)."""
    return resource("data", "rate_cards")


def load_card(path: str | Path | Traversable | None = None) -> pl.DataFrame:
    """A validated card (`CARD_SCHEMA`), sorted; `path` is a CSV file or a folder of them (default:
    the shipped card). Raises `InputError` naming the file and line of each problem."""
    if path is None:
        return _shipped()
    return _load(_card_files(path))


@cache
def _shipped() -> pl.DataFrame:
    return _load(_card_files(shipped_card()))


def _card_files(path: str | Path | Traversable) -> list[tuple[str, str]]:
    """(name, text) of the card's CSV files: the file itself, or a folder's `*.csv` by name."""
    where = Path(path) if isinstance(path, str) else path
    if where.is_dir():
        files = sorted((f for f in where.iterdir() if f.name.endswith(".csv")), key=lambda f: f.name)
        if not files:
            raise InputError("no rate card here: the folder has no .csv file", path=str(path))
        return [(str(f), _card_text(f)) for f in files]
    if not where.is_file():
        raise InputError("rate card not found", path=str(path), fix="Give a CSV file or a folder of CSV files")
    return [(str(path), _card_text(where))]


def _card_text(path: Path | Traversable) -> str:
    """The card's text; a file holding NUL bytes is no CSV (`/proc/self/environ` named by mistake) and is
    refused before anything of it could reach a message."""
    text = path.read_text(encoding="utf-8")
    if "\x00" in text:
        raise InputError("not a text file (it holds NUL bytes)", path=str(path), fix="A rate card is a CSV file")
    return text


def _load(files: Sequence[tuple[str, str]]) -> pl.DataFrame:
    problems: list[str] = []
    rows: list[dict[str, Any]] = []
    for name, text in files:
        rows += _read_rows(name, text, problems)
    problems += _table_problems(rows)
    if problems:
        raise InputError(_problem_list(problems), fix=_CARD_FORMAT_HINT)
    frame = pl.DataFrame(
        {c: [r[c] for r in rows] for c in CARD_SCHEMA if c != "trust"},
        schema={c: t for c, t in CARD_SCHEMA.items() if c != "trust"},
    )
    frame = frame.with_columns(trust=pl.col("note").str.extract(_TRUST.pattern, 1))
    return _for_every_market(frame).sort("currency", "market", "category", "effective_from", "tier_from")


def _for_every_market(card: pl.DataFrame) -> pl.DataFrame:
    """The card with each `global` row replaced by a row of every market (`MARKETS` and `Unknown`:
    Meta's global rate does not depend on the user's market) that has no row of its own for the
    same currency, category, date and tier. From then on a global rate is a market's rate like
    any other: it applies until a later row of that market."""
    is_global = pl.col("market") == GLOBAL_MARKET
    global_rows = card.filter(is_global)
    if global_rows.height == 0:
        return card
    own = card.filter(~is_global)
    markets = pl.DataFrame({"market": [*MARKETS, UNKNOWN_MARKET]})
    spread = global_rows.drop("market").join(markets, how="cross").select(own.columns)
    spread = spread.join(own, on=["effective_from", "currency", "market", "category", "tier_from"], how="anti")
    return pl.concat([own, spread])


_CARD_FORMAT_HINT = (
    "A rate card is a CSV with columns effective_from,currency,market,category,tier_from,rate "
    "(and optionally source,note,unit): see contracts.md §3 and data/rate_cards/README.md"
)


def _problem_list(problems: Sequence[str]) -> str:
    shown = list(problems[:_MAX_PROBLEMS])
    if len(problems) > _MAX_PROBLEMS:
        shown.append(f"... and {len(problems) - _MAX_PROBLEMS} more")
    return "invalid rate card: " + "; ".join(shown)  # one line: a scheduler's log keeps it whole


def _read_rows(name: str, text: str, problems: list[str]) -> list[dict[str, Any]]:
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    header = next(reader, None)
    if header is None:
        problems.append(f"{name}: empty file")
        return []
    header = [h.strip() for h in header]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    unexpected = [c for c in header if c not in (*CARD_COLUMNS, *PROVENANCE_COLUMNS, UNIT_COLUMN)]
    if missing or unexpected:
        if missing:
            problems.append(f"{name}, line 1: missing column {', '.join(missing)}")
        if unexpected:
            problems.append(f"{name}, line 1: unexpected column {found_names(unexpected, quote=True)}")
        return []
    rows = []
    for values in reader:
        line = reader.line_num
        if not any(v.strip() for v in values):
            continue
        if len(values) != len(header):
            problems.append(f"{name}, line {line}: {len(values)} fields, the header has {len(header)}")
            continue
        raw = dict(zip(header, (v.strip() for v in values), strict=False))
        row = _typed_row(raw, f"{name}, line {line}", problems)
        if row is not None:
            rows.append(row)
    return rows


def _typed_row(raw: dict[str, str], where: str, problems: list[str]) -> dict[str, Any] | None:
    found: list[str] = []
    try:
        effective_from = dt.date.fromisoformat(raw["effective_from"])
    except ValueError:
        effective_from = None
        found.append(f"effective_from {excerpt(raw['effective_from'])} is not a date (YYYY-MM-DD)")
    currency = raw["currency"]
    if not _CURRENCY.match(currency):
        found.append(f"currency {excerpt(currency)} is not an ISO 4217 code (three capital letters, e.g. USD)")
    market = raw["market"]
    if market not in MARKETS and market != GLOBAL_MARKET:
        found.append(f"unknown market {excerpt(market)}{_did_you_mean(market, MARKETS)}")
    category = raw["category"]
    if category not in CATEGORIES:
        found.append(f"unknown category {excerpt(category)}: expected one of {', '.join(CATEGORIES)}")
    tier_text = raw.get("tier_from", "") or "1"
    tier_from = int(tier_text) if tier_text.isdigit() else None
    if tier_from is None or tier_from < 1:
        found.append(f"tier_from {excerpt(tier_text)} is not a whole number >= 1")
    elif tier_from > 1 and category in CATEGORIES and category not in TIER_FAMILY:
        found.append(f"tier_from {tier_from} for {category}: only utility and authentication have volume tiers")
    rate, rate_problem = parse_rate(raw["rate"])
    if rate_problem:
        found.append(rate_problem)
    unit = raw.get(UNIT_COLUMN, "") or PER_MESSAGE
    if unit not in UNITS:
        found.append(f"unknown unit {excerpt(unit)}: expected {' or '.join(UNITS)} (empty: {PER_MESSAGE})")
    elif unit == PER_MILLION_TOKENS and category in CATEGORIES and category not in PER_TOKEN_CATEGORIES:
        found.append(f"unit {unit} for {category}: only {', '.join(PER_TOKEN_CATEGORIES)} is charged per token")
    if found:
        problems.extend(f"{where}: {p}" for p in found)
        return None
    return {
        "effective_from": effective_from,
        "currency": currency,
        "market": market,
        "category": category,
        "tier_from": tier_from,
        "rate": rate,
        "source": raw.get("source") or None,
        "note": raw.get("note") or None,
        "unit": unit,
        "where": where,
    }


def parse_rate(text: str) -> tuple[Decimal | None, str | None]:
    """(rate, problem): empty text is an unknown rate (None, None)."""
    if text == "":
        return None, None
    try:
        rate = Decimal(text)
    except InvalidOperation:
        return None, f"rate {excerpt(text)} is not a number (write it like 0.0245; leave it empty when not known)"
    if not rate.is_finite():
        return None, f"rate {excerpt(text)} is not a number"
    if rate < 0:
        return None, f"negative rate {text}"
    if decimal_places(rate) > RATE_SCALE:
        return None, f"rate {text} has more than {RATE_SCALE} decimals"
    if rate >= RATE_LIMIT:
        return None, f"rate {text} is implausibly large (a rate per message is below {RATE_LIMIT:,} in every currency)"
    return rate, None


def _did_you_mean(value: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.6)
    hint = f": did you mean {close[0]!r}?" if close else ""
    return hint + f" (markets are Meta's names, as in data/markets/regions.csv, or {GLOBAL_MARKET} for every market)"


def _table_problems(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Duplicates, two rates for one tier, and tier sets that do not start at the first message."""
    problems = []
    seen: dict[tuple[Any, ...], dict[str, Any]] = {}
    first_tiers: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in rows:
        key = tuple(row[c] for c in CARD_COLUMNS[:5])
        if key in seen:
            earlier = seen[key]
            same = earlier["rate"] == row["rate"]
            what = "duplicate row" if same else "overlapping tiers: a second rate for the same tier"
            problems.append(f"{row['where']}: {what} ({_describe(row)}), already at {earlier['where']}")
            continue
        seen[key] = row
        first_tiers.setdefault(key[:4], []).append(row)
    for tiers in first_tiers.values():
        first = min(tiers, key=lambda r: r["tier_from"])
        if first["tier_from"] != 1:
            problems.append(
                f"{first['where']}: volume tiers of {_describe(first, tier=False)} start at tier_from "
                f"{first['tier_from']}: add the row with tier_from 1 (the list rate), or an empty rate if it is not known"
            )
    return problems


def _describe(row: dict[str, Any], *, tier: bool = True) -> str:
    text = f"{row['currency']} {row['market']} {row['category']} from {row['effective_from']}"
    return text + (f", tier_from {row['tier_from']}" if tier else "")


# --- Categories priced at another's rate ------------------------------------------------------------


@cache
def priced_as() -> dict[str, str]:
    """Category -> the category whose rate it pays where a card has no row of its own in force
    (data/rules/priced_as.csv, each row with its source): the group categories at their base
    category's rate (Meta, "Groups API Pricing", Updated May 21, 2026: "at the going marketing
    message rate for each recipient's country calling code")."""
    text = resource("data", "rules", "priced_as.csv").read_text(encoding="utf-8")
    table: dict[str, str] = {}
    for line, row in enumerate(csv.DictReader(io.StringIO(text)), start=2):
        category, base = row["category"], row["priced_as"]
        if category not in CATEGORIES or base not in CATEGORIES or not row.get("source"):
            raise InputError(f"data/rules/priced_as.csv, line {line}: a known category, the category it is priced as, and a source")
        table[category] = base
    return table


# --- Writing a card ---------------------------------------------------------------------------------


def write_card(rows: pl.DataFrame, path: str | Path) -> None:
    """Write card rows (all columns text, as `import_meta_card` gives them) as CSV."""
    columns = [*CARD_COLUMNS, *(c for c in PROVENANCE_COLUMNS if c in rows.columns)]
    path = Path(path)
    if path.suffix.lower() != ".csv":
        raise UsageError(f"cannot write '{path}': a rate card is a .csv file")
    with outputs.atomic(path) as partial, open(partial, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows.select(columns).iter_rows())


# --- Meta's published CSV files ---------------------------------------------------------------------

# Currency as Meta's CSVs write it (ratecards-research.md §0: `$US`, `A$`, `GBD` — Meta's typo for
# GBP —, `£`, `₹`, `RP` for IDR); ISO codes pass through.
META_CURRENCY_TOKENS = {"$US": "USD", "US$": "USD", "A$": "AUD", "GBD": "GBP", "£": "GBP", "₹": "INR", "RP": "IDR"}
_HEADER_CATEGORIES = {
    "marketing": "marketing",
    "utility": "utility",
    "authentication": rules.AUTH,
    "authenticationinternational": rules.AUTH_INTERNATIONAL,
    "service": "service",
}
_NOT_AVAILABLE = {"n/a", "na", ""}
_OPEN_END = {"--", "-", "—", ""}
_TITLE_DATE = re.compile(r"effective\s+([A-Z][a-z]+ \d{1,2}, \d{4})")


@dataclass(frozen=True)
class ImportedCard:
    """Card rows from Meta's files (all columns text, rates exactly as Meta wrote them)."""

    rows: pl.DataFrame
    markets: tuple[str, ...]
    currencies: tuple[str, ...]
    tier_bands: int
    notes: tuple[str, ...] = field(default=())


def import_meta_card(
    rates: str | Path,
    tiers: str | Path | None = None,
    *,
    effective: dt.date,
    source: str | None = None,
    note: str | None = None,
    currency: str | None = None,
) -> ImportedCard:
    """Card rows from Meta's list-rate CSV and, optionally, its volume-tier CSV, effective `effective`.

    `currency` overrides the currency column (for a token this importer does not know). `source`
    and `note` fill the card's provenance columns (default: the file names; no note).
    """
    rate_rows, notes = _meta_list_rates(Path(rates), effective, currency)
    tier_rows: list[dict[str, str]] = []
    bands = 0
    if tiers is not None:
        tier_rows, bands = _meta_tier_rates(Path(tiers), effective, currency, rate_rows)
    rows = rate_rows + tier_rows
    market_order = {m: i for i, m in enumerate(dict.fromkeys(r["market"] for r in rate_rows))}
    category_order = {c: i for i, c in enumerate(CATEGORIES)}
    rows.sort(key=lambda r: (market_order[r["market"]], category_order[r["category"]], int(r["tier_from"])))
    default_source = str(Path(rates).name) + (f" + {Path(tiers).name}" if tiers is not None else "")
    frame = pl.DataFrame(
        {
            **{c: [r[c] for r in rows] for c in CARD_COLUMNS},
            "source": [source or default_source] * len(rows),
            "note": [note or ""] * len(rows),
        },
        schema={c: pl.String for c in (*CARD_COLUMNS, *PROVENANCE_COLUMNS)},
    )
    _validate_imported(frame, [r["where"] for r in rows])
    return ImportedCard(
        rows=frame,
        markets=tuple(market_order),
        currencies=tuple(sorted({r["currency"] for r in rows})),
        tier_bands=bands,
        notes=tuple(notes),
    )


_GENERATED = "\x00card"  # the name the generated card is checked under, replaced by the input's file and line


def _validate_imported(frame: pl.DataFrame, sources: Sequence[str]) -> None:
    """The same checks as `load_card`, so an imported card always loads. A problem names the input
    file and line the card row came from (`sources`, one per row), not the generated card's line."""
    text = io.StringIO()
    frame.write_csv(text)
    problems: list[str] = []
    rows = _read_rows(_GENERATED, text.getvalue(), problems)
    problems += _table_problems(rows)
    if problems:
        # the generated card has one row per line after its header: line n is row n - 2
        named = [re.sub(rf"{_GENERATED}, line (\d+)", lambda m: sources[int(m.group(1)) - 2], p) for p in problems]
        raise InputError(f"the imported card does not validate: {_problem_list(list(dict.fromkeys(named)))}", fix=_CARD_FORMAT_HINT)


def _read_meta_csv(path: Path) -> tuple[list[list[str]], list[int]]:
    """The rows of one of Meta's CSVs, cells stripped, and the file line each row starts on (a
    quoted header cell may span two lines)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError("file not found", path=str(path)) from None
    except UnicodeDecodeError:
        raise InputError("not a UTF-8 text file: is it Meta's CSV download?", path=str(path)) from None
    reader = csv.reader(io.StringIO(text))
    rows, lines, start = [], [], 1
    for row in reader:
        rows.append([cell.strip() for cell in row])
        lines.append(start)
        start = reader.line_num + 1
    return rows, lines


def _check_title_date(path: Path, rows: Sequence[Sequence[str]], effective: dt.date) -> None:
    """Meta's first line says "effective April 1, 2026": refuse an --effective that contradicts it."""
    for row in rows[:3]:
        match = _TITLE_DATE.search(" ".join(row))
        if match:
            stated = dt.datetime.strptime(match.group(1), "%B %d, %Y").date()
            if stated != effective:
                raise UsageError(f"{path}: the file says it is effective {stated.isoformat()}, not {effective.isoformat()}: check --effective")
            return


def _normalised(header: str) -> str:
    return re.sub(r"[\s\-_./()]", "", header.lower())


def _header_row(path: Path, rows: Sequence[Sequence[str]]) -> int:
    for index, row in enumerate(rows):
        if row and _normalised(row[0]).startswith("market") and any(_normalised(c) == "currency" for c in row):
            return index
    raise InputError(
        "no header row starting with 'Market' and holding 'Currency': is this one of Meta's rate-card CSVs?",
        path=str(path),
    )


def _currency(token: str, override: str | None, where: str) -> str:
    if override:
        return override
    code = META_CURRENCY_TOKENS.get(token, token.upper())
    if not _CURRENCY.match(code):
        raise InputError(f"{where}: unknown currency {token!r}", fix="Give the ISO code with --currency")
    return code


def _meta_list_rates(path: Path, effective: dt.date, currency: str | None) -> tuple[list[dict[str, str]], list[str]]:
    rows, lines = _read_meta_csv(path)
    _check_title_date(path, rows, effective)
    header_at = _header_row(path, rows)
    header = [_normalised(h) for h in rows[header_at]]
    currency_col = header.index("currency")
    columns = {i: _HEADER_CATEGORIES[h] for i, h in enumerate(header) if h in _HEADER_CATEGORIES}
    notes = [
        f"ignored column {rows[header_at][i]!r} of {path.name}: not a category of contracts.md §2"
        for i, h in enumerate(header)
        if i > currency_col and h and h not in _HEADER_CATEGORIES
    ]
    if "marketing" not in columns.values():
        raise InputError("the header has no Marketing column: is this Meta's list-rate file?", path=str(path))
    out: list[dict[str, str]] = []
    seen_markets: set[str] = set()
    for row, line in zip(rows[header_at + 1 :], lines[header_at + 1 :], strict=False):
        if not any(row):
            continue
        where = f"{path}, line {line}"
        market = row[0]
        if market in seen_markets:
            raise InputError(f"{where}: market {excerpt(market)} appears twice")
        seen_markets.add(market)
        code = _currency(row[currency_col], currency, where)
        for index, category in columns.items():
            value = row[index] if index < len(row) else ""
            if value.lower() in _NOT_AVAILABLE:
                continue
            out.append(_card_row(effective, code, market, category, 1, _meta_rate(value, where), where))
    if not out:
        raise InputError("no rates below the header", path=str(path))
    return out, notes


def _meta_rate(text: str, where: str) -> str:
    cleaned = text.replace(" ", "")
    _, problem = parse_rate(cleaned)
    if problem:
        raise InputError(f"{where}: {problem}")
    return cleaned


def _meta_count(text: str, where: str) -> int | None:
    """A monthly message count ("100,001"); None for an open end ("--")."""
    if text in _OPEN_END:
        return None
    digits = text.replace(",", "").replace(" ", "")
    if not digits.isdigit():
        raise InputError(f"{where}: message count {text!r} is not a whole number")
    return int(digits)


def _card_row(effective: dt.date, currency: str, market: str, category: str, tier_from: int, rate: str, where: str) -> dict[str, str]:
    """A row of the card made from Meta's CSV; `where` is the input file and line it comes from."""
    return {
        "where": where,
        "effective_from": effective.isoformat(),
        "currency": currency,
        "market": market,
        "category": category,
        "tier_from": str(tier_from),
        "rate": rate,
    }


@dataclass
class _Section:
    category: str
    columns: dict[str, int]  # from, to, rate_type, rate -> column index


def _tier_sections(path: Path, rows: Sequence[Sequence[str]], header_at: int) -> list[_Section]:
    """The Utility / Authentication / Authentication-International column groups of the tier file."""
    header = [_normalised(h) for h in rows[header_at]]
    starts: list[tuple[int, str]] = []
    for row in reversed(rows[:header_at]):
        starts = [(i, _HEADER_CATEGORIES[_normalised(c)]) for i, c in enumerate(row) if _normalised(c) in _HEADER_CATEGORIES]
        if starts:
            break
    if not starts:
        raise InputError("no row naming the Utility / Authentication column groups above the header", path=str(path))
    sections = []
    for number, (start, category) in enumerate(starts):
        end = starts[number + 1][0] if number + 1 < len(starts) else len(header)
        names = {"from": "from", "to": "to", "ratetype": "rate_type", "rate": "rate"}
        columns = {names[h]: i for i, h in enumerate(header) if start <= i < end and h in names}
        if set(columns) != set(names.values()):
            raise InputError(
                f"the {category} column group lacks {', '.join(sorted(set(names.values()) - set(columns)))}",
                path=str(path),
            )
        sections.append(_Section(category, columns))
    return sections


def _meta_tier_rates(path: Path, effective: dt.date, currency: str | None, list_rows: Sequence[dict[str, str]]) -> tuple[list[dict[str, str]], int]:
    rows, lines = _read_meta_csv(path)
    _check_title_date(path, rows, effective)
    header_at = _header_row(path, rows)
    currency_col = [_normalised(h) for h in rows[header_at]].index("currency")
    sections = _tier_sections(path, rows, header_at)
    list_rates = {(r["market"], r["category"]): r for r in list_rows}
    out: list[dict[str, str]] = []
    bands = 0
    market = ""
    previous_to: dict[tuple[str, str], int | None] = {}
    for row, line in zip(rows[header_at + 1 :], lines[header_at + 1 :], strict=False):
        if not any(row):
            continue
        where = f"{path}, line {line}"
        market = row[0] or market  # Meta names the market on a group's first row only
        if not market:
            raise InputError(f"{where}: tier row before any market name")
        code = _currency(row[currency_col], currency, where)
        for section in sections:
            cells = {name: (row[i] if i < len(row) else "") for name, i in section.columns.items()}
            if cells["from"].lower() in _NOT_AVAILABLE:
                continue
            key = (market, section.category)
            band_from = _meta_count(cells["from"], where)
            band_to = _meta_count(cells["to"], where)
            rate = _meta_rate(cells["rate"], where)
            if band_from is None:
                raise InputError(f"{where}: {section.category} band without a 'From' count")
            listed = list_rates.get(key)
            if key not in previous_to:
                if band_from > 1:
                    raise InputError(f"{where}: the first {section.category} band of {market} starts at {band_from:,}, not 0 or 1")
                if listed is None:
                    raise InputError(f"{where}: {market} {section.category} has tiers but no list rate in the rate file")
                if Decimal(listed["rate"]) != Decimal(rate) or listed["currency"] != code:
                    raise InputError(
                        f"{where}: {market} {section.category} list rate is {code} {rate} here but "
                        f"{listed['currency']} {listed['rate']} in the rate file"
                    )
            else:
                expected = previous_to[key]
                if expected is None:
                    raise InputError(f"{where}: {market} {section.category} has a band after the open-ended one")
                if band_from != expected + 1:
                    what = "overlaps" if band_from <= expected else "leaves a gap after"
                    raise InputError(f"{where}: {market} {section.category} band from {band_from:,} {what} the band ending at {expected:,}")
                out.append(_card_row(effective, code, market, section.category, max(band_from, 1), rate, where))
            if band_to is not None and band_to < band_from:
                raise InputError(f"{where}: {market} {section.category} band from {band_from:,} to {band_to:,}")
            previous_to[key] = band_to
            bands += 1
    open_ended = [f"{m} {c}" for (m, c), to in previous_to.items() if to is not None]
    if open_ended:
        raise InputError(f"the last band of {', '.join(open_ended)} has an upper bound: bands look cut off", path=str(path))
    return out, bands
