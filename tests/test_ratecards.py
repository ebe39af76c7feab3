"""Rate cards (contracts.md §3): Meta's importer, the shipped card, and validation with clear errors."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
from meta_fixtures import META_2026_04, SHARED

from analytics.core.errors import InputError, UsageError
from analytics.terms import ratecards
from analytics.terms.markets import MARKETS
from analytics.terms.ratecards import CARD_COLUMNS, import_meta_card, load_card, write_card

RESEARCH = SHARED / "domain"
FIXTURES = Path(__file__).parent / "fixtures" / "pricing"
SHIPPED = Path(__file__).resolve().parents[1] / "data" / "rate_cards"
APRIL_2026 = dt.date(2026, 4, 1)
HEADER = "effective_from,currency,market,category,tier_from,rate,source,note\n"


def import_april_2026(**kwargs: object) -> ratecards.ImportedCard:
    return import_meta_card(META_2026_04 / "USD_rates.csv", META_2026_04 / "USD_volume_tiers.csv", effective=APRIL_2026, **kwargs)


def csv_blocks(path: Path, fence: str = "```csv") -> list[list[list[str]]]:
    """The rows (split on commas) of each fenced CSV block of a research document, header dropped."""
    text = path.read_text(encoding="utf-8")
    blocks = re.findall(re.escape(fence) + r"\n(.*?)```", text, re.S)
    return [[line.split(",") for line in block.strip().splitlines()[1:]] for block in blocks]


# --- Meta's files -----------------------------------------------------------------------------------


def test_importer_gives_the_32_markets_list_rates_of_meta_2026_04_01():
    imported = import_april_2026()
    rows = imported.rows
    assert imported.markets[:3] == ("Argentina", "Brazil", "Chile") and len(imported.markets) == 32
    assert imported.currencies == ("USD",)
    list_rates = rows.filter(pl.col("tier_from") == "1")
    # 32 markets × marketing, utility, authentication, plus 9 authentication-international; service is n/a.
    assert list_rates.height == 32 * 3 + 9
    assert list_rates.filter(pl.col("category") == "service").height == 0
    # ratecards-research.md §1a transcribes the same file by hand: every rate, digit for digit.
    expected = {tuple(r) for r in csv_blocks(RESEARCH / "ratecards-research.md")[0]}
    assert set(list_rates.select(CARD_COLUMNS).iter_rows()) == expected
    italy = {r["category"]: r["rate"] for r in list_rates.filter(pl.col("market") == "Italy").iter_rows(named=True)}
    assert italy == {"marketing": "0.0691", "utility": "0.0300", "authentication": "0.0300"}


def test_importer_gives_every_tier_band_of_meta_2026_04_01():
    imported = import_april_2026()
    assert imported.tier_bands == 438
    tiers = imported.rows.filter(pl.col("tier_from") != "1")
    expected = {tuple(r) for r in csv_blocks(RESEARCH / "ratecards-research.md")[1]}
    assert set(tiers.select(CARD_COLUMNS).iter_rows()) == expected
    # §1c lists the bands "From a To b": tier_from = max(a, 1), and each band starts after the last.
    bands: dict[tuple[str, str], list[tuple[int, str]]] = {}
    for market, category, band_from, _to, _type, rate, _vs in csv_blocks(RESEARCH / "ratecards-research.md")[2]:
        bands.setdefault((market, category), []).append((max(int(band_from), 1), rate))
    imported_bands: dict[tuple[str, str], list[tuple[int, str]]] = {}
    for row in imported.rows.iter_rows(named=True):
        if row["category"] != "marketing":
            imported_bands.setdefault((row["market"], row["category"]), []).append((int(row["tier_from"]), row["rate"]))
    assert imported_bands == bands
    assert bands[("North America", "utility")][:2] == [(1, "0.0034"), (80001, "0.0032")]
    assert bands[("India", "authentication_international")][-1] == (100000001, "0.0213")


def test_the_shipped_april_2026_card_is_the_importers_output(tmp_path):
    shipped = pl.read_csv(SHIPPED / "meta-usd-2026-04-01.csv", infer_schema=False)
    imported = import_april_2026(source=shipped["source"][0], note=shipped["note"][0])
    write_card(imported.rows, tmp_path / "card.csv")
    assert (tmp_path / "card.csv").read_bytes() == (SHIPPED / "meta-usd-2026-04-01.csv").read_bytes()
    assert shipped["note"][0].startswith("trust A")


def test_importer_reads_a_gbp_card_with_metas_currency_tokens():
    imported = import_meta_card(FIXTURES / "meta_gbp_rates.csv", FIXTURES / "meta_gbp_volume_tiers.csv", effective=dt.date(2027, 3, 1))
    assert imported.currencies == ("GBP",)  # `GBD` (Meta's typo) and `£`
    rates = {(r[2], r[3], int(r[4])): r[5] for r in imported.rows.iter_rows()}
    assert rates[("United Kingdom", "marketing", 1)] == "0.0400"
    assert rates[("Italy", "utility", 100001)] == "0.0190"
    assert rates[("Italy", "utility", 1000001)] == "0.0180"
    assert rates[("Italy", "authentication", 300001)] == "0.0190"
    assert rates[("India", "authentication_international", 750001)] == "0.0225"
    assert ("Other", "utility", 80001) not in rates  # no tier rows for Other: list rate only
    assert len(imported.rows) == 19


def _edited_copy(tmp_path: Path, name: str, old: str, new: str) -> Path:
    text = (FIXTURES / name).read_text(encoding="utf-8")
    assert old in text
    path = tmp_path / name
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('"1,000,001",--,Tier rate,0.0180', '"900,001",--,Tier rate,0.0180', "band from 900,001 overlaps the band ending at 1,000,000"),
        ('"1,000,001",--,Tier rate,0.0180', '"1,200,001",--,Tier rate,0.0180', "leaves a gap after the band ending at 1,000,000"),
        (
            'Italy,GBD,0,"100,000",List rate,0.0200',
            'Italy,GBD,0,"100,000",List rate,0.0210',
            "list rate is GBP 0.0210 here but GBP 0.0200 in the rate file",
        ),
        (',GBD,"1,000,001",--', ',GBD,"1,000,001","2,000,000"', "bands look cut off"),
    ],
)
def test_importer_refuses_tier_bands_that_do_not_fit(tmp_path, old, new, message):
    tiers = _edited_copy(tmp_path, "meta_gbp_volume_tiers.csv", old, new)
    with pytest.raises(InputError, match=re.escape(message)):
        import_meta_card(FIXTURES / "meta_gbp_rates.csv", tiers, effective=dt.date(2027, 3, 1))


def test_importer_refuses_an_effective_date_the_file_contradicts():
    with pytest.raises(UsageError, match="says it is effective 2026-04-01, not 2026-07-01"):
        import_meta_card(META_2026_04 / "USD_rates.csv", effective=dt.date(2026, 7, 1))


def test_importer_asks_for_the_currency_of_an_unknown_token(tmp_path):
    rates = _edited_copy(tmp_path, "meta_gbp_rates.csv", "Italy,GBD,", "Italy,¤¤,")
    with pytest.raises(InputError, match="unknown currency '¤¤'.*--currency"):
        import_meta_card(rates, effective=dt.date(2027, 3, 1))
    imported = import_meta_card(rates, effective=dt.date(2027, 3, 1), currency="GBP")
    assert imported.currencies == ("GBP",)


def test_importer_refuses_a_file_that_is_not_a_rate_card(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="no header row starting with 'Market'"):
        import_meta_card(path, effective=APRIL_2026)


# --- The shipped card -------------------------------------------------------------------------------


def test_shipped_card_loads_and_says_where_every_rate_comes_from():
    card = load_card()
    assert card.schema == pl.Schema(ratecards.CARD_SCHEMA)
    assert set(card["currency"]) == {"USD", "EUR", "INR", "BRL"}
    assert card["source"].null_count() == 0 and card["note"].null_count() == 0
    known, unknown = card.filter(pl.col("rate").is_not_null()), card.filter(pl.col("rate").is_null())
    assert set(known["trust"]) == {"A", "B", "C", "D"}
    assert unknown["note"].str.starts_with("unknown: ").all()
    derived = known.filter(pl.col("trust") == "D")
    assert derived["note"].str.starts_with("trust D; derived").all()


def _research_rows() -> list[tuple[str, str, str, str, int, str]]:
    """Every dated rate the two research documents give as CSV, in card form."""
    rows = []
    ratecards_blocks = csv_blocks(RESEARCH / "ratecards-research.md")
    for block in ratecards_blocks[:2] + ratecards_blocks[3:7]:  # §1a, §1b, §2, §3 (USD, BRL), §4, §5
        for effective, currency, market, category, tier, rate in block:
            rows.append((effective.rstrip("?"), currency, market, category, int(tier), rate))
    tables = {
        block.split("\n", 1)[0]: [line.split(",") for line in block.strip().splitlines()[1:]]
        for block in re.findall(r"```\n(.*?)```", (RESEARCH / "pricing-research.md").read_text(encoding="utf-8"), re.S)
    }
    cbp_2022 = ("business_initiated", "user_initiated")
    for line in tables["market,currency,business_initiated,user_initiated"]:  # R1, EUR
        rows += [("2022-02-01", line[1], line[0], c, 1, r) for c, r in zip(cbp_2022, line[2:4], strict=False)]
    for line in tables["market,currency,business_initiated,user_initiated,source_value_x1.2"]:  # R2, USD derived
        rows += [("2022-02-01", line[1], line[0], c, 1, r) for c, r in zip(cbp_2022, line[2:4], strict=False)]
    cbp_2023 = ("marketing", "utility", "authentication", "service")
    for line in tables["market,currency,marketing,utility,authentication,service"]:  # R3, derived
        rows += [("2023-06-01", line[1], line[0], c, 1, r) for c, r in zip(cbp_2023, line[2:6], strict=False)]
    pmp = ("marketing", "utility", "authentication", "authentication_international")
    for line in tables["market,currency,marketing,utility,authentication,authentication_international,effective,source"]:
        dates = ["2026-01-01"] + (["2025-07-01"] if line[6] == "2025-07-01" else [])  # R5: "A=B" rows
        rows += [(d, line[1], line[0], c, 1, r) for d in dates for c, r in zip(pmp, line[2:6], strict=False) if r]
    for line in tables["market,currency,marketing,utility,authentication,effective,source"]:  # R6 spot values
        if line[2].startswith("~"):
            continue  # approximate: carried as unknown with the value in the note
        date = {"2025-07-01 (2025 guide)": "2025-07-01", "~2026-10 (service=0.0248)": "2026-10-01"}.get(line[5], line[5])
        rows += [(date, line[1], line[0], c, 1, r) for c, r in zip(pmp[:3], line[2:5], strict=False)]
    return rows


def test_shipped_card_carries_every_researched_rate():
    card = load_card()
    in_card = {
        (r["effective_from"].isoformat(), r["currency"], r["market"], r["category"], r["tier_from"]): r["rate"] for r in card.iter_rows(named=True)
    }
    checked = 0
    for effective, currency, market, category, tier, rate in _research_rows():
        assert market in MARKETS, market
        assert in_card[(effective, currency, market, category, tier)] == Decimal(rate), (effective, market, category)
        checked += 1
    assert checked == 1_090  # all of them, the six markets of 2026-07-01 included


def test_shipped_card_spot_values():
    card = load_card()

    def rate(effective: str, currency: str, market: str, category: str, tier: int = 1) -> Decimal | None:
        row = card.filter(
            pl.col("effective_from") == dt.date.fromisoformat(effective),
            pl.col("currency") == currency,
            pl.col("market") == market,
            pl.col("category") == category,
            pl.col("tier_from") == tier,
        )
        assert row.height == 1, (effective, currency, market, category, tier)
        return row["rate"][0]

    assert rate("2022-02-01", "EUR", "Italy", "business_initiated") == Decimal("0.0532")
    assert rate("2023-06-01", "USD", "Italy", "utility") == Decimal("0.0420")  # §6, derived
    assert rate("2023-06-01", "USD", "United Kingdom", "marketing") == Decimal("0.0705")  # 0.0529 / 0.75
    assert rate("2026-07-01", "USD", "Italy", "marketing") == Decimal("0.0795")
    assert rate("2026-07-01", "USD", "France", "marketing") == Decimal("0.0859")  # same in April and October
    assert rate("2026-07-01", "USD", "Pakistan", "utility") is None  # April 0.0100, October 0.0150
    assert rate("2026-10-01", "USD", "Kazakhstan", "service") == Decimal("0.0180")
    assert rate("2026-10-01", "USD", "Rest of Africa", "utility", 100001) == Decimal("0.0038")
    assert rate("2026-10-01", "USD", "Italy", "utility", 100001) is None  # tiers of that card not found
    assert rate("2026-07-01", "BRL", "Brazil", "utility", 250001) == Decimal("0.0333")
    assert rate("2026-07-01", "BRL", "Brazil", "utility", 2000001) is None
    assert rate("2026-01-01", "INR", "India", "marketing") == Decimal("1.09")
    assert rate("2026-10-01", "EUR", "Rest of Central & Eastern Europe", "marketing") is None  # "~0.0712"


# --- Validation -------------------------------------------------------------------------------------


def write(tmp_path: Path, body: str, name: str = "card.csv", header: str = HEADER) -> Path:
    path = tmp_path / name
    path.write_text(header + body, encoding="utf-8")
    return path


GOOD = "2026-01-01,EUR,Italy,utility,1,0.0200,made up,trust C; made up\n"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (GOOD + GOOD, "card.csv, line 3: duplicate row (EUR Italy utility from 2026-01-01, tier_from 1), already at"),
        (GOOD + "2026-01-01,EUR,Italy,utility,1,0.0199,,\n", "line 3: overlapping tiers: a second rate for the same tier"),
        ("2026-01-01,EUR,Italy,utility,100001,0.0190,,\n", "volume tiers of EUR Italy utility from 2026-01-01 start at tier_from 100001"),
        ("2026-01-01,EUR,Italy,utility,1,-0.0200,,\n", "line 2: negative rate -0.0200"),
        ("2026-01-01,EUR,Itlay,utility,1,0.0200,,\n", "line 2: unknown market 'Itlay': did you mean 'Italy'?"),
        ("2026-01-01,EUR,Italy,promotional,1,0.0200,,\n", "line 2: unknown category 'promotional'"),
        ("01/01/2026,EUR,Italy,utility,1,0.0200,,\n", "line 2: effective_from '01/01/2026' is not a date"),
        ("2026-01-01,€,Italy,utility,1,0.0200,,\n", "line 2: currency '€' is not an ISO 4217 code"),
        ("2026-01-01,EUR,Italy,marketing,100001,0.0500,,\n", "tier_from 100001 for marketing: only utility and authentication have volume tiers"),
        ("2026-01-01,EUR,Italy,utility,0,0.0200,,\n", "tier_from '0' is not a whole number >= 1"),
        ("2026-01-01,EUR,Italy,utility,1,0.02001234,,\n", "rate 0.02001234 has more than 6 decimals"),
        ("2026-01-01,EUR,Italy,utility,1,abc,,\n", "rate 'abc' is not a number"),
        ("2026-01-01,EUR,Italy,utility,1,0.0200\n", "line 2: 6 fields, the header has 8"),
    ],
)
def test_loading_refuses_an_invalid_card_with_file_and_line(tmp_path, body, message):
    with pytest.raises(InputError, match=re.escape(message)) as raised:
        load_card(write(tmp_path, body))
    assert "contracts.md §3" in str(raised.value)


def test_loading_refuses_missing_and_unexpected_columns(tmp_path):
    with pytest.raises(InputError, match="line 1: missing column rate"):
        load_card(write(tmp_path, "2026-01-01,EUR,Italy,utility,1\n", header="effective_from,currency,market,category,tier_from\n"))
    with pytest.raises(InputError, match="unexpected column 'tierfrom'"):
        load_card(write(tmp_path, "2026-01-01,EUR,Italy,utility,1,0.02\n", header="effective_from,currency,market,category,tierfrom,rate\n"))


def test_every_problem_is_listed_up_to_ten(tmp_path):
    body = "".join(f"2026-01-01,EUR,Nowhere{i},utility,1,0.02,,\n" for i in range(12))
    with pytest.raises(InputError, match=r"(?s)Nowhere9.*\.\.\. and 2 more") as raised:
        load_card(write(tmp_path, body))
    assert "Nowhere10" not in str(raised.value)


def test_the_minimal_card_of_the_contract_loads_with_defaults(tmp_path):
    path = write(
        tmp_path,
        "2025-07-01,EUR,Italy,marketing,1,0.0658\n2025-07-01,EUR,Italy,utility,,0.0248\n2025-07-01,EUR,Italy,utility,100001,0.0231\n",
        header="effective_from,currency,market,category,tier_from,rate\n",
    )
    card = load_card(path)
    assert card["tier_from"].to_list() == [1, 1, 100001]
    assert card["rate"].to_list() == [Decimal("0.0658"), Decimal("0.0248"), Decimal("0.0231")]
    assert card["source"].null_count() == 3 and card["trust"].null_count() == 3


def test_an_empty_rate_is_an_unknown_rate(tmp_path):
    card = load_card(write(tmp_path, GOOD + "2026-04-01,EUR,Italy,utility,1,,somewhere,unknown: not found\n"))
    assert card["rate"].to_list() == [Decimal("0.02"), None]


def test_a_folder_is_one_card_and_duplicates_across_its_files_are_found(tmp_path):
    write(tmp_path, GOOD, name="a.csv")
    write(tmp_path, "2026-01-01,EUR,Germany,utility,1,0.0400,,\n", name="b.csv")
    (tmp_path / "README.md").write_text("not a card")
    assert load_card(tmp_path).height == 2
    write(tmp_path, GOOD, name="c.csv")
    with pytest.raises(InputError, match=r"c\.csv, line 2: duplicate row .* already at .*a\.csv, line 2"):
        load_card(tmp_path)


def test_a_missing_card_says_so(tmp_path):
    with pytest.raises(InputError, match="rate card not found"):
        load_card(tmp_path / "nope.csv")
    with pytest.raises(InputError, match="the folder has no .csv file"):
        load_card(tmp_path)
