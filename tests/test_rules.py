"""The edges of billing-rules.md §1-5, run on every engine (the `bill` fixture).

Rows are (category, pricing_type, billable, started_at, expires_at, message_count,
opening_message_id, rule_set) unless a test selects other columns.
"""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest
from traffic import Traffic, instant, merge, rows

from analytics.settings import Settings
from analytics.terms import rules
from analytics.terms.rules import AuthenticationInternational

CBP_2022_DAY = "2022-09-05T08:00:00Z"
CBP_2023_DAY = "2024-03-04T08:00:00Z"
PMP_2025_DAY = "2025-09-01T08:00:00Z"
PMP_2026_DAY = "2026-11-02T08:00:00Z"

ONE_MICROSECOND = dt.timedelta(microseconds=1)
HOUR = dt.timedelta(hours=1)
ROME = Settings(timezone="Europe/Rome")
SAO_PAULO = Settings(timezone="America/Sao_Paulo")


def pricing_types(charges: pl.DataFrame) -> dict[str, int]:
    """How many charges of each pricing type."""
    counts = charges.group_by("pricing_type").len()
    return dict(zip(counts["pricing_type"], counts["len"], strict=True))


# --- §2 Windows are half-open: exact 24 h and 72 h boundaries ---------------------------------------


def test_cbp_2023_template_one_microsecond_before_24_hours_is_absorbed(bill):
    t = Traffic(CBP_2023_DAY)
    t.template(0, "utility").template(24 * HOUR - ONE_MICROSECOND, "utility")

    assert rows(bill(t.frame())) == [("utility", "regular", True, t.at(0), t.at(24), 2, "m0001", "cbp-2023")]


def test_cbp_2022_message_at_exactly_24_hours_opens_a_new_conversation(bill):
    t = Traffic(CBP_2022_DAY)
    t.template(0, "marketing").text(24 * HOUR - ONE_MICROSECOND).template(24, "marketing")

    assert rows(bill(t.frame())) == [
        ("business_initiated", "free_tier", False, t.at(0), t.at(24), 2, "m0001", "cbp-2022"),
        ("business_initiated", "free_tier", False, t.at(24), t.at(48), 1, "m0003", "cbp-2022"),
    ]


def test_fep_window_contains_72_hours_minus_one_microsecond_not_72_hours(bill):
    t = Traffic(CBP_2023_DAY)
    t.user(0, entry_point="ctwa").template(1, "marketing")
    t.template(73 * HOUR - ONE_MICROSECOND, "marketing").template(73, "marketing")

    assert rows(bill(t.frame())) == [
        ("referral_conversion", "free_entry_point", False, t.at(1), t.at(73), 2, "m0002", "cbp-2023"),
        ("marketing", "regular", True, t.at(73), t.at(97), 1, "m0004", "cbp-2023"),
    ]


def test_fep_offer_taken_one_microsecond_before_24_hours(bill):
    t = Traffic(CBP_2023_DAY)
    t.user(0, entry_point="ctwa").template(24 * HOUR - ONE_MICROSECOND, "marketing")
    opened = t.at(24 * HOUR - ONE_MICROSECOND)

    assert rows(bill(t.frame())) == [
        ("referral_conversion", "free_entry_point", False, opened, opened + 72 * HOUR, 1, "m0002", "cbp-2023"),
    ]


def test_fep_offer_at_exactly_24_hours_is_not_taken(bill):
    t = Traffic(CBP_2023_DAY)
    t.user(0, entry_point="ctwa").template(24, "marketing")

    assert rows(bill(t.frame())) == [("marketing", "regular", True, t.at(24), t.at(48), 1, "m0002", "cbp-2023")]


def test_fep_window_length_follows_the_config(bill):
    t = Traffic(CBP_2023_DAY)
    t.user(0, entry_point="ctwa").template(1, "marketing").template(25, "marketing")

    assert rows(bill(t.frame(), Settings(fep_window=24 * HOUR))) == [
        ("referral_conversion", "free_entry_point", False, t.at(1), t.at(25), 1, "m0002", "cbp-2023"),
        ("marketing", "regular", True, t.at(25), t.at(49), 1, "m0003", "cbp-2023"),
    ]


# --- §2 Order: equal timestamps --------------------------------------------------------------------


def test_inbound_before_outbound_at_equal_timestamps(bill):
    t = Traffic(CBP_2022_DAY)
    t.text(0, message_id="a-reply").user(0, message_id="b-question")  # the reply's id sorts first

    assert rows(bill(t.frame())) == [("user_initiated", "free_tier", False, t.at(0), t.at(24), 1, "a-reply", "cbp-2022")]


