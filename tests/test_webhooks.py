"""analytics.read.webhooks: Meta webhook payloads into raw canonical rows and Meta's billing fields.

Third-party fixtures are read in place from ../shared/fixtures/meta (never copied into the project);
the other payloads are written here with made-up values.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from meta_fixtures import FIXTURES

from analytics.core.errors import InputError
from analytics.core.schema import MESSAGE_SCHEMA
from analytics.read import ingest
from analytics.read.webhooks import (
    BILLING_SCHEMA,
    GROUP_WITHOUT_PARTICIPANT,
    NO_TEMPLATE_NAMED,
    NO_TRAFFIC,
    RAW_MESSAGE_SCHEMA,
    SYSTEM_NOTICE,
    UNKNOWN_TYPE,
    collect_webhooks,
    fold_files,
    looks_like_webhook,
    read_send_log,
    read_templates,
    read_webhooks,
)

# --- helpers ------------------------------------------------------------------------------------


def row(**values: object) -> dict:
    """A full expected messages row: every column not named is null."""
    assert set(values) <= set(RAW_MESSAGE_SCHEMA), set(values) - set(RAW_MESSAGE_SCHEMA)
    return {column: values.get(column) for column in RAW_MESSAGE_SCHEMA}


def billing(**values: object) -> dict:
    """A full expected billing row: every column not named is null."""
    assert set(values) <= set(BILLING_SCHEMA), set(values) - set(BILLING_SCHEMA)
    return {column: values.get(column) for column in BILLING_SCHEMA}


def jsonl(tmp_path: Path, *lines: object, name: str = "hooks.jsonl") -> Path:
    """One payload a line; a str is written as it is (for broken or blank lines)."""
    path = tmp_path / name
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


def pywa_keys(tmp_path: Path, fixture: str) -> Path:
    """pywa keeps several payloads in one JSON object by name: one JSONL line per key, in file order."""
    named = json.loads((FIXTURES / fixture).read_text())
    return jsonl(tmp_path, *named.values(), name=fixture + "l")


PHONE_ID, WABA = "5550001", "100200300"


def payload(*, statuses=(), messages=(), contacts=(), field="messages", waba=WABA) -> dict:
    value: dict = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "390212345678", "phone_number_id": PHONE_ID},
    }
    for key, items in (("contacts", contacts), ("statuses", statuses), ("messages", messages)):
        if items:
            value[key] = list(items)
    change = {"value": value, "field": field}
    return {"object": "whatsapp_business_account", "entry": [{"id": waba, "changes": [change]}]}


def statuses_file(tmp_path: Path, *statuses: dict, **options) -> Path:
    """A JSONL file of one payload holding `statuses`."""
    return jsonl(tmp_path, payload(statuses=statuses, **options))


def status(wamid: str, state: str, ts: str | int, *, to="393401234567", pricing=None, conversation=None, **extra):
    item = {"id": wamid, "status": state, "timestamp": ts, "recipient_id": to, **extra}
    if pricing is not None:
        item["pricing"] = pricing
    if conversation is not None:
        item["conversation"] = conversation
    return item


def pmp(category: str, kind: str = "regular", billable: bool = True) -> dict:
    return {"billable": billable, "pricing_model": "PMP", "category": category, "type": kind}


def cbp(category: str) -> dict:
    return {"billable": True, "pricing_model": "CBP", "category": category}


def text_message(wamid: str, ts: str, sender: str = "393401234567", **extra) -> dict:
    return {"from": sender, "id": wamid, "timestamp": ts, "type": "text", "text": {"body": "ciao"}, **extra}


def outbound(path: Path, wamid: str, ts: str, state: str, source_row: int, **values: object) -> dict:
    """An expected outbound row of the hand-written payloads (default user, phone, WABA)."""
    base = dict(
        message_id=wamid,
        timestamp=ts,
        direction="outbound",
        business_phone=PHONE_ID,
        waba_id=WABA,
        user_id="393401234567",
        status=state,
        source_file=str(path),
        source_row=source_row,
    )
    return row(**(base | values))


def messages_of(path: Path, **options) -> list[dict]:
    return read_webhooks(path, **options).messages.to_dicts()


# --- third-party fixtures: exact rows -----------------------------------------------------------


def test_pywa_message_status_folds_every_status_of_one_wamid(tmp_path):
    # keys: sent, delivered, read, played, failed, with_tracker, group
    path = pywa_keys(tmp_path, "pywa__tests_data_updates_message_status.json")
    result = read_webhooks(path)
    assert result.messages.to_dicts() == [
        # failed anywhere wins; the time is the delivered one (line 2); CBP service conversation: non-template
        row(
            message_id="wamid.xyzxyz",
            timestamp="1698266945",
            direction="outbound",
            business_phone="1122334455667",
            waba_id="5467539754836534",
            user_id="972987654321",
            message_type="text",
            status="failed",
            source_file=str(path),
            source_row=2,
        ),
        row(
            message_id="<WHATSAPP_MESSAGE_ID>",
            timestamp="1698266945",
            direction="outbound",
            business_phone="<BUSINESS_PHONE_NUMBER_ID>",
            waba_id="<WHATSAPP_BUSINESS_ACCOUNT_ID>",
            user_id="<GROUP_PARTICIPANT_USER_PHONE_NUMBER>",
            status="read",
            group_id="fowefinoewcnw",
            source_file=str(path),
            source_row=7,
            problem=UNKNOWN_TYPE,
        ),
    ]
    common = dict(
        message_id="wamid.xyzxyz",
        business_phone="1122334455667",
        waba_id="5467539754836534",
        user_id="972987654321",
        pricing_model="CBP",
        pricing_category="service",
        billable=True,
        conversation_id="7270432eae37498234f4444b35ffc5",
        conversation_origin="service",
        source_file=str(path),
    )
    assert result.billing.to_dicts() == [  # the with_tracker `sent` (line 6) repeats line 1; failed has no pricing
        billing(**common, status="sent", timestamp="1698266945", conversation_expires_at="1698339900", source_row=1),
        billing(**common, status="delivered", timestamp="1698266945", source_row=2),
        billing(**common, status="read", timestamp="1689380458", source_row=3),
        billing(**common, status="played", timestamp="1689380458", source_row=4),
    ]
    assert result.skipped == {}


@pytest.mark.parametrize(
    ("key", "state", "message_type", "problem"),
    [
        ("sent", "sent", "text", None),
        ("delivered", "delivered", "text", None),
        ("read", "read", "text", None),
        ("played", "read", "text", None),  # a played voice message counts as read
        ("failed", "failed", None, UNKNOWN_TYPE),  # no pricing on failures: nothing says the type
    ],
)
def test_pywa_message_status_each_alone(tmp_path, key, state, message_type, problem):
    named = json.loads((FIXTURES / "pywa__tests_data_updates_message_status.json").read_text())
    path = jsonl(tmp_path, named[key])
    ts = named[key]["entry"][0]["changes"][0]["value"]["statuses"][0]["timestamp"]
    assert messages_of(path) == [
        row(
            message_id="wamid.xyzxyz",
            timestamp=ts,
            direction="outbound",
            business_phone="1122334455667",
            waba_id="5467539754836534",
            user_id="972987654321",
            message_type=message_type,
            status=state,
            source_file=str(path),
            source_row=1,
            problem=problem,
        )
    ]


def test_pywa_text_and_referral(tmp_path):
    path = pywa_keys(tmp_path, "pywa__tests_data_updates_message__text_and_referral.json")
    result = read_webhooks(path)
    common = dict(
        direction="inbound",
        business_phone="1122334455667",
        waba_id="1234567890987654321",
        user_id="972987654321",
        message_type="text",
        status="received",
        source_file=str(path),
    )
    assert result.messages.to_dicts() == [
        row(**common, message_id="wamid.xyzxyz", timestamp="1697043223", source_row=1),
        # the fixture's source_type is Meta's placeholder "ad or post": not "ad", so page_cta [choice]
        row(**common, message_id="wamid.ID", timestamp="1697045000", entry_point="page_cta", source_row=2),
    ]
    assert result.billing.is_empty()


def test_netflie_cbp_2022_read_without_pricing(tmp_path):
    path = FIXTURES / "netflie_whatsapp-cloud-api__NotificationFactoryTest__status_read_cbp_user_initiated.json"
    result = read_webhooks(path)
    assert result.messages.to_dicts() == [
        row(
            message_id="wamid.ID",
            timestamp="1669233778",
            direction="outbound",
            business_phone="PHONE_NUMBER_ID",
            waba_id="WHATSAPP_BUSINESS_ACCOUNT_ID",
            user_id="CUSTOMER_PHONE_NUMBER",
            status="read",
            source_file=str(path),
            source_row=1,
            problem=UNKNOWN_TYPE,
        )  # a user_initiated conversation settles nothing
    ]
    assert result.billing.to_dicts() == [
        billing(
            message_id="wamid.ID",
            status="read",
            timestamp="1669233778",
            business_phone="PHONE_NUMBER_ID",
            waba_id="WHATSAPP_BUSINESS_ACCOUNT_ID",
            user_id="CUSTOMER_PHONE_NUMBER",
            conversation_id="CONVERSATION_ID",
            conversation_expires_at="1669233778",  # an integer in the payload
            conversation_origin="user_initiated",
            source_file=str(path),
            source_row=1,
        )
    ]


def test_piusalfred_cbp_2022_sent(tmp_path):
    path = FIXTURES / "piusalfred_whatsapp__webhooks_test__status_sent_cbp_user_initiated.json"
    result = read_webhooks(path)
    assert result.messages.to_dicts() == [
        row(
            message_id="wamid.STATUSMSG",
            timestamp="1690000000",
            direction="outbound",
            business_phone="999888777",
            waba_id="WHATSAPP_BUSINESS_ACCOUNT_ID",
            user_id="123456789",
            status="sent",
            source_file=str(path),
            source_row=1,
            problem=UNKNOWN_TYPE,
        )
    ]
    assert result.billing.to_dicts() == [
        billing(
            message_id="wamid.STATUSMSG",
            status="sent",
            timestamp="1690000000",
            business_phone="999888777",
            waba_id="WHATSAPP_BUSINESS_ACCOUNT_ID",
            user_id="123456789",
            pricing_model="CBP",
            pricing_category="user_initiated",
            billable=True,
            conversation_id="CONVO123",
            conversation_expires_at="1690009999",
            conversation_origin="user_initiated",
            source_file=str(path),
            source_row=1,
        )
    ]


BSUID = "user.9373795779eb6441c8adb2eaee5b848e7dd174ddd302d7db62142f4722d574b6"
BSUID_WAMID = "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQUFERjg0NDEzNDdFODU3MUMxMAA="


@pytest.mark.parametrize(
    ("fixture", "user_id"),
    [
        ("meta_docs_bsuid__status_delivered_pmp_marketing.json", "16505551234"),
        # recipient_id and wa_id are empty: the BSUID is the user, and no phone is known
        ("meta_docs_bsuid__status_delivered_pmp_marketing_to_bsuid.json", BSUID),
    ],
)
def test_meta_docs_bsuid_pmp_marketing(fixture, user_id):
    path = FIXTURES / fixture
    result = read_webhooks(path)
    assert result.messages.to_dicts() == [
        row(
            message_id=BSUID_WAMID,
            timestamp="1750030073",
            direction="outbound",
            business_phone="106540352242922",
            waba_id="102290129340398",
            user_id=user_id,
            user_country="US",
            message_type="template",
            template_category="marketing",
            status="delivered",
            source_file=str(path),
            source_row=1,
        )
    ]
    assert result.billing.to_dicts() == [
        billing(
            message_id=BSUID_WAMID,
            status="delivered",
            timestamp="1750030073",
            business_phone="106540352242922",
            waba_id="102290129340398",
            user_id=user_id,
            pricing_model="PMP",
            pricing_category="marketing",
            pricing_type="regular",
            billable=True,
            source_file=str(path),
            source_row=1,
        )
    ]


def test_gupshup_general_purpose_ai_status_and_v3_billing_event(tmp_path):
    text = (FIXTURES / "gupshup_docs__general_purpose_ai_v3_billing_event.txt").read_text()
    # The .txt is prose around two JSON bodies: the Meta-format status ("curl body") and Gupshup's V3 event.
    decoder = json.JSONDecoder()
    status_body, v3_part = text.split("V3 webhook event:")
    meta_status, _ = decoder.raw_decode(status_body[status_body.index("{") :])
    v3_event, _ = decoder.raw_decode(v3_part[v3_part.index("{") :])
    path = jsonl(tmp_path, meta_status, v3_event)
    result = read_webhooks(path)
    wamid = "wamid.HBgMOTE4ODcxNjAxMjk3FQIAERgSMTdCRE111UyRkNDNDc0RUU4MjA4AA=="
    where = dict(business_phone="1005972845928404", waba_id="758747873957634", user_id="398871601297")
    assert result.messages.to_dicts() == [
        # general_purpose_ai: an AI provider's non-template message (not priced here, but its type is known)
        row(
            message_id=wamid,
            timestamp="1770366909",
            direction="outbound",
            **where,
            message_type="text",
            status="delivered",
            source_file=str(path),
            source_row=1,
        )
    ]
    assert result.billing.to_dicts() == [
        billing(
            message_id=wamid,
            status="delivered",
            timestamp="1770366909",
            **where,
            pricing_model="PMP",
            pricing_category="general_purpose_ai",
            pricing_type="regular",
            billable=True,
            conversation_id="c0ab246839b33ca5014b41fd2ede5b862e2",
            conversation_expires_at="1770366909",
            conversation_origin="general_purpose_ai",
            source_file=str(path),
            source_row=1,
        )
    ]
    assert result.skipped == {"billing-event": 1}  # Gupshup's own envelope field, recognised and counted


@pytest.mark.parametrize(
    ("fixture", "skipped"),
    [
        ("pywa__tests_data_updates_template_category_update.json", {"template_category_update": 1}),
        ("pywa__tests_data_updates_template_status_update.json", {"message_template_status_update": 2}),
    ],
)
def test_template_webhooks_are_skipped_and_counted(tmp_path, fixture, skipped):
    result = read_webhooks(pywa_keys(tmp_path, fixture))
    assert result.messages.is_empty() and result.billing.is_empty()
    assert result.skipped == skipped


def test_account_update_is_skipped_and_counted():
    result = read_webhooks(FIXTURES / "meta_docs_pricing__account_update_volume_tier.json")
    assert result.messages.is_empty()
    assert result.skipped == {"account_update": 1}


def test_frames_have_the_agreed_columns_and_types(tmp_path):
    result = read_webhooks(jsonl(tmp_path, payload(statuses=[status("wamid.A", "sent", "1751400000")])))
    assert result.messages.schema == pl.Schema(RAW_MESSAGE_SCHEMA)
    assert list(result.messages.columns[: len(MESSAGE_SCHEMA)]) == list(MESSAGE_SCHEMA)
    assert result.billing.schema == pl.Schema(BILLING_SCHEMA)
    empty = read_webhooks(jsonl(tmp_path, "", name="empty.jsonl"))
    assert empty.messages.schema == pl.Schema(RAW_MESSAGE_SCHEMA) and empty.messages.is_empty()


# --- folding statuses ---------------------------------------------------------------------------


def test_statuses_split_across_payloads_fold_into_one_row(tmp_path):
    path = jsonl(
        tmp_path,
        payload(statuses=[status("wamid.A", "sent", "1751400000", pricing=pmp("utility"))]),
        payload(messages=[text_message("wamid.IN", "1751400030")]),
        payload(statuses=[status("wamid.A", "delivered", "1751400005", pricing=pmp("utility"))]),
    )
    assert messages_of(path) == [
        row(
            message_id="wamid.IN",
            timestamp="1751400030",
            direction="inbound",
            business_phone=PHONE_ID,
            waba_id=WABA,
            user_id="393401234567",
            message_type="text",
            status="received",
            source_file=str(path),
            source_row=2,
        ),
        outbound(path, "wamid.A", "1751400005", "delivered", 3, message_type="template", template_category="utility"),
    ]


def test_sent_delivered_read_fold_to_read_at_delivery_time(tmp_path):
    path = jsonl(
        tmp_path,
        payload(statuses=[status("wamid.A", "read", "1751400090")]),  # out of order, as webhooks may arrive
        payload(statuses=[status("wamid.A", "sent", "1751400000"), status("wamid.A", "delivered", "1751400005")]),
    )
    assert messages_of(path) == [outbound(path, "wamid.A", "1751400005", "read", 2, problem=UNKNOWN_TYPE)]


def test_read_without_delivered_takes_the_read_time(tmp_path):
    # Meta sends no `delivered` when delivery and read happen together
    path = statuses_file(tmp_path, status("wamid.A", "sent", 1751400000), status("wamid.A", "read", 1751400070))
    assert messages_of(path) == [outbound(path, "wamid.A", "1751400070", "read", 1, problem=UNKNOWN_TYPE)]


def test_failed_wins_and_keeps_the_send_time(tmp_path):
    path = jsonl(
        tmp_path,
        payload(statuses=[status("wamid.A", "sent", "1751400000", pricing=pmp("marketing"))]),
        payload(statuses=[status("wamid.A", "failed", "1751400009", errors=[{"code": 131026}])]),
    )
    assert messages_of(path) == [outbound(path, "wamid.A", "1751400000", "failed", 1, message_type="template", template_category="marketing")]


def test_webhook_retries_make_one_row_and_one_billing_row_per_status(tmp_path):
    free_service = pmp("service", "free_customer_service", False)
    delivered = payload(statuses=[status("wamid.A", "delivered", "1751400005", pricing=free_service)])
    path = jsonl(tmp_path, delivered, delivered, payload(statuses=[status("wamid.A", "sent", "1751400000")]), delivered)
    result = read_webhooks(path)
    assert result.messages.to_dicts() == [outbound(path, "wamid.A", "1751400005", "delivered", 1, message_type="text")]
    assert result.billing.to_dicts() == [
        billing(
            message_id="wamid.A",
            status="delivered",
            timestamp="1751400005",
            business_phone=PHONE_ID,
            waba_id=WABA,
            user_id="393401234567",
            pricing_model="PMP",
            pricing_category="service",
            pricing_type="free_customer_service",
            billable=False,
            source_file=str(path),
            source_row=1,
        )
    ]


def test_earliest_of_repeated_delivered_times(tmp_path):
    later, earlier = status("wamid.A", "delivered", "1751400009"), status("wamid.A", "delivered", "1751400005")
    path = statuses_file(tmp_path, later, earlier)
    assert messages_of(path)[0]["timestamp"] == "1751400005"


def test_only_deleted_status_is_a_problem_but_keeps_its_billing_row(tmp_path):
    path = jsonl(tmp_path, payload(statuses=[status("wamid.A", "deleted", "1751400009", pricing=pmp("service"))]))
    result = read_webhooks(path)
    assert result.messages.to_dicts() == [
        outbound(
            path,
            "wamid.A",
            "1751400009",
            None,
            1,
            message_type="text",
            problem="no sent, delivered, read or failed status for this message (seen: deleted)",
        )
    ]
    assert result.billing["status"].to_list() == ["deleted"]


def test_statuses_that_disagree_on_the_user_are_a_problem(tmp_path):
    sent = status("wamid.A", "sent", "1751400000")
    delivered = status("wamid.A", "delivered", "1751400005", to="393409999999")
    path = statuses_file(tmp_path, sent, delivered)
    [folded] = messages_of(path)
    disagree = "statuses of this message disagree on user_id: 393409999999, 393401234567"  # delivered first
    assert folded["problem"] == f"{disagree}; {UNKNOWN_TYPE}"


# --- users: BSUIDs, phones, countries -----------------------------------------------------------

USER_BSUID = "IT.4815162342"


def test_bsuid_recipient_with_empty_recipient_id(tmp_path):
    contact = {"profile": {"name": "Giulia", "country_code": "it"}, "wa_id": "393401234567", "user_id": USER_BSUID}
    to_bsuid = status("wamid.A", "delivered", "1751400005", to="", recipient_user_id=USER_BSUID)
    path = statuses_file(tmp_path, to_bsuid, contacts=[contact])
    assert messages_of(path) == [
        outbound(
            path, "wamid.A", "1751400005", "delivered", 1, user_id=USER_BSUID, user_phone="+393401234567", user_country="IT", problem=UNKNOWN_TYPE
        )
    ]


def test_bsuid_recipient_without_contacts_has_no_phone(tmp_path):
    path = statuses_file(tmp_path, status("wamid.A", "sent", "1751400000", to="", recipient_user_id=USER_BSUID))
    expected = outbound(path, "wamid.A", "1751400000", "sent", 1, user_id=USER_BSUID, problem=UNKNOWN_TYPE)
    assert messages_of(path) == [expected]


def test_inbound_from_a_bsuid_user_with_empty_from(tmp_path):
    profile = {"name": "Giulia", "username": "@giulia"}
    contact = {"profile": profile, "wa_id": "", "user_id": USER_BSUID, "country_code": "IT"}  # country outside profile
    path = jsonl(tmp_path, payload(contacts=[contact], messages=[text_message("wamid.IN", "1751400000", sender="")]))
    assert messages_of(path) == [
        row(
            message_id="wamid.IN",
            timestamp="1751400000",
            direction="inbound",
            business_phone=PHONE_ID,
            waba_id=WABA,
            user_id=USER_BSUID,
            user_country="IT",
            message_type="text",
            status="received",
            source_file=str(path),
            source_row=1,
        )
    ]


def test_inbound_from_user_id_field_and_known_phone(tmp_path):
    contact = {"profile": {"name": "Giulia"}, "wa_id": "393401234567", "user_id": USER_BSUID}
    message = text_message("wamid.IN", "1751400000", sender="", from_user_id=USER_BSUID)
    path = jsonl(tmp_path, payload(contacts=[contact], messages=[message]))
    [inbound] = messages_of(path)
    assert (inbound["user_id"], inbound["user_phone"]) == (USER_BSUID, "+393401234567")


# --- inbound ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source_type", "entry_point"),
    [("ad", "ctwa"), ("post", "page_cta"), ("AD", "ctwa"), ("story", "page_cta"), (None, None)],
)
def test_inbound_entry_point_from_referral(tmp_path, source_type, entry_point):
    referral = {"source_type": source_type, "source_id": "120200000", "ctwa_clid": "Afz"}
    extra = {"referral": referral} if source_type else {}
    path = jsonl(tmp_path, payload(messages=[text_message("wamid.IN", 1751400000, **extra)]))
    assert messages_of(path) == [
        row(
            message_id="wamid.IN",
            timestamp="1751400000",
            direction="inbound",
            business_phone=PHONE_ID,
            waba_id=WABA,
            user_id="393401234567",
            message_type="text",
            status="received",
            entry_point=entry_point,
            source_file=str(path),
            source_row=1,
        )
    ]


def test_inbound_system_notice_is_a_problem(tmp_path):
    notice = {
        "from": "393401234567",
        "id": "wamid.SYS",
        "timestamp": "1751400000",
        "type": "system",
        "system": {"body": "User changed number", "type": "user_changed_number"},
    }
    [system] = messages_of(jsonl(tmp_path, payload(messages=[notice])))
    assert (system["message_type"], system["problem"]) == ("system", SYSTEM_NOTICE)


def test_business_phone_falls_back_to_display_number(tmp_path):
    hook = payload(messages=[text_message("wamid.IN", "1751400000")])
    del hook["entry"][0]["changes"][0]["value"]["metadata"]["phone_number_id"]
    assert messages_of(jsonl(tmp_path, hook))[0]["business_phone"] == "390212345678"


# --- file shapes and broken input ---------------------------------------------------------------


def test_json_array_file_numbers_payloads_from_one(tmp_path):
    path = tmp_path / "hooks.json"
    path.write_text(
        json.dumps(
            [
                payload(messages=[text_message("wamid.IN", "1751400000")]),
                {"hello": "world"},
                payload(statuses=[status("wamid.A", "delivered", "1751400005", pricing=pmp("service"))]),
            ],
            indent=2,
        )
    )
    assert messages_of(path) == [
        row(
            message_id="wamid.IN",
            timestamp="1751400000",
            direction="inbound",
            business_phone=PHONE_ID,
            waba_id=WABA,
            user_id="393401234567",
            message_type="text",
            status="received",
            source_file=str(path),
            source_row=1,
        ),
        row(
            source_file=str(path),
            source_row=2,
            problem=(
                'item 2 of the JSON array is not a WhatsApp webhook payload (expected an object with "object": '
                '"whatsapp_business_account" and an "entry" list; found an object with keys hello)'
            ),
        ),
        outbound(path, "wamid.A", "1751400005", "delivered", 3, message_type="text"),
    ]


def test_single_pretty_printed_payload_is_row_one(tmp_path):
    path = tmp_path / "hook.json"
    hook = payload(statuses=[status("wamid.A", "sent", "1751400000", pricing=pmp("authentication_international"))])
    path.write_text(json.dumps(hook, indent=4))
    assert messages_of(path) == [outbound(path, "wamid.A", "1751400000", "sent", 1, message_type="template", template_category="authentication")]


def test_broken_line_among_good_ones(tmp_path):
    path = jsonl(
        tmp_path,
        payload(messages=[text_message("wamid.IN1", "1751400000")]),
        "",
        '{"object": "whatsapp_business_account", "entry": [',
        "[1, 2]",
        payload(messages=[text_message("wamid.IN2", "1751400060")]),
    )
    rows = messages_of(path)
    assert [(r["source_row"], r["message_id"], r["problem"]) for r in rows] == [
        (1, "wamid.IN1", None),
        (3, None, "line 3 is not JSON (Expecting value at column 51)"),
        (
            4,
            None,
            'line 4 is not a WhatsApp webhook payload (expected an object with "object": '
            '"whatsapp_business_account" and an "entry" list; found a list)',
        ),
        (5, "wamid.IN2", None),
    ]
    assert rows[1] == row(source_file=str(path), source_row=3, problem=rows[1]["problem"])  # nothing else is set


def test_broken_structure_inside_a_payload_is_a_problem_row(tmp_path):
    hook = payload(statuses=[{"status": "sent", "timestamp": "1751400000", "recipient_id": "393401234567"}, "oops"])
    hook["entry"].append({"id": WABA})
    path = jsonl(tmp_path, hook, {"object": "whatsapp_business_account"})
    assert [(r["source_row"], r["problem"]) for r in messages_of(path)] == [
        (1, "line 1: entry[0].changes[0].value.statuses[0] has no id (wamid): it cannot be matched to its message"),
        (1, "line 1: entry[0].changes[0].value.statuses[1] is not an object"),
        (1, 'line 1: entry[1] has no "changes" list'),
        (2, 'line 2: "entry" is missing or not a list'),
    ]


def test_single_payload_that_is_not_a_webhook(tmp_path):
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"object": "page", "entry": []}))
    [only] = messages_of(path)
    assert only["source_row"] == 1 and only["problem"].startswith("the JSON document is not a WhatsApp webhook payload")


def test_unreadable_files_raise_input_error_naming_the_file(tmp_path):
    missing = tmp_path / "missing.jsonl"
    with pytest.raises(InputError, match="missing.jsonl: cannot read the file"):
        read_webhooks(missing)
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(payload(messages=[text_message("wamid.IN", "1")]), indent=2)[:-3])
    with pytest.raises(InputError, match=r"broken.json: not valid JSON \(.* line \d+ column \d+\) and not JSON Lines"):
        read_webhooks(broken)
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"a": 1}\n{"b": "caf\xe9"}\n')
    with pytest.raises(InputError, match=r"latin.jsonl: line 2 is not UTF-8 text"):
        read_webhooks(latin)


def test_messages_change_without_traffic_and_other_fields_are_counted(tmp_path):
    errors_only = payload()
    errors_only["entry"][0]["changes"][0]["value"]["errors"] = [{"code": 131000}]
    echo = payload(field="smb_message_echoes")
    path = jsonl(tmp_path, errors_only, echo, echo)
    result = read_webhooks(path)
    assert result.messages.is_empty()
    assert result.skipped == {NO_TRAFFIC: 1, "smb_message_echoes": 2}


def test_looks_like_webhook():
    assert looks_like_webhook({"object": "whatsapp_business_account", "entry": []})
    assert looks_like_webhook({"entry": [{"changes": []}]})
    assert not looks_like_webhook({"object": "page", "entry": []})
    assert not looks_like_webhook([{"object": "whatsapp_business_account"}])
    assert not looks_like_webhook({"type": "message-event", "payload": {}})


# --- Meta's billed category ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pricing", "conversation", "message_type", "template_category"),
    [
        (pmp("service", "free_customer_service", False), None, "text", None),
        (pmp("marketing"), None, "template", "marketing"),
        (pmp("utility", "free_customer_service", False), None, "template", "utility"),
        (pmp("authentication"), None, "template", "authentication"),
        (pmp("authentication_international"), None, "template", "authentication"),
        (pmp("marketing_lite"), None, "template", "marketing_lite"),
        (pmp("referral_conversion", "free_entry_point", False), None, None, None),  # FEP: category not said
        (cbp("service"), {"id": "c1", "origin": {"type": "service"}}, "text", None),
        (cbp("marketing"), {"id": "c1", "origin": {"type": "marketing"}}, None, None),  # a non-template may ride it
        (cbp("utility"), None, None, None),
        (cbp("authentication"), None, None, None),
        (cbp("business_initiated"), None, None, None),
        (None, {"id": "c1", "origin": {"type": "service"}}, "text", None),  # conversation without pricing
        (None, {"id": "c1", "origin": {"type": "marketing"}}, None, None),
    ],
)
def test_billed_category_fills_the_type(tmp_path, pricing, conversation, message_type, template_category):
    delivered = status("wamid.A", "delivered", "1751400005", pricing=pricing, conversation=conversation)
    path = statuses_file(tmp_path, delivered)
    assert messages_of(path) == [
        outbound(
            path,
            "wamid.A",
            "1751400005",
            "delivered",
            1,
            message_type=message_type,
            template_category=template_category,
            problem=None if message_type else UNKNOWN_TYPE,
        )
    ]


def test_pricing_type_alias_and_missing_billable(tmp_path):
    pricing = {"pricing_model": "PMP", "category": "utility", "pricing_type": "free_customer_service"}
    conversation = {"id": "c9", "expiration_timestamp": 1751486400, "origin": {"type": "utility"}}
    path = statuses_file(tmp_path, status("wamid.A", "sent", 1751400000, pricing=pricing, conversation=conversation))
    assert read_webhooks(path).billing.to_dicts() == [
        billing(
            message_id="wamid.A",
            status="sent",
            timestamp="1751400000",
            business_phone=PHONE_ID,
            waba_id=WABA,
            user_id="393401234567",
            pricing_model="PMP",
            pricing_category="utility",
            pricing_type="free_customer_service",
            billable=None,
            conversation_id="c9",
            conversation_expires_at="1751486400",  # an integer in the payload
            conversation_origin="utility",
            source_file=str(path),
            source_row=1,
        )
    ]


def test_type_key_wins_over_pricing_type_alias(tmp_path):
    pricing = pmp("utility", "regular") | {"pricing_type": "free_customer_service"}
    path = jsonl(tmp_path, payload(statuses=[status("wamid.A", "sent", "1751400000", pricing=pricing)]))
    assert read_webhooks(path).billing["pricing_type"].to_list() == ["regular"]


# --- send log and template list -----------------------------------------------------------------


@pytest.fixture
def template_list(tmp_path) -> Path:
    path = tmp_path / "templates.json"
    path.write_text(
        json.dumps(
            {
                "data": [
                    {"name": "order_shipped", "language": "it", "category": "UTILITY", "id": "1"},
                    {"name": "order_shipped", "language": "en_US", "category": "UTILITY", "id": "2"},
                    {"name": "summer_sale", "language": "it", "category": "MARKETING", "id": "3"},
                    {"name": "summer_sale", "language": "en_US", "category": "UTILITY", "id": "4"},
                ],
                "paging": {"cursors": {}},
            }
        )
    )
    return path


@pytest.fixture
def send_log(tmp_path) -> Path:
    path = tmp_path / "send_log.csv"
    path.write_text(
        "message_id,message_type,template_name,language,template_category\n"
        "wamid.T1,template,order_shipped,,\n"
        "wamid.T2,TEMPLATE,summer_sale,,\n"
        "wamid.T3,template,summer_sale,it,\n"
        "wamid.T4,,,,Authentication\n"
        "wamid.T5,template,unknown_one,,\n"
        "wamid.N1,interactive,,,\n"
        "wamid.T6,template,,,\n"
    )
    return path


def test_send_log_and_template_list_fill_categories(tmp_path, send_log, template_list):
    wamids = ["wamid.T1", "wamid.T2", "wamid.T3", "wamid.T4", "wamid.T5", "wamid.N1", "wamid.T6", "wamid.X"]
    hooks = [payload(statuses=[status(w, "delivered", "1751400005", pricing=cbp("utility"))]) for w in wamids]
    path = jsonl(tmp_path, *hooks)
    rows = read_webhooks(path, send_log=read_send_log(send_log), templates=read_templates(template_list)).messages
    assert rows.select("message_id", "message_type", "template_category", "problem").rows() == [
        ("wamid.T1", "template", "utility", None),  # both languages agree
        (
            "wamid.T2",
            "template",
            None,
            "template 'summer_sale' has different categories by language (en_US: utility, it: marketing): "
            "add a language column to the send log or give template_category",
        ),
        ("wamid.T3", "template", "marketing", None),  # the language settles it
        ("wamid.T4", "template", "authentication", None),  # a category without a type is a template
        (
            "wamid.T5",
            "template",
            None,
            "template 'unknown_one' is not in the template list: add it to --templates or give template_category in the send log",
        ),
        ("wamid.N1", "interactive", None, None),
        ("wamid.T6", "template", None, NO_TEMPLATE_NAMED),
        ("wamid.X", None, None, UNKNOWN_TYPE),  # not in the send log, and a CBP utility conversation settles nothing
    ]


def test_send_log_wins_over_billed_category_and_pmp_fills_what_it_lacks(tmp_path, send_log):
    path = jsonl(
        tmp_path,
        payload(statuses=[status("wamid.N1", "delivered", "1751400005", pricing=pmp("marketing"))]),
        payload(statuses=[status("wamid.T1", "delivered", "1751400005", pricing=pmp("utility"))]),
    )
    rows = read_webhooks(path, send_log=read_send_log(send_log)).messages  # no template list
    assert rows.select("message_id", "message_type", "template_category", "problem").rows() == [
        ("wamid.N1", "interactive", None, None),
        ("wamid.T1", "template", "utility", None),  # the name alone is not enough; Meta's billed category is
    ]


def test_template_name_without_a_template_list(tmp_path, send_log):
    path = jsonl(tmp_path, payload(statuses=[status("wamid.T1", "sent", "1751400000")]))
    [only] = messages_of(path, send_log=read_send_log(send_log))
    assert only["problem"] == (
        "template 'order_shipped' has no known category: pass --templates (Meta's template JSON) or give template_category in the send log"
    )


def test_send_log_given_as_a_frame_with_few_columns(tmp_path):
    log = pl.DataFrame({"message_id": ["wamid.A"], "template_category": ["UTILITY"]})
    path = jsonl(tmp_path, payload(statuses=[status("wamid.A", "sent", "1751400000")]))
    [only] = messages_of(path, send_log=log)
    assert (only["message_type"], only["template_category"], only["problem"]) == ("template", "utility", None)


def test_read_send_log_columns_and_errors(tmp_path, send_log):
    log = read_send_log(send_log)
    assert log.columns == ["message_id", "message_type", "template_name", "language", "template_category", "sent_by", "tokens"]
    assert log.row(1) == ("wamid.T2", "template", "summer_sale", None, None, None, None)
    assert log.row(3) == ("wamid.T4", None, None, None, "authentication", None, None)
    no_type = tmp_path / "no_type.csv"
    no_type.write_text("message_id,body\nwamid.A,hi\n")
    with pytest.raises(InputError, match="no_type.csv: the send log needs message_id and one of"):
        read_send_log(no_type)
    conflict = tmp_path / "conflict.csv"
    conflict.write_text("message_id,message_type\nwamid.A,text\nwamid.A,text\nwamid.A,template\n")
    with pytest.raises(InputError, match="message_id wamid.A appears with different values"):
        read_send_log(conflict)
    blank = tmp_path / "blank.csv"
    blank.write_text("message_id,message_type\nwamid.A,text\n,text\n")
    with pytest.raises(InputError, match="blank.csv, row 3: message_id is empty"):
        read_send_log(blank)
    with pytest.raises(InputError, match="nowhere.csv: cannot read the send log"):
        read_send_log(tmp_path / "nowhere.csv")


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        ("pywa__tests_data_templates_authentication_examples__one.json", ("authentication_code_autofill_button", "en_US", "authentication")),
        ("pywa__tests_data_templates_buttons_examples__one.json", ("seasonal_promotion", "en_US", "marketing")),
    ],
)
def test_read_templates_single_object_and_list(tmp_path, fixture, expected):
    # pywa keys its example by name: the value is Meta's template object
    [template] = json.loads((FIXTURES / fixture).read_text()).values()
    single, listed = tmp_path / "one.json", tmp_path / "list.json"
    single.write_text(json.dumps(template))
    listed.write_text(json.dumps([template, template]))
    for path in (single, listed):
        frame = read_templates(path)
        assert frame.columns == ["template_name", "language", "template_category"]
        assert frame.rows() == [expected]


def test_read_templates_errors(tmp_path):
    nameless = tmp_path / "nameless.json"
    nameless.write_text(json.dumps([{"language": "it", "category": "UTILITY"}]))
    with pytest.raises(InputError, match="nameless.json: template 1 has no name or category"):
        read_templates(nameless)
    scalar = tmp_path / "scalar.json"
    scalar.write_text("42")
    with pytest.raises(InputError, match="scalar.json: expected a template object"):
        read_templates(scalar)
    with pytest.raises(InputError, match="absent.json: cannot read the template list"):
        read_templates(tmp_path / "absent.json")


# --- statuses split across files (daily dumps) --------------------------------------------------------


def test_one_messages_statuses_in_two_files_fold_into_one_row_of_the_file_that_dates_it(tmp_path):
    monday = jsonl(tmp_path, payload(statuses=[status("wamid.X", "sent", "1751400000", pricing=pmp("utility"))]), name="monday.jsonl")
    tuesday = jsonl(
        tmp_path,
        payload(statuses=[status("wamid.Y", "sent", "1751486400", pricing=pmp("marketing"))]),
        payload(statuses=[status("wamid.X", "delivered", "1751486500", pricing=pmp("utility"))]),
        name="tuesday.jsonl",
    )
    first, second = fold_files([collect_webhooks(monday), collect_webhooks(tuesday)])
    assert first.messages.to_dicts() == []  # wamid.X is dated by its delivery, in Tuesday's file
    assert second.messages.select("message_id", "timestamp", "status", "source_file", "source_row").rows() == [
        ("wamid.Y", "1751486400", "sent", str(tuesday), 1),
        ("wamid.X", "1751486500", "delivered", str(tuesday), 2),
    ]
    assert first.billing.select("message_id", "status").rows() == [("wamid.X", "sent")]
    assert second.billing.select("message_id", "status").rows() == [("wamid.Y", "sent"), ("wamid.X", "delivered")]


def test_ingest_folds_statuses_across_its_input_files_instead_of_quarantining_a_conflict(tmp_path):
    sent = jsonl(tmp_path, payload(statuses=[status("wamid.X", "sent", "1751400000", pricing=pmp("utility"))]), name="a.jsonl")
    read = jsonl(tmp_path, payload(statuses=[status("wamid.X", "read", "1751400600", pricing=pmp("utility"))]), name="b.jsonl")
    retried = jsonl(tmp_path, payload(statuses=[status("wamid.X", "sent", "1751400000", pricing=pmp("utility"))]), name="c.jsonl")
    ingested = ingest.read_messages([sent, read, retried])
    messages = ingested.messages.collect()
    assert messages.select("message_id", "status", pl.col("timestamp").dt.epoch("s")).rows() == [("wamid.X", "read", 1751400600)]
    assert ingested.summary.rows_quarantined == 0
    # c.jsonl's sent status is a retry of a.jsonl's: an identical repeat; a.jsonl's is folded into the read one.
    assert (ingested.summary.duplicates_dropped, ingested.summary.statuses_folded) == (1, 1)
    assert ingested.billing.select("message_id", "status", "source_file").rows() == [
        ("wamid.X", "sent", str(sent)),
        ("wamid.X", "read", str(read)),
    ]


# --- the meanings of 2026-10-01 (tests/fixtures/webhooks, syntax from Meta's status reference P3) ----------

OCTOBER = Path(__file__).parent / "fixtures" / "webhooks"


def billing_of(result, wamid: str, *columns: str) -> list[tuple]:
    return result.billing.filter(pl.col("message_id") == wamid).select(columns).rows()


def message_of(result, wamid: str) -> dict:
    (found,) = result.messages.filter(pl.col("message_id") == wamid).to_dicts()
    return found


def test_v24_status_without_conversation_is_a_normal_status():
    result = read_webhooks(OCTOBER / "statuses_2026_10.jsonl")
    # W3: `sent` without pricing or conversation, `delivered` with pricing only (no billable: deprecated).
    assert message_of(result, "wamid.W3") | {"source_file": None} == row(
        message_id="wamid.W3",
        timestamp="1793700065",
        direction="outbound",
        business_phone="200000000000010",
        waba_id="100000000000010",
        user_id="393330000101",
        message_type="text",
        status="delivered",
        source_row=7,
    )
    assert billing_of(result, "wamid.W3", "status", "pricing_type", "pricing_category", "billable", "conversation_id") == [
        ("delivered", "free_customer_service", "service", None, None)
    ]
    assert result.messages["problem"].is_null().all()


def test_authentication_international_with_a_hyphen_reads_as_the_projects_spelling():
    result = read_webhooks(OCTOBER / "statuses_2026_10.jsonl")
    assert billing_of(result, "wamid.W7", "status", "pricing_category", "pricing_type") == [("sent", "authentication_international", "regular")]
    w7 = message_of(result, "wamid.W7")
    assert (w7["message_type"], w7["template_category"], w7["status"], w7["user_id"]) == (
        "template",
        "authentication",
        "delivered",
        "919800000001",
    )


def test_free_entry_point_status_carries_the_end_meta_gave_the_window():
    result = read_webhooks(OCTOBER / "fep_2026_10.jsonl", send_log=read_send_log(OCTOBER / "send_log_2026_10.csv"))
    window_end = str(1793700000 + 300 + 72 * 3600)  # on `sent` only, 72 h after F1
    assert result.messages.select("message_id", "direction", "status", "fep_expires_at").rows() == [
        ("wamid.F1in", "inbound", "received", None),
        ("wamid.F1", "outbound", "delivered", window_end),
        ("wamid.F2", "outbound", "read", window_end),
    ]
    assert billing_of(result, "wamid.F2", "status", "conversation_id", "conversation_expires_at", "pricing_type") == [
        ("sent", "a1b2c3d4e5f60718293a4b5c6d7e8f90", window_end, "free_entry_point"),
        ("read", "a1b2c3d4e5f60718293a4b5c6d7e8f90", None, None),
    ]


def test_an_expiration_outside_a_free_entry_point_window_is_not_a_window_end(tmp_path):
    # Before v24 every status had a conversation with an expiration (P3): only an FEP window's end is kept.
    marketing = status(
        "wamid.M",
        "sent",
        "1751400000",
        pricing={"pricing_model": "PMP", "type": "regular", "category": "marketing"},
        conversation={"id": "c1", "expiration_timestamp": "1751486400", "origin": {"type": "marketing"}},
    )
    result = read_webhooks(jsonl(tmp_path, payload(statuses=[marketing])))
    assert result.messages.select("message_id", "template_category", "fep_expires_at").rows() == [("wamid.M", "marketing", None)]


def test_paid_exempt_subtype_is_kept_in_the_billing_rows():
    result = read_webhooks(OCTOBER / "paid_exempt.jsonl")
    assert billing_of(result, "wamid.X1", "pricing_type", "pricing_category", "pricing_subtype") == [("regular", "service", "paid_exempt")]
    assert message_of(result, "wamid.X1")["message_type"] == "text"


def test_a_reaction_takes_its_type_from_the_send_log():
    result = read_webhooks(OCTOBER / "statuses_2026_10.jsonl", send_log=read_send_log(OCTOBER / "send_log_2026_10.csv"))
    assert message_of(result, "wamid.W5")["message_type"] == "reaction"
    assert billing_of(result, "wamid.W5", "pricing_type", "pricing_category") == [("free_customer_service", "service")]


def test_group_statuses_are_one_row_per_participant():
    result = read_webhooks(OCTOBER / "group_statuses.jsonl")
    columns = ("message_id", "user_id", "group_id", "status", "message_type", "template_category", "problem")
    assert result.messages.select(columns).rows() == [
        ("wamid.G1", "393330000401", "120363000000000010", "delivered", "template", "marketing", None),
        ("wamid.G1", "393330000402", "120363000000000010", "delivered", "template", "marketing", None),
        ("wamid.G2", "393330000401", "120363000000000010", "delivered", "text", None, None),
    ]
    columns = ("message_id", "status", "user_id", "recipient_type", "recipient_participant_id", "pricing_category", "pricing_type")
    assert result.billing.select(columns).rows() == [
        ("wamid.G1", "sent", "393330000401", "group", "393330000401", "group_marketing", "regular"),
        ("wamid.G1", "sent", "393330000402", "group", "393330000402", "group_marketing", "regular"),
        ("wamid.G2", "delivered", "393330000401", "group", "393330000401", "group_service", "free_group_customer_service"),
    ]


def test_a_group_message_inbound_and_per_participant_with_one_failed():
    result = read_webhooks(OCTOBER / "group_messages.jsonl", send_log=read_send_log(OCTOBER / "send_log_2026_11.csv"))
    columns = ("message_id", "direction", "user_id", "group_id", "status", "timestamp", "template_name", "problem")
    assert result.messages.select(columns).rows() == [
        ("wamid.G3in", "inbound", "393330000501", "120363000000000020", "received", "1793703600", None, None),
        ("wamid.G3", "outbound", "393330000501", "120363000000000020", "read", "1793703662", "order_update", None),
        ("wamid.G3", "outbound", "393330000502", "120363000000000020", "delivered", "1793703663", "order_update", None),
        ("wamid.G3", "outbound", "393330000503", "120363000000000020", "failed", "1793703665", "order_update", None),
    ]
    assert billing_of(result, "wamid.G3", "status", "recipient_participant_id", "pricing_category") == [
        ("sent", "393330000501", "group_utility"),
        ("sent", "393330000502", "group_utility"),
        ("delivered", "393330000501", "group_utility"),
        ("delivered", "393330000502", "group_utility"),
    ]


def test_a_group_status_without_its_participant_is_a_problem(tmp_path):
    group_status = {**status("wamid.GX", "delivered", "1793703662"), "recipient_type": "group", "recipient_id": "120363000000000030"}
    [only] = messages_of(jsonl(tmp_path, payload(statuses=[group_status])))
    assert (only["group_id"], only["user_id"]) == ("120363000000000030", None)
    assert only["problem"].startswith(GROUP_WITHOUT_PARTICIPANT)


def test_the_send_log_names_meta_business_agent_replies_and_their_tokens():
    result = read_webhooks(OCTOBER / "business_agent.jsonl", send_log=read_send_log(OCTOBER / "send_log_2026_11.csv"))
    columns = ("message_id", "direction", "message_type", "sent_by", "tokens", "problem")
    assert result.messages.select(columns).rows() == [
        ("wamid.B1in", "inbound", "text", None, None, None),
        ("wamid.B1", "outbound", "text", "meta_business_agent", "21500", None),
        ("wamid.B2", "outbound", "text", "meta_business_agent", None, None),
    ]


def test_a_send_log_of_senders_only_is_accepted(tmp_path):
    log = tmp_path / "agents.csv"
    log.write_text("message_id,Sent_By\nwamid.B1,Meta_Business_Agent\n")
    assert read_send_log(log).select("message_id", "sent_by", "message_type").rows() == [("wamid.B1", "meta_business_agent", None)]


def test_general_purpose_ai_is_a_non_template_with_its_category_kept():
    result = read_webhooks(OCTOBER / "general_purpose_ai.jsonl")
    a1 = message_of(result, "wamid.A1")
    assert (a1["message_type"], a1["template_category"], a1["problem"]) == ("text", None, None)
    assert billing_of(result, "wamid.A1", "pricing_category", "pricing_type") == [("general_purpose_ai", "regular")]
