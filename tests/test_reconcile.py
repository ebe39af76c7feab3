"""analytics.reconcile (matching, aggregates, explanations), analytics.synthetic.meta_billing and `wa-analytics reconcile`: our charges against what Meta reported.

Every third-party fixture with pricing data (../shared/fixtures/meta, read in place) is reconciled
and its outcome asserted item by item; injected differences (a changed category, a dropped status)
come back with the right reason; synthetic traffic, with Meta-style pricing objects made from our
own charges and perturbed in known ways, reconciles to exactly the perturbations. Hand-written
payloads with made-up values are in tests/fixtures/reconcile (see its README).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from decimal import Decimal
from pathlib import Path

import duckdb
import polars as pl
import pytest
from meta_fixtures import FIXTURES, fenced_blocks, glific_billing_event, gupshup_general_purpose_ai

from analytics import cli
from analytics.bill import charges
from analytics.core import schema
from analytics.core.resources import query
from analytics.present.reconciliation_text import format_summary
from analytics.price import pricing
from analytics.read import ingest
from analytics.reconcile import aggregates, meta_reports, outcomes
from analytics.reconcile import matching as reconcile
from analytics.reconcile.meta_reports import concat_pricing, gupshup_rows, read_analytics, read_reports, webhook_pricing
from analytics.reconcile.outcomes import (
    AGREES,
    CATEGORY_CHANGED,
    COST_DIFFERS,
    COST_NOT_AVAILABLE,
    DIFFERENT,
    FREE_TIER_COUNTED_BILLABLE,
    MATCH,
    MISSING_META,
    MISSING_OURS,
    NOT_MODELLED,
    PRICING_NOT_REPORTED,
    PRICING_TYPE_DIFFERS,
    QUARANTINED,
    RATE_CARD_GAP,
    REASONS,
    RECONCILIATION_SCHEMA,
    ROUNDING,
    RULE_MODEL_DIFFERS,
    STATUS_MISSING,
    VOLUME_DIFFERS,
    WINDOW_DIFFERS,
)
from analytics.settings import Settings
from analytics.synthetic import generate, meta_billing
from analytics.terms import rules
from analytics.terms.rules import AuthenticationInternational

OURS = Path(__file__).resolve().parent / "fixtures" / "reconcile"
UTC = dt.UTC
ITEM = ("level", "meta_source", "message_id", "status", "reason")


# --- helpers ------------------------------------------------------------------------------------------


def run(paths, *, send_log=None, rules_=None, timezone="UTC", settings=None, events=(), analytics=None, priced=False) -> outcomes.Reconciliation:
    """Ingest, bill and reconcile as `wa-analytics reconcile` does; `events` are extra pricing rows."""
    ingested = ingest.read_messages([str(p) for p in paths], send_log=send_log, timezone=timezone)
    messages = ingested.messages.collect()
    config = settings or Settings(timezone=timezone, rules=rules_)
    billed = charges.bill(messages, config)
    meta = concat_pricing([webhook_pricing(ingested.billing), *events])
    return reconcile.reconcile(
        messages,
        billed,
        meta_pricing=meta,
        analytics=analytics,
        quarantine=ingested.quarantine,
        settings=config,
        priced=pricing.price(billed, config.replace(report_unpriced=True)) if priced else None,
    )


def items(result: outcomes.Reconciliation, columns=ITEM) -> list[tuple]:
    return result.rows.select(columns).rows()


def jsonl(tmp_path: Path, *values: object, name: str = "hooks.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join(json.dumps(v) + "\n" for v in values))
    return path


def send_log(tmp_path: Path, *rows: tuple[str, str, str]) -> Path:
    path = tmp_path / "send_log.csv"
    path.write_text("message_id,message_type,template_category\n" + "".join(f"{a},{b},{c}\n" for a, b, c in rows))
    return path


def canonical(tmp_path: Path, *rows: dict, name: str = "messages.csv") -> Path:
    """Canonical messages as CSV: every column of contracts.md §1 not given is empty."""
    path = tmp_path / name
    header = list(schema.MESSAGE_SCHEMA)
    lines = [",".join(header)] + [",".join(str(r.get(c) or "") for c in header) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def pywa_key(tmp_path: Path, key: str) -> Path:
    """pywa keeps several payloads in one JSON object by name: one of them as a JSONL file."""
    named = json.loads((FIXTURES / "pywa__tests_data_updates_message_status.json").read_text())
    return jsonl(tmp_path, named[key], name=f"{key}.jsonl")


def events_of(*values: object) -> pl.DataFrame:
    rows = []
    for position, value in enumerate(values, start=1):
        rows += gupshup_rows(value, source_file="events", source_row=position)[0]
    return concat_pricing([pl.DataFrame(rows, schema=meta_reports.PRICING_SCHEMA)])


# --- the reason codes ------------------------------------------------------------------------------------


def test_every_reason_code_is_a_named_constant_documented_in_the_module():
    assert len(REASONS) == len(set(REASONS)) == 15
    for code, explanation in REASONS.items():
        assert code == code.lower() and explanation
        assert f"`{code}`" in reconcile.__doc__, code


def test_output_columns_and_an_empty_comparison(tmp_path):
    result = run(
        [
            canonical(
                tmp_path,
                dict(
                    message_id="wamid.A",
                    timestamp="2026-03-02T10:00:00Z",
                    direction="outbound",
                    business_phone="5550001",
                    user_id="393330000001",
                    message_type="template",
                    template_category="marketing",
                    status="delivered",
                ),
            )
        ]
    )
    assert result.rows.schema == pl.Schema(RECONCILIATION_SCHEMA) and result.rows.is_empty()
    assert result.notes == ("no pricing objects or analytics from Meta in the input: nothing to compare",)


# --- Meta's own payloads: status webhooks ---------------------------------------------------------------------

BSUID_WAMID = "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQUFERjg0NDEzNDdFODU3MUMxMAA="


@pytest.mark.parametrize(
    "fixture", ["meta_docs_bsuid__status_delivered_pmp_marketing.json", "meta_docs_bsuid__status_delivered_pmp_marketing_to_bsuid.json"]
)
def test_meta_docs_pmp_marketing(fixture):
    # Meta's example is dated 2025-06-15, before per-message pricing: under the rules in force we bill a
    # marketing conversation where Meta bills the message.
    in_force = run([FIXTURES / fixture])
    assert items(in_force) == [("message", "webhook", BSUID_WAMID, DIFFERENT, RULE_MODEL_DIFFERS)]
    assert in_force.rows["explanation"][0].startswith("Meta bills it per message (PMP) where we computed a conversation under cbp-2023")
    assert items(run([FIXTURES / fixture], rules_="pmp-2025")) == [("message", "webhook", BSUID_WAMID, MATCH, AGREES)]


def test_meta_docs_pmp_marketing_recategorised(tmp_path):
    # Injected: the send log says the template is utility; Meta billed marketing.
    log = send_log(tmp_path, (BSUID_WAMID, "template", "utility"))
    result = run([FIXTURES / "meta_docs_bsuid__status_delivered_pmp_marketing.json"], send_log=log, rules_="pmp-2025")
    assert items(result) == [("message", "webhook", BSUID_WAMID, DIFFERENT, CATEGORY_CHANGED)]
    assert result.rows.select("ours_category", "meta_category", "ours_pricing_type", "meta_pricing_type").row(0) == (
        "utility",
        "marketing",
        "regular",
        "regular",
    )


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        # sent: Meta's conversation expires 1698339900, so it opened at 1698253500, 3 h 44 min before ours
        ("sent", [("conversation", "webhook", "wamid.xyzxyz", DIFFERENT, WINDOW_DIFFERS)]),
        ("with_tracker", [("conversation", "webhook", "wamid.xyzxyz", DIFFERENT, WINDOW_DIFFERS)]),
        # no expiration on delivered and read: the window is not compared; billable:true on our free tier (§7)
        ("delivered", [("conversation", "webhook", "wamid.xyzxyz", MATCH, FREE_TIER_COUNTED_BILLABLE)]),
        ("read", [("conversation", "webhook", "wamid.xyzxyz", MATCH, FREE_TIER_COUNTED_BILLABLE)]),
        ("played", [("conversation", "webhook", "wamid.xyzxyz", MATCH, FREE_TIER_COUNTED_BILLABLE)]),
        # no pricing or conversation object: nothing of Meta's to compare
        ("failed", []),
        ("group", []),
    ],
)
def test_pywa_message_status_each_alone(tmp_path, key, expected):
    result = run([pywa_key(tmp_path, key)])
    assert items(result) == expected
    if expected and expected[0][4] == WINDOW_DIFFERS:
        row = result.rows.row(0, named=True)
        assert (row["meta_started_at"], row["ours_started_at"]) == (
            dt.datetime.fromtimestamp(1698253500, UTC),
            dt.datetime.fromtimestamp(1698266945, UTC),
        )
        assert "3 h 44 min apart, beyond the 60 s tolerance" in row["explanation"]


def test_pywa_message_status_all_keys_in_one_file(tmp_path):
    named = json.loads((FIXTURES / "pywa__tests_data_updates_message_status.json").read_text())
    result = run([jsonl(tmp_path, *named.values())])
    # One wamid in every payload: failed wins, so we bill nothing; Meta billed its service conversation.
    assert items(result) == [("conversation", "webhook", "wamid.xyzxyz", MISSING_OURS, STATUS_MISSING)]
    assert result.rows.select("conversation_id", "meta_category", "meta_billable", "meta_volume").row(0) == (
        "7270432eae37498234f4444b35ffc5",
        "service",
        True,
        1,
    )
    assert "the input has its messages as failed, which is never billed" in result.rows["explanation"][0]


def test_pywa_message_status_with_a_send_log_that_disagrees(tmp_path):
    # Injected: the send log makes the message a marketing template; Meta billed a service conversation.
    log = send_log(tmp_path, ("wamid.xyzxyz", "template", "marketing"))
    result = run([pywa_key(tmp_path, "delivered")], send_log=log)
    assert items(result) == [("conversation", "webhook", "wamid.xyzxyz", DIFFERENT, CATEGORY_CHANGED)]
    assert result.rows["explanation"][0].startswith(
        "Meta billed conversation 7270432eae37498234f4444b35ffc5 as a service (non-template) message, where the input has a marketing template"
    )


def test_netflie_cbp_2022_conversation_without_pricing(tmp_path):
    path = FIXTURES / "netflie_whatsapp-cloud-api__NotificationFactoryTest__status_read_cbp_user_initiated.json"
    # Status webhooks do not say whether the message was a template: the row is quarantined.
    quarantined = run([path])
    assert items(quarantined) == [("conversation", "webhook", "wamid.ID", MISSING_OURS, QUARANTINED)]
    assert "outbound message type unknown" in quarantined.rows["explanation"][0]
    # With the type known, we bill a business-initiated conversation (no user message in the input).
    typed = run([path], send_log=send_log(tmp_path, ("wamid.ID", "text", "")))
    assert items(typed) == [("conversation", "webhook", "wamid.ID", DIFFERENT, RULE_MODEL_DIFFERS)]
    row = typed.rows.row(0, named=True)
    assert (row["ours_category"], row["meta_category"], row["meta_billable"]) == ("business_initiated", "user_initiated", None)
    assert "the user's message that opened it may be missing from the input" in row["explanation"]


def test_piusalfred_cbp_2022_categories_on_a_2023_date(tmp_path):
    path = FIXTURES / "piusalfred_whatsapp__webhooks_test__status_sent_cbp_user_initiated.json"
    assert items(run([path])) == [("conversation", "webhook", "wamid.STATUSMSG", MISSING_OURS, QUARANTINED)]
    typed = run([path], send_log=send_log(tmp_path, ("wamid.STATUSMSG", "text", "")))
    # 2023-07-22 is under cbp-2023: a service conversation of ours, a 2022 category in Meta's object
    assert items(typed) == [("conversation", "webhook", "wamid.STATUSMSG", DIFFERENT, RULE_MODEL_DIFFERS)]
    assert typed.rows.select("ours_category", "meta_category").row(0) == ("service", "user_initiated")
    assert "cbp-2022" in typed.rows["explanation"][0]


WAMID_AI = "wamid.HBgMOTE4ODcxNjAxMjk3FQIAERgSMTdCRE111UyRkNDNDc0RUU4MjA4AA=="


def test_gupshup_general_purpose_ai_status_and_v3_billing_event(tmp_path):
    # general_purpose_ai: an AI provider's non-template message (changes-2026-h2.md §6). Ingest reads it as a
    # non-template; without [billing] ai_provider we charge it as service, and reconciliation compares the
    # categories and says what to set.
    meta_status, v3_event = gupshup_general_purpose_ai()
    stream = jsonl(tmp_path, meta_status, v3_event)
    among_inputs = read_reports([stream], strict=False).pricing  # what the CLI finds among the INPUTs
    result = run([stream], events=[among_inputs])
    assert items(result) == [
        ("message", "gupshup_billing_event", WAMID_AI, DIFFERENT, RULE_MODEL_DIFFERS),
        ("message", "webhook", WAMID_AI, DIFFERENT, RULE_MODEL_DIFFERS),
    ]
    assert result.rows.select("ours_category", "meta_category").row(1) == ("service", "general_purpose_ai")
    assert result.rows["explanation"][1] == (
        "Meta billed general_purpose_ai (an AI provider's message, changes-2026-h2.md §6) where we computed service: set "
        "[billing] ai_provider = true in the config file if the business is an AI provider, and check the user's country."
    )
    typed = run([stream], events=[among_inputs], send_log=send_log(tmp_path, (WAMID_AI, "text", "")))
    assert items(typed) == items(result)


def test_gupshup_v3_billing_event_whose_status_was_dropped(tmp_path):
    # Injected: the Meta-format status is lost; Gupshup's billing event for the message remains.
    meta_status, v3_event = gupshup_general_purpose_ai()
    other = json.loads(json.dumps(meta_status).replace(WAMID_AI, "wamid.OTHER").replace('"general_purpose_ai"', '"marketing"'))
    stream = jsonl(tmp_path, other, v3_event)
    result = run([stream], events=[read_reports([stream], strict=False).pricing])
    assert items(result) == [
        ("message", "gupshup_billing_event", WAMID_AI, MISSING_OURS, STATUS_MISSING),
        ("message", "webhook", "wamid.OTHER", MATCH, AGREES),
    ]
    assert "the input has no status of the message: a lost webhook" in result.rows["explanation"][0]


# --- Gupshup billing events against our traffic -------------------------------------------------------------


def test_glific_cbp_billing_event(tmp_path):
    # Our side: the message the event references, a marketing template delivered just before the event.
    message = dict(
        message_id="gBEGkZdhAzaXAgmpAw6G7Oc_XIg",
        timestamp="2022-08-24T05:37:10Z",
        direction="outbound",
        business_phone="5550001",
        user_id="1234567851",
        message_type="template",
        template_category="marketing",
        status="delivered",
    )
    event = events_of(glific_billing_event())
    traffic = canonical(tmp_path, message)
    # 2022-08-24 is under cbp-2022: we bill a business-initiated conversation, Meta's event says marketing.
    assert items(run([traffic], events=[event])) == [
        ("conversation", "gupshup_billing_event", "gBEGkZdhAzaXAgmpAw6G7Oc_XIg", DIFFERENT, RULE_MODEL_DIFFERS)
    ]
    # Billed as Meta did, under the four categories (what-if), it agrees: no expiration, so no window.
    assert items(run([traffic], events=[event], rules_="cbp-2023")) == [
        ("conversation", "gupshup_billing_event", "gBEGkZdhAzaXAgmpAw6G7Oc_XIg", MATCH, AGREES)
    ]
    # Without the message in the input: a lost webhook.
    other = canonical(tmp_path, message | dict(message_id="gBEG-other"), name="other.csv")
    assert items(run([other], events=[event], rules_="cbp-2023"))[0] == (
        "conversation",
        "gupshup_billing_event",
        "gBEGkZdhAzaXAgmpAw6G7Oc_XIg",
        MISSING_OURS,
        STATUS_MISSING,
    )


def test_gupshup_cbp_billing_event_as_documented_is_not_compared(tmp_path):
    documented, _ = fenced_blocks("gupshup_docs__billing_events_cbp.txt")
    message = dict(
        message_id="59f8db90c37e-4408-90ab-cc54ef8246ad",
        timestamp="2020-02-01T08:44:30Z",
        direction="outbound",
        business_phone="5550001",
        user_id="919100000010",
        message_type="text",
        status="delivered",
    )
    result = run([canonical(tmp_path, message | dict(timestamp="2024-02-01T08:44:30Z"))], events=[events_of(json.loads(documented))])
    assert result.rows.is_empty()
    assert result.unreadable.select("meta_source", "message_id").rows() == [("gupshup_billing_event", "59f8db90c37e-4408-90ab-cc54ef8246ad")]
    assert result.unreadable["problem"][0].startswith("unknown deduction model 'NBP/CBP/PMP'")
    assert "1 of Meta's rows could not be compared:\n  events, row 1: unknown deduction model" in format_summary(result)


@pytest.mark.parametrize(
    ("deductions", "ours", "expected"),
    [
        # The values the page lists for `type`, substituted into its example, against a conversation of ours.
        ({"type": "marketing", "billable": "true"}, ("template", "marketing", None), (MATCH, AGREES)),
        ({"type": "Marketing_Lite", "billable": True}, ("template", "marketing_lite", None), (MATCH, AGREES)),
        ({"type": "utility", "billable": True}, ("template", "marketing", None), (DIFFERENT, CATEGORY_CHANGED)),
        ({"type": "FTC", "conversationType": "service", "billable": False}, ("text", "", "user"), (MATCH, AGREES)),
        ({"type": "service", "billable": True}, ("text", "", "user"), (MATCH, FREE_TIER_COUNTED_BILLABLE)),
        ({"type": "FEP", "billable": False}, ("template", "utility", "ctwa"), (MATCH, AGREES)),
        ({"type": "FEP", "billable": False}, ("template", "utility", None), (DIFFERENT, RULE_MODEL_DIFFERS)),
        ({"type": "authentication", "billable": True}, ("template", "authentication", None), (MATCH, AGREES)),
    ],
)
def test_gupshup_cbp_billing_event_types(tmp_path, deductions, ours, expected):
    documented, _ = fenced_blocks("gupshup_docs__billing_events_cbp.txt")
    event = json.loads(documented)
    # The page's placeholders replaced by one of its listed values; a 2024 timestamp (cbp-2023, service free tier).
    event["timestamp"] = 1706777100000  # 2024-02-01 08:45:00 UTC
    event["payload"]["deductions"] = {"model": "CBP", "source": "whatsapp", **deductions}
    message_type, category, before = ours
    wamid = event["payload"]["references"]["id"]
    rows = [
        dict(
            message_id=wamid,
            timestamp="2024-02-01T08:44:30Z",
            direction="outbound",
            business_phone="5550001",
            user_id="919100000010",
            message_type=message_type,
            template_category=category,
            status="delivered",
        )
    ]
    if before:  # the user's message first: a customer service window, or a Click-to-WhatsApp entry
        rows.insert(
            0,
            dict(
                message_id="wamid.in",
                timestamp="2024-02-01T08:40:00Z",
                direction="inbound",
                business_phone="5550001",
                user_id="919100000010",
                message_type="text",
                status="received",
                entry_point="ctwa" if before == "ctwa" else "",
            ),
        )
    result = run([canonical(tmp_path, *rows)], events=[events_of(event)])
    assert items(result, ("level", "message_id", "conversation_id", "status", "reason")) == [
        ("conversation", wamid, "532b57b5f6e63595ccd74c6010e5c5c7", *expected)
    ]


def test_gupshup_pmp_billing_event_and_sent_event(tmp_path):
    # The page's examples put {{...}} around placeholder values, which is not JSON: the test removes the braces.
    billing, sent = (json.loads(re.sub(r"\{\{(.*?)\}\}", r"\1", block)) for block in fenced_blocks("gupshup_docs__pmp_events_billing_and_sent.txt"))
    wamid = "d04cc3a7-18f0-4571-831e-xxxxxxxx"
    traffic = canonical(
        tmp_path,
        dict(
            message_id=wamid,
            timestamp="2025-02-12T10:01:22Z",
            direction="outbound",
            business_phone="5550001",
            user_id="79507xxxxxxxx",
            message_type="template",
            template_category="marketing",
            status="delivered",
        ),
    )
    events = events_of(billing, sent)
    # The page's example is dated 2025-02-12, under conversation-based pricing.
    assert items(run([traffic], events=[events])) == [
        ("message", "gupshup_billing_event", wamid, DIFFERENT, RULE_MODEL_DIFFERS),
        ("message", "gupshup_message_event", wamid, DIFFERENT, RULE_MODEL_DIFFERS),
    ]
    # Per message, the billing event agrees; the sent event's pricing says service for a marketing template.
    result = run([traffic], events=[events], rules_="pmp-2025")
    assert items(result) == [
        ("message", "gupshup_billing_event", wamid, MATCH, AGREES),
        ("message", "gupshup_message_event", wamid, DIFFERENT, CATEGORY_CHANGED),
    ]
    assert "as a service (non-template) message, where the input has a marketing template" in result.rows["explanation"][1]


# --- Meta's analytics responses against our charges ---------------------------------------------------------


def our_charges(*groups: tuple) -> pl.DataFrame:
    """Charges (contracts.md §2) with `user_country` and `cost`, from (started_at, rule_set, category,
    pricing_type, count, country, business_phone, cost per charge) groups."""
    frames = []
    for n, (started_at, rule_set, category, pricing_type, count, country, phone, cost) in enumerate(groups):
        model = rules.rule_set(rule_set).pricing_model
        frames.append(
            pl.DataFrame(
                {
                    "rule_set": [rule_set] * count,
                    "pricing_model": [model] * count,
                    "category": [category] * count,
                    "pricing_type": [pricing_type] * count,
                    "billable": [pricing_type == "regular"] * count,
                    "started_at": [started_at + dt.timedelta(seconds=i) for i in range(count)],
                    "expires_at": [None] * count,
                    "business_phone": [phone] * count,
                    "waba_id": ["w"] * count,
                    "user_id": [f"u{n}-{i}" for i in range(count)],
                    "market": [None] * count,
                    "message_count": [1] * count,
                    "opening_message_id": [f"wamid.{n}-{i}" for i in range(count)],
                    "user_country": [country] * count,
                    "cost": [cost] * count,
                },
                schema={**schema.CHARGE_CONTRACT_SCHEMA, "user_country": pl.String, "cost": pl.Decimal(38, 12)},
            )
        )
    return pl.concat(frames)


def aggregate(charges_: pl.DataFrame, fixture: str, *, compare_cost: bool = True, timezone: str = "UTC") -> list[tuple]:
    analytics = read_analytics(FIXTURES / fixture)
    frame = charges_ if compare_cost else charges_.drop("cost")
    rows, unreadable, _ = aggregates.reconcile_aggregates(frame, analytics, settings=Settings(timezone=timezone))
    assert unreadable.is_empty()
    return rows.select(
        "period_start", "country", "business_phone", "meta_category", "meta_pricing_type", "ours_volume", "meta_volume", "status", "reason"
    ).rows()


def test_conversation_analytics_half_hour_by_category_and_type():
    at = dt.datetime(2023, 5, 31, 10, 0, tzinfo=UTC)
    half = dt.timedelta(minutes=30)
    ours = our_charges(
        (at + dt.timedelta(minutes=5), "cbp-2023", "marketing", "regular", 3, "IT", "5550001", Decimal("0.0144")),
        (at + half + dt.timedelta(minutes=5), "cbp-2023", "authentication", "regular", 2, "IT", "5550001", Decimal("0.0064")),
    )
    fixture = "meta_docs_analytics__conversation_analytics_half_hour_category_type.json"
    assert aggregate(ours, fixture) == [
        (at, None, None, "marketing", "regular", 3, 3, MATCH, AGREES),
        (at + half, None, None, "authentication", "regular", 2, 2, MATCH, AGREES),
    ]
    # Injected: one marketing conversation half an hour later.
    moved = ours.with_columns(
        started_at=pl.when(pl.col("opening_message_id") == "wamid.0-2").then(at + half + dt.timedelta(minutes=1)).otherwise("started_at")
    )
    assert aggregate(moved, fixture) == [
        (at, None, None, "marketing", "regular", 2, 3, DIFFERENT, VOLUME_DIFFERS),
        (at + half, None, None, "authentication", "regular", 2, 2, MATCH, AGREES),
        (at + half, None, None, "marketing", "regular", 1, None, MISSING_META, VOLUME_DIFFERS),
    ]


def test_conversation_analytics_monthly_with_every_dimension():
    june = dt.datetime(2023, 6, 1, 7, 0, tzinfo=UTC)  # midnight in the WABA's Pacific time
    later = june + dt.timedelta(days=3)
    phone = "15550458206"
    ours = our_charges(
        *[
            (later, "cbp-2023", category, pricing_type, count, "US", phone, None)
            for category, pricing_type, count in [
                ("authentication", "regular", 1558),
                ("marketing", "regular", 2636),
                ("service", "regular", 2238),
                ("utility", "regular", 1782),
                ("service", "free_tier", 2180),
                ("referral_conversion", "free_entry_point", 1433),
            ]
        ]
    )
    got = aggregate(ours, "meta_docs_analytics__conversation_analytics_monthly_all_dimensions.json", compare_cost=False)
    assert got == [
        (june, "US", phone, "authentication", "free_tier", None, 1568, MISSING_OURS, VOLUME_DIFFERS),
        (june, "US", phone, "authentication", "regular", 1558, 1558, MATCH, AGREES),
        (june, "US", phone, "marketing", "free_tier", None, 2716, MISSING_OURS, VOLUME_DIFFERS),
        (june, "US", phone, "marketing", "regular", 2636, 2636, MATCH, AGREES),
        # our free entry point conversations are Meta's SERVICE FREE_ENTRY_POINT [choice]
        (june, "US", phone, "service", "free_entry_point", 1433, 1433, MATCH, AGREES),
        (june, "US", phone, "service", "free_tier", 2180, 2180, MATCH, AGREES),
        (june, "US", phone, "service", "regular", 2238, 2238, MATCH, AGREES),
        (june, "US", phone, "utility", "free_tier", None, 1465, MISSING_OURS, VOLUME_DIFFERS),
        (june, "US", phone, "utility", "regular", 1782, 1782, MATCH, AGREES),
    ]


def test_conversation_analytics_without_the_outer_key_and_costs_within_rounding():
    february = dt.datetime(2022, 2, 1, 8, 0, tzinfo=UTC)
    ours = our_charges(
        (february + dt.timedelta(days=1), "cbp-2022", "business_initiated", "regular", 8500, "IT", "5550001", Decimal("0.010365")),
        (february + dt.timedelta(days=2), "cbp-2022", "user_initiated", "free_tier", 1000, "IT", "5550001", Decimal("0")),
        (february + dt.timedelta(days=3), "cbp-2022", "referral_conversion", "free_entry_point", 250, "IT", "5550001", Decimal("0")),
    )
    fixture = "meta_docs_analytics__conversation_analytics_monthly_by_type.json"
    # 8,500 x 0.010365 = 88.1025 against Meta's 88.1010: within a cent
    assert aggregate(ours, fixture) == [
        (february, None, None, None, "free_entry_point", 250, 250, MATCH, AGREES),
        (february, None, None, None, "free_tier", 1000, 1000, MATCH, AGREES),
        (february, None, None, None, "regular", 8500, 8500, MATCH, ROUNDING),
    ]
    expensive = ours.with_columns(cost=pl.when(pl.col("pricing_type") == "regular").then(Decimal("0.0104")).otherwise("cost"))
    assert aggregate(expensive, fixture)[2][-2:] == (DIFFERENT, COST_DIFFERS)  # 88.40 against 88.1010
    unpriced = ours.with_columns(cost=pl.when(pl.col("pricing_type") == "regular").then(None).otherwise("cost"))
    assert aggregate(unpriced, fixture)[2][-2:] == (DIFFERENT, RATE_CARD_GAP)


US = [f"1202555{n:04d}" for n in range(101, 120)]  # fictional +1 202 555 01xx
IN = [f"9190000000{n:02d}" for n in range(1, 8)]


def pricing_analytics_traffic() -> list[dict]:
    """Traffic whose per-message charges are the data points of Meta's pricing_analytics example
    (2025-06-01 to 06-06 in the WABA's Pacific time; one row per message)."""
    pacific = dt.timezone(dt.timedelta(hours=-7))
    rows = []

    def add(day: int, clock: str, user: str, direction: str, kind: str = "text", category: str = "", entry: str = ""):
        hour, minute = map(int, clock.split(":"))
        at = dt.datetime(2025, 6, day, hour, minute, tzinfo=pacific).astimezone(UTC)
        rows.append(
            dict(
                message_id=f"wamid.P{len(rows):02d}",
                timestamp=at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                direction=direction,
                business_phone="5550001",
                user_id=user,
                message_type=kind,
                template_category=category,
                status="delivered" if direction == "outbound" else "received",
                entry_point=entry,
            )
        )

    # 06-01: SERVICE FCS 2, UTILITY FCS 1 (inside the window), UTILITY 1, AUTHENTICATION 1, MARKETING 4 + MARKETING_LITE 1
    add(1, "09:00", US[0], "inbound")
    add(1, "09:05", US[0], "outbound")
    add(1, "09:10", US[0], "outbound")
    add(1, "09:15", US[0], "outbound", "template", "utility")
    add(1, "10:00", US[1], "outbound", "template", "authentication")
    add(1, "11:00", US[2], "outbound", "template", "utility")
    for user in US[3:7]:
        add(1, "12:00", user, "outbound", "template", "marketing")
    add(1, "12:00", US[7], "outbound", "template", "marketing_lite")
    # 06-02: FREE_ENTRY_POINT SERVICE 6, SERVICE FCS 1, AUTHENTICATION 1, AUTHENTICATION_INTERNATIONAL 1 (IN)
    add(2, "08:00", US[8], "inbound", entry="ctwa")
    for minute in range(5, 35, 5):
        add(2, f"08:{minute:02d}", US[8], "outbound")
    add(2, "09:00", US[9], "inbound")
    add(2, "09:05", US[9], "outbound")
    add(2, "10:00", US[10], "outbound", "template", "authentication")
    add(2, "11:00", IN[0], "outbound", "template", "authentication")
    # 06-03: MARKETING 1; 06-05: AUTHENTICATION_INTERNATIONAL 2, SERVICE FCS 2; 06-06: SERVICE FCS 2
    add(3, "09:00", US[11], "outbound", "template", "marketing")
    add(5, "09:00", IN[1], "outbound", "template", "authentication")
    add(5, "09:30", IN[2], "outbound", "template", "authentication")
    for day, user in ((5, IN[3]), (6, IN[4])):
        add(day, "09:00", user, "inbound")
        add(day, "09:05", user, "outbound")
        add(day, "09:10", user, "outbound")
    return rows


def test_pricing_analytics_daily_with_tiers(tmp_path):
    # Meta's example predates 2025-07-01: the traffic is billed per message (--rules pmp-2025), in the
    # WABA's Pacific time, by a business at home in the US billed authentication-international for India.
    config = Settings(
        timezone="America/Los_Angeles",
        rules="pmp-2025",
        authentication_international=AuthenticationInternational(home_country="US", start_dates={"IN": dt.date(2025, 1, 1)}),
    )
    analytics = read_analytics(FIXTURES / "meta_docs_analytics__pricing_analytics_daily_tier.json")
    traffic = pricing_analytics_traffic()
    result = run([canonical(tmp_path, *traffic)], settings=config, analytics=analytics)
    day = {d: dt.datetime(2025, 6, d, 7, tzinfo=UTC) for d in range(1, 7)}
    assert result.rows.select(
        "period_start", "country", "meta_category", "meta_pricing_type", "ours_volume", "meta_volume", "status", "reason"
    ).rows() == [
        (day[1], "US", "authentication", "regular", 1, 1, MATCH, AGREES),
        (day[1], "US", "marketing+marketing_lite", "regular", 5, 5, MATCH, AGREES),
        (day[1], "US", "service", "free_customer_service", 2, 2, MATCH, AGREES),
        (day[1], "US", "utility", "free_customer_service", 1, 1, MATCH, AGREES),
        (day[1], "US", "utility", "regular", 1, 1, MATCH, AGREES),
        (day[2], "IN", "authentication_international", "regular", 1, 1, MATCH, AGREES),
        (day[2], "US", "authentication", "regular", 1, 1, MATCH, AGREES),
        (day[2], "US", "service", "free_customer_service", 1, 1, MATCH, AGREES),
        (day[2], "US", "service", "free_entry_point", 6, 6, MATCH, AGREES),
        (day[3], "US", "marketing", "regular", 1, 1, MATCH, AGREES),
        (day[5], "IN", "authentication_international", "regular", 2, 2, MATCH, AGREES),
        (day[5], "IN", "service", "free_customer_service", 2, 2, MATCH, AGREES),
        (day[6], "IN", "service", "free_customer_service", 2, 2, MATCH, AGREES),
    ]
    assert "costs not compared: our charges were not priced (no rate card)" in result.notes
    # Injected: a marketing template dropped from our traffic (a lost webhook).
    dropped = [r for r in traffic if r["user_id"] != US[3]]
    fewer = run([canonical(tmp_path, *dropped, name="dropped.csv")], settings=config, analytics=analytics)
    differing = fewer.rows.filter(pl.col("status") != MATCH)
    assert differing.select("period_start", "ours_volume", "meta_volume", "status", "reason").rows() == [(day[1], 4, 5, DIFFERENT, VOLUME_DIFFERS)]
    assert differing["explanation"][0] == (
        "Meta counts 5 messages, we count 4 (-1) (Meta's marketing+marketing_lite together, billed alike): the message "
        "and conversation rows of this period say which items differ."
    )


def test_aggregate_sql_on_inline_frames():
    """queries/reconcile_aggregates.sql: both sides rolled up, joined null-safe on absent dimensions."""
    ours = pl.DataFrame(
        {
            "report_id": ["r"] * 4,
            "report": ["pricing_analytics"] * 4,
            "pricing_model": ["PMP"] * 4,
            "granularity": ["DAILY"] * 4,
            "period_start": [0, 0, 0, 10],
            "period_end": [10, 10, 10, 20],
            "phone_number": [None] * 4,
            "country": ["IT", "IT", "IT", "IT"],
            "category": ["marketing", "marketing", "utility", "utility"],
            "pricing_type": ["regular"] * 4,
            "billable": [True] * 4,
            "cost": [Decimal("0.05"), Decimal("0.05"), None, Decimal("0.02")],
            "unpriced": [False, False, True, False],
            "currency": ["EUR"] * 4,
        },
        schema_overrides={"cost": pl.Decimal(38, 12), "phone_number": pl.String},
    )
    meta = pl.DataFrame(
        {
            "report_id": ["r"] * 4,
            "report": ["pricing_analytics"] * 4,
            "pricing_model": ["PMP"] * 4,
            "granularity": ["DAILY"] * 4,
            "period_start": [0, 0, 0, 30],
            "period_end": [10, 10, 10, 40],
            "phone_number": [None] * 4,
            "country": ["IT"] * 4,
            "category": ["marketing", "marketing", "utility", "utility"],
            "pricing_type": ["regular"] * 4,
            "meta_category": ["marketing", "marketing_lite", "utility", "utility"],
            "volume": [1, 1, 1, 3],
            "cost": [Decimal("0.05"), None, Decimal("0.02"), Decimal("0.06")],
            "currency": ["EUR"] * 4,
        },
        schema_overrides={"cost": pl.Decimal(38, 6), "phone_number": pl.String},
    )
    con = duckdb.connect()
    con.register("our_charges", ours)
    con.register("meta_points", meta)
    got = con.sql(query("reconcile_aggregates")).pl()
    assert got.select("period_start", "category", "ours_volume", "meta_volume", "ours_cost", "meta_cost", "unpriced", "meta_categories").rows() == [
        # a cost only when every point has one; our cost unknown when a charge has no rate
        (0, "marketing", 2, 2, Decimal("0.1"), None, 0, "marketing+marketing_lite"),
        (0, "utility", 1, 1, None, Decimal("0.02"), 1, "utility"),
        (10, "utility", 1, None, Decimal("0.02"), None, 0, None),
        (30, "utility", None, 3, None, Decimal("0.06"), 0, "utility"),
    ]


# --- synthetic traffic: our own charges as Meta would report them, perturbed in known ways ---------------------


@pytest.fixture(scope="module")
def sample_messages() -> pl.DataFrame:
    return ingest.read_messages([str(Path(__file__).resolve().parents[1] / "data" / "sample" / "messages.csv.gz")]).messages.collect()


def generated(start: dt.date, months: int, users: int = 300) -> pl.DataFrame:
    """Synthetic traffic as ingest leaves it: webhook-style identical repeats dropped."""
    return generate.generate_traffic(users=users, start=start, months=months, seed=11).unique(maintain_order=True)


ERAS = {
    # rule-set switches inside: cbp-2022 -> cbp-2023; the service free tier -> free service; cbp-2023 -> pmp-2025
    "2023-05": (dt.date(2023, 5, 1), 2),
    "2024-10": (dt.date(2024, 10, 1), 2),
    "2025-06": (dt.date(2025, 6, 1), 2),
}


def unexpected(result: outcomes.Reconciliation) -> pl.DataFrame:
    return result.rows.filter(~pl.col("reason").is_in([AGREES, FREE_TIER_COUNTED_BILLABLE]))


def assert_reconciles_to_the_perturbations(messages: pl.DataFrame, seed: int) -> meta_billing.Perturbed:
    config = Settings()
    billed = charges.bill(messages, config)
    meta = meta_billing.meta_pricing_objects(billed, messages, config)
    clean = reconcile.reconcile(messages, billed, meta_pricing=meta, settings=config)
    assert unexpected(clean).is_empty()
    assert clean.rows.height == billed.height and set(clean.rows["status"]) == {MATCH}
    perturbed = meta_billing.perturb(messages, meta, billed, seed=seed)
    again = charges.bill(perturbed.messages, config)
    result = reconcile.reconcile(perturbed.messages, again, meta_pricing=perturbed.meta_pricing, settings=config)
    got = sorted(unexpected(result).select("level", "message_id", "status", "reason").rows())
    assert got == sorted((p.level, p.message_id, p.status, p.reason) for p in perturbed.perturbations)
    return perturbed


def test_the_shipped_sample_reconciles_to_exactly_its_perturbations(sample_messages):
    perturbed = assert_reconciles_to_the_perturbations(sample_messages, seed=1)
    kinds = {p.kind for p in perturbed.perturbations}
    assert kinds == {"recategorised", "pricing_type_changed", "pricing_dropped", "status_dropped"}  # per message only
    assert len(perturbed.perturbations) == 8


@pytest.mark.parametrize("era", list(ERAS))
def test_generated_conversation_eras_reconcile_to_exactly_their_perturbations(era):
    start, months = ERAS[era]
    messages = generated(start, months)
    perturbed = assert_reconciles_to_the_perturbations(messages, seed=2)
    assert "window_shifted" in {p.kind for p in perturbed.perturbations}


@pytest.mark.parametrize("era", list(ERAS))
def test_messages_are_attributed_to_as_many_charges_as_the_engine_counts(era):
    messages = generated(*ERAS[era])
    billed = charges.bill(messages)
    members = reconcile.conversation_of_messages(billed, messages)
    counted = members.group_by("opening_message_id").len()
    joined = billed.join(counted, on="opening_message_id", how="left")
    assert joined.filter(pl.col("len") != pl.col("message_count")).is_empty()
    delivered = messages.filter((pl.col("direction") == "outbound") & (pl.col("status") != "failed"))
    assert members.height == delivered.height


def test_meta_style_objects_round_the_expiration_up_and_mark_free_tier_billable():
    messages = pl.DataFrame(
        [
            dict(
                message_id="wamid.in",
                timestamp=dt.datetime(2024, 3, 1, 10, 0, 0, tzinfo=UTC),
                direction="inbound",
                business_phone="5550001",
                waba_id="w",
                user_id="393330000001",
                user_country="IT",
                message_type="text",
                status="received",
            ),
            dict(
                message_id="wamid.out",
                timestamp=dt.datetime(2024, 3, 1, 10, 0, 30, tzinfo=UTC),
                direction="outbound",
                business_phone="5550001",
                waba_id="w",
                user_id="393330000001",
                user_country="IT",
                message_type="text",
                status="read",
            ),
        ],
        schema=schema.MESSAGE_SCHEMA,
    )
    billed = charges.bill(messages)
    meta = meta_billing.meta_pricing_objects(billed, messages)
    assert meta.select("message_id", "status", "pricing_model", "category", "billable", "conversation_expires_at").rows() == [
        ("wamid.out", "read", "CBP", "service", True, None),
        ("wamid.out", "sent", "CBP", "service", True, dt.datetime(2024, 3, 2, 10, 1, tzinfo=UTC)),
    ]


@pytest.mark.parametrize(
    ("shift", "expected"),
    [
        (dt.timedelta(0), AGREES),
        (dt.timedelta(seconds=59), AGREES),
        (dt.timedelta(seconds=60), AGREES),
        (dt.timedelta(seconds=61), WINDOW_DIFFERS),
        (dt.timedelta(seconds=-61), WINDOW_DIFFERS),
    ],
)
def test_windows_agree_within_sixty_seconds(shift, expected):
    opened = dt.datetime(2024, 3, 1, 10, 0, 0, tzinfo=UTC)
    messages = pl.DataFrame(
        [
            dict(
                message_id="wamid.M",
                timestamp=opened,
                direction="outbound",
                business_phone="5550001",
                waba_id="w",
                user_id="393330000001",
                user_country="IT",
                message_type="template",
                template_category="marketing",
                status="delivered",
            )
        ],
        schema=schema.MESSAGE_SCHEMA,
    )
    billed = charges.bill(messages)
    meta = meta_billing.meta_pricing_objects(billed, messages).with_columns(
        conversation_expires_at=pl.when(pl.col("status") == "sent").then(pl.lit(opened + rules.rule_set("cbp-2023").conversation_window + shift))
    )
    result = reconcile.reconcile(messages, billed, meta_pricing=meta)
    assert items(result, ("message_id", "reason")) == [("wamid.M", expected)]


def test_synthetic_analytics_reconcile_to_exactly_their_perturbations(sample_messages):
    config = Settings(timezone="Europe/Rome")
    billed = charges.bill(sample_messages, config)
    priced = pricing.price(billed, config.replace(currency="USD"))
    with_costs = reconcile.with_user_country(billed, sample_messages).join(
        priced.select("opening_message_id", "user_id", "cost"), on=["opening_message_id", "user_id"]
    )
    response = meta_billing.meta_analytics_response(with_costs, granularity="DAILY", timezone="Europe/Rome")
    points = response["pricing_analytics"]["data"][0]["data_points"]
    clean = reconcile.reconcile(sample_messages, billed, analytics=read_analytics(response), priced=priced, settings=config)
    assert set(clean.rows["reason"]) == {AGREES} and clean.rows.height == len(points)
    # Perturb five regular points in known ways.
    regular = [p for p in points if p["pricing_type"] == "REGULAR" and p["cost"] > 0]
    dropped, more, dearer, rounded, no_cost = regular[:5]
    points.remove(dropped)
    more["volume"] += 1
    dearer["cost"] += 1
    rounded["cost"] = round(rounded["cost"] + 0.004, 6)
    del no_cost["cost"]
    result = reconcile.reconcile(sample_messages, billed, analytics=read_analytics(response), priced=priced, settings=config)

    def key(point):
        return (dt.datetime.fromtimestamp(point["start"], UTC), point["country"], point["pricing_category"].lower())

    got = result.rows.filter(pl.col("reason") != AGREES).select("period_start", "country", "ours_category", "status", "reason").rows()
    assert sorted(got) == sorted(
        [
            (*key(dropped), MISSING_META, VOLUME_DIFFERS),
            (*key(more), DIFFERENT, VOLUME_DIFFERS),
            (*key(dearer), DIFFERENT, COST_DIFFERS),
            (*key(rounded), MATCH, ROUNDING),
            (*key(no_cost), MATCH, COST_NOT_AVAILABLE),
        ]
    )


# --- wa-analytics reconcile ---------------------------------------------------------------------------------


def test_cli_per_message_reconciliation_with_gupshup_events_and_analytics(tmp_path, capsys):
    out = tmp_path / "reconciled.csv"
    status = cli.main(
        [
            "reconcile",
            str(OURS / "webhooks_pmp.jsonl"),
            "--send-log",
            str(OURS / "send_log_pmp.csv"),
            "--analytics",
            str(OURS / "gupshup_events.jsonl"),
            str(OURS / "pricing_analytics_daily.json"),
            str(OURS / "pricing_analytics_credit_line.json"),
            "--rate-card",
            str(OURS / "card.csv"),
            "-o",
            str(out),
        ]
    )
    err = capsys.readouterr().err
    assert status == 0, err
    rows = pl.read_csv(out, infer_schema=False)
    assert rows.columns == list(RECONCILIATION_SCHEMA)
    assert rows.filter(pl.col("level") == "message").select(ITEM).rows() == [
        ("message", "gupshup_billing_event", "wamid.R1", MATCH, AGREES),
        ("message", "gupshup_billing_event", "wamid.R8", MISSING_OURS, STATUS_MISSING),
        ("message", "gupshup_message_event", "wamid.R5", MATCH, AGREES),
        ("message", "webhook", "wamid.R1", MATCH, AGREES),
        ("message", "webhook", "wamid.R2", MATCH, AGREES),
        ("message", "webhook", "wamid.R5", MATCH, AGREES),
        ("message", "webhook", "wamid.R3", DIFFERENT, CATEGORY_CHANGED),
        ("message", "webhook", "wamid.R4", DIFFERENT, PRICING_TYPE_DIFFERS),
        ("message", "webhook", "wamid.R7", MISSING_OURS, STATUS_MISSING),
        ("message", "webhook", "wamid.R10", MATCH, AGREES),
        ("message", "webhook", "wamid.R9", MATCH, AGREES),
        ("message", None, "wamid.R6", MISSING_META, PRICING_NOT_REPORTED),
    ]
    daily = rows.filter((pl.col("level") == "aggregate") & (pl.col("granularity") == "DAILY"))
    assert daily.select(
        "period_start",
        "country",
        "market",
        "ours_category",
        "ours_pricing_type",
        "ours_volume",
        "meta_volume",
        "ours_cost",
        "meta_cost",
        "currency",
        "status",
        "reason",
    ).rows() == [
        ("2026-03-02T00:00:00+00:00", "IT", "Italy", "marketing", "regular", "1", "1", "0.060000", "0.060000", "EUR", MATCH, AGREES),
        ("2026-03-02T00:00:00+00:00", "IT", "Italy", "service", "free_customer_service", "1", "1", "0.000000", "0.000000", "EUR", MATCH, AGREES),
        ("2026-03-02T00:00:00+00:00", "IT", "Italy", "utility", "free_customer_service", "1", "1", "0.000000", "0.000000", "EUR", MATCH, AGREES),
        # R3 and R4: Meta billed marketing and a free utility message, we two regular utility messages
        ("2026-03-03T00:00:00+00:00", "IT", "Italy", "marketing", "regular", None, "1", None, "0.060000", "EUR", MISSING_OURS, VOLUME_DIFFERS),
        (
            "2026-03-03T00:00:00+00:00",
            "IT",
            "Italy",
            "utility",
            "free_customer_service",
            None,
            "1",
            None,
            "0.000000",
            "EUR",
            MISSING_OURS,
            VOLUME_DIFFERS,
        ),
        ("2026-03-03T00:00:00+00:00", "IT", "Italy", "utility", "regular", "2", None, "0.060000", None, "EUR", MISSING_META, VOLUME_DIFFERS),
        # R7 failed in the input; R6 within a cent; R10 at Meta's 0.045 against the card's 0.03
        ("2026-03-04T00:00:00+00:00", "IT", "Italy", "authentication", "regular", None, "1", None, "0.025000", "EUR", MISSING_OURS, VOLUME_DIFFERS),
        ("2026-03-04T00:00:00+00:00", "IT", "Italy", "marketing", "regular", "1", "1", "0.060000", "0.065000", "EUR", MATCH, ROUNDING),
        ("2026-03-04T00:00:00+00:00", "IT", "Italy", "utility", "regular", "1", "1", "0.030000", "0.045000", "EUR", DIFFERENT, COST_DIFFERS),
        # R9 in Germany: the card has no German rate; R8 only in Gupshup's billing events
        ("2026-03-05T00:00:00+00:00", "DE", "Germany", "marketing", "regular", "1", "1", None, "0.120000", "EUR", DIFFERENT, RATE_CARD_GAP),
        ("2026-03-05T00:00:00+00:00", "IT", "Italy", "marketing", "regular", None, "1", None, "0.060000", "EUR", MISSING_OURS, VOLUME_DIFFERS),
    ]
    monthly = rows.filter(pl.col("granularity") == "MONTHLY")
    assert monthly.select("ours_category", "ours_pricing_type", "ours_volume", "meta_volume", "meta_cost", "status", "reason").rows() == [
        ("marketing", "regular", "3", "5", None, DIFFERENT, VOLUME_DIFFERS),
        ("service", "free_customer_service", "1", "1", None, MATCH, COST_NOT_AVAILABLE),
        ("utility", "free_customer_service", "1", None, None, MISSING_META, VOLUME_DIFFERS),
        ("utility", "regular", "3", None, None, MISSING_META, VOLUME_DIFFERS),
    ]
    assert "Reconciliation: 27 rows compared" in err
    assert "  message              12: match 7, different 2, missing_ours 2, missing_meta 1" in err
    assert "  message       marketing                        60.0%  (3 of 5)" in err
    assert "not read from the --analytics files: Gupshup 'message' events (no billing) (1)" in err
    assert err.rstrip().endswith(f"Reconciliation: {out}")


def test_cli_per_conversation_reconciliation(tmp_path, capsys):
    out = tmp_path / "reconciled.parquet"
    status = cli.main(
        [
            "reconcile",
            str(OURS / "webhooks_cbp.jsonl"),
            "--send-log",
            str(OURS / "send_log_cbp.csv"),
            "-o",
            str(out),
        ]
    )
    err = capsys.readouterr().err
    assert status == 0, err
    rows = pl.read_parquet(out)
    assert rows.schema == pl.Schema(RECONCILIATION_SCHEMA)
    assert rows.select(
        "message_id", "conversation_id", "ours_category", "meta_category", "ours_volume", "meta_volume", "status", "reason"
    ).rows() == [
        ("wamid.C1", "CONV-A", "marketing", "marketing", 2, 2, MATCH, AGREES),  # window 57 s apart: within 60 s
        ("wamid.C3", "CONV-B", "service", "service", 1, 1, MATCH, FREE_TIER_COUNTED_BILLABLE),
        ("wamid.C4", "CONV-C", "utility", "utility", 1, 1, DIFFERENT, WINDOW_DIFFERS),
        ("wamid.C8", "CONV-F", "referral_conversion", "referral_conversion", 1, 1, MATCH, AGREES),
        ("wamid.C9", "CONV-G", "utility", "marketing", 1, 1, DIFFERENT, CATEGORY_CHANGED),
        ("wamid.C5", None, "utility", None, 1, None, MISSING_META, PRICING_NOT_REPORTED),
    ]
    assert "  conversation  service                         100.0%  (1 of 1)" in err


def test_cli_finds_gupshup_v3_billing_events_among_the_inputs(tmp_path, capsys):
    meta_status, v3_event = gupshup_general_purpose_ai()
    stream = jsonl(tmp_path, meta_status, v3_event)
    out = tmp_path / "out.csv"
    assert cli.main(["reconcile", str(stream), "-o", str(out)]) == 0
    capsys.readouterr()
    assert pl.read_csv(out).select("meta_source", "status", "reason").rows() == [
        ("gupshup_billing_event", DIFFERENT, RULE_MODEL_DIFFERS),
        ("webhook", DIFFERENT, RULE_MODEL_DIFFERS),
    ]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--analytics", str(FIXTURES / "meta_docs_analytics__analytics_response.json")], "is Meta's message analytics"),
        (["--analytics", str(FIXTURES / "meta_docs_pricing__account_update_volume_tier.json")], "holds no conversation_analytics"),
        (["--analytics", "missing.json"], "missing.json: cannot read the file"),
    ],
)
def test_cli_refuses_report_files_it_cannot_use(tmp_path, capsys, extra, message):
    out = tmp_path / "out.csv"
    status = cli.main(["reconcile", str(OURS / "webhooks_cbp.jsonl"), *extra, "-o", str(out)])
    err = capsys.readouterr().err
    assert status == 2 and message in err and err.startswith("wa-analytics: error: ")
    assert not out.exists()


