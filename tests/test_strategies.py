"""Each strategy on a small traffic whose effect is computed by hand (analytics/whatif/strategies.py).

Traffic is September 2025 (`pmp-2025`) unless said; costs use tests/fixtures/strategies/card.csv
(made up: Italy marketing 0.05, utility 0.02, authentication 0.03, service 0.01; Germany 0.10,
0.04, 0.06, 0.01). Hours are from 2025-09-01 00:00 UTC.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
from traffic import Traffic, merge

from analytics.bill import charges
from analytics.settings import Settings
from analytics.whatif import scenarios, strategies
from analytics.whatif.scenarios import BASELINE, Scenario

CARD = str(Path(__file__).parent / "fixtures" / "strategies" / "card.csv")
START = "2025-09-01T00:00:00Z"
PRICING = Settings(rate_card=CARD)


def run(messages: pl.DataFrame, **settings: object) -> scenarios.Comparison:
    """The baseline and one scenario `s` with `settings` (a [scenario.s] table), priced with the test card."""
    return scenarios.compare(messages, [Scenario(BASELINE), scenarios.scenario("s", **settings)], settings=PRICING)


def difference(comparison: scenarios.Comparison, category: str | None = None) -> tuple[int, Decimal]:
    """Billable charges and cost of scenario `s` minus the baseline's, for one category or all."""
    rows = comparison.table.filter(pl.col("scenario") == "s")
    if category is not None:
        rows = rows.filter(pl.col("category") == category)
    return int(rows["billable_charges_difference"].sum()), Decimal(rows["cost_difference"].sum())


def changed(frame: pl.LazyFrame) -> list[tuple[object, ...]]:
    """(message_id, change) of the rows a strategy touched, by message id."""
    return frame.filter(pl.col("change").is_not_null()).select("message_id", "change").sort("message_id").collect().rows()


# --- utility_into_window ---------------------------------------------------------------------------


def test_a_utility_template_outside_the_window_waits_for_the_users_next_message():
    # h0 user; h30 utility template (window closed at h24); h32 user writes: 2 h <= 4 h, so the
    # template goes out at h32, inside the window the user opens: free under pmp-2025.
    traffic = Traffic(start=START).user(0).template(30, "utility").user(32)
    result = strategies.utility_into_window(traffic.frame().lazy(), tolerance_hours=4).collect()
    assert result.filter(pl.col("message_id") == "m0002").select("timestamp", "change").row(0) == (traffic.at(32), "moved")
    comparison = run(traffic.frame(), strategies=[{"name": "utility_into_window", "tolerance_hours": 4}])
    assert difference(comparison, "utility") == (-1, Decimal("-0.02"))  # one billable utility charge at Italy's 0.02
    assert comparison.results[1].effects[0].messages == {"moved": 1}


def test_utility_into_window_leaves_what_it_cannot_move():
    keys = [
        # the user writes 5 h later: beyond the 4 h tolerance, sent as before
        Traffic(start=START, user_id="393330000001", id_prefix="a").user(0).template(30, "utility").user(35),
        # exactly 4 h later: within the tolerance (at most 4 h)
        Traffic(start=START, user_id="393330000002", id_prefix="b").user(0).template(30, "utility").user(34),
        # inside the window already (h5 < h24), and a user message at the same instant as a template
        # (§2 Order: the user's comes first, so the window is open): nothing to move
        Traffic(start=START, user_id="393330000003", id_prefix="c").user(0).template(5, "utility").user(40).template(40, "utility"),
        # marketing and failed utility templates are not this strategy's
        Traffic(start=START, user_id="393330000004", id_prefix="d").template(30, "marketing").failed_template(31, "utility").user(32),
    ]
    result = strategies.utility_into_window(merge(*keys).lazy(), tolerance_hours=4)
    assert changed(result) == [("b0002", "moved")]


# --- templates_to_free_form ------------------------------------------------------------------------


def test_templates_inside_the_window_become_free_form_messages():
    # h0 user; h2 utility and h3 marketing inside the window; h30 marketing outside it.
    traffic = Traffic(start=START).user(0).template(2, "utility").template(3, "marketing").template(30, "marketing")
    converted = strategies.templates_to_free_form(traffic.frame().lazy(), categories=["marketing"]).collect()
    assert converted.filter(pl.col("change") == "converted").select("message_id", "message_type", "template_category").rows() == [
        ("m0003", "text", None)
    ]
    # pmp-2025: the h3 marketing template (0.05) becomes a free service message.
    comparison = run(traffic.frame(), strategies=[{"name": "templates_to_free_form", "categories": ["marketing"]}])
    assert difference(comparison) == (-1, Decimal("-0.05"))
    assert difference(comparison, "service")[0] == 0  # the reply is a charge row, but free


