"""The worked examples of billing-rules.md §6, one named test each, run on every engine.

Times are hours from the first message; one key; UTC; no FEP unless said. Rows are
(category, pricing_type, billable, started_at, expires_at, message_count, opening_message_id, rule_set).
"""

from __future__ import annotations

from traffic import Traffic, rows

CBP_2022_DAY = "2022-09-05T08:00:00Z"
CBP_2023_DAY = "2024-03-04T08:00:00Z"  # before 2024-11-01: service conversations count toward the free tier
PMP_2025_DAY = "2025-09-01T08:00:00Z"


def test_example_1_cbp_2023_marketing_and_utility_conversations(bill):
    t = Traffic(CBP_2023_DAY)
    t.template(0, "marketing").template(4, "utility").template(10, "utility")

    assert rows(bill(t.frame())) == [
        ("marketing", "regular", True, t.at(0), t.at(24), 1, "m0001", "cbp-2023"),
        ("utility", "regular", True, t.at(4), t.at(28), 2, "m0002", "cbp-2023"),
    ]


def test_example_2_cbp_2023_service_conversation_after_marketing_expires(bill):
    t = Traffic(CBP_2023_DAY)
    t.template(0, "marketing").user(4).text(5).text(25).text(26)

    assert rows(bill(t.frame())) == [
        ("marketing", "regular", True, t.at(0), t.at(24), 2, "m0001", "cbp-2023"),
        ("service", "free_tier", False, t.at(25), t.at(49), 2, "m0004", "cbp-2023"),
    ]


def test_example_3_cbp_2023_free_entry_point_conversation(bill):
    t = Traffic(CBP_2023_DAY)
    t.user(0, entry_point="ctwa").template(12, "utility").template(20, "marketing")
    t.template(80, "marketing").template(85, "marketing")

    assert rows(bill(t.frame())) == [
        ("referral_conversion", "free_entry_point", False, t.at(12), t.at(84), 3, "m0002", "cbp-2023"),
        ("marketing", "regular", True, t.at(85), t.at(109), 1, "m0005", "cbp-2023"),
    ]


def test_example_4_pmp_2025_one_row_per_outbound_message(bill):
    t = Traffic(PMP_2025_DAY)
    t.template(0, "marketing").user(2).text(3).template(4, "utility").template(30, "utility")

    assert rows(bill(t.frame())) == [
        ("marketing", "regular", True, t.at(0), None, 1, "m0001", "pmp-2025"),
        ("service", "free_customer_service", False, t.at(3), None, 1, "m0003", "pmp-2025"),
        ("utility", "free_customer_service", False, t.at(4), None, 1, "m0004", "pmp-2025"),
        ("utility", "regular", True, t.at(30), None, 1, "m0005", "pmp-2025"),
    ]


def test_example_5_pmp_2025_marketing_and_two_utilities_without_user_message(bill):
    t = Traffic(PMP_2025_DAY)
    t.template(0, "marketing").template(1, "utility").template(2, "utility")

    assert rows(bill(t.frame())) == [
        ("marketing", "regular", True, t.at(0), None, 1, "m0001", "pmp-2025"),
        ("utility", "regular", True, t.at(1), None, 1, "m0002", "pmp-2025"),
        ("utility", "regular", True, t.at(2), None, 1, "m0003", "pmp-2025"),
    ]


def test_example_5_pmp_2025_utilities_inside_customer_service_window_are_free(bill):
    t = Traffic(PMP_2025_DAY)
    t.template(0, "marketing").user(1).template(2, "utility").template(3, "utility")

    assert rows(bill(t.frame())) == [
        ("marketing", "regular", True, t.at(0), None, 1, "m0001", "pmp-2025"),
        ("utility", "free_customer_service", False, t.at(2), None, 1, "m0003", "pmp-2025"),
        ("utility", "free_customer_service", False, t.at(3), None, 1, "m0004", "pmp-2025"),
    ]


def test_example_6_utility_conversation_carried_over_into_pmp_2025(bill):
    t = Traffic("2025-06-30T20:00:00Z")
    t.template(0, "utility")  # 2025-06-30 20:00, cbp-2023
    t.template(14, "utility")  # 2025-07-01 10:00, pmp-2025, inside the open utility conversation
    t.template(25, "utility")  # 2025-07-01 21:00, the conversation expired at 20:00, no CSW

    assert t.at(14).isoformat() == "2025-07-01T10:00:00+00:00"
    assert rows(bill(t.frame())) == [
        ("utility", "regular", True, t.at(0), t.at(24), 2, "m0001", "cbp-2023"),
        ("utility", "regular", True, t.at(25), None, 1, "m0003", "pmp-2025"),
    ]


def test_example_7_cbp_2022_user_and_business_initiated(bill):
    t = Traffic(CBP_2022_DAY)
    t.user(0).text(1).template(30, "marketing").user(31).text(32)

    assert rows(bill(t.frame())) == [
        ("user_initiated", "free_tier", False, t.at(1), t.at(25), 1, "m0002", "cbp-2022"),
        ("business_initiated", "free_tier", False, t.at(30), t.at(54), 2, "m0003", "cbp-2022"),
    ]


def test_example_8_template_at_exactly_24_hours_opens_a_new_conversation(bill):
    t = Traffic(CBP_2023_DAY)
    t.template(0, "utility").template(24, "utility")

    assert rows(bill(t.frame())) == [
        ("utility", "regular", True, t.at(0), t.at(24), 1, "m0001", "cbp-2023"),
        ("utility", "regular", True, t.at(24), t.at(48), 1, "m0002", "cbp-2023"),
    ]
