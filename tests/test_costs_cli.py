"""`wa-analytics costs` and `wa-analytics rate-card import` (contracts.md §4): files, summaries, exit statuses."""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
from meta_fixtures import META_2026_04

from analytics import cli
from analytics.price import pricing
from analytics.terms.ratecards import load_card

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "pricing"
SAMPLE = ROOT / "data" / "sample" / "messages.csv.gz"
TRAFFIC, CARD = str(FIXTURES / "traffic.csv"), str(FIXTURES / "card.csv")
CONSOLE_SCRIPT = Path(sys.executable).with_name("wa-analytics")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    status = cli.main(list(argv))
    return status, capsys.readouterr().err


def test_costs_of_a_small_traffic_file_with_its_own_card(capsys, tmp_path):
    out, lines = tmp_path / "costs.csv", tmp_path / "invoice.csv"
    status, err = run(capsys, "costs", TRAFFIC, "--rate-card", CARD, "--timezone", "Europe/Rome", "-o", str(out), "--invoice", str(lines))
    assert status == 0, err
    rollup = pl.read_csv(out, infer_schema=False)
    assert rollup.columns == list(pricing.ROLLUP_SCHEMA)
    assert sum(Decimal(c) for c in rollup["cost"]) == Decimal("0.36")  # tests/test_pricing.py computes it by hand
    assert pl.read_csv(lines).height == 9
    assert "Costs in EUR from " in err and "card.csv" in err
    assert "    number P1        6         4       0.15     0.04            0.00   0.19" in err
    assert "Total: 11 charges, 9 billable, 0.36 EUR" in err
    assert f"Costs: {out}" in err


def test_costs_reads_markup_and_portfolios_from_the_config_file(capsys, tmp_path):
    config = tmp_path / "wa.toml"
    config.write_text(f'[billing]\ntimezone = "Europe/Rome"\n[pricing]\nrate_card = "{CARD}"\nmarkup_percent = 10\nmarkup_per_charge = 0.001\n')
    out = tmp_path / "costs.parquet"
    status, err = run(capsys, "costs", TRAFFIC, "--config", str(config), "-o", str(out))
    assert status == 0, err
    assert pl.read_parquet(out)["cost"].sum() == Decimal("0.405")  # 0.36 × 1.1 + 9 × 0.001
    assert "with a markup of 10% + 0.001 per billable charge" in err
    status, err = run(capsys, "costs", TRAFFIC, "--config", str(config), "--markup-percent", "0", "-o", str(out))
    assert pl.read_parquet(out)["cost"].sum() == Decimal("0.369")  # 0.36 + 9 × 0.001


def test_a_missing_rate_exits_2_naming_it_unless_unpriced_charges_are_reported(capsys, tmp_path):
    card = tmp_path / "card.csv"
    card.write_text("".join(line for line in open(CARD) if ",Germany,marketing," not in line))
    out = tmp_path / "costs.csv"
    status, err = run(capsys, "costs", TRAFFIC, "--rate-card", str(card), "--timezone", "Europe/Rome", "-o", str(out))
    assert status == 2
    assert "wa-analytics: error: no rate for EUR Germany marketing on 2026-01-31 (time zone Europe/Rome)" in err
    assert not out.exists()
    status, err = run(capsys, "costs", TRAFFIC, "--rate-card", str(card), "--timezone", "Europe/Rome", "--report-unpriced", "-o", str(out))
    assert status == 0, err
    rollup = pl.read_csv(out, infer_schema=False)
    assert rollup.filter(pl.col("priced") == "false").select("market", "category", "cost").rows() == [("Germany", "marketing", None)]
    assert "Unpriced: 1 billable charges have no rate in the card" in err


def test_bad_cards_and_currencies_exit_2(capsys, tmp_path):
    card = tmp_path / "card.csv"
    card.write_text(open(CARD).read().replace(",Germany,utility,", ",Germny,utility,"))
    status, err = run(capsys, "costs", TRAFFIC, "--rate-card", str(card), "-o", str(tmp_path / "c.csv"))
    assert status == 2 and "unknown market 'Germny': did you mean 'Germany'?" in err
    status, err = run(capsys, "costs", TRAFFIC, "--rate-card", CARD, "--currency", "USD", "-o", str(tmp_path / "c.csv"))
    assert status == 2 and "the rate card has no USD rates: it has EUR" in err
    status, err = run(capsys, "costs", TRAFFIC, "--markup-percent", "-5", "-o", str(tmp_path / "c.csv"))
    assert status == 2 and "markup_percent -5 must be a number >= 0" in err