def test_free_form_utility_saves_nothing_under_pmp_2025_and_its_rate_under_pmp_2026_10():
    # Utility inside the window is already free under pmp-2025; under pmp-2026-10 it is regular
    # (0.02) while the reply falls in the 1,000 free service messages of the month.
    traffic = Traffic(start=START).user(0).template(2, "utility")
    utility_as_replies = [{"name": "templates_to_free_form", "categories": ["utility"]}]
    assert difference(run(traffic.frame(), strategies=utility_as_replies)) == (0, Decimal(0))
    comparison = scenarios.compare(
        traffic.frame(),
        [
            scenarios.scenario(BASELINE, rules="pmp-2026-10"),
            scenarios.scenario("s", rules="pmp-2026-10", strategies=utility_as_replies),
        ],
        settings=PRICING,
    )
    assert difference(comparison) == (-1, Decimal("-0.02"))


def test_templates_to_free_form_converts_a_seeded_share():
    traffic = Traffic(start=START).user(0)
    for i in range(200):
        traffic.template(1 + i / 100, "utility")
    half = strategies.templates_to_free_form(traffic.frame().lazy(), share=0.5, seed=3)
    converted = len(changed(half))
    assert 80 <= converted <= 120  # a seeded coin per message
    assert changed(strategies.templates_to_free_form(traffic.frame().lazy(), share=0.5, seed=3)) == changed(half)


# --- cap_marketing -------------------------------------------------------------------------------


def test_marketing_beyond_the_cap_is_not_sent():
    # Five marketing templates in September (one marketing_lite), two in October; cap 3 a month:
    # the 4th and 5th of September go (2 × 0.05), October is under the cap.
    traffic = Traffic(start=START)
    for day in range(5):
        traffic.template(24 * day + 10, "marketing_lite" if day == 1 else "marketing")
    traffic.template(24 * 30 + 10, "marketing").template(24 * 31 + 10, "marketing")
    result = strategies.cap_marketing(traffic.frame().lazy(), per_user=3, period="month")
    assert changed(result) == [("m0004", "dropped"), ("m0005", "dropped")]
    assert strategies.sent(result).collect().height == 5
    comparison = run(traffic.frame(), strategies=[{"name": "cap_marketing", "per_user": 3}])
    assert difference(comparison) == (-2, Decimal("-0.10"))
    assert comparison.results[1].effects[0].messages == {"dropped": 2}


def test_the_cap_counts_a_user_across_business_numbers_and_calendar_weeks():
    # 2025-09-01 is a Monday. Per week, cap 2: B1 sends Mon and Tue, B2 Wed (3rd: dropped) and the
    # next Monday (a new week: sent).
    b1 = Traffic(start=START, business_phone="B1", id_prefix="a").template(10, "marketing").template(34, "marketing")
    b2 = Traffic(start=START, business_phone="B2", id_prefix="b").template(58, "marketing").template(24 * 7 + 10, "marketing")
    result = strategies.cap_marketing(merge(b1, b2).lazy(), per_user=2, period="week")
    assert changed(result) == [("b0001", "dropped")]


# --- more_entry_points -----------------------------------------------------------------------------


def test_sessions_that_start_from_an_ad_open_free_entry_point_windows():
    # h0 user (a session start), h1 reply, h10 user (the same session), h30 marketing, h40 user (a
    # new session: 30 h after h10), h41 reply, h60 utility. With every session from an ad, the h1
    # reply takes up the h0 offer and opens a 72 h free window (to h73): the h30 marketing template
    # (0.05) becomes free; the h41 reply opens nothing new (§2), and the h60 utility template was
    # free already (inside the window h40 opened). Saving: 0.05.
    traffic = Traffic(start=START).user(0).text(1).user(10).template(30, "marketing").user(40).text(41).template(60, "utility")
    result = strategies.more_entry_points(traffic.frame().lazy(), share=1.0)
    assert changed(result) == [("m0001", "converted"), ("m0005", "converted")]
    assert result.filter(pl.col("change") == "converted").select("entry_point").collect()["entry_point"].to_list() == ["ctwa"] * 2
    assert difference(run(traffic.frame(), strategies=[{"name": "more_entry_points", "share": 1.0}])) == (-1, Decimal("-0.05"))


