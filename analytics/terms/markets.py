"""From a user's phone number to Meta's pricing market (billing-rules.md §2, Market).

Meta prices a message by the market of the user it goes to: the country calling code of the user's
phone, and inside +1 the area code (809, 829, 849 Dominican Republic; 658, 876 Jamaica; 787, 939
Puerto Rico, all `Rest of Latin America`; every other +1 number `North America`). Which country is
in which market, and since when, is Meta's region table, shipped as data/markets/regions.csv
(pricing-research.md §4.0); the dated changes (Zimbabwe 2025-10-01, six new markets 2026-07-01,
nine new markets 2026-10-01) are rows of that table, not code. Phones are parsed with
`phonenumbers`, never prefix tables, except for the +1 area codes that Meta's own table names.

Inputs have hundreds of millions of messages but far fewer users, so the frame functions parse each
distinct phone once and map the answers back.
"""

from __future__ import annotations

import datetime as dt
import io
import re
from collections.abc import Callable
from functools import cache, lru_cache
from typing import TypeVar

import phonenumbers
import polars as pl

from analytics.core.resources import resource

Frame = TypeVar("Frame", pl.DataFrame, pl.LazyFrame)

OTHER_MARKET = "Other"  # §2: every country Meta's table does not list
UNKNOWN_MARKET = "Unknown"  # no phone and no country: not a Meta market, shown so it is never priced silently

NANP_CALLING_CODE = 1
_SEPARATORS = re.compile(r"[\s\-()]")  # what people type inside a phone number
# A phone number once the separators are gone: `+` or the international prefix `00`, 7 to 15 digits
# (E.164 allows at most 15; shorter is no user's phone), and the `.0` a spreadsheet adds to a number
# it stored as a float. The digits are group 1.
_PHONE = r"^(?:\+|00)?(\d{7,15})(?:\.0+)?$"
_PHONE_RE = re.compile(_PHONE)
_NON_GEOGRAPHIC = {"001", phonenumbers.UNKNOWN_REGION}  # +800, +882, ... and unassigned codes
# A business-scoped user id that starts with the user's country (changes-2026-h2.md §6: `PE.977…`).
_BSUID_COUNTRY = r"^([A-Z]{2})\.\S"
# ISO 3166-1 alpha-2 codes of territories without a telephone numbering plan of their own, so
# unknown to `phonenumbers` (Antarctica, Bouvet, South Georgia, Heard, Pitcairn, French Southern
# Territories, US Minor Outlying Islands); every other code is one of its regions.
_ISO_WITHOUT_NUMBERING_PLAN = frozenset({"AQ", "BV", "GS", "HM", "PN", "TF", "UM"})

# Why a user's market cannot be found (`unknown_market_reason`), for the run summary.
NOT_A_PHONE = "the user id is not a phone number and there is no user_phone or user_country: give either"
NO_SUCH_CALLING_CODE = (
    "the phone number starts with no assigned country calling code (a national number without its country code?): "
    "write it in international form or give user_country"
)
NON_GEOGRAPHIC_NUMBER = "the phone number is non-geographic (+800, +808, +870, +881, +882, +883, +979): give user_country"
SCIENTIFIC_NOTATION = (
    "the user id is a number in scientific notation (3.9333E+11), as a spreadsheet shows it, and lost digits: export the column as text"
)
_SCIENTIFIC = re.compile(r"^[+-]?\d(?:[.,]\d+)?[eE][+-]?\d+$")

REGION_SCHEMA = {
    "country": pl.String(),
    "country_name": pl.String(),
    "calling_code": pl.String(),
    "market": pl.String(),
    "effective_from": pl.Date(),
    "effective_until": pl.Date(),
    "status": pl.String(),
    "source": pl.String(),
}


# --- Meta's region table -------------------------------------------------------------------------


@cache
def region_table() -> pl.DataFrame:
    """Meta's region table (data/markets/regions.csv): one row per country and period, §2."""
    shipped = resource("data", "markets", "regions.csv").read_bytes()
    return pl.read_csv(io.BytesIO(shipped), schema=REGION_SCHEMA).sort("country", "effective_from", nulls_last=False)


@cache
def _periods() -> dict[str, tuple[tuple[dt.date | None, dt.date | None, str], ...]]:
    """country -> its (effective_from, effective_until, market) periods, oldest first."""
    periods: dict[str, list[tuple[dt.date | None, dt.date | None, str]]] = {}
    for row in region_table().iter_rows(named=True):
        periods.setdefault(row["country"], []).append((row["effective_from"], row["effective_until"], row["market"]))
    return {country: tuple(rows) for country, rows in periods.items()}