def test_costs_of_the_shipped_sample_with_the_shipped_card(capsys, tmp_path):
    out = tmp_path / "costs.csv"
    status, err = run(capsys, "costs", str(SAMPLE), "-o", str(out))
    assert status == 0, err
    rollup = pl.read_csv(out, infer_schema=False)
    assert set(rollup["currency"]) == {"USD"} and set(rollup["priced"]) == {"true"}
    assert set(rollup["month"]) == {f"2026-{m:02d}" for m in range(1, 12)}
    assert "Quarantined 6 rows" in err  # the sample's broken lines, as for every subcommand
    assert "Costs in USD from the shipped card" in err
    assert "Warning" not in err and "reported by partners" not in err  # the October 2026 rules are Meta's own
    assert "Unpriced" not in err


# Made-up rates with a volume tier from the 3rd utility message of a month, for Poland and for the
# region it leaves on 2026-07-01 (billing-rules.md §9), so that tier positions show in the costs.
LOW_TIER_CARD = """effective_from,currency,market,category,tier_from,rate,source,note
2026-04-01,USD,Rest of Central & Eastern Europe,utility,1,0.0200,tests,trust C; made up for tests
2026-04-01,USD,Rest of Central & Eastern Europe,utility,3,0.0100,tests,trust C; made up for tests
2026-07-01,USD,Poland,utility,1,0.0120,tests,trust C; made up for tests
2026-07-01,USD,Poland,utility,3,0.0060,tests,trust C; made up for tests
"""
WARSAW, PRAGUE = "48221234567", "420601123456"  # +48 22 (Poland), +420 (Czech Republic: still in the region)


