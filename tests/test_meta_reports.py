"""analytics.reconcile.meta_reports: Meta's analytics responses and Gupshup events into tidy tables.

Third-party fixtures are read in place from ../shared/fixtures/meta (never copied into the project);
where a fixture is prose or code around JSON, the test extracts the JSON and says how. Other
payloads are written here with made-up values.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from decimal import Decimal

import polars as pl
import pytest
from meta_fixtures import FIXTURES, fenced_blocks, glific_billing_event, gupshup_general_purpose_ai

from analytics.core.errors import InputError
from analytics.read.webhooks import BILLING_SCHEMA, read_webhooks
from analytics.reconcile import meta_reports
from analytics.reconcile.meta_reports import (
    ANALYTICS_SCHEMA,
    GUPSHUP_BILLING_EVENT,
    GUPSHUP_MESSAGE_EVENT,
    PRICING_SCHEMA,
    WEBHOOK,
    gupshup_rows,
    read_analytics,
    read_reports,
    webhook_pricing,
)

UTC = dt.UTC


def at(seconds: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, UTC)


def rows_of(value: object, position: int = 1) -> list[dict]:
    rows, _ = gupshup_rows(value, source_file="events.json", source_row=position)
    return [{c: row.get(c) for c in PRICING_SCHEMA} for row in rows]


def pricing_row(**values: object) -> dict:
    """A full expected PRICING_SCHEMA row: every column not named is null."""
    assert set(values) <= set(PRICING_SCHEMA), set(values) - set(PRICING_SCHEMA)
    return {column: values.get(column) for column in PRICING_SCHEMA}


POINT_COLUMNS = (
    "granularity",
    "start",
    "end",
    "phone_number",
    "country",
    "category",
    "pricing_type",
    "direction",
    "tier",
    "tier_from",
    "tier_to",
    "volume",
    "cost",
    "currency",
    "source_row",
    "problem",
)


def points(frame: pl.DataFrame) -> list[dict]:
    return frame.select(POINT_COLUMNS).to_dicts()


def point(**values: object) -> dict:
    assert set(values) <= set(POINT_COLUMNS), set(values) - set(POINT_COLUMNS)
    return {column: values.get(column) for column in POINT_COLUMNS}


# --- Graph API analytics: Meta's documented responses ------------------------------------------------


def test_conversation_analytics_half_hour_by_category_and_type():
    path = FIXTURES / "meta_docs_analytics__conversation_analytics_half_hour_category_type.json"
    frame = read_analytics(path)
    assert frame.schema == pl.Schema(ANALYTICS_SCHEMA)
    assert set(frame["report"]) == {"conversation_analytics"} and set(frame["pricing_model"]) == {"CBP"}
    assert set(frame["source_file"]) == {str(path)}
    assert points(frame) == [
        point(
            granularity="HALF_HOUR",
            start=at(1685527200),
            end=at(1685529000),
            category="marketing",
            pricing_type="regular",
            volume=3,
            cost=Decimal("0.0432"),
            source_row=1,
        ),
        point(
            granularity="HALF_HOUR",
            start=at(1685529000),
            end=at(1685530800),
            category="authentication",
            pricing_type="regular",
            volume=2,
            cost=Decimal("0.0128"),
            source_row=2,
        ),
    ]


def test_conversation_analytics_monthly_with_every_dimension():
    frame = read_analytics(FIXTURES / "meta_docs_analytics__conversation_analytics_monthly_all_dimensions.json")
    # 2023-06-01 07:00 UTC to 2023-07-01 07:00 UTC: a month of the WABA's Pacific time
    month = dict(granularity="MONTHLY", start=at(1685602800), end=at(1688194800), phone_number="15550458206", country="US")
    assert points(frame)[0] == point(
        **month, category="authentication", pricing_type="regular", direction="unknown", volume=1558, cost=Decimal("15.58"), source_row=1
    )
    assert frame.select("pricing_type", "category", "volume", "cost").rows() == [
        ("regular", "authentication", 1558, Decimal("15.58")),
        ("regular", "marketing", 2636, Decimal("26.36")),
        ("regular", "service", 2238, Decimal("22.38")),
        ("regular", "utility", 1782, Decimal("17.82")),
        ("free_tier", "authentication", 1568, Decimal("15.68")),
        ("free_tier", "marketing", 2716, Decimal("27.16")),
        ("free_tier", "service", 2180, Decimal("21.80")),
        ("free_tier", "utility", 1465, Decimal("14.65")),
        ("free_entry_point", "service", 1433, Decimal("14.33")),
    ]
    assert frame["direction"].to_list() == ["unknown", *[None] * 8]  # only the first point names a direction
    assert frame["problem"].null_count() == frame.height


def test_conversation_analytics_without_the_outer_key():
    # One of Meta's examples is the bare {"data": [...]}: the conversation counts say which report it is.
    frame = read_analytics(FIXTURES / "meta_docs_analytics__conversation_analytics_monthly_by_type.json")
    february = dict(granularity="MONTHLY", start=at(1643702400), end=at(1646121600))
    assert points(frame) == [
        point(**february, pricing_type="regular", volume=8500, cost=Decimal("88.1010"), source_row=1),
        point(**february, pricing_type="free_tier", volume=1000, cost=Decimal("0"), source_row=2),
        point(**february, pricing_type="free_entry_point", volume=250, cost=Decimal("0"), source_row=3),
    ]
    assert set(frame["report"]) == {"conversation_analytics"}


def test_pricing_analytics_daily_with_tiers():
    frame = read_analytics(FIXTURES / "meta_docs_analytics__pricing_analytics_daily_tier.json")
    assert frame.height == 14 and set(frame["report"]) == {"pricing_analytics"} and set(frame["pricing_model"]) == {"PMP"}
    assert set(frame["granularity"]) == {"DAILY"}
    assert points(frame)[1] == point(
        granularity="DAILY",
        start=at(1749106800),
        end=at(1749193200),
        country="IN",
        category="authentication_international",
        pricing_type="regular",
        tier="0:750000",
        tier_from=0,
        tier_to=750000,
        volume=2,
        cost=Decimal("4.6"),
        source_row=2,
    )
    tiers = set(frame.select("tier", "tier_from", "tier_to").unique().rows())
    assert tiers == {(None, None, None), ("0:750000", 0, 750000), ("0:MAX", 0, None), ("0:2", 0, 2)}
    # tier is omitted for free messages (formats-research.md §1.3)
    free = frame.filter(pl.col("pricing_type") != "regular")
    assert free.height == 6 and free["tier"].null_count() == 6
    # Meta's MARKETING_LITE stays itself here; reconciliation compares it with marketing
    assert frame.filter(pl.col("category") == "marketing_lite").select("volume", "cost").row(0) == (1, Decimal("10"))
    assert frame.filter(pl.col("pricing_type") == "free_entry_point").select("category", "volume").row(0) == ("service", 6)


def test_cost_as_a_string_a_currency_and_the_documented_type_names():
    response = {
        "pricing_analytics": {
            "data": [
                {
                    "data_points": [
                        {
                            "start": "1767225600",
                            "end": 1767312000,
                            "country": "ae",
                            "pricing_category": "MARKETING",
                            "pricing_type": "REGULAR",
                            "volume": "3",
                            "cost": "0.1",
                        },
                        {"start": 1767225600, "end": 1767312000, "pricing_category": "SERVICE", "pricing_type": "FREE_ENTRY", "volume": 2},
                    ]
                }
            ]
        },
        "currency": "aed",
    }
    frame = read_analytics(response, source_file="made-up.json")
    assert points(frame) == [
        point(
            granularity="DAILY",
            start=at(1767225600),
            end=at(1767312000),
            country="AE",
            category="marketing",
            pricing_type="regular",
            volume=3,
            cost=Decimal("0.1"),
            currency="AED",
            source_row=1,
        ),
        # no cost at all: a WABA on a partner's credit line; FREE_ENTRY is the docs' name for FREE_ENTRY_POINT
        point(
            granularity="DAILY",
            start=at(1767225600),
            end=at(1767312000),
            category="service",
            pricing_type="free_entry_point",
            volume=2,
            currency="AED",
            source_row=2,
        ),
    ]


def test_unreadable_data_points_are_rows_with_a_problem():
    response = {
        "data": [
            {
                "data_points": [
                    {"start": 1767225600, "end": 1767312000, "volume": 1, "cost": "n/a"},
                    {"start": 1767225600, "volume": 1},
                    {"start": 1767225600, "end": 1767312000, "volume": None, "cost": 1},
                ]
            }
        ]
    }
    frame = read_analytics(response)
    assert frame["problem"].to_list() == [
        "cost 'n/a' is not a number",
        "data point without a readable start and end (Unix seconds)",
        "data point without a readable volume count (None)",
    ]


@pytest.mark.parametrize(
    ("hours", "given", "granularity"),
    [
        (0.5, None, "HALF_HOUR"),
        (24, None, "DAILY"),
        (23, None, "DAILY"),
        (25, None, "DAILY"),
        (28 * 24, None, "MONTHLY"),
        (31 * 24 - 1, None, "MONTHLY"),
        (7 * 24, None, None),
        (24, "DAY", "DAILY"),
        (24, "month", "MONTHLY"),
    ],
)
def test_granularity_from_the_response_or_the_length(hours, given, granularity):
    start = at(1767225600)
    assert meta_reports.granularity_of(start, start + dt.timedelta(hours=hours), given) == granularity


@pytest.mark.parametrize(
    ("fixture", "what"),
    [
        ("meta_docs_analytics__analytics_response.json", "message analytics"),
        ("meta_docs_analytics__template_analytics.json", "template_analytics"),
    ],
)
def test_analytics_without_billing_by_category_is_refused(fixture, what):
    with pytest.raises(InputError) as error:
        read_reports([FIXTURES / fixture])
    assert str(error.value).startswith(f"{FIXTURES / fixture}: is Meta's {what}")
    assert "request conversation_analytics (CBP, before 2025-07-01) or pricing_analytics (PMP)" in str(error.value)


def test_an_error_response_says_what_to_request(tmp_path):
    path = tmp_path / "costs.json"
    path.write_text(json.dumps({"error": {"message": "Cost not available", "type": "OAuthException", "code": 100}}))
    with pytest.raises(InputError) as error:
        read_reports([path])
    assert str(error.value) == (
        f"{path}: the file is an error response from Meta: Cost not available. "
        "WABAs on a partner's credit line get no cost: request metric_types without COST"
    )


def test_a_file_with_nothing_to_read(tmp_path):
    path = FIXTURES / "meta_docs_pricing__account_update_volume_tier.json"
    with pytest.raises(InputError) as error:
        read_reports([path])
    assert "holds no conversation_analytics or pricing_analytics response" in str(error.value)
    assert "(found: webhook changes of field 'account_update' (1))" in str(error.value)
    lenient = read_reports([path], strict=False)
    assert lenient.analytics.is_empty() and lenient.pricing.is_empty()
    assert lenient.skipped == {"webhook changes of field 'account_update'": 1}


def test_not_json_names_the_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"data": [')
    with pytest.raises(InputError, match=r"broken\.json: not valid JSON"):
        read_reports([path])


# --- Gupshup events ------------------------------------------------------------------------------------


def test_glific_v2_billing_event():
    assert rows_of(glific_billing_event()) == [
        pricing_row(
            meta_source=GUPSHUP_BILLING_EVENT,
            message_id="gBEGkZdhAzaXAgmpAw6G7Oc_XIg",
            time=dt.datetime(2022, 8, 24, 5, 37, 16, 533000, UTC),
            user_id="1234567851",
            pricing_model="CBP",
            category="marketing",
            pricing_type="regular",
            billable=True,
            conversation_id="c3dcdb2f4f227931248cc080c387e484",
            source_file="events.json",
            source_row=1,
        )
    ]


def test_gupshup_cbp_billing_event_as_documented_keeps_its_placeholders_as_a_problem():
    documented, _ = fenced_blocks("gupshup_docs__billing_events_cbp.txt")
    (row,) = rows_of(json.loads(documented))
    assert row["message_id"] == "59f8db90c37e-4408-90ab-cc54ef8246ad"
    assert row["conversation_id"] == "532b57b5f6e63595ccd74c6010e5c5c7"
    assert row["problem"] == (
        "unknown deduction model 'NBP/CBP/PMP' (expected CBP, PMP, NBP); billable 'true/false' is neither true nor false; "
        "unknown deduction type 'marketing/authentication/utility/service/FEP/FTC/marketing_lite'"
    )


def test_gupshup_mm_lite_billing_event():
    _, mm_lite = fenced_blocks("gupshup_docs__billing_events_cbp.txt")
    # The docs write `"billable": true/false`, which is not JSON: the test picks `true`.
    (row,) = rows_of(json.loads(mm_lite.replace("true/false", "true")))
    assert row == pricing_row(
        meta_source=GUPSHUP_BILLING_EVENT,
        message_id="ee1fdcfa-5a71-409f-8e5e-8b43c552a71a",
        time=dt.datetime(2025, 4, 5, 5, 39, 16, 261000, UTC),
        user_id="919108568600",
        pricing_model="PMP",
        category="marketing_lite",
        pricing_type="regular",
        billable=True,
        conversation_id="ce17b8adb8ddfe3700a7f86c3f952e78",
        source_file="events.json",
        source_row=1,
    )


@pytest.mark.parametrize(
    ("deductions", "expected"),
    [
        # The deduction types the CBP page lists, and the PMP ones.
        ({"model": "CBP", "type": "FEP", "billable": False}, ("CBP", "referral_conversion", "free_entry_point", False, [])),
        ({"model": "CBP", "type": "FTC", "conversationType": "service", "billable": "false"}, ("CBP", "service", "free_tier", False, [])),
        ({"model": "CBP", "type": "Marketing", "billable": "true"}, ("CBP", "marketing", "regular", True, [])),
        ({"model": "CBP", "type": "Marketing_Lite", "billable": True}, ("CBP", "marketing_lite", "regular", True, [])),
        ({"model": "CBP", "type": "Service", "billable": False}, ("CBP", "service", None, False, [])),
        ({"model": "PMP", "type": "regular", "category": "utility", "billable": True}, ("PMP", "utility", "regular", True, [])),
        (
            {"model": "PMP", "type": "free_customer_service", "category": "service", "billable": False},
            ("PMP", "service", "free_customer_service", False, []),
        ),
        (
            {"model": "PMP", "type": "free_entry_point", "category": "marketing", "billable": False},
            ("PMP", "marketing", "free_entry_point", False, []),
        ),
        ({"model": "nbp", "type": "regular", "category": "marketing"}, ("NBP", "marketing", "regular", None, [])),
        (
            {"model": "XYZ", "type": "???"},
            ("XYZ", None, None, None, ["unknown deduction model 'XYZ' (expected CBP, PMP, NBP)", "unknown deduction type '???'"]),
        ),
        ({"model": "PMP", "type": "regular"}, ("PMP", None, "regular", None, ["deduction without a category"])),
    ],
)
def test_gupshup_deductions_in_the_words_of_the_charges_table(deductions, expected):
    got = meta_reports.deduction(
        model=deductions.get("model"),
        kind=deductions.get("type"),
        category=deductions.get("category"),
        conversation_type=deductions.get("conversationType"),
        billable=deductions.get("billable"),
    )
    assert got == expected


def test_gupshup_pmp_billing_event_and_sent_message_event():
    # The page's examples put {{...}} around placeholder values, which is not JSON: the test removes the braces.
    billing, sent = (re.sub(r"\{\{(.*?)\}\}", r"\1", block) for block in fenced_blocks("gupshup_docs__pmp_events_billing_and_sent.txt"))
    assert rows_of(json.loads(billing)) == [
        pricing_row(
            meta_source=GUPSHUP_BILLING_EVENT,
            message_id="d04cc3a7-18f0-4571-831e-xxxxxxxx",
            time=dt.datetime(2025, 2, 12, 10, 1, 22, 884000, UTC),
            user_id="79507xxxxxxxx",
            pricing_model="PMP",
            category="marketing",
            pricing_type="regular",
            billable=True,
            source_file="events.json",
            source_row=1,
        )
    ]
    assert rows_of(json.loads(sent), 2) == [
        pricing_row(
            meta_source=GUPSHUP_MESSAGE_EVENT,
            message_id="d04cc3a7-18f0-4571-831e-xxxxxxxx",
            status="sent",
            time=at(1739354482),
            user_id="79507xxxxxxxx",
            pricing_model="PMP",
            category="service",
            pricing_type="regular",
            conversation_id="0f957b88cfb1558f6199exxxxxxxx",
            conversation_expires_at=at(1747048500),
            conversation_origin="marketing",
            source_file="events.json",
            source_row=2,
        )
    ]


WAMID_AI = "wamid.HBgMOTE4ODcxNjAxMjk3FQIAERgSMTdCRE111UyRkNDNDc0RUU4MjA4AA=="


def test_gupshup_v3_billing_event_in_meta_envelope(tmp_path):
    meta_status, v3_event = gupshup_general_purpose_ai()
    path = tmp_path / "stream.jsonl"
    path.write_text(json.dumps(meta_status) + "\n" + json.dumps(v3_event) + "\n")
    reports = read_reports([path])
    assert reports.analytics.is_empty()
    assert reports.pricing.to_dicts() == [
        pricing_row(
            meta_source=GUPSHUP_BILLING_EVENT,
            message_id=WAMID_AI,
            user_id="398871601297",
            pricing_model="PMP",
            category="general_purpose_ai",
            pricing_type="regular",
            billable=True,
            source_file=str(path),
            source_row=2,
        )
    ]
    assert reports.skipped == {"webhook traffic (give it as INPUT)": 1}


def test_events_as_a_json_array_and_other_gupshup_events(tmp_path):
    events = [
        glific_billing_event(),
        {
            "app": "Demo",
            "timestamp": 1767225600000,
            "version": 2,
            "type": "message-event",
            "payload": {
                "id": "wamid.X",
                "type": "enqueued",
                "destination": "393330000001",
                "payload": {"whatsappMessageId": "wamid.X-meta"},
                "conversation": {"id": "conv-x", "type": "utility"},
            },
        },
        {
            "app": "Demo",
            "timestamp": 1767225600000,
            "version": 2,
            "type": "message-event",
            "payload": {"id": "wamid.Y", "type": "read", "destination": "393330000001", "payload": {"ts": 1767225601}},
        },
        {"app": "Demo", "timestamp": 1767225600000, "version": 2, "type": "user-event", "payload": {"type": "opted-in"}},
    ]
    path = tmp_path / "events.json"
    path.write_text(json.dumps(events))
    reports = read_reports([path])
    assert reports.pricing.select("meta_source", "message_id", "status", "time", "conversation_id", "source_row").rows() == [
        (
            GUPSHUP_BILLING_EVENT,
            "gBEGkZdhAzaXAgmpAw6G7Oc_XIg",
            None,
            dt.datetime(2022, 8, 24, 5, 37, 16, 533000, UTC),
            "c3dcdb2f4f227931248cc080c387e484",
            1,
        ),
        # an enqueued event's own id is Gupshup's; Meta's wamid is in payload.payload.whatsappMessageId
        (GUPSHUP_MESSAGE_EVENT, "wamid.X-meta", "enqueued", at(1767225600), "conv-x", 2),
    ]
    assert reports.skipped == {"Gupshup message events without pricing": 1, "Gupshup 'user-event' events (no billing)": 1}


def test_jsonl_with_a_broken_line(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps(glific_billing_event()) + "\n{not json\n")
    with pytest.raises(InputError, match=r"events\.jsonl, row 2: line 2 is not JSON"):
        read_reports([path])
    lenient = read_reports([path], strict=False)
    assert lenient.pricing.height == 1 and lenient.skipped == {"lines that are not JSON": 1}


def test_analytics_and_events_from_several_files_in_one_call(tmp_path):
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps(glific_billing_event()) + "\n")
    reports = read_reports(
        [
            FIXTURES / "meta_docs_analytics__conversation_analytics_monthly_by_type.json",
            events,
            FIXTURES / "meta_docs_analytics__pricing_analytics_daily_tier.json",
        ]
    )
    assert reports.analytics.group_by("report", maintain_order=True).len().rows() == [("conversation_analytics", 3), ("pricing_analytics", 14)]
    assert reports.analytics["source_row"].to_list() == [1, 2, 3, *range(1, 15)]
    assert reports.pricing.height == 1


# --- status webhooks, through analytics.read.webhooks --------------------------------------------------------


def test_webhook_billing_rows_as_pricing_rows():
    path = FIXTURES / "piusalfred_whatsapp__webhooks_test__status_sent_cbp_user_initiated.json"
    pricing = webhook_pricing(read_webhooks(path).billing)
    assert pricing.schema == pl.Schema(PRICING_SCHEMA)
    assert pricing.to_dicts() == [
        pricing_row(
            meta_source=WEBHOOK,
            message_id="wamid.STATUSMSG",
            status="sent",
            time=at(1690000000),
            business_phone="999888777",
            user_id="123456789",
            pricing_model="CBP",
            category="user_initiated",
            billable=True,
            conversation_id="CONVO123",
            conversation_expires_at=at(1690009999),
            conversation_origin="user_initiated",
            source_file=str(path),
            source_row=1,
        )
    ]


def test_webhook_expiration_that_is_not_a_time_is_a_problem():
    billing = pl.DataFrame(
        [
            {
                "message_id": "wamid.A",
                "status": "sent",
                "timestamp": "1751400000",
                "pricing_model": "cbp",
                "pricing_category": "utility",
                "pricing_type": "free_entry",
                "conversation_id": "c",
                "conversation_expires_at": "tomorrow",
                "source_file": "f",
                "source_row": 1,
            }
        ],
        schema=BILLING_SCHEMA,
    )
    (row,) = webhook_pricing(billing).to_dicts()
    assert (row["pricing_model"], row["pricing_type"]) == ("CBP", "free_entry_point")
    assert row["problem"] == "conversation expiration_timestamp tomorrow is not Unix seconds"


def test_authentication_international_is_one_spelling_whatever_the_source(tmp_path):
    # Meta's status webhooks write it with a hyphen from 2026 (P3); Gupshup passes Meta's value on.
    event = {
        "app": "demo",
        "timestamp": 1793700065000,
        "version": 2,
        "type": "billing-event",
        "payload": {
            "deductions": {"type": "regular", "model": "PMP", "source": "whatsapp", "billable": True, "category": "authentication-international"},
            "references": {"id": "wamid.H1", "gsId": "g1", "destination": "919800000001"},
        },
    }
    rows, _ = meta_reports.gupshup_rows(event, source_file="events", source_row=1)
    assert [(r["category"], r["pricing_type"]) for r in rows] == [("authentication_international", "regular")]
    hook = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "100000000000010",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "metadata": {"phone_number_id": "200000000000010"},
                            "statuses": [
                                {
                                    "id": "wamid.H2",
                                    "status": "sent",
                                    "timestamp": "1793700300",
                                    "recipient_id": "919800000001",
                                    "pricing": {
                                        "pricing_model": "PMP",
                                        "type": "regular",
                                        "category": "authentication-international",
                                        "subtype": "paid_exempt",
                                    },
                                }
                            ],
                        },
                    }
                ],
            }
        ],
    }
    path = tmp_path / "hooks.jsonl"
    path.write_text(json.dumps(hook) + "\n")
    priced = meta_reports.webhook_pricing(read_webhooks(path).billing)
    assert priced.select("category", "pricing_type", "pricing_subtype", "recipient_type").rows() == [
        ("authentication_international", "regular", "paid_exempt", None)
    ]
    assert priced.schema == pl.Schema(meta_reports.PRICING_SCHEMA)
