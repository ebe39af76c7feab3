"""`wa-analytics ingest` on the real Meta payloads of ../shared/fixtures/meta, read in place.

The reader-level tests (tests/test_webhooks.py) assert every field of every fixture; these run the
command a user runs and assert the canonical rows it writes, or the quarantine it explains.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from meta_fixtures import FIXTURES

from analytics import cli

COLUMNS = (
    "message_id,timestamp,direction,business_phone,waba_id,user_id,user_phone,user_country,message_type,template_category,status,"
    "entry_point,fep_expires_at,group_id,sent_by,tokens,template_name"
)
NO_2026_VALUES = ",,,,"  # group_id, sent_by, tokens, template_name: not in these webhooks
WAMID = "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQUFERjg0NDEzNDdFODU3MUMxMAA="
BSUID = "user.9373795779eb6441c8adb2eaee5b848e7dd174ddd302d7db62142f4722d574b6"


def ingest(tmp_path: Path, *arguments: str) -> tuple[list[str], pl.DataFrame]:
    out, quarantine = tmp_path / "messages.csv", tmp_path / "quarantine.csv"
    assert cli.main(["ingest", *arguments, "-o", str(out), "--quarantine", str(quarantine)]) == 0
    return out.read_text().splitlines(), pl.read_csv(quarantine, infer_schema=False)


@pytest.mark.parametrize(
    ("fixture", "row"),
    [
        (
            "meta_docs_bsuid__status_delivered_pmp_marketing.json",
            f"{WAMID},2025-06-15T23:27:53+00:00,outbound,106540352242922,102290129340398,16505551234,,US,template,marketing,delivered,,{NO_2026_VALUES}",
        ),
        (
            "meta_docs_bsuid__status_delivered_pmp_marketing_to_bsuid.json",
            f"{WAMID},2025-06-15T23:27:53+00:00,outbound,106540352242922,102290129340398,{BSUID},,US,template,marketing,delivered,,{NO_2026_VALUES}",
        ),
    ],
)
def test_pmp_status_webhooks_become_one_canonical_row(tmp_path: Path, fixture: str, row: str) -> None:
    lines, quarantine = ingest(tmp_path, str(FIXTURES / fixture))
    assert lines == [COLUMNS, row]
    assert quarantine.height == 0


@pytest.mark.parametrize(
    "fixture",
    [
        "netflie_whatsapp-cloud-api__NotificationFactoryTest__status_read_cbp_user_initiated.json",
        "piusalfred_whatsapp__webhooks_test__status_sent_cbp_user_initiated.json",
    ],
)
def test_cbp_2022_statuses_without_a_send_log_are_quarantined_with_the_file_that_fixes_them(tmp_path: Path, fixture: str) -> None:
    lines, quarantine = ingest(tmp_path, str(FIXTURES / fixture))
    assert lines == [COLUMNS]
    assert quarantine.select("source_row", "direction").rows() == [("1", "outbound")]
    assert "pass --send-log" in quarantine["reason"][0]


def test_a_send_log_fills_what_the_status_does_not_say(tmp_path: Path) -> None:
    send_log = tmp_path / "sends.csv"
    send_log.write_text("message_id,message_type\nwamid.STATUSMSG,text\n")
    fixture = FIXTURES / "piusalfred_whatsapp__webhooks_test__status_sent_cbp_user_initiated.json"
    lines, quarantine = ingest(tmp_path, str(fixture), "--send-log", str(send_log))
    assert lines == [
        COLUMNS,
        # The placeholder wa_id 123456789 starts with calling code 1: Meta prices by calling code, so US.
        f"wamid.STATUSMSG,2023-07-22T04:26:40+00:00,outbound,999888777,WHATSAPP_BUSINESS_ACCOUNT_ID,123456789,,US,text,,sent,,{NO_2026_VALUES}",
    ]
    assert quarantine.height == 0


def test_inbound_click_to_whatsapp_message(tmp_path: Path) -> None:
    """pywa keeps payloads by name in one JSON object: the `referral` one, as a JSONL line."""
    import json

    named = json.loads((FIXTURES / "pywa__tests_data_updates_message__text_and_referral.json").read_text())
    path = tmp_path / "referral.jsonl"
    path.write_text(json.dumps(named["referral"]) + "\n")
    lines, quarantine = ingest(tmp_path, str(path))
    assert quarantine.height == 0
    (header, row) = lines
    values = dict(zip(header.split(","), row.split(","), strict=True))
    assert values["direction"] == "inbound"
    assert values["message_type"] == "text"
    assert values["status"] == "received"
    assert values["entry_point"] == "page_cta"  # pywa's placeholder source_type "ad or post" is not "ad"