@cache
def _nanp_area_codes() -> dict[str, str]:
    """+1 area code -> country, for the +1 countries Meta's table lists by area code (DO, JM, PR)."""
    area_codes = {}
    for row in region_table().iter_rows(named=True):
        for dial_code in row["calling_code"].split("|"):
            calling_code, _, area_code = dial_code.partition("-")
            if calling_code == str(NANP_CALLING_CODE) and area_code:
                area_codes[area_code] = row["country"]
    return area_codes


@cache
def _calling_code_home() -> dict[str, str]:
    """Unlisted territory -> the listed country whose calling code it shares (Jersey -> GB, Bahamas -> US).

    Meta assigns markets by calling code (§2: "all other +1 numbers North America"), so a territory
    without a row of its own takes the market of its code's main country, not `Other`.
    """
    listed = set(_periods())
    homes = {}
    # The main region of a calling code comes first in phonenumbers' table (what
    # `region_code_for_country_code` returns); reading the table is 1,000× faster than asking per region.
    for regions in phonenumbers.COUNTRY_CODE_TO_REGION_CODE.values():
        home = regions[0]
        for region in regions:
            if region in phonenumbers.SUPPORTED_REGIONS and region not in listed and home in listed and home != region:
                homes[region] = home
    return homes


@cache
def _change_dates() -> tuple[dt.date, ...]:
    """The dates on which some country changes market, oldest first."""
    table = region_table()
    dates = pl.concat([table["effective_from"], table["effective_until"]]).drop_nulls().unique().sort()
    return tuple(dates.to_list())


MARKETS: tuple[str, ...] = tuple(sorted({*region_table()["market"].to_list(), OTHER_MARKET}))
"""Every market name Meta's table knows on any date (rate cards are checked against it)."""


# --- Phone to country ----------------------------------------------------------------------------


def phone_digits(phone: str | None) -> str | None:
    """The digits of a phone number (E.164 without `+`) written with `+`, `00` or neither, with
    spaces, dashes or parentheses, or as a spreadsheet float (`393330001106.0`); None if it is not
    one (a business-scoped user id, an e-mail address, a number in scientific notation)."""
    if phone is None:
        return None
    match = _PHONE_RE.match(_SEPARATORS.sub("", phone.strip()))
    return match.group(1) if match else None


def phone_digits_expr(text: pl.Expr) -> pl.Expr:
    """`phone_digits` as a polars expression: the digits, or null where `text` is not a phone number."""
    return text.str.strip_chars().str.replace_all(_SEPARATORS.pattern, "").str.extract(_PHONE, 1)


@cache
def iso_countries() -> frozenset[str]:
    """Every ISO 3166-1 alpha-2 code a user's country may be (and XK, Kosovo, which phone numbers use)."""
    return frozenset(phonenumbers.SUPPORTED_REGIONS) | _ISO_WITHOUT_NUMBERING_PLAN | frozenset(_periods())


def country_of_bsuid(user_id: str | None) -> str | None:
    """The country a business-scoped user id starts with (`PE.9771234…` -> PE), if it is an ISO code."""
    match = re.match(_BSUID_COUNTRY, user_id or "")
    return match.group(1) if match and match.group(1) in iso_countries() else None


def _bsuid_country_expr(column: str, names: list[str]) -> pl.Expr:
    if column not in names:
        return pl.lit(None, dtype=pl.String)
    prefix = pl.col(column).str.strip_chars().str.extract(_BSUID_COUNTRY, 1)
    return pl.when(prefix.is_in(sorted(iso_countries()))).then(prefix)


def unknown_market_reason(user_id: str | None, user_phone: str | None = None) -> str:
    """Why no country (so no market) can be found for a user without `user_country` (one of the
    reasons above), for the run summary and the error of a charge that cannot be priced."""
    for phone in (user_phone, user_id):
        digits = phone_digits(phone)
        if digits is not None:
            try:
                calling_code = phonenumbers.parse("+" + digits).country_code
            except phonenumbers.NumberParseException:
                return NO_SUCH_CALLING_CODE
            non_geographic = phonenumbers.region_code_for_country_code(calling_code) == "001"
            return NON_GEOGRAPHIC_NUMBER if non_geographic else NO_SUCH_CALLING_CODE
    if _SCIENTIFIC.match((user_id or "").strip()):
        return SCIENTIFIC_NOTATION
    return NOT_A_PHONE


def country_of_phone(phone: str | None) -> str | None:
    """ISO 3166-1 alpha-2 country of a user's phone (`393331234567`, `+1 809 555 0100`), §2.

    None for what is not a phone number: a business-scoped user id (`US.13491208655302741918`), an
    empty value, a non-geographic code (+800, +882). A business-scoped id's country prefix is
    `country_of_bsuid`.
    """
    digits = phone_digits(phone)
    return None if digits is None else _country_of_digits(digits)