def test_cli_says_when_costs_cannot_be_compared(tmp_path, capsys):
    out = tmp_path / "out.csv"
    status = cli.main(
        [
            "reconcile",
            str(OURS / "webhooks_pmp.jsonl"),
            "--send-log",
            str(OURS / "send_log_pmp.csv"),
            "--analytics",
            str(OURS / "pricing_analytics_daily.json"),
            "--rate-card",
            str(OURS / "card.csv"),
            "--currency",
            "USD",
            "-o",
            str(out),
        ]
    )
    err = capsys.readouterr().err
    assert status == 0, err
    assert "Costs not compared (volumes only): the rate card has no USD rates: it has EUR" in err
    assert set(pl.read_csv(out).filter(pl.col("level") == "aggregate")["reason"]) == {AGREES, VOLUME_DIFFERS}


# --- status webhooks after 2026-10-01: pricing types read with the meaning at the message's date -----------

OCTOBER = Path(__file__).resolve().parent / "fixtures" / "webhooks"
ITEM_TYPES = ("message_id", "ours_pricing_type", "meta_pricing_type", "status", "reason")


def test_pricing_types_are_read_with_the_meaning_in_force_at_the_message_date():
    result = run([OCTOBER / "statuses_2026_10.jsonl"], send_log=OCTOBER / "send_log_2026_10.csv")
    assert items(result, ITEM_TYPES) == [
        # September 2026: free_customer_service = inside the customer service window.
        ("wamid.W1", "free_customer_service", "free_customer_service", MATCH, AGREES),
        ("wamid.W2", "free_customer_service", "free_customer_service", MATCH, AGREES),
        # November 2026: free_customer_service = inside the free tier (or a reaction); regular = utility in the window.
        ("wamid.W3", "free_tier", "free_customer_service", MATCH, AGREES),
        ("wamid.W4", "regular", "regular", MATCH, AGREES),
        ("wamid.W5", "free_customer_service", "free_customer_service", MATCH, AGREES),
        ("wamid.W6", "free_tier", "regular", DIFFERENT, PRICING_TYPE_DIFFERS),
        ("wamid.W7", "regular", "regular", DIFFERENT, RULE_MODEL_DIFFERS),
    ]
    w6 = result.rows.filter(pl.col("message_id") == "wamid.W6")["explanation"][0]
    assert w6.startswith(
        "Meta billed it regular where we computed free_tier (pmp-2026-10) (in 2026-11 Meta's regular means billable, "
        "including one-to-one utility inside the customer service window"
    )
    assert w6.endswith(
        ": the free tier of service messages is counted in another order: we give it to the first delivered in time "
        "order each month per business number, and Meta does not say which messages get it "
        "(changes-2026-h2.md §7, open question 2)."
    )
    w7 = result.rows.filter(pl.col("message_id") == "wamid.W7").row(0, named=True)
    assert (w7["ours_category"], w7["meta_category"]) == ("authentication", "authentication_international")


