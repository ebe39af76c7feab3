"""Phone -> country -> Meta market (billing-rules.md §2, Market). Synthetic numbers only."""

from __future__ import annotations

import csv
import datetime as dt
import itertools

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from meta_fixtures import META_2026_04

from analytics.terms.markets import (
    MARKETS,
    NO_SUCH_CALLING_CODE,
    NON_GEOGRAPHIC_NUMBER,
    NOT_A_PHONE,
    OTHER_MARKET,
    SCIENTIFIC_NOTATION,
    UNKNOWN_MARKET,
    country_of_bsuid,
    country_of_phone,
    market_of,
    markets_of,
    phone_digits,
    phone_digits_expr,
    region_table,
    unknown_market_reason,
    with_market,
    with_user_country,
)

ZIMBABWE_MOVES = dt.date(2025, 10, 1)
SIX_MARKETS_FROM = dt.date(2026, 7, 1)
NINE_MARKETS_FROM = dt.date(2026, 10, 1)
SHARED_RATE_CARD = META_2026_04 / "USD_rates.csv"


@pytest.mark.parametrize(
    ("phone", "country"),
    [
        ("393330001234", "IT"),
        ("+39 333 000 1234", "IT"),
        ("4915100001234", "DE"),
        ("5511900001234", "BR"),
        ("919800001234", "IN"),
        ("+1 212 555 0100", "US"),
        ("14165550100", "CA"),
        ("+1 809 555 0100", "DO"),
        ("18295550100", "DO"),
        ("18495550100", "DO"),
        ("18765550100", "JM"),
        ("16585550100", "JM"),
        ("17875550100", "PR"),
        ("19395550100", "PR"),
        ("263770001234", "ZW"),
        ("77010001234", "KZ"),
        ("79160001234", "RU"),
        ("380500001234", "UA"),
    ],
)
def test_country_of_phone(phone, country):
    assert country_of_phone(phone) == country


@pytest.mark.parametrize(
    ("phone", "country"),
    [
        # Exchange 000 / 0xx is not a valid NANP number: the area code still decides (§2).
        ("18090000000", "DO"),
        ("18760000000", "JM"),
        ("19390000000", "PR"),
        ("17870001111", "PR"),
        ("12120000000", "US"),
        # +7 numbers phonenumbers cannot validate still split Kazakhstan (7xx) from Russia.
        ("77770000000", "KZ"),
        ("79990000000", "RU"),
    ],
)
def test_country_of_synthetic_numbers_phonenumbers_cannot_validate(phone, country):
    assert country_of_phone(phone) == country


@pytest.mark.parametrize("not_a_phone", ["US.13491208655302741918", "", "   ", None, "abc", "12345", "+8001234567"])
def test_what_is_not_a_phone_has_no_country(not_a_phone):
    assert country_of_phone(not_a_phone) is None


@pytest.mark.parametrize(
    ("phone", "on", "market"),
    [
        ("393330001234", dt.date(2025, 7, 1), "Italy"),
        ("4915100001234", dt.date(2025, 7, 1), "Germany"),
        ("5511900001234", dt.date(2025, 7, 1), "Brazil"),
        ("919800001234", dt.date(2025, 7, 1), "India"),
        ("12125550100", dt.date(2025, 7, 1), "North America"),
        ("14165550100", dt.date(2025, 7, 1), "North America"),
        ("18095550100", dt.date(2025, 7, 1), "Rest of Latin America"),
        ("18765550100", dt.date(2025, 7, 1), "Rest of Latin America"),
        ("19395550100", dt.date(2025, 7, 1), "Rest of Latin America"),
        ("263770001234", dt.date(2025, 9, 30), "Other"),
        ("263770001234", dt.date(2025, 10, 1), "Rest of Africa"),
        ("77010001234", dt.date(2026, 9, 30), "Other"),
        ("77010001234", dt.date(2026, 10, 1), "Kazakhstan"),
        ("79160001234", dt.date(2026, 10, 1), "Russia"),
        ("48221234567", dt.date(2026, 6, 30), "Rest of Central & Eastern Europe"),  # Warsaw, +48 22
        ("+48 22 123 45 67", dt.date(2026, 7, 1), "Poland"),
        ("85291234567", dt.date(2026, 6, 30), "Rest of Asia Pacific"),
        ("85291234567", dt.date(2026, 7, 1), "Hong Kong"),
        ("97433123456", dt.date(2026, 6, 30), "Rest of Middle East"),
        ("97433123456", dt.date(2026, 7, 1), "Qatar"),
        ("380500001234", dt.date(2026, 9, 30), "Rest of Central & Eastern Europe"),
        ("380500001234", dt.date(2026, 10, 1), "Ukraine"),
        ("94770001234", dt.date(2026, 9, 30), "Rest of Asia Pacific"),
        ("94770001234", dt.date(2026, 10, 1), "Sri Lanka"),
        ("352621000123", dt.date(2025, 7, 1), "Other"),  # Luxembourg is not listed
    ],
)
def test_market_of_a_phone_on_a_date(phone, on, market):
    assert market_of(country_of_phone(phone), on) == market