@lru_cache(maxsize=1 << 18)
def _country_of_digits(digits: str) -> str | None:
    try:
        number = phonenumbers.parse("+" + digits)
    except phonenumbers.NumberParseException:
        return None
    if number.country_code == NANP_CALLING_CODE:
        country = _nanp_country(number)
    else:
        country = _region_of(number)
    return None if country in _NON_GEOGRAPHIC else country


def _region_of(number: phonenumbers.PhoneNumber) -> str:
    """The region phonenumbers gives; for numbers it cannot validate (synthetic, new ranges), the
    region whose leading digits match inside a shared calling code (+7 7xx Kazakhstan), else the
    calling code's main country."""
    return (
        phonenumbers.region_code_for_number(number)
        or _region_by_leading_digits(number)
        or phonenumbers.region_code_for_country_code(number.country_code)
    )


def _region_by_leading_digits(number: phonenumbers.PhoneNumber) -> str | None:
    national = phonenumbers.national_significant_number(number)
    for region in phonenumbers.region_codes_for_country_code(number.country_code):
        leading_digits = phonenumbers.PhoneMetadata.metadata_for_region(region).leading_digits
        if leading_digits and re.match(leading_digits, national):
            return region
    return None


def _nanp_country(number: phonenumbers.PhoneNumber) -> str:
    """+1: Meta's area codes decide DO, JM, PR, valid or not; any other area code is not one of them."""
    area_code = phonenumbers.national_significant_number(number)[:3]
    by_area_code = _nanp_area_codes()
    if area_code in by_area_code:
        return by_area_code[area_code]
    region = _region_of(number)
    return phonenumbers.region_code_for_country_code(NANP_CALLING_CODE) if region in by_area_code.values() else region


def _per_distinct(function: Callable[[str], str | None]) -> Callable[[pl.Series], pl.Series]:
    """A column function that calls `function` once per distinct non-null value and maps back."""

    def apply(values: pl.Series) -> pl.Series:
        distinct = values.drop_nulls().unique()
        answers = pl.Series([function(v) for v in distinct.to_list()], dtype=pl.String)
        return values.replace_strict(distinct, answers, default=None, return_dtype=pl.String)

    return apply


def _through_distinct(frame: Frame, keys: list[str], derived: pl.Expr, out: str) -> Frame:
    """`frame` with `out` = `derived`, computed once per distinct combination of `keys` and joined back.

    Messages outnumber users by orders of magnitude: the work (parsing, table look-ups, string
    clean-up) is done on the few distinct keys. Row order is restored by a row index rather than the
    join's `maintain_order`, which polars' streaming engine runs very slowly on low-cardinality keys
    such as (country, date).
    """
    row, computed = "__row", f"__{out}"
    lookup = frame.lazy().select(keys).unique().with_columns(derived.alias(computed))
    joined = frame.lazy().with_row_index(row).join(lookup, on=keys, how="left", nulls_equal=True)
    result = joined.sort(row).with_columns(pl.col(computed).alias(out)).drop(row, computed)
    return result.collect() if isinstance(frame, pl.DataFrame) else result


def _country_of_phones(phones: pl.Expr) -> pl.Expr:
    return phones.map_batches(_per_distinct(_country_of_digits), return_dtype=pl.String, is_elementwise=True)


def _phone_digits_expr(column: str, names: list[str]) -> pl.Expr:
    """Digits of `column` where it is a phone number (`phone_digits_expr`), else null."""
    if column not in names:
        return pl.lit(None, dtype=pl.String)
    return phone_digits_expr(pl.col(column))


def _given_country(names: list[str]) -> pl.Expr:
    if "user_country" not in names:
        return pl.lit(None, dtype=pl.String)
    given = pl.col("user_country").str.strip_chars().str.to_uppercase()
    return pl.when(given != "").then(given)


def missing_user_country(names: list[str]) -> pl.Expr:
    """`user_country` as `with_user_country` would fill it, but only where it is null: an expression
    that keeps row order and parses only the phones of rows without a country (the billing engine's
    case, where ingest has filled the rest)."""
    phone = pl.coalesce(_phone_digits_expr("user_phone", names), _phone_digits_expr("user_id", names))
    missing = pl.col("user_country").is_null()
    return pl.when(missing).then(_country_of_phones(pl.when(missing).then(phone))).otherwise(pl.col("user_country"))


def with_user_country(frame: Frame) -> Frame:
    """`user_country` from the user's phone where one is known, else the given one upper-cased, else
    the country a business-scoped user id starts with (§2; changes-2026-h2.md §6: `PE.977…` is Peru).

    The phone is `user_phone`, else `user_id` when it is a wa_id (phone digits); a phone's country
    wins over a given `user_country` (contracts.md §1: that column is used only when no phone is
    known), and a given one over the BSUID's prefix (a country the business knows is the better
    witness). Each distinct phone is parsed once.
    """
    names = frame.collect_schema().names()
    keys = [c for c in ("user_id", "user_phone", "user_country") if c in names]
    country = user_country_expr(names)
    if not keys:
        return frame.with_columns(user_country=country)
    return _through_distinct(frame, keys, country, "user_country")