def test_authentication_international_with_a_hyphen_agrees_once_the_business_setting_is_given():
    setting = AuthenticationInternational(home_country="IT", start_dates={"IN": dt.date(2024, 7, 1)})
    result = run(
        [OCTOBER / "statuses_2026_10.jsonl"],
        send_log=OCTOBER / "send_log_2026_10.csv",
        settings=Settings(authentication_international=setting),
    )
    assert result.rows.filter(pl.col("message_id") == "wamid.W7").select(ITEM[2:]).rows() == [("wamid.W7", MATCH, AGREES)]


def test_the_old_meaning_read_after_the_switch_would_be_a_difference(monkeypatch):
    # The same November traffic compared as if Meta's type kept its September meaning: W3 (inside the free tier)
    # would not agree. The meaning table is data; a table whose last date is 2025-07-01 says just that.
    table = meta_reports.pricing_type_meanings()
    old_only = table.filter(pl.col("effective_from") == dt.date(2025, 7, 1))
    monkeypatch.setattr(meta_reports, "pricing_type_meanings", lambda: old_only)
    result = run([OCTOBER / "statuses_2026_10.jsonl"], send_log=OCTOBER / "send_log_2026_10.csv")
    assert result.rows.filter(pl.col("message_id") == "wamid.W3").select(ITEM_TYPES[3:]).row(0) == (DIFFERENT, PRICING_TYPE_DIFFERS)


