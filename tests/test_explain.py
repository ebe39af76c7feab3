"""Why the cost changed (`analytics.whatif.explain`): effects that add up to the total to the cent,
each where hand-made traffic says it must be, on the sample and through the command line."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from fractions import Fraction

import polars as pl
import pytest
from traffic import Traffic, low_tier_card, merge

from analytics import cli
from analytics.bill import charges as engine
from analytics.core.money import money, rounded
from analytics.core.schema import DEFAULT_WABA
from analytics.price import pricing
from analytics.settings import MaxPrice, Settings
from analytics.terms.ratecards import RATE_DTYPE, load_card
from analytics.whatif import explain
from analytics.whatif.scenarios import card_in_force_on

SAMPLE = "data/sample/messages.csv.gz"


def steady_card() -> pl.DataFrame:
    """The shipped card's USD rates in force on 2026-04-01, in force on every date: no rate changes."""
    return card_in_force_on(load_card().filter(pl.col("currency") == "USD"), dt.date(2026, 4, 1))


def rate(card: pl.DataFrame, category: str, market: str = "Italy") -> Decimal:
    return card.filter(pl.col("market") == market, pl.col("category") == category, pl.col("tier_from") == 1)["rate"].item()


def month_traffic(month: str, users: int, *, first_user: int = 0) -> pl.DataFrame:
    """`users` Italian users, each sent a marketing template on the 2nd, writing on the 3rd and
    answered inside the customer service window by a utility template and a text, and sent an
    authentication template on the 5th."""
    keys = []
    for n in range(first_user, first_user + users):
        key = Traffic(f"{month}-02T08:00:00Z", user_id=f"39333{n:07d}", id_prefix=f"{month}u{n}-")
        key.template(0, "marketing").user(24).template(25, "utility").text(26).template(72, "authentication")
        keys.append(key)
    return merge(*keys)


def effects(explained: explain.Explanation) -> dict[str, Decimal]:
    return dict(zip(explained.table["effect"], explained.table["cost_difference"], strict=True))


def actual_cost(messages: pl.DataFrame, month: str, settings: Settings, card: pl.DataFrame) -> Decimal:
    costs = pricing.costs(pricing.price(engine.bill(messages, settings), settings, card=card))
    return Decimal(costs.filter(pl.col("month") == month)["cost"].sum())


def assert_adds_up(explained: explain.Explanation) -> None:
    found = effects(explained)
    assert sum(found[e] for e in explain.EFFECTS) == found[explain.TOTAL]
    assert found[explain.TOTAL] == explained.total
    assert sum(explained.exact.values()) == Fraction(explained.cost) - Fraction(explained.cost_against)


def test_only_the_card_changed_is_all_rates():
    steady = steady_card()
    marketing = rate(steady, "marketing")
    dearer = steady.filter(pl.col("market") == "Italy", pl.col("category") == "marketing").with_columns(
        effective_from=pl.lit(dt.date(2026, 7, 1)), rate=pl.lit(marketing + Decimal("0.0125"), dtype=RATE_DTYPE)
    )
    card = pl.concat([steady, dearer]).sort("currency", "market", "category", "effective_from", "tier_from")
    messages = pl.concat([month_traffic("2026-06", 5), month_traffic("2026-07", 5)])
    explained = explain.explain(messages, "2026-07", settings=Settings(), card=card)
    found = effects(explained)
    assert explained.against == "2026-06"
    assert explained.exact[explain.RATES] == Fraction(5 * Decimal("0.0125"))
    assert found[explain.RATES] == Decimal("0.06")  # 0.0625 in all: the two months' costs to the cent differ by 0.06
    assert all(found[e] == 0 for e in explain.EFFECTS if e != explain.RATES)
    assert explained.cost_against == actual_cost(messages, "2026-06", Settings(), card)
    assert explained.cost == actual_cost(messages, "2026-07", Settings(), card)
    assert_adds_up(explained)


def test_a_marketing_max_price_that_starts_is_part_of_the_rates_effect():
    """A max price is a price: from its date Meta charges at most that, so the month it starts
    differs from the one before by the rates effect alone, not by the traffic's."""
    card = steady_card()
    marketing = rate(card, "marketing")
    cap = MaxPrice(waba_id=DEFAULT_WABA, per_1000=((marketing - Decimal("0.0125")) * 1000).quantize(Decimal("0.001")), from_date=dt.date(2026, 7, 1))
    settings = Settings(max_prices=(cap,))
    messages = pl.concat([month_traffic("2026-06", 5), month_traffic("2026-07", 5)])
    explained = explain.explain(messages, "2026-07", settings=settings, card=card)
    found = effects(explained)
    assert explained.exact[explain.RATES] == Fraction(-5 * Decimal("0.0125"))
    assert all(found[e] == 0 for e in explain.EFFECTS if e != explain.RATES)
    assert explained.cost == actual_cost(messages, "2026-07", settings, card) == explained.cost_against - 5 * Decimal("0.0125")
    assert_adds_up(explained)