def user_country_expr(names: list[str]) -> pl.Expr:
    """`with_user_country`'s country as an expression on a frame with columns `names`, row by row
    (each distinct phone of a batch parsed once, and cached): for a stream that must not be sorted."""
    phone = pl.coalesce(_phone_digits_expr("user_phone", names), _phone_digits_expr("user_id", names))
    return pl.coalesce(_country_of_phones(phone), _given_country(names), _bsuid_country_expr("user_id", names))


# --- Country to market ---------------------------------------------------------------------------


def _normalised_country(country: str | None) -> str | None:
    code = (country or "").strip().upper()
    return _calling_code_home().get(code, code) or None


def market_of(country: str | None, on: dt.date) -> str:
    """Meta's market for a user of `country` on the date `on` (WABA time zone), §2.

    `Other` for a country Meta's table does not list; `UNKNOWN_MARKET` when the country is not known.
    """
    code = _normalised_country(country)
    if code is None:
        return UNKNOWN_MARKET
    for effective_from, effective_until, market in _periods().get(code, ()):
        if (effective_from is None or effective_from <= on) and (effective_until is None or on < effective_until):
            return market
    return OTHER_MARKET


@cache
def _market_periods() -> tuple[tuple[dt.date | None, dict[str, str]], ...]:
    """(until, country -> market) for each stretch of dates between two changes of the table."""
    starts = [dt.date.min, *_change_dates()]
    untils = [*starts[1:], None]
    return tuple((until, {c: market_of(c, start) for c in _periods()}) for start, until in zip(starts, untils, strict=False))


def market_expr(country: pl.Expr, on: pl.Expr) -> pl.Expr:
    """`market_of` as a polars expression over a country column and a `pl.Date` column.

    The table changes on a few dates only, so each stretch between two changes is one
    country -> market mapping; a null date gives a null market (no date, no market).
    """
    code = country.str.strip_chars().str.to_uppercase().replace(_calling_code_home())
    market = pl.when(code.is_null() | (code == "")).then(pl.lit(UNKNOWN_MARKET))
    market = market.when(on.is_null()).then(pl.lit(None, dtype=pl.String))
    *dated, (_, latest) = _market_periods()
    for until, mapping in dated:
        market = market.when(on < until).then(_mapped(code, mapping))
    return market.otherwise(_mapped(code, latest))


def _mapped(code: pl.Expr, mapping: dict[str, str]) -> pl.Expr:
    return code.replace_strict(mapping, default=pl.lit(OTHER_MARKET), return_dtype=pl.String)


def with_market(frame: Frame, *, country: str = "user_country", date: str = "local_date", out: str = "market") -> Frame:
    """Add `out`, the market of `country` on `date` (a `pl.Date` column): `market_of`, vectorised, §2."""
    return _through_distinct(frame, [country, date], market_expr(pl.col(country), pl.col(date)), out)


def markets_of(countries: pl.Series, dates: pl.Series) -> pl.Series:
    """`market_of` for every row of two aligned columns (countries, `pl.Date` local dates), as a
    Categorical: the billing engine's look-up for millions of charges.

    The table only changes on a few dates, so a market depends on the country and on which stretch
    between two changes the date falls in: `market_expr` runs once per such pair, and the rows
    find theirs through one integer code, not a join on (country, date). A null date gives a null
    market, a null country `Unknown`, as in `market_expr`.
    """
    changes = _change_dates()
    stretches = len(changes) + 2  # before, between and after the changes, and no date
    in_stretch = pl.sum_horizontal([(pl.col("date") >= day).cast(pl.UInt64) for day in changes]) if changes else pl.lit(0, pl.UInt64)
    if not isinstance(countries.dtype, pl.Categorical | pl.Enum):
        countries = countries.cast(pl.Categorical())
    frame = pl.DataFrame({"country": countries, "date": dates})
    coded = frame.select(
        code=pl.col("country").to_physical().cast(pl.UInt64).fill_null(1 << 32) * stretches
        + pl.when(pl.col("date").is_null()).then(stretches - 1).otherwise(in_stretch),
        country="country",
        date="date",
    )
    distinct = coded.group_by("code").agg(pl.col("country").first(), pl.col("date").first())
    distinct = distinct.with_columns(market=market_expr(pl.col("country").cast(pl.String), pl.col("date")).cast(pl.Categorical()))
    return coded["code"].replace_strict(distinct["code"], distinct["market"]).rename("market")