@pytest.mark.parametrize(
    ("local_date", "agreeing"),
    [
        (dt.date(2025, 6, 30), None),  # before per-message pricing: no meaning in force
        (dt.date(2026, 9, 30), ["free_customer_service"]),
        (dt.date(2026, 10, 1), ["free_tier", "free_customer_service"]),
    ],
)
def test_the_meaning_of_free_customer_service_changes_on_2026_10_01(local_date, agreeing):
    frame = pl.DataFrame({"day": [local_date], "meta_pricing_type": ["free_customer_service"]})
    read = meta_reports.with_pricing_type_meaning(frame, local_date=pl.col("day"), pricing_type="meta_pricing_type")
    assert read["agreeing_types"].to_list() == [agreeing]


def test_the_meaning_changes_at_midnight_in_the_waba_time_zone(tmp_path):
    # 2026-09-30 23:30 UTC is 2026-10-01 01:30 in Rome: a service reply Meta calls free_customer_service is
    # inside the free tier there (we count free_tier), inside the window in UTC (we count free_customer_service).
    user = "393330000901"
    stream = jsonl(
        tmp_path,
        {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": "100000000000010",
                    "changes": [
                        {
                            "field": "messages",
                            "value": {
                                "messaging_product": "whatsapp",
                                "metadata": {"phone_number_id": "200000000000010"},
                                "contacts": [{"wa_id": user}],
                                "messages": [{"from": user, "id": "wamid.Tin", "timestamp": "1790811000", "type": "text"}],
                            },
                        }
                    ],
                }
            ],
        },
        {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": "100000000000010",
                    "changes": [
                        {
                            "field": "messages",
                            "value": {
                                "messaging_product": "whatsapp",
                                "metadata": {"phone_number_id": "200000000000010"},
                                "statuses": [
                                    {
                                        "id": "wamid.T",
                                        "status": "delivered",
                                        "timestamp": "1790811060",
                                        "recipient_id": user,
                                        "pricing": {"pricing_model": "PMP", "type": "free_customer_service", "category": "service"},
                                    }
                                ],
                            },
                        }
                    ],
                }
            ],
        },
    )
    rome = run([stream], timezone="Europe/Rome")
    utc = run([stream], timezone="UTC")
    assert items(rome, ITEM_TYPES) == [("wamid.T", "free_tier", "free_customer_service", MATCH, AGREES)]
    assert items(utc, ITEM_TYPES) == [("wamid.T", "free_customer_service", "free_customer_service", MATCH, AGREES)]