def test_entry_point_message_at_the_same_instant_as_the_reply_makes_an_offer_it_takes(bill):
    t = Traffic(CBP_2023_DAY)
    t.template(0, "utility", message_id="a-reply").user(0, entry_point="page_cta", message_id="b-ad-click")

    assert rows(bill(t.frame())) == [
        ("referral_conversion", "free_entry_point", False, t.at(0), t.at(72), 1, "a-reply", "cbp-2023"),
    ]


@pytest.mark.parametrize(
    ("template_id", "text_id", "expected"),
    [
        # template first: the marketing conversation absorbs the text
        ("a", "b", [("marketing", "regular", 2, "a")]),
        # text first: a service conversation, then the template opens its own
        ("b", "a", [("service", "free_tier", 1, "a"), ("marketing", "regular", 1, "b")]),
        # byte-wise, not case-insensitive: "Z" (0x5A) sorts before "a" (0x61), so the text comes first
        ("a", "Z", [("service", "free_tier", 1, "Z"), ("marketing", "regular", 1, "a")]),
    ],
)
def test_template_and_text_at_the_same_second_open_one_or_two_conversations(bill, template_id, text_id, expected):
    t = Traffic(CBP_2023_DAY)
    t.user(0).template(1, "marketing", message_id=template_id).text(1, message_id=text_id)
    columns = ("category", "pricing_type", "message_count", "opening_message_id")

    assert rows(bill(t.frame()), columns) == expected


# --- §2 Delivery: failed messages ------------------------------------------------------------------


def test_failed_messages_open_nothing_and_are_not_counted(bill):
    t = Traffic(CBP_2023_DAY)
    t.failed_template(0, "marketing").template(1, "marketing").failed_template(2, "marketing")

    assert rows(bill(t.frame())) == [("marketing", "regular", True, t.at(1), t.at(25), 1, "m0002", "cbp-2023")]


def test_failed_message_does_not_consume_the_fep_offer(bill):
    t = Traffic(CBP_2023_DAY)
    t.user(0, entry_point="ctwa").failed_template(1, "marketing").template(2, "marketing")

    assert rows(bill(t.frame())) == [
        ("referral_conversion", "free_entry_point", False, t.at(2), t.at(74), 1, "m0003", "cbp-2023"),
    ]


def test_failed_message_under_pmp_makes_no_row(bill):
    t = Traffic(PMP_2025_DAY)
    t.failed_template(0, "marketing").template(1, "utility")

    assert rows(bill(t.frame())) == [("utility", "regular", True, t.at(1), None, 1, "m0002", "pmp-2025")]


def test_sent_status_is_billed_as_delivered(bill):
    t = Traffic(PMP_2025_DAY)
    t.template(0, "marketing")
    frame = t.frame().with_columns(status=pl.lit("sent"))

    assert rows(bill(frame)) == [("marketing", "regular", True, t.at(0), None, 1, "m0001", "pmp-2025")]


# --- §3 cbp-2022 -----------------------------------------------------------------------------------


def test_cbp_2022_user_initiated_inside_the_customer_service_window_business_initiated_outside(bill):
    t = Traffic(CBP_2022_DAY)
    t.template(0, "marketing")  # no CSW: business-initiated
    t.user(30).template(40, "utility")  # CSW open until h54: user-initiated, a template too
    t.user(100).text(124)  # CSW ends at exactly h124: business-initiated

    assert rows(bill(t.frame())) == [
        ("business_initiated", "free_tier", False, t.at(0), t.at(24), 1, "m0001", "cbp-2022"),
        ("user_initiated", "free_tier", False, t.at(40), t.at(64), 1, "m0003", "cbp-2022"),
        ("business_initiated", "free_tier", False, t.at(124), t.at(148), 1, "m0005", "cbp-2022"),
    ]


def test_cbp_2022_one_slot_absorbs_templates_of_every_category(bill):
    t = Traffic(CBP_2022_DAY)
    t.template(0, "marketing").template(1, "utility").template(2, "authentication").user(3).text(4)

    assert rows(bill(t.frame())) == [
        ("business_initiated", "free_tier", False, t.at(0), t.at(24), 4, "m0001", "cbp-2022"),
    ]


# --- §4 cbp-2023 -----------------------------------------------------------------------------------


def test_cbp_2023_non_template_is_absorbed_by_the_earliest_opened_conversation(bill):
    t = Traffic(CBP_2023_DAY)
    t.template(0, "marketing").template(1, "utility").user(2).text(3)

    assert rows(bill(t.frame())) == [
        ("marketing", "regular", True, t.at(0), t.at(24), 2, "m0001", "cbp-2023"),
        ("utility", "regular", True, t.at(1), t.at(25), 1, "m0002", "cbp-2023"),
    ]


