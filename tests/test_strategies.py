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


# --- service_by_business_agent and service_by_own_ai (issue 17) --------------------------------------


def service_traffic() -> pl.DataFrame:
    """h0 user; replies m0002 (h1), m0006 (h5); a reaction m0003, a utility template m0004, a failed
    reply m0005, a reply already Meta Business Agent's m0007, and a group reply m0008."""
    frame = Traffic(start=START).user(0).text(1).reaction(2).template(3, "utility").text(4).text(5).text(6).text(7).frame()
    return frame.with_columns(
        status=pl.when(pl.col("message_id") == "m0005").then(pl.lit("failed")).otherwise("status"),
        sent_by=pl.when(pl.col("message_id") == "m0007").then(pl.lit("meta_business_agent")).otherwise("sent_by"),
        tokens=pl.when(pl.col("message_id") == "m0007").then(pl.lit(21_000, dtype=pl.Int64)).otherwise("tokens"),
        group_id=pl.when(pl.col("message_id") == "m0008").then(pl.lit("G1")).otherwise("group_id"),
    )


def test_service_replies_answered_by_meta_business_agent_carry_its_name_and_tokens():
    result = strategies.service_by_business_agent(service_traffic().lazy()).collect().sort("message_id")
    assert changed(result.lazy()) == [("m0002", "converted"), ("m0006", "converted")]
    assert result.select("message_id", "sent_by", "tokens").rows() == [
        ("m0001", None, None),
        ("m0002", "meta_business_agent", 25_000),  # the design's default, the top of Meta's 20,000-25,000
        ("m0003", None, None),
        ("m0004", None, None),
        ("m0005", None, None),
        ("m0006", "meta_business_agent", 25_000),
        ("m0007", "meta_business_agent", 21_000),
        ("m0008", None, None),
    ]
    given = strategies.service_by_business_agent(service_traffic().lazy(), tokens_per_message=20_000).collect()
    assert given.filter(pl.col("change") == "converted")["tokens"].to_list() == [20_000, 20_000]


def test_the_agents_own_cost_is_on_its_own_line_only_when_given():
    # September 2025: before 2026-08-01 the engine bills the agent's replies as service (free under
    # pmp-2025), so Meta's bill does not move; the business's own 0.004 a reply is a line of its own.
    messages = Traffic(start=START).user(0).text(1).text(2).frame()
    comparison = run(messages, strategies=[{"name": "service_by_business_agent", "unit_cost": 0.004}])
    line = comparison.table.filter(pl.col("scenario") == "s", pl.col("category") == "meta_business_agent_own_cost")
    assert line.select("month", "charges", "billable_charges", "cost").rows() == [("2025-09", 2, 2, Decimal("0.008"))]
    assert difference(comparison) == (2, Decimal("0.008"))
    without = run(messages, strategies=[{"name": "service_by_business_agent"}])
    assert "meta_business_agent_own_cost" not in without.table["category"].to_list()
    assert comparison.results[1].effects[0].explain() == "2 service replies (100%) were answered by Meta Business Agent at 25,000 tokens each"


def test_own_ai_leaves_metas_bill_and_prices_its_replies_on_their_own_line():
    messages = merge(
        Traffic(start=START, id_prefix="a").user(0).text(1).text(2).reaction(3),
        Traffic(start=START, user_id="491520000001", user_country="DE", id_prefix="b").template(1, "utility").user(2).text(3),
    )
    result = strategies.service_by_own_ai(messages.lazy(), unit_cost=Decimal("0.002")).collect()
    assert changed(result.lazy()) == [("a0002", "by_own_ai"), ("a0003", "by_own_ai"), ("b0003", "by_own_ai")]
    assert result.drop("change").equals(messages)  # the messages Meta sees are the same
    comparison = run(messages, strategies=[{"name": "service_by_own_ai", "unit_cost": 0.002}])
    rows = comparison.table.filter(pl.col("scenario") == "s")
    assert rows.filter(pl.col("category") != "own_ai")["cost_difference"].to_list() == [Decimal(0)] * (rows.height - 1)
    assert rows.filter(pl.col("category") == "own_ai").select("billable_charges", "cost").rows() == [(3, Decimal("0.006"))]
    changed_traffic = scenarios.apply_steps(
        messages, scenarios.scenario("s", strategies=[{"name": "service_by_own_ai", "unit_cost": 0.002}]).steps, Settings()
    )
    assert changed_traffic.changed_keys.height == 0  # Meta bills the same messages: nothing to bill again


def test_people_write_what_meta_business_agent_wrote_and_own_ai_then_takes_those_replies_too():
    result = strategies.service_by_people(service_traffic().lazy()).collect().sort("message_id")
    assert changed(result.lazy()) == [("m0007", "converted")]
    assert result.filter(pl.col("message_id") == "m0007").select("sent_by", "tokens").row(0) == (None, None)
    own = changed(strategies.service_by_own_ai(result.drop("change").lazy(), unit_cost=Decimal("0.01")))
    assert own == [("m0002", "by_own_ai"), ("m0006", "by_own_ai"), ("m0007", "by_own_ai")]


def test_own_ai_and_the_agent_choose_the_same_replies_for_the_same_share_and_seed():
    traffic = Traffic(start=START).user(0)
    for i in range(300):
        traffic.text(1 + i / 100)
    frame = traffic.frame().lazy()
    agent = changed(strategies.service_by_business_agent(frame, share=0.4, seed=3))
    own = changed(strategies.service_by_own_ai(frame, share=0.4, unit_cost=Decimal("0.01"), seed=3))
    assert [m for m, _ in agent] == [m for m, _ in own] and 80 <= len(agent) <= 160


