"""The read-only material beside the checkout (../shared: Meta's payloads, rate cards, research),
read in place, and the helpers that pull JSON out of the docs pages saved there as text.

`WA_ANALYTICS_SHARED` names the folder when the checkout is not beside it.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

SHARED = Path(os.environ.get("WA_ANALYTICS_SHARED") or Path(__file__).resolve().parents[2] / "shared")
FIXTURES = SHARED / "fixtures" / "meta"
META_2026_04 = SHARED / "data" / "meta-rate-cards" / "usd-2026-04-01"


def fenced_blocks(fixture: str) -> list[str]:
    """The ``` code blocks of a docs page saved as text (Gupshup's pages are prose around JSON)."""
    return re.findall(r"```[^\n]*\n(.*?)```", (FIXTURES / fixture).read_text(), re.S)


def gupshup_general_purpose_ai() -> tuple[dict, dict]:
    # The .txt is prose around two JSON bodies: the Meta-format status ("curl body") and Gupshup's V3 event.
    text = (FIXTURES / "gupshup_docs__general_purpose_ai_v3_billing_event.txt").read_text()
    decoder = json.JSONDecoder()
    status_body, v3_part = text.split("V3 webhook event:")
    meta_status, _ = decoder.raw_decode(status_body[status_body.index("{") :])
    v3_event, _ = decoder.raw_decode(v3_part[v3_part.index("{") :])
    return meta_status, v3_event


def glific_billing_event() -> dict:
    """Glific's test keeps the event as an Elixir map literal (lines 13-32 of the test, without the
    closing brace): `%{` is `{`, `=>` is `:`, `1_661_319_436_533` is an integer with separators."""
    text = (FIXTURES / "glific__gupshup_billing_event_v2__billing_event_controller_test.exs.txt").read_text()
    body = text[text.index("%{") :].replace("%{", "{").replace(" => ", ": ")
    return json.loads(re.sub(r"(?<=\d)_(?=\d)", "", body).rstrip() + "\n}")
