"""Scenario files and `wa-analytics compare` (analytics/whatif/scenarios.py): hand-computed effects on a
small traffic file, errors that exit 2, and the shipped example on the shipped sample."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
from traffic import Traffic

from analytics import cli
from analytics.read import ingest
from analytics.settings import Settings
from analytics.whatif import scenarios, strategies

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "strategies"
TRAFFIC, CARD, SCENARIOS = (str(FIXTURES / n) for n in ("traffic.csv", "card.csv", "scenarios.toml"))
SAMPLE = str(ROOT / "data" / "sample" / "messages.csv.gz")
EXAMPLE = str(ROOT / "examples" / "scenarios.toml")


def fixture_messages() -> pl.DataFrame:
    return ingest.read_messages([TRAFFIC]).messages.collect()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    status = cli.main(list(argv))
    return status, capsys.readouterr().err


def totals(table: pl.DataFrame) -> dict[str, tuple[int, Decimal]]:
    """scenario -> (billable charges, cost), all months and categories."""
    summed = table.group_by("scenario").agg(pl.col("billable_charges").sum(), pl.col("cost").cast(pl.Decimal(38, 6)).sum())
    return {s: (int(b), Decimal(c)) for s, b, c in summed.iter_rows()}


def test_each_strategy_on_the_fixture_traffic_costs_what_the_hand_computation_says(capsys, tmp_path):
    out = tmp_path / "compare.csv"
    status, err = run(capsys, "compare", TRAFFIC, "--scenarios", SCENARIOS, "--rate-card", CARD, "-o", str(out))
    assert status == 0, err
    table = pl.read_csv(out, schema_overrides={"cost": pl.Decimal(38, 6), "cost_difference": pl.Decimal(38, 6)})
    assert table.columns == list(scenarios.COMPARE_SCHEMA)
    # fixtures/strategies/README.md: September 2025, pmp-2025. Italian user: s01 user 09:00 (window to
    # Sep 2 09:00); s02 utility 09:05 inside (free); s03 marketing 0.05; s04 utility Sep 2 15:00 outside
    # (0.02); s05 user 17:00; s06 reply (free); s07 marketing Sep 3 10:00 (inside the new window) 0.05;
    # s08 marketing Sep 4 0.05; s09, s10 authentication 2 × 0.03. German user: s11 user, s12 reply
    # (free), s13 marketing Sep 12 (outside) 0.10, s14 a failed OTP (nothing).
    assert totals(table) == {
        "baseline": (7, Decimal("0.33")),  # 3 × 0.05 + 0.02 + 2 × 0.03 + 0.10
        "wait": (6, Decimal("0.31")),  # s04 waits 2 h for s05: inside the window, free: - 0.02
        "replies": (5, Decimal("0.23")),  # s03 and s07 are inside a window: replies, free: - 2 × 0.05
        "cap": (6, Decimal("0.28")),  # 2 marketing a month: s08 not sent: - 0.05
        # every session from an ad: s02 opens a 72 h free window (to Sep 4 09:05) that covers s03, s04
        # and s07; s12 one (to Sep 13 12:02) that covers s13. Left: s08 0.05, s09 + s10 0.06.
        "ads": (3, Decimal("0.11")),
        "double_germany": (8, Decimal("0.43")),  # the German user copied: + 0.10
        "sms": (7, Decimal("0.36")),  # s09, s10 by SMS: - 2 × 0.03 on WhatsApp, + 2 × 0.045 on their own line
        # pmp-2026-10 at the 2026-01-01 rates: s02 and s04 utility 2 × 0.02 (utility inside the window is
        # no longer free), marketing 3 × 0.06 (Italy's 2026 rate) + 0.10, OTPs 0.06; replies free (1,000 a month)
        "october_rules": (8, Decimal("0.38")),
    }
    sms = table.filter(pl.col("scenario") == "sms").select("category", "billable_charges", "cost", "cost_difference")
    assert sms.filter(pl.col("category").str.starts_with("authentication")).rows() == [
        ("authentication", 0, Decimal("0"), Decimal("-0.06")),
        ("authentication_other_channel", 2, Decimal("0.09"), Decimal("0.09")),
    ]
    explained = pl.read_csv(tmp_path / "compare.explanations.csv")
    assert explained.columns == list(scenarios.EXPLANATION_SCHEMA)
    wait = explained.filter(pl.col("scenario") == "wait", pl.col("change") == "utility_into_window").row(0, named=True)
    assert wait["moved"] == 1
    assert wait["explanation"].startswith("1 utility templates sent outside a customer service window were delayed")
    assert "cost 0.31 EUR, 6 billable charges: -0.02 EUR (-6.1%) and -1 billable charges against the baseline; by category: utility -0.02" in err
    assert f"Comparison: {out}; explanations: {tmp_path / 'compare.explanations.csv'}" in err


def test_differences_are_against_the_baseline_row_by_row():
    comparison = scenarios.compare(
        fixture_messages(),
        scenarios.load_scenarios(SCENARIOS),
        settings=Settings(rate_card=CARD),
    )
    base = comparison.table.filter(pl.col("scenario") == "baseline").select("month", "category", base="cost")
    joined = comparison.table.join(base, on=["month", "category"], how="left").with_columns(pl.col("base").fill_null(0))
    assert (joined["cost"] - joined["base"] == joined["cost_difference"]).all()
    # a category the scenario no longer has shows zero, so the differences add up to the totals'
    sms = comparison.table.filter(pl.col("scenario") == "sms", pl.col("category") == "authentication")
    assert sms.select("cost", "cost_difference").rows() == [(Decimal(0), Decimal("-0.06"))]


def test_a_scenario_in_another_currency_has_no_differences(tmp_path):
    card = tmp_path / "usd.csv"
    card.write_text(Path(CARD).read_text().replace(",EUR,", ",USD,"))
    toml = tmp_path / "s.toml"
    toml.write_text(f'[scenario.dollars]\nrate_card = "{card.name}"\ncurrency = "usd"\n')
    comparison = scenarios.compare(
        fixture_messages(),
        scenarios.load_scenarios(toml),
        settings=Settings(rate_card=CARD),
    )
    dollars = comparison.table.filter(pl.col("scenario") == "dollars")
    assert set(dollars["currency"]) == {"USD"} and dollars["cost_difference"].null_count() == dollars.height
    assert "priced in USD: differences from the baseline (EUR) are not computed" in comparison.explanations["explanation"].to_list()


def test_charges_without_a_rate_are_counted_apart_not_priced_at_zero(tmp_path):
    card = tmp_path / "card.csv"
    card.write_text("".join(line for line in open(CARD) if ",Germany,marketing," not in line))
    comparison = scenarios.compare(
        fixture_messages(),
        [scenarios.Scenario(scenarios.BASELINE)],
        settings=Settings(rate_card=str(card)),
    )
    marketing = comparison.table.filter(pl.col("category") == "marketing").row(0, named=True)
    assert (marketing["billable_charges"], marketing["unpriced_charges"], marketing["cost"]) == (4, 1, Decimal("0.15"))
    assert "1 billable charges have no rate in the card and are not in the cost" in comparison.explanations["explanation"].to_list()


# --- The scenario file -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[scenario.a]\nstrategies = [{ name = "send_less" }]', "scenario a: unknown strategy 'send_less': expected one of utility_into_window"),
        (
            '[scenario.a]\nstrategies = [{ name = "cap_marketing", per_user = "four" }]',
            "scenario a: strategy cap_marketing: per_user = 'four' is not a whole number",
        ),
        ('[scenario.a]\nstrategies = [{ name = "cap_marketing" }]', "scenario a: strategy cap_marketing needs per_user"),
        (
            '[scenario.a]\nstrategies = [{ name = "more_entry_points", share = 2 }]',
            "scenario a: strategy more_entry_points: share = 2.0 must be between 0 and 1",
        ),
        ("[scenario.a]\nstrategies = [{ per_user = 4 }]", "scenario a: strategy 1 has no name"),
        ("[scenario.a]\nstrategy = []", "scenario a: unknown setting strategy: a scenario may set description, rules"),
        ('[scenario.a]\nrules = "pmp-2027"', "scenario a: unknown rule set 'pmp-2027': expected one of cbp-2022"),
        ('[scenario.a]\nrates_on = "soon"', "scenario a: rates_on = 'soon' is not a date"),
        ('[scenario.a]\nrate_card = "missing.csv"', "missing.csv does not exist"),
        ('[scenario.a]\ngrowth = { marketing = "more" }', "scenario a: strategy growth: factors = {'marketing': 'more'} is not a table of numbers"),
        ("[scenarios.a]\n", "unknown table scenarios: scenarios are [scenario.NAME] tables"),
        ("[scenario.a\n", "is not valid TOML"),
        ("", "no scenarios: write each as a [scenario.NAME] table"),
    ],
)
def test_a_bad_scenario_file_exits_2_saying_what_to_fix(capsys, tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    out = tmp_path / "out.csv"
    status, err = run(capsys, "compare", TRAFFIC, "--scenarios", str(path), "-o", str(out))
    assert status == 2
    assert err.startswith(f"wa-analytics: error: {path}")
    assert message in err
    assert "Read " not in err and not out.exists()  # refused before the traffic is read


def test_a_missing_scenario_file_exits_2(capsys, tmp_path):
    status, err = run(capsys, "compare", TRAFFIC, "--scenarios", str(tmp_path / "none.toml"), "-o", str(tmp_path / "o.csv"))
    assert status == 2 and "cannot read the scenario file" in err


def test_the_file_may_define_its_own_baseline():
    loaded = scenarios.load_scenarios(SCENARIOS)
    assert [s.name for s in loaded][0] == "baseline" and loaded[0].steps == ()
    own = scenarios.scenario("baseline", rules="pmp-2026-10")
    comparison = scenarios.compare(
        fixture_messages(),
        [scenarios.scenario("today", rules="pmp-2025"), own],
        settings=Settings(rate_card=CARD),
    )
    assert [r.name for r in comparison.results] == ["baseline", "today"]
    assert totals(comparison.table)["today"] == (7, Decimal("0.33"))
    assert comparison.table.filter(pl.col("scenario") == "today")["cost_difference"].sum() == Decimal("-0.02")  # s02 free again


# --- The shipped example on the shipped sample ----------------------------------------------------


@pytest.fixture(scope="module")
def sample_comparison(tmp_path_factory):
    folder = tmp_path_factory.mktemp("compare")
    status = cli.main(["compare", SAMPLE, "--scenarios", EXAMPLE, "-o", str(folder / "compare.csv")])
    assert status == 0
    costs = cli.main(["costs", SAMPLE, "-o", str(folder / "costs.csv")])
    assert costs == 0
    return folder


def test_the_example_file_holds_every_strategy_and_a_rule_set_scenario():
    loaded = scenarios.load_scenarios(EXAMPLE)
    used = {step.name for s in loaded for step in s.steps}
    assert used == set(strategies.STRATEGIES)
    assert any(s.rules == "pmp-2026-10" and not s.steps for s in loaded)


def test_compare_on_the_sample_has_a_baseline_equal_to_costs(sample_comparison):
    table = pl.read_csv(sample_comparison / "compare.csv", schema_overrides={"cost": pl.Decimal(38, 6)})
    costs = pl.read_csv(sample_comparison / "costs.csv", schema_overrides={"cost": pl.Decimal(38, 6)})
    expected = (
        costs.group_by("month", "category")
        .agg(pl.col("charges").sum(), pl.col("billable_charges").sum(), pl.col("cost").sum(), pl.col("currency").first())
        .sort("month", "category")
    )
    baseline = table.filter(pl.col("scenario") == "baseline").select(expected.columns)
    assert baseline.equals(expected)
    assert set(table["scenario"]) == {s.name for s in scenarios.load_scenarios(EXAMPLE)}
    explained = pl.read_csv(sample_comparison / "compare.explanations.csv")
    assert explained.filter(pl.col("change") == "cost").height == len(set(table["scenario"]))


def test_on_the_sample_each_example_scenario_moves_the_cost_the_way_its_strategy_should(sample_comparison):
    table = pl.read_csv(sample_comparison / "compare.csv", schema_overrides={"cost_difference": pl.Decimal(38, 6), "cost": pl.Decimal(38, 6)})
    difference = dict(table.group_by("scenario").agg(pl.col("cost_difference").sum()).iter_rows())
    assert difference["baseline"] == 0
    for saving in ("orders_wait_for_the_customer", "replies_instead_of_templates", "marketing_cap", "click_to_whatsapp_ads"):
        assert difference[saving] < 0, saving
    assert difference["marketing_grows"] > 0
    explained = pl.read_csv(sample_comparison / "compare.explanations.csv")
    other = explained.filter(pl.col("scenario") == "otp_by_sms", pl.col("change") == "channel_shift")["other_channel"].item()
    sms = table.filter(pl.col("scenario") == "otp_by_sms", pl.col("category") == "authentication_other_channel")
    assert sms["charges"].sum() == other and Decimal(str(sms["cost"].sum())) == Decimal("0.05") * other


def test_on_the_sample_strategies_mark_every_key_they_change_and_rebilling_those_is_exact():
    # compare re-bills only the keys a strategy marked: the marks must cover every changed key
    # (checked against per-key fingerprints), and the result must equal billing everything again.
    messages = ingest.read_messages([SAMPLE]).messages.collect()
    shared = scenarios.SharedWork(messages, scenarios.Settings())
    for item in scenarios.load_scenarios(EXAMPLE):
        if not item.steps:
            continue
        changed = scenarios.apply_steps(shared.messages, item.steps, shared.settings)
        exact = scenarios.changed_keys(shared.messages, changed.messages)
        assert changed.changed_keys.sort(*strategies.KEY).equals(exact), item.name
        shared.charges(item.rules)
        incremental = shared.charges_of(changed.messages, changed.changed_keys, item.rules)
        full = scenarios.charges.bill(changed.messages, shared.settings_for(item.rules))
        assert incremental.sort(full.columns).equals(full.sort(full.columns)), item.name


def test_a_scenario_without_a_card_of_its_own_is_priced_at_the_runs_card_whatever_came_before(tmp_path):
    card = tmp_path / "usd.csv"
    card.write_text(Path(CARD).read_text().replace(",EUR,", ",USD,"))
    toml = tmp_path / "s.toml"
    toml.write_text(f'[scenario.dollars]\nrate_card = "{card.name}"\ncurrency = "usd"\n\n[scenario.later]\nrules = "pmp-2026-10"\n')
    comparison = scenarios.compare(fixture_messages(), scenarios.load_scenarios(toml), settings=Settings(rate_card=CARD))
    currencies = {r.name: r.currency for r in comparison.results}
    assert currencies == {"baseline": "EUR", "dollars": "USD", "later": "EUR"}


def test_people_own_ai_and_meta_agent_side_by_side():
    # September 2025 (pmp-2025, test card): replies are free service messages; the marketing
    # template costs Italy's 0.05 in every scenario. Before 2026-08-01 Meta bills the agent's
    # replies as service, so only the own-cost lines differ: own AI 2 × 0.01, the agent 2 × 0.005.
    traffic = Traffic(start="2025-09-01T00:00:00Z").user(0).text(1).text(2).template(30, "marketing").frame()
    chosen = [
        scenarios.Scenario(scenarios.BASELINE),
        scenarios.scenario("people", strategies=[{"name": "service_by_people"}]),
        scenarios.scenario("own_ai", strategies=[{"name": "service_by_people"}, {"name": "service_by_own_ai", "unit_cost": 0.01}]),
        scenarios.scenario("meta_agent", strategies=[{"name": "service_by_business_agent", "unit_cost": 0.005}]),
    ]
    comparison = scenarios.compare(traffic, chosen, settings=Settings(rate_card=CARD))
    table = scenarios.side_by_side(comparison.table, ["people", "own_ai", "meta_agent", "absent"], month="2025-09")
    assert table.rows() == [
        ("people", Decimal("0.05"), Decimal(0), Decimal("0.05"), Decimal(0), "EUR", 1, 0),
        ("own_ai", Decimal("0.05"), Decimal("0.02"), Decimal("0.07"), Decimal("0.02"), "EUR", 1, 0),
        ("meta_agent", Decimal("0.05"), Decimal("0.01"), Decimal("0.06"), Decimal("0.01"), "EUR", 1, 0),
    ]
    assert scenarios.side_by_side(comparison.table, ["people"], month="2024-01").height == 0