def test_cbp_2023_non_template_goes_to_the_earliest_still_open_conversation(bill):
    t = Traffic(CBP_2023_DAY)
    t.template(0, "marketing").template(10, "utility").user(20).text(25)  # marketing expired at h24

    assert rows(bill(t.frame())) == [
        ("marketing", "regular", True, t.at(0), t.at(24), 1, "m0001", "cbp-2023"),
        ("utility", "regular", True, t.at(10), t.at(34), 2, "m0002", "cbp-2023"),
    ]


def test_cbp_2023_template_opens_its_category_while_a_service_conversation_is_open(bill):
    t = Traffic(CBP_2023_DAY)
    t.user(0).text(1).template(2, "utility").text(3).reaction(4)

    assert rows(bill(t.frame())) == [
        ("service", "free_tier", False, t.at(1), t.at(25), 3, "m0002", "cbp-2023"),
        ("utility", "regular", True, t.at(2), t.at(26), 1, "m0003", "cbp-2023"),
    ]


def test_marketing_lite_is_billed_as_marketing(bill):
    cbp = Traffic(CBP_2023_DAY, user_id="390000000001", id_prefix="c")
    cbp.template(0, "marketing_lite").template(1, "marketing")
    pmp = Traffic(PMP_2025_DAY, user_id="390000000002", id_prefix="p")
    pmp.template(0, "marketing_lite")

    assert rows(bill(merge(cbp, pmp))) == [
        ("marketing", "regular", True, cbp.at(0), cbp.at(24), 2, "c0001", "cbp-2023"),
        ("marketing", "regular", True, pmp.at(0), None, 1, "p0001", "pmp-2025"),
    ]


def test_service_conversations_free_from_2024_11_01(bill):
    before = Traffic("2024-10-31T22:00:00Z", user_id="390000000001", id_prefix="a")
    before.user(0).text(1)  # 2024-10-31 23:00 UTC
    after = Traffic("2024-11-01T00:00:00Z", user_id="390000000002", id_prefix="b")
    after.user(0).text(0)

    assert rows(bill(merge(before, after))) == [
        ("service", "free_tier", False, before.at(1), before.at(25), 1, "a0002", "cbp-2023"),
        ("service", "free_customer_service", False, after.at(0), after.at(24), 1, "b0002", "cbp-2023"),
    ]


def test_service_change_follows_the_local_date(bill):
    t = Traffic("2024-10-31T23:30:00Z")  # 2024-11-01 00:30 in Rome
    t.user(0).text(0)

    assert rows(bill(t.frame()), ("pricing_type",)) == [("free_tier",)]
    assert rows(bill(t.frame(), ROME), ("pricing_type",)) == [("free_customer_service",)]


# --- §2 Free entry point ---------------------------------------------------------------------------


def test_fep_conversation_closes_open_conversations_and_none_opens_while_it_lasts(bill):
    t = Traffic(CBP_2023_DAY)
    t.template(0, "marketing").template(1, "utility")
    t.user(2, entry_point="ctwa").text(3)  # any message type takes up the offer; closes both at h3
    t.template(10, "marketing").template(20, "authentication").text(30)  # inside the FEP window
    t.template(76, "marketing")  # the FEP window ended at h75

    assert rows(bill(t.frame())) == [
        ("marketing", "regular", True, t.at(0), t.at(3), 1, "m0001", "cbp-2023"),
        ("utility", "regular", True, t.at(1), t.at(3), 1, "m0002", "cbp-2023"),
        ("referral_conversion", "free_entry_point", False, t.at(3), t.at(75), 4, "m0004", "cbp-2023"),
        ("marketing", "regular", True, t.at(76), t.at(100), 1, "m0008", "cbp-2023"),
    ]


def test_cbp_2022_fep_conversation_closes_the_open_conversation(bill):
    t = Traffic(CBP_2022_DAY)
    t.template(0, "marketing").user(2, entry_point="ctwa").text(3).text(4)

    assert rows(bill(t.frame())) == [
        ("business_initiated", "free_tier", False, t.at(0), t.at(3), 1, "m0001", "cbp-2022"),
        ("referral_conversion", "free_entry_point", False, t.at(3), t.at(75), 2, "m0003", "cbp-2022"),
    ]