def test_billable_is_read_only_where_type_is_absent(tmp_path):
    user = "393330000902"

    def delivered(wamid, t, pricing):
        return {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": "100000000000010",
                    "changes": [
                        {
                            "field": "messages",
                            "value": {
                                "messaging_product": "whatsapp",
                                "metadata": {"phone_number_id": "200000000000010"},
                                "statuses": [{"id": wamid, "status": "delivered", "timestamp": str(t), "recipient_id": user, "pricing": pricing}],
                            },
                        }
                    ],
                }
            ],
        }

    stream = jsonl(
        tmp_path,
        # Deprecated billable contradicts type: type wins (we count free_tier, Meta's type agrees).
        delivered("wamid.B1", 1793700065, {"pricing_model": "PMP", "type": "free_customer_service", "category": "service", "billable": True}),
        # No type: billable decides (true against our free_tier: a difference).
        delivered("wamid.B2", 1793700125, {"pricing_model": "PMP", "category": "service", "billable": True}),
    )
    result = run([stream])
    assert items(result, ITEM_TYPES) == [
        ("wamid.B1", "free_tier", "free_customer_service", MATCH, AGREES),
        ("wamid.B2", "free_tier", None, DIFFERENT, PRICING_TYPE_DIFFERS),
    ]


def test_metas_free_entry_point_window_reconciles_without_a_conversation_per_message():
    # F2's `read` status carries the window's conversation but no pricing: still a PMP message, not a CBP conversation.
    result = run([OCTOBER / "fep_2026_10.jsonl"], send_log=OCTOBER / "send_log_2026_10.csv")
    assert items(result, ITEM_TYPES) == [
        ("wamid.F1", "free_entry_point", "free_entry_point", MATCH, AGREES),
        ("wamid.F2", "free_entry_point", "free_entry_point", MATCH, AGREES),
    ]