def test_zimbabwe_moves_to_rest_of_africa_on_2025_10_01():
    assert market_of("ZW", ZIMBABWE_MOVES - dt.timedelta(days=1)) == OTHER_MARKET
    assert market_of("ZW", ZIMBABWE_MOVES) == "Rest of Africa"


@pytest.mark.parametrize(
    ("country", "name", "group_before"),
    [
        ("HK", "Hong Kong", "Rest of Asia Pacific"),
        ("HU", "Hungary", "Rest of Central & Eastern Europe"),
        ("PL", "Poland", "Rest of Central & Eastern Europe"),
        ("QA", "Qatar", "Rest of Middle East"),
        ("RO", "Romania", "Rest of Central & Eastern Europe"),
        ("SG", "Singapore", "Rest of Asia Pacific"),
    ],
)
def test_six_markets_of_their_own_from_2026_07_01(country, name, group_before):
    """billing-rules.md §9: standalone from 2026-07-01, named as Meta's page and cards name them (P1)."""
    rows = region_table().filter(pl.col("country") == country)
    assert market_of(country, SIX_MARKETS_FROM - dt.timedelta(days=1)) == group_before
    assert market_of(country, SIX_MARKETS_FROM) == name
    assert market_of(country, NINE_MARKETS_FROM) == name
    assert rows.select("market", "effective_from", "effective_until", "status").rows() == [
        (group_before, None, SIX_MARKETS_FROM, "meta_documented"),
        (name, SIX_MARKETS_FROM, None, "meta_documented"),
    ]
    assert "Previous rate card updates" in rows["source"][1]
    assert name in MARKETS


@pytest.mark.parametrize(
    ("country", "group_before"),
    [
        ("BD", "Rest of Asia Pacific"),
        ("IQ", "Rest of Middle East"),
        ("NP", "Rest of Asia Pacific"),
        ("LK", "Rest of Asia Pacific"),
        ("KZ", "Other"),
        ("KW", "Rest of Middle East"),
        ("MA", "Rest of Africa"),
        ("OM", "Rest of Middle East"),
        ("UA", "Rest of Central & Eastern Europe"),
    ],
)
def test_nine_markets_of_their_own_from_2026_10_01(country, group_before):
    row = region_table().filter(pl.col("country") == country, pl.col("effective_from") == NINE_MARKETS_FROM)
    assert market_of(country, NINE_MARKETS_FROM - dt.timedelta(days=1)) == group_before
    assert market_of(country, NINE_MARKETS_FROM) == row["country_name"].item()
    assert row["status"].item() == "reported"


def test_unlisted_country_is_other_and_no_country_is_unknown():
    assert market_of("LU", dt.date(2025, 7, 1)) == OTHER_MARKET
    assert market_of("KR", dt.date(2025, 7, 1)) == OTHER_MARKET
    assert market_of(None, dt.date(2025, 7, 1)) == UNKNOWN_MARKET
    assert market_of("", dt.date(2025, 7, 1)) == UNKNOWN_MARKET


def test_territory_sharing_a_calling_code_takes_that_codes_market():
    """§2: all other +1 numbers are North America; a Jersey number (+44) is priced as the UK."""
    assert market_of(country_of_phone("12425550100"), dt.date(2025, 7, 1)) == "North America"  # Bahamas
    assert market_of("JE", dt.date(2025, 7, 1)) == "United Kingdom"
    assert market_of("VA", dt.date(2025, 7, 1)) == "Italy"