def test_offer_taken_inside_an_open_fep_window_opens_nothing(bill):
    t = Traffic(CBP_2023_DAY)
    t.user(0, entry_point="ctwa").template(1, "marketing")  # FEP window h1-h73
    t.user(30, entry_point="ctwa").template(31, "marketing")  # takes the new offer, inside the window
    t.template(74, "marketing")  # no offer left: a paid conversation

    assert rows(bill(t.frame())) == [
        ("referral_conversion", "free_entry_point", False, t.at(1), t.at(73), 2, "m0002", "cbp-2023"),
        ("marketing", "regular", True, t.at(74), t.at(98), 1, "m0005", "cbp-2023"),
    ]


def test_later_entry_point_message_replaces_the_offer(bill):
    replaced = Traffic(CBP_2023_DAY, user_id="390000000001", id_prefix="a")
    replaced.user(0, entry_point="ctwa").user(20, entry_point="page_cta").template(40, "marketing")
    lapsed = Traffic(CBP_2023_DAY, user_id="390000000002", id_prefix="b")
    lapsed.user(0, entry_point="ctwa").user(20).template(40, "marketing")  # a plain message makes no offer

    assert rows(bill(merge(replaced, lapsed))) == [
        ("referral_conversion", "free_entry_point", False, replaced.at(40), replaced.at(112), 1, "a0003", "cbp-2023"),
        ("marketing", "regular", True, lapsed.at(40), lapsed.at(64), 1, "b0003", "cbp-2023"),
    ]


def test_offer_is_consumed_by_the_first_outbound_message_only(bill):
    t = Traffic(CBP_2023_DAY)
    t.template(0, "utility").user(1, entry_point="ctwa")
    t.template(80, "marketing")  # offer lapsed at h25: taken by nobody
    t.user(100, entry_point="ctwa").template(101, "marketing").template(102, "utility")

    assert rows(bill(t.frame())) == [
        ("utility", "regular", True, t.at(0), t.at(24), 1, "m0001", "cbp-2023"),
        ("marketing", "regular", True, t.at(80), t.at(101), 1, "m0003", "cbp-2023"),  # closed by the FEP
        ("referral_conversion", "free_entry_point", False, t.at(101), t.at(173), 2, "m0005", "cbp-2023"),
    ]


def test_pmp_fep_window_makes_one_free_row_per_message_with_its_own_category(bill):
    t = Traffic(PMP_2025_DAY)
    t.user(0, entry_point="ctwa").template(1, "marketing")  # FEP window h1-h73
    t.text(2).template(30, "authentication").template(40, "marketing_lite").reaction(50)
    t.template(73 * HOUR - ONE_MICROSECOND, "utility").template(73, "utility")  # CSW closed at h24

    assert rows(bill(t.frame())) == [
        ("marketing", "free_entry_point", False, t.at(1), None, 1, "m0002", "pmp-2025"),
        ("service", "free_entry_point", False, t.at(2), None, 1, "m0003", "pmp-2025"),
        ("authentication", "free_entry_point", False, t.at(30), None, 1, "m0004", "pmp-2025"),
        ("marketing", "free_entry_point", False, t.at(40), None, 1, "m0005", "pmp-2025"),
        ("service", "free_entry_point", False, t.at(50), None, 1, "m0006", "pmp-2025"),
        ("utility", "free_entry_point", False, t.at(73 * HOUR - ONE_MICROSECOND), None, 1, "m0007", "pmp-2025"),
        ("utility", "regular", True, t.at(73), None, 1, "m0008", "pmp-2025"),
    ]


def test_cbp_fep_conversation_absorbs_pmp_era_messages(bill):
    t = Traffic("2025-06-29T12:00:00Z")
    t.user(0, entry_point="ctwa").template(1, "utility")  # cbp-2023 FEP, until 2025-07-02 13:00
    t.template(40, "marketing").text(60)  # pmp-2025 era, inside the window
    t.template(73, "marketing")  # window over: a pmp-2025 row

    assert rows(bill(t.frame())) == [
        ("referral_conversion", "free_entry_point", False, t.at(1), t.at(73), 3, "m0002", "cbp-2023"),
        ("marketing", "regular", True, t.at(73), None, 1, "m0005", "pmp-2025"),
    ]


def test_pmp_fep_window_closes_a_carried_over_conversation(bill):
    t = Traffic("2025-06-30T20:00:00Z")
    t.template(0, "marketing")  # cbp-2023 marketing, open until 2025-07-01 20:00
    t.user(6, entry_point="ctwa").template(7, "marketing").text(8)  # pmp-2025 FEP window from 03:00

    assert rows(bill(t.frame())) == [
        ("marketing", "regular", True, t.at(0), t.at(7), 1, "m0001", "cbp-2023"),
        ("marketing", "free_entry_point", False, t.at(7), None, 1, "m0003", "pmp-2025"),
        ("service", "free_entry_point", False, t.at(8), None, 1, "m0004", "pmp-2025"),
    ]