def test_paid_exempt_is_a_service_message_meta_does_not_charge():
    ingested = ingest.read_messages([str(OCTOBER / "paid_exempt.jsonl")])
    messages = ingested.messages.collect()
    config = Settings()
    billed = charges.bill(messages, config)
    meta = webhook_pricing(ingested.billing)
    # Ours: the month's first service message, inside the free tier: neither side charges it.
    free = reconcile.reconcile(messages, billed, meta_pricing=meta, settings=config)
    assert items(free, ITEM_TYPES) == [("wamid.X1", "free_tier", "regular", MATCH, AGREES)]
    # Ours past the free tier (as if it were the 1,001st): we charge what Meta exempts.
    charged = billed.with_columns(pricing_type=pl.lit("regular"), billable=pl.lit(True))
    result = reconcile.reconcile(messages, charged, meta_pricing=meta, settings=config)
    assert items(result, ITEM_TYPES) == [("wamid.X1", "regular", "regular", DIFFERENT, PRICING_TYPE_DIFFERS)]
    assert result.rows["explanation"][0].startswith(
        "Meta marks it regular with subtype paid_exempt: an eligible government or non-profit's service message beyond "
        "the free tier, which Meta does not charge until 2027-12-31"
    )


def group_charges(messages: pl.DataFrame, categories: dict[str, tuple[str, str]]) -> pl.DataFrame:
    """Our charges of the group deliveries in `messages` as issue 17's design bills them (one per
    delivered participant, the participant as user_id, opening_message_id the group message's id):
    the engine that bills groups is built elsewhere, so these tests read and compare, not bill.
    `categories`: wamid -> (category, pricing_type)."""
    delivered = messages.filter(pl.col("group_id").is_not_null() & (pl.col("direction") == "outbound") & (pl.col("status") != "failed"))
    return schema.with_charge_extensions(
        delivered.select(
            rule_set=pl.lit("pmp-2026-10"),
            pricing_model=pl.lit("PMP"),
            category=pl.col("message_id").replace_strict({k: v[0] for k, v in categories.items()}),
            pricing_type=pl.col("message_id").replace_strict({k: v[1] for k, v in categories.items()}),
            billable=pl.col("message_id").replace_strict({k: v[1] == "regular" for k, v in categories.items()}),
            started_at="timestamp",
            expires_at=pl.lit(None, schema.INSTANT),
            business_phone="business_phone",
            waba_id="waba_id",
            user_id="user_id",
            market=pl.lit("Italy"),
            message_count=pl.lit(1, pl.Int64),
            opening_message_id="message_id",
        ).cast(schema.CHARGE_CONTRACT_SCHEMA)  # type: ignore[arg-type]
    ).with_columns(group_id=pl.lit("120363000000000010"))