def test_lower_case_country_is_accepted():
    assert market_of("it", dt.date(2025, 7, 1)) == "Italy"


# --- the region table ----------------------------------------------------------------------------


def test_each_country_has_contiguous_periods_covering_all_dates():
    for country, periods in region_table().group_by("country", maintain_order=True):
        starts = periods["effective_from"].to_list()
        untils = periods["effective_until"].to_list()
        assert starts[0] is None and untils[-1] is None, country
        assert starts[1:] == untils[:-1], country


def test_region_table_columns_and_statuses():
    table = region_table()
    assert table.columns == [
        "country",
        "country_name",
        "calling_code",
        "market",
        "effective_from",
        "effective_until",
        "status",
        "source",
    ]
    assert set(table["status"]) == {"meta_documented", "reported"}
    assert table["source"].str.contains("https://").all()
    assert table["country"].str.contains(r"^[A-Z]{2}$").all()


def test_market_names_match_metas_rate_card():
    with SHARED_RATE_CARD.open(encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    header = next(i for i, row in enumerate(rows) if row and row[0] == "Market")
    card_markets = {row[0] for row in rows[header + 1 :] if row and row[0]}
    markets_then = {market_of(c, dt.date(2026, 4, 1)) for c in region_table()["country"]} | {OTHER_MARKET}
    assert card_markets == markets_then
    assert card_markets <= set(MARKETS)


def test_markets_lists_the_2026_10_markets_and_other():
    assert {"Other", "Sri Lanka", "Kazakhstan", "Ukraine", "Rest of Africa"} <= set(MARKETS)
    assert UNKNOWN_MARKET not in MARKETS


# --- frames --------------------------------------------------------------------------------------


def _messages(**columns) -> pl.DataFrame:
    return pl.DataFrame(columns, schema={c: pl.String for c in columns})


def test_with_user_country_prefers_phone_then_wa_id_then_given_country():
    messages = _messages(
        user_id=["393330001234", "US.13491208655302741918", "US.13491208655302741919", "+4915100001234", "abc"],
        user_phone=[None, "+1 809 555 0100", None, None, None],
        user_country=["de", None, "us", None, " "],
    )
    assert with_user_country(messages)["user_country"].to_list() == ["IT", "DO", "US", "DE", None]


def test_with_user_country_is_lazy_and_tolerates_missing_optional_columns():
    lazy = pl.LazyFrame({"user_id": ["77010001234", "79160001234", "user.1"]})
    result = with_user_country(lazy)
    assert isinstance(result, pl.LazyFrame)
    assert result.collect()["user_country"].to_list() == ["KZ", "RU", None]


@pytest.mark.parametrize(
    ("user_id", "expected"),
    [
        ("393330001106", "393330001106"),
        ("+393330001106", "393330001106"),
        ("0039 333 000 1106", "393330001106"),
        ("+39 (333) 000-1106", "393330001106"),
        ("393330001106.0", "393330001106"),
        ("3.93330001106E+11", None),  # a spreadsheet's display: digits may be lost, never guessed
        ("PE.97712345678", None),
        ("@mario", None),
        ("123456", None),  # shorter than any user's phone
        ("1234567890123456", None),  # longer than E.164 allows
    ],
)
def test_phone_digits_is_one_form_for_every_spelling(user_id, expected):
    assert phone_digits(user_id) == expected
    assert pl.select(phone_digits_expr(pl.lit(user_id))).item() == expected


def test_a_business_scoped_id_gives_its_country_when_no_phone_or_country_is_known():
    """changes-2026-h2.md §6: BSUIDs start with the user's ISO country and a dot."""
    messages = _messages(
        user_id=["PE.97712345678", "IN.1013456", "PE.97712345679", "PE.97712345670", "XX.123", "user.9373", "pe.977"],
        user_phone=[None, None, "+393330001234", None, None, None, None],
        user_country=[None, None, None, "CL", None, None, None],
    )
    assert with_user_country(messages)["user_country"].to_list() == ["PE", "IN", "IT", "CL", None, None, None]
    assert [country_of_bsuid(u) for u in ("PE.977", "XX.1", "PE", "user.1")] == ["PE", None, None, None]


@pytest.mark.parametrize(
    ("user_id", "user_phone", "reason"),
    [
        ("@mario", None, NOT_A_PHONE),
        ("user.9373", None, NOT_A_PHONE),
        ("3.93330001106E+11", None, SCIENTIFIC_NOTATION),
        ("80012345678", None, NON_GEOGRAPHIC_NUMBER),
        ("+882 1234 5678", None, NON_GEOGRAPHIC_NUMBER),
        ("03330001106", None, NO_SUCH_CALLING_CODE),
        ("user.1", "0333 000 1106", NO_SUCH_CALLING_CODE),
    ],
)
def test_why_a_market_is_unknown(user_id, user_phone, reason):
    assert unknown_market_reason(user_id, user_phone) == reason


def test_with_user_country_parses_each_distinct_phone_once(monkeypatch):
    import analytics.terms.markets as markets

    parsed: list[str] = []
    original = markets._country_of_digits.__wrapped__

    def counting(digits: str) -> str | None:
        parsed.append(digits)
        return original(digits)

    monkeypatch.setattr(markets, "_country_of_digits", counting)
    messages = _messages(user_id=["393330009999", "393330009999", "+393330009999", "4915100009999"] * 50)
    assert with_user_country(messages)["user_country"].unique().sort().to_list() == ["DE", "IT"]
    assert sorted(parsed) == ["393330009999", "4915100009999"]


COUNTRIES = ["IT", "it", "DE", "US", "CA", "DO", "JM", "PR", "ZW", "KZ", "RU", "UA", "LK", "MA", "LU", "KR", "JE", "BS", "VA", "XX", "", None]
DATES = [
    dt.date(2022, 2, 1),
    dt.date(2025, 9, 30),
    dt.date(2025, 10, 1),
    dt.date(2025, 10, 2),
    dt.date(2026, 9, 30),
    dt.date(2026, 10, 1),
    dt.date(2030, 1, 1),
]


@pytest.mark.parametrize("lazy", [False, True])
def test_with_market_agrees_with_market_of_on_a_grid(lazy):
    grid = pl.DataFrame(
        list(itertools.product(COUNTRIES, DATES)),
        schema={"user_country": pl.String, "local_date": pl.Date},
        orient="row",
    )
    frame = grid.lazy() if lazy else grid
    result = with_market(frame)
    result = result.collect() if lazy else result
    expected = [market_of(country, on) for country, on in grid.iter_rows()]
    assert result["market"].to_list() == expected
    assert result.select("user_country", "local_date").equals(grid)


def test_with_market_names_its_columns():
    frame = pl.DataFrame({"c": ["ZW"], "d": [dt.date(2025, 10, 1)]})
    assert with_market(frame, country="c", date="d", out="m")["m"].to_list() == ["Rest of Africa"]


def test_with_market_gives_no_market_without_a_date():
    frame = pl.DataFrame({"user_country": ["IT"], "local_date": [None]}, schema={"user_country": pl.String, "local_date": pl.Date})
    assert with_market(frame)["market"].to_list() == [None]


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(st.none(), st.sampled_from(COUNTRIES[:-1]), st.text("ABZWKTLUaz ", max_size=3)),
            st.dates(dt.date(2022, 2, 1), dt.date(2028, 12, 31)),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_with_market_agrees_with_market_of_on_random_rows(rows):
    frame = pl.DataFrame(rows, schema={"user_country": pl.String, "local_date": pl.Date}, orient="row")
    assert with_market(frame)["market"].to_list() == [market_of(country, on) for country, on in rows]


@pytest.mark.parametrize("country_type", [pl.String(), pl.Categorical()])
def test_markets_of_columns_agrees_with_with_market(country_type):
    # The engine's look-up of many rows: every (country, date) of the grid, with and without a
    # country or a date, in the order given.
    grid = pl.DataFrame(
        list(itertools.product([*COUNTRIES, None], [*DATES, None])),
        schema={"user_country": pl.String, "local_date": pl.Date},
        orient="row",
    ).sample(fraction=1.0, shuffle=True, seed=3)
    found = markets_of(grid["user_country"].cast(country_type), grid["local_date"])
    assert found.dtype == pl.Categorical()
    assert found.cast(pl.String).to_list() == with_market(grid)["market"].to_list()