def test_only_volume_doubled_is_all_volume():
    card = steady_card()
    messages = pl.concat([month_traffic("2026-05", 4), month_traffic("2026-06", 8)])
    explained = explain.explain(messages, "2026-06", "2026-05", Settings(), card=card)
    found = effects(explained)
    one_month = 4 * (rate(card, "marketing") + rate(card, "authentication"))  # pmp-2025: the utility template is free in the window
    assert explained.cost_against == one_month
    assert explained.exact[explain.VOLUME] == Fraction(one_month)
    assert found[explain.VOLUME] == rounded(2 * one_month, 2) - rounded(one_month, 2)  # the invoices' difference
    assert all(found[e] == 0 for e in explain.EFFECTS if e != explain.VOLUME)
    assert_adds_up(explained)


def test_only_the_rule_set_switched_is_all_rules():
    card = steady_card()
    messages = pl.concat([month_traffic("2026-09", 6), month_traffic("2026-10", 6)])
    explained = explain.explain(messages, "2026-10", settings=Settings(), card=card)
    found = effects(explained)
    assert explained.rule_sets == ("pmp-2025", "pmp-2026-10")
    # October: the utility template inside the customer service window is charged; the text is
    # one of the 1,000 free service messages of the month
    assert explained.exact[explain.RULES] == Fraction(6 * rate(card, "utility"))
    assert found[explain.RULES] == explained.total
    assert all(found[e] == 0 for e in explain.EFFECTS if e != explain.RULES)
    assert explained.cost == actual_cost(messages, "2026-10", Settings(), card)
    assert_adds_up(explained)


def test_doubled_volume_past_volume_tiers_splits_into_volume_and_volume_tiers():
    card = low_tier_card()  # authentication cheaper from a month's 3rd message and again from its 8th
    messages = pl.concat([month_traffic("2026-05", 4), month_traffic("2026-06", 8)])
    explained = explain.explain(messages, "2026-06", "2026-05", Settings(), card=card)
    italy = card.filter(pl.col("market") == "Italy", pl.col("category") == "authentication", pl.col("effective_from") == dt.date(2026, 4, 1))
    tiers = dict(italy.select("tier_from", "rate").iter_rows())

    def discount(n: int) -> Fraction:  # the average tier discount of a month's n authentication messages
        paid = sum(Fraction(tiers[max(t for t in tiers if t <= i)]) for i in range(1, n + 1))
        return (n * Fraction(tiers[1]) - paid) / n

    # Shapley over volume (4 or 8 messages) and tier positions: the discount's change, at the average volume
    assert explained.exact[explain.VOLUME_TIERS] == -Fraction(4 + 8, 2) * (discount(8) - discount(4))
    assert explained.exact[explain.VOLUME_TIERS] < 0
    assert all(explained.exact[e] == 0 for e in (explain.MIX, explain.RATES, explain.RULES, explain.FREE_WINDOWS))
    assert_adds_up(explained)


def test_what_if_rules_for_all_traffic_leave_no_rules_effect():
    card = steady_card()
    messages = pl.concat([month_traffic("2026-09", 3), month_traffic("2026-10", 3)])
    explained = explain.explain(messages, "2026-10", settings=Settings(rules="pmp-2026-10"), card=card)
    assert explained.rule_sets == ("pmp-2026-10", "pmp-2026-10")
    assert all(v == 0 for v in effects(explained).values())


def test_the_sample_october_against_september_adds_up_to_the_cent():
    import analytics as wa

    traffic = wa.load(SAMPLE)
    explained = explain.explain(traffic.messages, "2026-10", settings=traffic.settings, charges=traffic.charges)
    costs = traffic.costs().group_by("month").agg(pl.col("cost").sum())
    by_month = dict(costs.iter_rows())
    assert explained.cost_against == by_month["2026-09"]
    assert explained.cost == by_month["2026-10"]
    assert explained.rule_sets == ("pmp-2025", "pmp-2026-10")
    assert explained.effects[explain.RULES] > 0  # October charges the utility templates answered inside the window
    assert explained.combinations == 2 ** len(explain.FACTORS)
    assert_adds_up(explained)
    # billed here instead of given: the same
    again = explain.explain(traffic.messages, "2026-10", "2026-09", traffic.settings)
    assert again.table.equals(explained.table)