def reconcile_groups(path: Path, categories: dict[str, tuple[str, str]], **options) -> outcomes.Reconciliation:
    ingested = ingest.read_messages([str(path)], **options)
    messages = ingested.messages.collect()
    return reconcile.reconcile(
        messages,
        group_charges(messages, categories),
        meta_pricing=webhook_pricing(ingested.billing),
        quarantine=ingested.quarantine,
        settings=Settings(),
    )


def test_group_statuses_are_compared_one_row_per_participant():
    result = reconcile_groups(
        OCTOBER / "group_statuses.jsonl",
        {"wamid.G1": ("group_marketing", "regular"), "wamid.G2": ("group_service", "free_tier")},
    )
    columns = ("message_id", "user_id", "ours_category", "meta_category", "ours_pricing_type", "meta_pricing_type", "status", "reason")
    assert items(result, columns) == [
        ("wamid.G1", "393330000401", "group_marketing", "group_marketing", "regular", "regular", MATCH, AGREES),
        ("wamid.G1", "393330000402", "group_marketing", "group_marketing", "regular", "regular", MATCH, AGREES),
        # free_group_customer_service as of 2026-10-01: a group service delivery inside the free tier
        ("wamid.G2", "393330000401", "group_service", "group_service", "free_tier", "free_group_customer_service", MATCH, AGREES),
    ]