# --- groups_instead_of_broadcast (issue 17) ---------------------------------------------------------


def broadcast(users: int, hour: float = 10, prefix: str = "u") -> list[Traffic]:
    return [Traffic(start=START, user_id=f"39333{i:07d}", id_prefix=f"{prefix}{i}-").template(hour + i / 60, "marketing") for i in range(users)]


def test_a_campaign_goes_to_groups_of_n_users_with_the_same_deliveries():
    # 10 users get the same campaign between 10:00 and 10:09; groups of 4: 4 + 4 + 2 participants.
    users = broadcast(10)
    users[3].failed_template(11, "utility")  # not marketing: untouched
    messages = merge(*users).with_columns(status=pl.when(pl.col("message_id") == "u5-0001").then(pl.lit("failed")).otherwise("status"))
    result = strategies.groups_instead_of_broadcast(messages.lazy(), size=4).collect()
    grouped = result.filter(pl.col("change") == "converted")
    assert grouped.height == 10 and result.height == messages.height
    sizes = grouped.group_by("group_id").agg(n=pl.len(), messages=pl.col("message_id").n_unique(), at=pl.col("timestamp").n_unique())
    assert sorted(sizes["n"].to_list()) == [2, 4, 4]
    assert sizes["messages"].to_list() == [1, 1, 1] and sizes["at"].to_list() == [1, 1, 1]  # one group message, sent once
    for row in grouped.iter_rows(named=True):  # the group message is its first copy's, at its time
        first = messages.filter(pl.col("message_id") == row["group_id"].removesuffix("~group"))
        assert row["message_id"] == row["group_id"].replace("~group", "~to-group")
        assert row["timestamp"] == first["timestamp"].item()
    assert grouped.filter(pl.col("user_id") == "393330000005")["status"].to_list() == ["failed"]  # a failed participant stays failed
    assert sorted(grouped["user_id"].to_list()) == sorted(messages.filter(pl.col("template_category") == "marketing")["user_id"].to_list())
    assert result.filter(pl.col("template_category") == "utility")["change"].to_list() == [None]


def test_campaigns_are_split_by_day_template_and_round_and_groups_are_deterministic():
    day1 = broadcast(3)
    day2 = broadcast(3, hour=34, prefix="v")
    again = [Traffic(start=START, user_id="393330000000", id_prefix="w").template(12, "marketing")]  # user 0 twice on day 1
    messages = merge(*day1, *day2, *again)
    result = strategies.groups_instead_of_broadcast(messages.lazy(), size=8, seed=1).collect()
    groups = result.group_by("group_id").agg(pl.col("user_id").sort()).sort("group_id")
    assert sorted(groups["user_id"].to_list()) == [
        ["393330000000"],  # the second round of day 1
        ["393330000000", "393330000001", "393330000002"],
        ["393330000000", "393330000001", "393330000002"],
    ]
    assert result.filter(pl.col("message_id").str.ends_with("~to-group")).select("message_id", "user_id").is_unique().all()
    assert strategies.groups_instead_of_broadcast(messages.lazy(), size=8, seed=1).collect().equals(result)


def test_groups_take_a_seeded_share_of_users_and_leave_group_rows_and_other_templates():
    messages = merge(*broadcast(200))
    result = strategies.groups_instead_of_broadcast(messages.lazy(), size=5, share=0.5, seed=4).collect()
    assert 70 <= result.filter(pl.col("change") == "converted").height <= 130
    already = messages.with_columns(group_id=pl.lit("G"), template_category=pl.lit("marketing"))
    assert strategies.groups_instead_of_broadcast(already.lazy()).collect()["change"].null_count() == already.height


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
        "service_by_business_agent",
        "service_by_own_ai",
        "service_by_people",
        "groups_instead_of_broadcast",
    }
    required = {
        "cap_marketing": {"per_user": 2},
        "more_entry_points": {"share": 0.5},
        "channel_shift": {"share": 0.5, "unit_cost": 0.05},
        "service_by_own_ai": {"unit_cost": 0.01},
    }
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
        ("service_by_own_ai", {}, "strategy service_by_own_ai needs unit_cost"),
        ("service_by_business_agent", {"tokens_per_message": 0}, "tokens_per_message = 0 must be more than 0"),
        ("service_by_business_agent", {"unit_cost": -1}, "unit_cost = -1 must be 0 or more"),
        ("groups_instead_of_broadcast", {"size": 9}, "size = 9 must be between 1 and 8 (Meta's maximum of group participants)"),
        ("groups_instead_of_broadcast", {"timezone": "Mars/Base"}, "Mars/Base"),
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


def test_the_members_of_a_group_are_billed_again_together():
    # Keys a and b share group G1, b and c share G2: changing a re-bills all three (a group's window
    # is opened by any participant's message); d is in no group with them.
    rows = [("B1", "a", "G1"), ("B1", "b", "G1"), ("B1", "b", "G2"), ("B1", "c", "G2"), ("B1", "d", "G3"), ("B2", "a", "G1")]
    traffic = pl.DataFrame(rows, schema={"business_phone": pl.String, "user_id": pl.String, "group_id": pl.String}, orient="row")
    changed_keys = pl.DataFrame({"business_phone": ["B1"], "user_id": ["a"]})
    assert scenarios.with_group_members(changed_keys, traffic).sort("user_id").rows() == [("B1", "a"), ("B1", "b"), ("B1", "c")]
    assert scenarios.with_group_members(changed_keys, traffic.filter(pl.col("group_id") == "G3")).rows() == [("B1", "a")]