def test_shapley_values_of_a_known_game():
    # f = 10·[a] + 4·[b] + 6·[a and b]: the interaction is split evenly
    values = {frozenset(s): Fraction(10 * ("a" in s) + 4 * ("b" in s) + 6 * ({"a", "b"} <= set(s))) for s in ((), ("a",), ("b",), ("a", "b"))}
    assert explain.shapley(values, ("a", "b")) == {"a": Fraction(13), "b": Fraction(7)}


def test_rounding_gives_the_missing_cents_to_the_values_rounded_furthest():
    exact = {"x": Fraction(1, 300), "y": Fraction(1, 300), "z": Fraction(1, 300)}  # 0.00333... each, 0.01 in all
    assert explain.rounded_to_total(exact, Decimal("0.01")) == {"x": Decimal("0.01"), "y": Decimal("0.00"), "z": Decimal("0.00")}
    exact = {"x": Fraction(-5, 1000), "y": Fraction(5, 1000)}  # half away from zero: -0.01 and +0.01
    assert explain.rounded_to_total(exact, Decimal("0.00")) == {"x": Decimal("-0.01"), "y": Decimal("0.01")}
    assert sum(explain.rounded_to_total({"x": Fraction(7, 1000), "y": Fraction(8, 1000)}, Decimal("0.01")).values()) == Decimal("0.01")
    # the total's own rounding: 0.004 + 0.004 exactly, but the months' costs to the cent differ by 0.01
    exact = {"zero": Fraction(0), "x": Fraction(4, 1000), "y": Fraction(4, 1000)}
    assert explain.rounded_to_total(exact, Decimal("0.01")) == {"zero": Decimal("0.00"), "x": Decimal("0.01"), "y": Decimal("0.00")}


@pytest.mark.parametrize("text", ["2026-13", "October", "2026-1", ""])
def test_a_month_that_is_not_one_is_refused(text):
    with pytest.raises(explain.UsageError, match="expected a month as YYYY-MM"):
        explain.checked_month(text)


def test_a_month_without_traffic_is_refused():
    messages = month_traffic("2026-06", 1)
    with pytest.raises(explain.UsageError, match=r"--against 2026-05: the traffic has no messages in that month .*2026-06 to 2026-06"):
        explain.explain(messages, "2026-06", card=steady_card())


def test_months_are_the_year_before_and_the_month_before():
    assert explain.previous_month("2026-01") == "2025-12"
    assert explain.previous_month("2026-10") == "2026-09"
    assert explain.year_before("2026-10") == "2025-10"


# --- the command line -------------------------------------------------------------------------------


def test_cli_writes_one_row_per_effect_and_the_total(tmp_path, capsys):
    out = tmp_path / "explain.csv"
    assert cli.main(["explain", SAMPLE, "--month", "2026-10", "--quiet", "-o", str(out)]) == 0
    written = pl.read_csv(out, schema_overrides={"cost_difference": pl.Decimal(38, 2)})
    assert written["effect"].to_list() == [*explain.EFFECTS, explain.TOTAL]
    assert written["against"].unique().to_list() == ["2026-09"]
    assert written["cost_difference"][:-1].sum() == written["cost_difference"][-1]
    err = capsys.readouterr().err
    assert "2026-10 cost" in err and "2026-09" in err and "rules" in err
    parquet = tmp_path / "explain.parquet"
    assert cli.main(["explain", SAMPLE, "--month", "2026-10", "--against", "2026-09", "-o", str(parquet)]) == 0
    assert pl.read_parquet(parquet).select("effect", "cost_difference").equals(written.select("effect", "cost_difference"))


@pytest.mark.parametrize(
    ("options", "says"),
    [
        (["--month", "2026-13"], "--month '2026-13': expected a month as YYYY-MM"),
        (["--month", "2026-10", "--against", "last"], "--against 'last': expected a month as YYYY-MM"),
        (["--month", "2030-01"], "--month 2030-01: the traffic has no messages in that month"),
        (["--month", "2026-10", "--against", "2026-10"], "--against 2026-10 is the month explained"),
    ],
)
def test_cli_bad_month_exits_2(tmp_path, capsys, options, says):
    out = tmp_path / "explain.csv"
    assert cli.main(["explain", SAMPLE, *options, "-o", str(out)]) == 2
    assert says in capsys.readouterr().err
    assert not out.exists()


# --- the entry object and the chart -------------------------------------------------------------------