def test_a_group_participant_billed_otherwise_or_failed_is_its_own_row():
    result = reconcile_groups(
        OCTOBER / "group_messages.jsonl",
        {"wamid.G3": ("group_utility", "free_tier")},  # ours wrongly free: Meta bills group utility regular
        send_log=OCTOBER / "send_log_2026_11.csv",
    )
    columns = ("message_id", "user_id", "ours_pricing_type", "meta_pricing_type", "status", "reason")
    assert items(result, columns) == [
        ("wamid.G3", "393330000501", "free_tier", "regular", DIFFERENT, PRICING_TYPE_DIFFERS),
        ("wamid.G3", "393330000502", "free_tier", "regular", DIFFERENT, PRICING_TYPE_DIFFERS),
    ]  # …0503 failed: no charge of ours, no pricing of Meta's


def test_general_purpose_ai_is_compared_with_our_category():
    messages_path = OCTOBER / "general_purpose_ai.jsonl"
    ingested = ingest.read_messages([str(messages_path)])
    messages = ingested.messages.collect()
    billed = charges.bill(messages, Settings())
    as_ai = billed.with_columns(category=pl.lit("general_purpose_ai"), pricing_type=pl.lit("regular"), billable=pl.lit(True))
    meta = webhook_pricing(ingested.billing)
    result = reconcile.reconcile(messages, as_ai, meta_pricing=meta, settings=Settings())
    assert items(result, ("message_id", "ours_category", "meta_category", "status", "reason")) == [
        ("wamid.A1", "general_purpose_ai", "general_purpose_ai", MATCH, AGREES)
    ]
    # Without [billing] ai_provider we charge service: a difference that says what to set.
    result = reconcile.reconcile(messages, billed, meta_pricing=meta, settings=Settings())
    assert items(result, ("message_id", "ours_category", "meta_category", "status", "reason")) == [
        ("wamid.A1", "service", "general_purpose_ai", DIFFERENT, RULE_MODEL_DIFFERS)
    ]
    assert "[billing] ai_provider = true" in result.rows["explanation"][0]


def test_a_category_meta_adds_is_reported_not_dropped(tmp_path):
    status = json.loads((OCTOBER / "general_purpose_ai.jsonl").read_text().splitlines()[2])
    status["entry"][0]["changes"][0]["value"]["statuses"][0]["pricing"]["category"] = "quantum_marketing"
    lines = (OCTOBER / "general_purpose_ai.jsonl").read_text().splitlines()[:2]
    path = tmp_path / "new_category.jsonl"
    path.write_text("\n".join([*lines, json.dumps(status)]) + "\n")
    result = run([path], send_log=send_log(tmp_path, ("wamid.A1", "text", "")))
    assert items(result, ("message_id", "meta_category", "status", "reason")) == [("wamid.A1", "quantum_marketing", DIFFERENT, NOT_MODELLED)]
    assert result.rows["explanation"][0] == (
        "Meta billed message wamid.A1 as category quantum_marketing (quantum_marketing, regular), which this package "
        "does not know (a category Meta added?): reported, not compared."
    )
    assert "not_modelled: Meta billed a category or pricing type this package does not know" in format_summary(result)


def test_pricing_analytics_after_the_switch_counts_our_free_tier_as_free_customer_service():
    # pricing_analytics has no free-tier type (its pricing types: FREE_CUSTOMER_SERVICE, FREE_ENTRY_POINT,
    # FREE_GROUP_CUSTOMER_SERVICE, REGULAR); from 2026-10-01 a service message inside the tier is FREE_CUSTOMER_SERVICE.
    start = dt.datetime(2026, 11, 3, tzinfo=UTC)
    ours = our_charges(
        (start + dt.timedelta(hours=9), "pmp-2026-10", "service", "free_tier", 3, "IT", "5550001", Decimal(0)),
        (start + dt.timedelta(hours=10), "pmp-2026-10", "service", "free_customer_service", 1, "IT", "5550001", Decimal(0)),
        (start + dt.timedelta(hours=11), "pmp-2026-10", "utility", "regular", 2, "IT", "5550001", Decimal("0.03")),
    ).drop("cost")
    day = int(start.timestamp())
    response = {
        "pricing_analytics": {
            "data": [
                {
                    "data_points": [
                        {
                            "start": day,
                            "end": day + 86400,
                            "country": "IT",
                            "pricing_type": "FREE_CUSTOMER_SERVICE",
                            "pricing_category": "SERVICE",
                            "volume": 4,
                        },
                        {"start": day, "end": day + 86400, "country": "IT", "pricing_type": "REGULAR", "pricing_category": "UTILITY", "volume": 2},
                    ]
                }
            ]
        }
    }
    rows, _, _ = aggregates.reconcile_aggregates(ours, read_analytics(response), settings=Settings())
    assert rows.select("meta_category", "meta_pricing_type", "ours_volume", "meta_volume", "status").rows() == [
        ("service", "free_customer_service", 4, 4, MATCH),
        ("utility", "regular", 2, 2, MATCH),
    ]


def test_pricing_analytics_group_ai_and_lite_points_are_compared_and_unknown_ones_reported():
    start = dt.datetime(2026, 11, 3, tzinfo=UTC)
    ours = our_charges(
        (start + dt.timedelta(hours=9), "pmp-2026-10", "group_marketing", "regular", 6, "IT", "5550001", Decimal("0.05")),
        (start + dt.timedelta(hours=10), "pmp-2026-10", "group_service", "free_tier", 3, "IT", "5550001", Decimal(0)),
        (start + dt.timedelta(hours=11), "pmp-2026-10", "utility", "regular", 2, "IT", "5550001", Decimal("0.03")),
        (start + dt.timedelta(hours=12), "pmp-2026-10", "general_purpose_ai", "regular", 4, "IT", "5550001", Decimal(0)),
        (start + dt.timedelta(hours=13), "pmp-2026-10", "marketing", "regular", 5, "IT", "5550001", Decimal("0.05")),
    ).drop("cost")
    day = int(start.timestamp())
    point = {"start": day, "end": day + 86400, "country": "IT"}
    response = {
        "pricing_analytics": {
            "data": [
                {
                    "data_points": [
                        {**point, "pricing_type": "REGULAR", "pricing_category": "GROUP_MARKETING", "volume": 4},
                        {**point, "pricing_type": "REGULAR", "pricing_category": "GROUP_MARKETING_LITE", "volume": 2},
                        {**point, "pricing_type": "FREE_GROUP_CUSTOMER_SERVICE", "pricing_category": "GROUP_SERVICE", "volume": 3},
                        {**point, "pricing_type": "REGULAR", "pricing_category": "UTILITY", "volume": 2},
                        {**point, "pricing_type": "REGULAR", "pricing_category": "AI_BOT", "volume": 4},
                        {**point, "pricing_type": "REGULAR", "pricing_category": "MARKETING_LITE_DYNAMIC", "volume": 5},
                        {**point, "pricing_type": "REGULAR", "pricing_category": "HOLOGRAM", "volume": 1},
                    ]
                }
            ]
        }
    }
    rows, _, _ = aggregates.reconcile_aggregates(ours, read_analytics(response), settings=Settings())
    columns = ("ours_category", "meta_category", "meta_pricing_type", "ours_volume", "meta_volume", "status", "reason")
    assert sorted(rows.select(columns).rows(), key=str) == sorted(
        [
            ("general_purpose_ai", "ai_bot", "regular", 4, 4, MATCH, AGREES),
            ("group_marketing", "group_marketing+group_marketing_lite", "regular", 6, 6, MATCH, AGREES),
            ("group_service", "group_service", "free_group_customer_service", 3, 3, MATCH, AGREES),
            ("hologram", "hologram", "regular", None, 1, MISSING_OURS, NOT_MODELLED),
            ("marketing", "marketing_lite_dynamic", "regular", 5, 5, MATCH, AGREES),
            ("utility", "utility", "regular", 2, 2, MATCH, AGREES),
        ],
        key=str,
    )
    hologram = rows.filter(pl.col("meta_category") == "hologram")["explanation"][0]
    assert hologram == "Meta counts 1 message (hologram, regular) of a category or pricing type this package does not know: reported, not compared."


def test_cli_reconciles_the_2026_10_webhooks_in_one_run(tmp_path, capsys):
    out = tmp_path / "out.csv"
    inputs = [str(OCTOBER / f) for f in ("statuses_2026_10.jsonl", "fep_2026_10.jsonl")]  # groups: test_group_statuses_…
    assert cli.main(["reconcile", *inputs, "--send-log", str(OCTOBER / "send_log_2026_10.csv"), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    rows = pl.read_csv(out)
    assert rows.group_by("reason").len().sort("reason").rows() == [
        (AGREES, 7),
        (PRICING_TYPE_DIFFERS, 1),
        (RULE_MODEL_DIFFERS, 1),
    ]
    assert "not_modelled" not in err


def test_group_webhooks_billed_by_the_engine_agree_with_meta_per_participant():
    # Ingest -> the engine that bills groups (engine17) -> reconcile: one charge and one Meta item per
    # delivered participant; the failed participant (…0503) has neither.
    statuses = run([OCTOBER / "group_statuses.jsonl"])
    messages = run([OCTOBER / "group_messages.jsonl"], send_log=OCTOBER / "send_log_2026_11.csv")
    columns = ("message_id", "user_id", "ours_category", "ours_pricing_type", "meta_pricing_type", "status")
    assert items(statuses, columns) + items(messages, columns) == [
        ("wamid.G1", "393330000401", "group_marketing", "regular", "regular", MATCH),
        ("wamid.G1", "393330000402", "group_marketing", "regular", "regular", MATCH),
        ("wamid.G2", "393330000401", "group_service", "free_tier", "free_group_customer_service", MATCH),
        ("wamid.G3", "393330000501", "group_utility", "regular", "regular", MATCH),
        ("wamid.G3", "393330000502", "group_utility", "regular", "regular", MATCH),
    ]