def utility_templates(month: str) -> str:
    """Two utility templates to Prague, then three to Warsaw, one a day from the 2nd: all billable."""
    lines = ["message_id,timestamp,direction,business_phone,waba_id,user_id,message_type,template_category,status"]
    for day, user in enumerate([PRAGUE, PRAGUE, WARSAW, WARSAW, WARSAW], start=2):
        lines.append(f"wamid.{month}.{day},{month}-{day:02d}T09:00:00Z,outbound,P1,W1,{user},template,utility,delivered")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("month", "expected"),
    [
        # June: Warsaw is in Rest of Central & Eastern Europe and counts with Prague: positions 1-2
        # Prague (2 × 0.0200), 3-5 Warsaw (3 × 0.0100, the region's tier from the 3rd).
        ("2026-06", [("Rest of Central & Eastern Europe", 5, Decimal("0.070000"))]),
        # August: Poland counts alone: Warsaw 1-2 (2 × 0.0120) and 3 (0.0060); Prague 1-2 (2 × 0.0200).
        ("2026-08", [("Poland", 3, Decimal("0.030000")), ("Rest of Central & Eastern Europe", 2, Decimal("0.040000"))]),
    ],
)
def test_warsaw_is_priced_and_tiered_as_poland_from_2026_07_01(tmp_path, month, expected):
    """billing-rules.md §9, P1: from 2026-07-01 a Polish user is market Poland, and Polish utility
    messages count toward Poland's volume tiers, no longer the region's."""
    traffic, card, out = tmp_path / "traffic.csv", tmp_path / "card.csv", tmp_path / "costs.csv"
    traffic.write_text(utility_templates(month))
    card.write_text(LOW_TIER_CARD)
    run = subprocess.run(
        [str(CONSOLE_SCRIPT), "costs", str(traffic), "--rate-card", str(card), "-o", str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        check=False,
    )
    assert run.returncode == 0, run.stderr
    rollup = pl.read_csv(out, infer_schema=False).filter(pl.col("billable_charges") != "0")
    assert set(rollup["month"]) == {month} and set(rollup["category"]) == {"utility"}
    assert [(r["market"], int(r["billable_charges"]), Decimal(r["cost"])) for r in rollup.sort("market").iter_rows(named=True)] == expected


def test_rate_card_import_writes_a_card_that_loads(capsys, tmp_path):
    out = tmp_path / "cards" / "usd.csv"
    status, err = run(
        capsys,
        "rate-card",
        "import",
        str(META_2026_04 / "USD_rates.csv"),
        str(META_2026_04 / "USD_volume_tiers.csv"),
        "--effective",
        "2026-04-01",
        "--source",
        "Meta's pricing page",
        "-o",
        str(out),
    )
    assert status == 0, err
    assert "Imported 470 rates for 32 markets (USD), 438 volume-tier bands" in err
    card = load_card(out)
    shipped = load_card(ROOT / "data" / "rate_cards" / "meta-usd-2026-04-01.csv")
    columns = ["effective_from", "currency", "market", "category", "tier_from", "rate"]
    assert card.select(columns).equals(shipped.select(columns))
    assert set(card["source"]) == {"Meta's pricing page"}


def test_rate_card_import_refuses_a_contradicting_date_and_a_missing_file(capsys, tmp_path):
    status, err = run(capsys, "rate-card", "import", str(META_2026_04 / "USD_rates.csv"), "--effective", "2026-07-01", "-o", str(tmp_path / "c.csv"))
    assert status == 2 and "says it is effective 2026-04-01, not 2026-07-01" in err
    status, err = run(capsys, "rate-card", "import", str(tmp_path / "nope.csv"), "--effective", "2026-07-01", "-o", str(tmp_path / "c.csv"))
    assert status == 2 and "nope.csv: file not found" in err
    status, err = run(capsys, "rate-card", "import", str(META_2026_04 / "USD_rates.csv"), "-o", str(tmp_path / "c.csv"))
    assert status == 2 and "--effective" in err
    assert not (tmp_path / "c.csv").exists()


def test_costs_of_a_charges_file_mark_estimates_and_caps_as_the_python_api_does(capsys, tmp_path):
    """Issue 17: a charges file (as `charges -o x.parquet` writes it) with Meta Business Agent charges
    with and without tokens, capped marketing and a group delivery; `costs` on it, and
    `analytics.load(...).costs()/invoice()` on the same charges, give the same tables."""
    import datetime as dt

    import analytics
    from analytics.core import schema
    from analytics.read import ingest
    from analytics.settings import Settings

    def charge(at: str, category: str, user: str, tokens: int | None = None, template: str | None = None) -> dict[str, object]:
        started = dt.datetime.fromisoformat(at).replace(tzinfo=dt.UTC)
        return {
            **dict.fromkeys(schema.CHARGE_SCHEMA),
            **{"rule_set": "pmp-2026-10", "pricing_model": "PMP", "category": category, "pricing_type": "regular", "billable": True},
            **{"started_at": started, "business_phone": "P1", "waba_id": "W1", "user_id": user, "market": "Italy", "message_count": 1},
            **{"opening_message_id": f"m-{user}", "tokens": tokens, "template_name": template},
        }

    charges_frame = pl.DataFrame(
        [
            charge("2026-10-05T09:00:00", "marketing", "U1", template="spring_sale"),
            charge("2026-10-05T09:01:00", "marketing", "U2"),
            charge("2026-10-05T09:02:00", "meta_business_agent", "U1", tokens=21_000),
            charge("2026-10-05T09:03:00", "meta_business_agent", "U2"),
            charge("2026-10-05T09:04:00", "group_marketing", "U3", template="spring_sale"),
        ],
        schema=schema.CHARGE_SCHEMA,
    )
    config = tmp_path / "analytics.toml"
    config.write_text(
        '[pricing]\ncurrency = "USD"\n[[pricing.max_price]]\nwaba_id = "W1"\nper_1000 = 40\nfrom = 2026-10-01\ntemplate = "spring_sale"\n'
    )
    settings = Settings.from_toml(config)
    billed = tmp_path / "charges.parquet"
    ingest.write_frame(charges_frame, str(billed), metadata=cli._charges_marker(charges_frame.height, settings))
    out, lines = tmp_path / "costs.parquet", tmp_path / "invoice.parquet"
    status, err = run(capsys, "costs", str(billed), "--config", str(config), "-o", str(out), "--invoice", str(lines))
    assert status == 0, err
    rollup = pl.read_parquet(out)
    assert rollup.columns[:9] == ["month", "market", "category", "pricing_type", "charges", "billable_charges", "cost", "currency", "priced"]
    assert rollup.columns[9:] == ["tokens", "estimated_charges", "at_most_charges"]
    by_category = {r["category"]: r for r in rollup.iter_rows(named=True)}
    # shipped card, Italy 2026-10: marketing 0.0795; max price 40 per 1,000 for spring_sale: 0.04
    assert (by_category["marketing"]["cost"], by_category["marketing"]["at_most_charges"]) == (Decimal("0.1195"), 1)
    assert (by_category["group_marketing"]["cost"], by_category["group_marketing"]["at_most_charges"]) == (Decimal("0.04"), 1)
    # 2.00 per 1 M tokens: 21,000 given + 25,000 assumed = 46,000 tokens, 0.092
    agent = by_category["meta_business_agent"]
    assert (agent["cost"], agent["tokens"], agent["estimated_charges"]) == (Decimal("0.092"), 46_000, 1)
    assert "~0.09" in err and "Estimated: 1 per-token charges" in err and "At most: 2 marketing charges" in err
    traffic = analytics.load(str(SAMPLE), settings=settings)
    traffic.__dict__["charges"] = charges_frame  # the charges the file holds, without billing the sample
    assert rollup.equals(traffic.costs())
    assert pl.read_parquet(lines).equals(traffic.invoice())