def test_conversation_closed_by_a_pmp_fep_window_absorbs_nothing_after_it(bill):
    t = Traffic("2025-06-30T20:00:00Z")
    t.template(0, "marketing")  # cbp-2023 marketing, would be open until 2025-07-01 20:00
    t.user(6, entry_point="ctwa").template(7, "utility")  # pmp-2025 FEP window of 1 h from 03:00
    t.template(9, "marketing")  # after the FEP window: the closed conversation does not take it

    assert rows(bill(t.frame(), Settings(fep_window=HOUR))) == [
        ("marketing", "regular", True, t.at(0), t.at(7), 1, "m0001", "cbp-2023"),
        ("utility", "free_entry_point", False, t.at(7), None, 1, "m0003", "pmp-2025"),
        ("marketing", "regular", True, t.at(9), None, 1, "m0004", "pmp-2025"),
    ]


# --- §1 Rule sets in the WABA time zone ------------------------------------------------------------


def test_rule_set_switch_at_local_midnight_in_rome(bill):
    t = Traffic("2025-06-30T22:30:00Z")  # 2025-07-01 00:30 in Rome
    t.template(0, "marketing")

    assert rows(bill(t.frame())) == [("marketing", "regular", True, t.at(0), t.at(24), 1, "m0001", "cbp-2023")]
    assert rows(bill(t.frame(), ROME)) == [("marketing", "regular", True, t.at(0), None, 1, "m0001", "pmp-2025")]


def test_rule_set_switch_at_local_midnight_in_sao_paulo(bill):
    t = Traffic("2025-07-01T02:00:00Z")  # 2025-06-30 23:00 in São Paulo
    t.template(0, "marketing")

    assert rows(bill(t.frame())) == [("marketing", "regular", True, t.at(0), None, 1, "m0001", "pmp-2025")]
    assert rows(bill(t.frame(), SAO_PAULO)) == [
        ("marketing", "regular", True, t.at(0), t.at(24), 1, "m0001", "cbp-2023"),
    ]


def test_time_zone_per_waba(bill):
    rome = Traffic("2025-06-30T22:30:00Z", business_phone="B-IT", waba_id="W-IT", id_prefix="i")
    rome.template(0, "marketing")
    utc = Traffic("2025-06-30T22:30:00Z", business_phone="B-UK", waba_id="W-UK", id_prefix="u")
    utc.template(0, "marketing")
    config = Settings(waba_timezones={"W-IT": "Europe/Rome"})

    assert rows(bill(merge(rome, utc), config), ("business_phone", "waba_id", "rule_set")) == [
        ("B-IT", "W-IT", "pmp-2025"),
        ("B-UK", "W-UK", "cbp-2023"),
    ]


def test_message_before_2022_02_01_raises_naming_it(bill):
    t = Traffic("2022-01-31T23:30:00Z")
    t.user(0, message_id="wamid.too-early").template(1, "utility")

    with pytest.raises(ValueError, match="wamid.too-early"):
        bill(t.frame())
    # In Rome it is already 2022-02-01: cbp-2022.
    assert rows(bill(t.frame(), ROME), ("category", "rule_set")) == [("user_initiated", "cbp-2022")]


def test_rules_override_bills_cbp_2022_traffic_under_pmp_2025(bill):
    t = Traffic(CBP_2022_DAY)
    t.user(0).text(1).template(2, "utility").template(30, "marketing")

    assert rows(bill(t.frame())) == [
        ("user_initiated", "free_tier", False, t.at(1), t.at(25), 2, "m0002", "cbp-2022"),
        ("business_initiated", "free_tier", False, t.at(30), t.at(54), 1, "m0004", "cbp-2022"),
    ]
    assert rows(bill(t.frame(), Settings(rules="pmp-2025"))) == [
        ("service", "free_customer_service", False, t.at(1), None, 1, "m0002", "pmp-2025"),
        ("utility", "free_customer_service", False, t.at(2), None, 1, "m0003", "pmp-2025"),
        ("marketing", "regular", True, t.at(30), None, 1, "m0004", "pmp-2025"),
    ]
    pricing_models = bill(t.frame(), Settings(rules="pmp-2025"))["pricing_model"].unique().to_list()
    assert pricing_models == ["PMP"]


# --- §5 Crossover ----------------------------------------------------------------------------------