def test_more_entry_points_keeps_existing_entry_points_and_draws_a_seeded_share():
    already = Traffic(start=START, user_id="39333000000", id_prefix="x").user(0, entry_point="page_cta")
    assert changed(strategies.more_entry_points(already.frame().lazy(), share=1.0)) == []
    many = merge(*[Traffic(start=START, user_id=f"39333{i:07d}", id_prefix=f"u{i}-").user(0) for i in range(300)])
    picked = changed(strategies.more_entry_points(many.lazy(), share=0.2, seed=1))
    assert 40 <= len(picked) <= 80
    assert changed(strategies.more_entry_points(many.lazy(), share=0.2, seed=1)) == picked


# --- growth --------------------------------------------------------------------------------------


def test_growth_copies_and_drops_whole_users():
    # Three users: mostly marketing (two templates), utility only, and a support session.
    # marketing × 2 copies the first user once; utility × 0 drops the second.
    marketing = Traffic(start=START, user_id="393330000001", id_prefix="a").template(10, "marketing").template(50, "marketing")
    utility = Traffic(start=START, user_id="393330000002", id_prefix="b").template(10, "utility")
    support = Traffic(start=START, user_id="393330000003", id_prefix="c").user(0).text(1)
    messages = merge(marketing, utility, support)
    result = strategies.growth(messages.lazy(), factors={"marketing": 2.0, "utility": 0.0}).collect()
    added = result.filter(pl.col("change") == "added").sort("message_id")
    assert added.select("message_id", "user_id", "user_country", "timestamp").rows() == [
        ("a0001~g1", "393330000001~g1", "IT", marketing.at(10)),
        ("a0002~g1", "393330000001~g1", "IT", marketing.at(50)),
    ]
    assert result.filter(pl.col("change") == "dropped")["message_id"].to_list() == ["b0001"]
    comparison = run(messages, growth={"marketing": 2, "utility": 0})
    assert difference(comparison, "marketing") == (2, Decimal("0.10"))  # two more at 0.05
    assert difference(comparison, "utility") == (-1, Decimal("-0.02"))  # no CSW: regular, 0.02
    effect = comparison.results[1].effects[0]
    assert (effect.messages, effect.users) == ({"added": 2, "dropped": 1}, {"added": 1, "dropped": 1})


def test_growth_by_market_and_a_fractional_factor():
    # Germany × 2 copies the German user (a marketing template at Germany's 0.10).
    italy = Traffic(start=START, user_id="393330000001", id_prefix="a").template(10, "marketing")
    germany = Traffic(start=START, user_id="491510000001", user_country="DE", id_prefix="b").template(10, "marketing")
    assert difference(run(merge(italy, germany), growth={"markets": {"Germany": 2}})) == (1, Decimal("0.10"))
    # × 1.5 over 400 marketing users: a seeded half of them get a copy.
    many = merge(*[Traffic(start=START, user_id=f"39333{i:07d}", id_prefix=f"u{i}-").template(10, "marketing") for i in range(400)])
    grown = strategies.growth(many.lazy(), factors={"marketing": 1.5}, seed=2).collect()
    assert 160 <= grown.filter(pl.col("change") == "added").height <= 240
    assert grown["message_id"].is_unique().all()


# --- channel_shift -------------------------------------------------------------------------------


def test_authentication_moved_to_sms_is_priced_on_its_own_line():
    # Three delivered one-time passwords and a failed one; all delivered ones go by SMS at 0.045.
    traffic = (
        Traffic(start=START)
        .template(10, "authentication")
        .template(11, "authentication")
        .template(12, "authentication")
        .failed_template(13, "authentication")
        .template(14, "marketing")
    )
    result = strategies.channel_shift(traffic.frame().lazy(), share=1.0, unit_cost=Decimal("0.045"))
    assert changed(result) == [("m0001", "other_channel"), ("m0002", "other_channel"), ("m0003", "other_channel")]
    comparison = run(traffic.frame(), strategies=[{"name": "channel_shift", "share": 1.0, "unit_cost": 0.045}])
    assert difference(comparison, "authentication") == (-3, Decimal("-0.09"))  # 3 × 0.03 no longer on WhatsApp
    line = comparison.table.filter(pl.col("scenario") == "s", pl.col("category") == "authentication_other_channel")
    assert line.select("month", "charges", "billable_charges", "cost", "currency").rows() == [
        ("2025-09", 3, 3, Decimal("0.135"), "EUR")  # 3 × 0.045
    ]
    assert difference(comparison) == (0, Decimal("0.045"))  # 0.135 - 0.09