def test_traffic_explains_and_charts_the_waterfall():
    import analytics as wa

    traffic = wa.load(SAMPLE)
    explained = traffic.explain("2026-10")
    assert traffic.explain("2026-10") is explained  # kept
    spec = traffic.chart.explanation("2026-10").to_dict()
    bars, labels = spec["layer"]
    assert bars["mark"]["type"] == "bar" and labels["mark"]["type"] == "text"
    assert bars["encoding"]["y"]["field"] == "start" and bars["encoding"]["y2"]["field"] == "end"
    assert bars["encoding"]["y"]["title"] == "Cost (USD)"
    assert spec["title"]["text"] == "Why the cost changed: 2026-10 against 2026-09"
    steps = [row["step"] for row in spec["datasets"][spec["data"]["name"]]]
    assert steps == ["2026-09", *[e for e in explain.EFFECTS if e != explain.CURRENCY], "2026-10"]
    rows = spec["datasets"][spec["data"]["name"]]
    assert rows[-2]["end"] == pytest.approx(float(rounded(explained.cost, 2)))  # the effects end at the month's cost
    assert rows[0]["end"] == pytest.approx(float(rounded(explained.cost_against, 2)))


def test_the_sentence_names_each_month_and_effect():
    from analytics.present import explain_text

    card = steady_card()
    messages = pl.concat([month_traffic("2026-09", 6), month_traffic("2026-10", 6)])
    explained = explain.explain(messages, "2026-10", settings=Settings(), card=card)
    text = explain_text.sentence(explained)
    assert text.startswith(f"2026-10 cost {money(explained.cost)} USD against {money(explained.cost_against)} USD in 2026-09: +")
    assert f"rules +{explained.total} (pmp-2025 → pmp-2026-10)" in text
    assert "The rules raised it most." in text


def test_the_report_section_says_why_not_without_the_month_before():
    from analytics.present import explain_text, report

    traffic = report.load_traffic(month="2026-01")  # the sample's first month
    shown = explain_text.for_report(traffic, traffic.settings)
    assert not shown
    assert shown.reason == "No comparison with 2025-12: the input has no messages in that month."


def test_the_report_text_compares_with_the_month_before_and_a_year_earlier(tmp_path):
    from types import SimpleNamespace

    from analytics.present import explain_text, report
    from analytics.terms.ratecards import write_card

    write_card(steady_card(), tmp_path / "card.csv")
    settings = Settings(rate_card=str(tmp_path / "card.csv"))
    messages = pl.concat([month_traffic("2025-10", 2), month_traffic("2026-09", 3), month_traffic("2026-10", 4)])
    traffic = SimpleNamespace(period=report.period("2026-10"), messages=messages, charges=engine.bill(messages, settings))
    previous = explain_text.for_report(traffic, settings)
    text = explain_text.report_text(traffic, settings, previous)
    first, second = text.split("\n\n")
    assert first == explain_text.sentence(previous)
    assert second.startswith(f"2026-10 cost {money(previous.cost)} USD against ")
    assert " in 2025-10: " in second
    assert "rules +" in second  # pmp-2025 then, pmp-2026-10 now
    without = SimpleNamespace(period=traffic.period, messages=messages.filter(pl.col("timestamp") >= dt.datetime(2026, 1, 1, tzinfo=dt.UTC)))
    without.charges = engine.bill(without.messages, settings)
    assert explain_text.report_text(without, settings, previous).endswith("\n\nNo comparison with 2025-10: the input has no messages in that month.")


def test_a_billable_charge_without_a_rate_stops_unless_reported_unpriced():
    card = steady_card().filter(~((pl.col("market") == "Italy") & (pl.col("category") == "authentication")))
    messages = pl.concat([month_traffic("2026-05", 2), month_traffic("2026-06", 3)])
    with pytest.raises(pricing.MissingRateError, match="no rate for USD Italy authentication"):
        explain.explain(messages, "2026-06", settings=Settings(), card=card)
    explained = explain.explain(messages, "2026-06", settings=Settings(report_unpriced=True), card=card)
    assert explained.unpriced == (2, 3)
    from analytics.present import explain_text

    assert "left out of the cost: 2 in 2026-05, 3 in 2026-06" in explain_text.format_explanation(explained)
    assert explained.cost_against == 2 * rate(card, "marketing")  # the unpriced charges are left out, not priced at zero silently
    assert_adds_up(explained)


def test_months_are_those_of_the_waba_time_zone():
    card = steady_card()
    late = Traffic("2026-09-30T22:30:00Z", user_id="393339999999", id_prefix="late-").template(0, "marketing")  # 00:30 on 1 October in Rome
    messages = pl.concat([month_traffic("2026-09", 2), month_traffic("2026-10", 2), late.frame()])
    in_utc = explain.explain(messages, "2026-10", settings=Settings(), card=card)
    in_rome = explain.explain(messages, "2026-10", settings=Settings(timezone="Europe/Rome"), card=card)
    assert in_rome.charges == (in_utc.charges[0] - 1, in_utc.charges[1] + 1)
    assert in_rome.cost - in_utc.cost == rate(card, "marketing")
    assert in_rome.cost == actual_cost(messages, "2026-10", Settings(timezone="Europe/Rome"), card)
    assert_adds_up(in_rome)