def test_cbp_2022_conversation_absorbs_cbp_2023_era_messages_until_it_expires(bill):
    t = Traffic("2023-05-31T12:00:00Z")
    t.template(0, "marketing")  # cbp-2022, open until 2023-06-01 12:00
    t.template(13, "utility").user(14).text(15).template(17, "marketing")  # cbp-2023 era, absorbed
    t.template(24, "utility")  # expired: a cbp-2023 utility conversation

    assert rows(bill(t.frame())) == [
        ("business_initiated", "free_tier", False, t.at(0), t.at(24), 4, "m0001", "cbp-2022"),
        ("utility", "regular", True, t.at(24), t.at(48), 1, "m0006", "cbp-2023"),
    ]


def test_cbp_2023_conversation_absorbs_pmp_era_messages_of_its_category_only(bill):
    t = Traffic("2025-06-30T18:00:00Z")
    t.template(0, "marketing")  # cbp-2023 marketing, open until 2025-07-01 18:00
    t.template(8, "marketing")  # pmp-2025 era marketing template: absorbed
    t.template(9, "utility")  # pmp-2025 era utility template: not its category, a PMP row (no CSW)
    t.user(10).text(11)  # non-template: absorbed by the open marketing conversation
    t.template(12, "utility")  # a PMP row, free inside the CSW
    t.template(24, "marketing")  # the conversation has expired

    assert rows(bill(t.frame())) == [
        ("marketing", "regular", True, t.at(0), t.at(24), 3, "m0001", "cbp-2023"),
        ("utility", "regular", True, t.at(9), None, 1, "m0003", "pmp-2025"),
        ("utility", "free_customer_service", False, t.at(12), None, 1, "m0006", "pmp-2025"),
        ("marketing", "regular", True, t.at(24), None, 1, "m0007", "pmp-2025"),
    ]


# --- §5 pmp-2025 and pmp-2026-10 -------------------------------------------------------------------


def test_pmp_2025_and_pmp_2026_10_price_each_kind_of_message(bill):
    old = Traffic(PMP_2025_DAY, user_id="390000000001", id_prefix="a")
    new = Traffic(PMP_2026_DAY, user_id="390000000002", id_prefix="b")
    for t in (old, new):
        t.user(0).template(1, "utility").text(2).reaction(3).template(4, "authentication").template(5, "marketing")
    columns = ("category", "pricing_type", "billable", "rule_set")

    assert rows(bill(merge(old, new)), columns) == [
        ("utility", "free_customer_service", False, "pmp-2025"),
        ("service", "free_customer_service", False, "pmp-2025"),
        ("service", "free_customer_service", False, "pmp-2025"),
        ("authentication", "regular", True, "pmp-2025"),
        ("marketing", "regular", True, "pmp-2025"),
        ("utility", "regular", True, "pmp-2026-10"),
        ("service", "free_tier", False, "pmp-2026-10"),
        ("service", "free_customer_service", False, "pmp-2026-10"),
        ("authentication", "regular", True, "pmp-2026-10"),
        ("marketing", "regular", True, "pmp-2026-10"),
    ]


# --- §3.3, §4.4, §5 Free tiers ---------------------------------------------------------------------


def _service_conversations(count: int, start: str, *, waba_id: str = "W1", prefix: str = "u") -> list[Traffic]:
    """`count` users of one WABA, each opening one service conversation a minute after the last."""
    keys = []
    for n in range(count):
        # user ids run against time, so the order of opening, not of user id, decides the free tier
        t = Traffic(start, business_phone="B1", user_id=f"39{count - n:010d}", waba_id=waba_id, id_prefix=f"{prefix}{n:04d}-")
        t.user(n / 60).text(n / 60 + 0.5)
        keys.append(t)
    return keys


def test_cbp_2023_free_tier_ends_after_1000_service_conversations_per_waba_month(bill):
    assert rules.rule_set("cbp-2023").free_tier_of("service") == rules.FreeTier("service", 1_000, "waba", ("service",))
    march = _service_conversations(1_001, "2024-03-04T08:00:00Z")
    other_waba = _service_conversations(1, "2024-03-20T08:00:00Z", waba_id="W2", prefix="w")
    april = _service_conversations(1, "2024-04-01T08:00:00Z", prefix="a")

    charges = bill(merge(*march, *other_waba, *april))

    assert pricing_types(charges) == {"free_tier": 1_002, "regular": 1}
    regular = charges.filter(pl.col("pricing_type") == "regular")
    assert rows(regular, ("waba_id", "user_id", "started_at", "billable")) == [
        ("W1", "39" + "1".zfill(10), march[-1].at(1_000 / 60 + 0.5), True),
    ]