def test_channel_shift_moves_a_seeded_share():
    traffic = Traffic(start=START)
    for i in range(300):
        traffic.template(i / 10, "authentication")
    moved = changed(strategies.channel_shift(traffic.frame().lazy(), share=0.3, unit_cost=0.05, seed=5))
    assert 60 <= len(moved) <= 120


# --- Composition and the registry ------------------------------------------------------------------


def test_strategies_compose_and_a_later_one_does_not_see_what_an_earlier_one_dropped():
    # cap 1 drops the second marketing template; channel_shift then moves the OTP; converting
    # marketing to free form finds only the first marketing template (inside the window).
    traffic = Traffic(start=START).user(0).template(1, "marketing").template(2, "marketing").template(3, "authentication")
    result = (
        traffic.frame()
        .lazy()
        .pipe(strategies.cap_marketing, per_user=1)
        .pipe(strategies.channel_shift, share=1.0, unit_cost=0.05)
        .pipe(strategies.templates_to_free_form, categories=["marketing"])
    )
    assert changed(result) == [("m0002", "converted"), ("m0003", "dropped"), ("m0004", "other_channel")]
    assert strategies.sent(result).collect()["message_id"].sort().to_list() == ["m0001", "m0002"]


def test_every_issue_strategy_is_registered_with_a_docstring_and_an_explanation():
    assert set(strategies.STRATEGIES) == {
        "utility_into_window",
        "templates_to_free_form",
        "cap_marketing",
        "more_entry_points",
        "growth",
        "channel_shift",
    }
    required = {"cap_marketing": {"per_user": 2}, "more_entry_points": {"share": 0.5}, "channel_shift": {"share": 0.5, "unit_cost": 0.05}}
    for spec in strategies.STRATEGIES.values():
        assert "Business behaviour" in (spec.function.__doc__ or "") and "Assumptions" in (spec.function.__doc__ or "")
        _, params = strategies.build(spec.name, required.get(spec.name, {}))
        effect = strategies.StrategyEffect(spec.name, params, {k: 1 for k in strategies.CHANGE_KINDS}, {})
        assert effect.explain()  # every field its sentence names exists


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("nope", {}, "unknown strategy 'nope': expected one of utility_into_window, templates_to_free_form"),
        ("cap_marketing", {}, "strategy cap_marketing needs per_user"),
        ("cap_marketing", {"per_user": 2, "per": "day"}, "strategy cap_marketing has no parameter per: its parameters are per_user (int)"),
        ("cap_marketing", {"per_user": "4"}, "strategy cap_marketing: per_user = '4' is not a whole number"),
        ("cap_marketing", {"per_user": 4, "period": "year"}, "period = 'year': choose day, week, month"),
        ("more_entry_points", {"share": 1.5}, "share = 1.5 must be between 0 and 1"),
        ("templates_to_free_form", {"categories": ["service"]}, "categories = ['service']: choose among marketing"),
        ("growth", {"factors": {"sms": 2}}, "growth category 'sms': choose among marketing, utility, authentication, service"),
        ("growth", {"markets": {"Narnia": 2}}, "growth market 'Narnia' is not one of Meta's markets"),
        ("utility_into_window", {"tolerance_hours": 0}, "tolerance_hours = 0.0 must be more than 0"),
        ("channel_shift", {"share": 0.5}, "strategy channel_shift needs unit_cost"),
    ],
)
def test_bad_parameters_are_refused_with_what_is_expected(name, params, message):
    with pytest.raises(ValueError) as error:
        strategies.build(name, params)
    assert message in str(error.value)


def test_billing_only_the_changed_keys_gives_what_billing_everything_gives():
    # SharedWork re-bills the keys a strategy changed and reuses the others' charge candidates.
    keys = [
        Traffic(start=START, user_id=f"39333000000{i}", id_prefix=f"k{i}-").user(0).template(2, "marketing").template(30, "utility").user(31)
        for i in range(4)
    ]
    messages = merge(*keys)
    shared = scenarios.SharedWork(messages, Settings())
    shared.charges(None)
    item = scenarios.scenario("s", strategies=[{"name": "cap_marketing", "per_user": 0}, {"name": "utility_into_window"}])
    changed = scenarios.apply_steps(shared.messages, item.steps, shared.settings)
    assert changed.changed_keys.sort("user_id").equals(scenarios.changed_keys(shared.messages, changed.messages).sort("user_id"))
    incremental = shared.charges_of(changed.messages, changed.changed_keys, None)
    assert incremental.sort(incremental.columns).equals(charges.bill(changed.messages).sort(incremental.columns))