def test_free_tier_at_equal_opening_times_goes_by_business_phone_then_user_id(bill):
    keys = []
    for n in range(1_001):
        t = Traffic("2024-03-04T08:00:00Z", user_id=f"39{n:010d}", id_prefix=f"k{n:04d}-")
        t.user(0).text(1)
        keys.append(t)

    charges = bill(merge(*keys))

    assert rows(charges.filter(pl.col("pricing_type") == "regular"), ("user_id",)) == [("39" + "1000".zfill(10),)]


def test_cbp_2022_free_tier_counts_both_types_but_not_fep_conversations(bill):
    assert rules.rule_set("cbp-2022").free_tier_of("business_initiated").size == 1_000
    fep = Traffic("2022-09-01T00:00:00Z", user_id="000", id_prefix="f")
    fep.user(0, entry_point="ctwa").template(1, "utility")
    keys = [fep]
    for n in range(1_001):
        t = Traffic("2022-09-05T00:00:00Z", user_id=f"39{n:010d}", id_prefix=f"k{n:04d}-")
        if n % 2:
            t.user(n / 60)  # every other one is user-initiated
        t.template(n / 60, "marketing")
        keys.append(t)

    charges = bill(merge(*keys))

    assert pricing_types(charges) == {"free_entry_point": 1, "free_tier": 1_000, "regular": 1}
    regular = charges.filter(pl.col("pricing_type") == "regular")
    assert rows(regular, ("category", "user_id", "billable")) == [("business_initiated", "39" + "1000".zfill(10), True)]


def test_pmp_2026_10_free_tier_is_1000_service_messages_per_business_phone_month_reactions_not_counted(bill):
    assert rules.rule_set("pmp-2026-10").free_tier_of("service") == rules.FreeTier("service", 1_000, "business_phone", ("service", "group_service"))
    busy = Traffic(PMP_2026_DAY, business_phone="B1")
    busy.user(0)
    for n in range(1_001):
        busy.text(n / 2).reaction(n / 2 + 0.25)
    busy.template(600, "utility")
    other_phone = Traffic(PMP_2026_DAY, business_phone="B2", id_prefix="o")
    other_phone.text(600)
    next_month = Traffic("2026-12-01T00:00:00Z", business_phone="B1", user_id="390000000009", id_prefix="n")
    next_month.text(0)

    charges = bill(merge(busy, other_phone, next_month))
    service = charges.filter(pl.col("category") == "service")
    reactions = service.filter(pl.col("opening_message_id").is_in([r["message_id"] for r in busy.rows if r["message_type"] == "reaction"]))

    assert pricing_types(reactions) == {"free_customer_service": 1_001}
    assert pricing_types(service) == {"free_customer_service": 1_001, "free_tier": 1_002, "regular": 1}
    assert rows(service.filter(pl.col("pricing_type") == "regular"), ("business_phone", "started_at", "billable")) == [
        ("B1", busy.at(500), True),
    ]


def test_free_tier_months_follow_the_waba_time_zone(bill):
    t = Traffic("2026-11-02T00:00:00Z")
    t.user(0)
    for n in range(1_000):
        t.text(n / 2)  # 1,000 service messages in November, everywhere
    late = instant("2026-12-01T02:00:00Z")  # 2026-11-30 23:00 in São Paulo
    t.text(late - t.start).text(late - t.start + 2 * HOUR)  # 2026-12-01 01:00 in São Paulo

    def last_two(config: Settings) -> list[tuple[object, ...]]:
        return rows(bill(t.frame(), config), ("started_at", "pricing_type"))[-2:]

    assert last_two(Settings()) == [(late, "free_tier"), (late + 2 * HOUR, "free_tier")]
    assert last_two(SAO_PAULO) == [(late, "regular"), (late + 2 * HOUR, "free_tier")]


# --- §4.5 Authentication-international -------------------------------------------------------------


AUTH_INTERNATIONAL = Settings(
    authentication_international=AuthenticationInternational(
        home_country="IN",
        start_dates={"ID": dt.date(2024, 6, 1), "IN": dt.date(2024, 7, 1)},
    )
)


def test_authentication_international_from_the_start_date_never_for_the_home_country(bill):
    before = Traffic("2024-05-31T23:00:00Z", user_id="620000000001", user_country="ID", id_prefix="a")
    before.template(0, "authentication").template(2, "authentication")  # decided when it opened
    after = Traffic("2024-06-01T00:00:00Z", user_id="620000000002", user_country="ID", id_prefix="b")
    after.template(0, "authentication").template(1, "authentication")  # absorbed: same slot
    home = Traffic("2024-09-02T00:00:00Z", user_id="910000000001", user_country="IN", id_prefix="c")
    home.template(0, "authentication")
    unlisted = Traffic("2024-09-02T00:00:00Z", user_id="390000000001", user_country="IT", id_prefix="d")
    unlisted.template(0, "authentication")
    pmp = Traffic(PMP_2025_DAY, user_id="620000000003", user_country="ID", id_prefix="e")
    pmp.template(0, "authentication").user(1, entry_point="ctwa").template(2, "authentication")
    columns = ("user_id", "category", "pricing_type", "message_count")

    assert rows(bill(merge(before, after, home, unlisted, pmp), AUTH_INTERNATIONAL), columns) == [
        ("390000000001", "authentication", "regular", 1),
        ("620000000001", "authentication", "regular", 2),
        ("620000000002", "authentication_international", "regular", 2),
        ("620000000003", "authentication_international", "regular", 1),
        ("620000000003", "authentication_international", "free_entry_point", 1),
        ("910000000001", "authentication", "regular", 1),
    ]
    assert "authentication_international" not in bill(merge(after, pmp))["category"].to_list()


def test_authentication_international_start_follows_the_waba_time_zone(bill):
    t = Traffic("2024-05-31T22:30:00Z", user_country="ID")  # 2024-06-01 00:30 in Rome
    t.template(0, "authentication")
    in_rome = Settings(timezone="Europe/Rome", authentication_international=AUTH_INTERNATIONAL.authentication_international)

    assert rows(bill(t.frame(), AUTH_INTERNATIONAL), ("category",)) == [("authentication",)]
    assert rows(bill(t.frame(), in_rome), ("category",)) == [("authentication_international",)]


# --- §2 Market -------------------------------------------------------------------------------------


def test_market_per_charge_follows_the_dated_region_table(bill):
    before = Traffic("2025-09-30T12:00:00Z", user_id="263000000001", user_country="ZW", id_prefix="a")
    before.template(0, "marketing")
    after = Traffic("2025-10-01T12:00:00Z", user_id="263000000002", user_country="ZW", id_prefix="b")
    after.template(0, "marketing")
    italy = Traffic(PMP_2025_DAY, user_id="393330000001", user_country="IT", id_prefix="c")
    italy.template(0, "marketing")
    unknown = Traffic(PMP_2025_DAY, user_id="US.1349120865", user_country=None, id_prefix="d")
    unknown.template(0, "marketing")

    assert rows(bill(merge(before, after, italy, unknown)), ("user_id", "market")) == [
        ("263000000001", "Other"),
        ("263000000002", "Rest of Africa"),
        ("393330000001", "Italy"),
        ("US.1349120865", "Unknown"),
    ]


def test_market_date_is_the_local_date_of_the_charge(bill):
    t = Traffic("2025-09-30T22:30:00Z", user_country="ZW")  # 2025-10-01 00:30 in Rome
    t.template(0, "marketing")

    assert rows(bill(t.frame()), ("market",)) == [("Other",)]
    assert rows(bill(t.frame(), ROME), ("market",)) == [("Rest of Africa",)]


def test_cbp_conversation_market_and_waba_come_from_its_opening_message(bill):
    t = Traffic(CBP_2023_DAY, waba_id="W9", user_country="ZW")
    t.template(0, "utility").template(1, "utility")
    frame = t.frame().with_columns(user_country=pl.when(pl.col("message_id") == "m0002").then(pl.lit("IT")).otherwise(pl.col("user_country")))

    assert rows(bill(frame), ("waba_id", "market", "message_count")) == [("W9", "Other", 2)]


# --- §2 Key --------------------------------------------------------------------------------------


def test_keys_are_independent(bill):
    asking = Traffic(PMP_2025_DAY, business_phone="B1", user_id="390000000001", id_prefix="a")
    asking.user(0).template(1, "utility")
    other_user = Traffic(PMP_2025_DAY, business_phone="B1", user_id="390000000002", id_prefix="b")
    other_user.template(1, "utility")  # the first user's CSW is not this user's
    other_phone = Traffic(PMP_2025_DAY, business_phone="B2", user_id="390000000001", id_prefix="c")
    other_phone.template(1, "utility")

    assert rows(bill(merge(asking, other_user, other_phone)), ("business_phone", "user_id", "pricing_type")) == [
        ("B1", "390000000001", "free_customer_service"),
        ("B1", "390000000002", "regular"),
        ("B2", "390000000001", "regular"),
    ]


def test_no_messages_no_charges(bill):
    charges = bill(Traffic().frame())

    assert charges.height == 0
    assert list(charges.columns) == [
        "rule_set", "pricing_model", "category", "pricing_type", "billable", "started_at", "expires_at",
        "business_phone", "waba_id", "user_id", "market", "message_count", "opening_message_id",
        "group_id", "tokens", "template_name",  # the optional extensions of 2026, null here
    ]  # fmt: skip
