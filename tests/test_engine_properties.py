"""The fast engine (`analytics.charges`) agrees exactly with the reference state machine.

Random traffic is drawn around the instants where the rules are delicate: rule-set switches,
exact 24 h and 72 h boundaries (times on an hour grid), equal timestamps, failed messages,
entry-point offers, several keys and WABAs, non-UTC time zones, `--rules` overrides and
authentication-international settings. Free tiers are shrunk to two units so that counters
overflow in small traffic. On failure hypothesis shrinks the traffic and the smallest failing
traffic is printed as a table.

`make test` runs a few thousand examples; set WA_ANALYTICS_PROPERTY_EXAMPLES for more.
"""

from __future__ import annotations

import datetime as dt
import os

import polars as pl
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from analytics import charges, reference, rules, schema
from analytics.rules import AuthenticationInternational, BillingConfig

EXAMPLES = int(os.environ.get("WA_ANALYTICS_PROPERTY_EXAMPLES", "2000"))

# Where the rules change, in UTC; traffic starts a little before one of them.
PIVOTS = [
    dt.datetime(2022, 2, 1, tzinfo=dt.UTC),
    dt.datetime(2023, 6, 1, tzinfo=dt.UTC),
    dt.datetime(2024, 10, 31, tzinfo=dt.UTC),
    dt.datetime(2025, 7, 1, tzinfo=dt.UTC),
    dt.datetime(2025, 9, 30, tzinfo=dt.UTC),
    dt.datetime(2026, 10, 1, tzinfo=dt.UTC),
    dt.datetime(2026, 11, 30, tzinfo=dt.UTC),
]
USERS = [  # (user_id, user_country)
    ("393330000001", "IT"),
    ("919990000002", "IN"),
    ("263770000003", "ZW"),
    ("IT.1234567890123456789", None),
]
BUSINESS_NUMBERS = [("B1", "W1"), ("B2", "W1"), ("B3", "W2")]
IDS = "aAbB0é_z"


@st.composite
def traffic(draw: st.DrawFn) -> pl.DataFrame:
    pivot = draw(st.sampled_from(PIVOTS))
    start = pivot - dt.timedelta(hours=draw(st.integers(0, 60)))
    count = draw(st.integers(1, 24))
    keys = draw(st.lists(st.tuples(st.sampled_from(BUSINESS_NUMBERS), st.sampled_from(USERS)), min_size=1, max_size=3))
    ids = draw(st.lists(st.text(IDS, min_size=1, max_size=3), min_size=count, max_size=count, unique=True))
    rows = []
    for message_id in ids:
        (business_phone, waba_id), (user_id, country) = draw(st.sampled_from(keys))
        hours = draw(st.integers(0, 110))
        jitter = draw(st.sampled_from([0, 0, 0, 1, -1, 1800]))  # µs or half an hour off the grid
        timestamp = start + dt.timedelta(hours=hours, microseconds=jitter if abs(jitter) == 1 else 0)
        timestamp += dt.timedelta(seconds=jitter if jitter == 1800 else 0)
        inbound = draw(st.booleans())
        message_type = "text" if inbound else draw(st.sampled_from(["template", "template", "text", "reaction", "image"]))
        rows.append(
            {
                "message_id": message_id,
                "timestamp": timestamp,
                "direction": "inbound" if inbound else "outbound",
                "business_phone": business_phone,
                "waba_id": waba_id,
                "user_id": user_id,
                "user_phone": None,
                "user_country": country,
                "message_type": message_type,
                "template_category": (
                    draw(st.sampled_from(["marketing", "utility", "authentication", "marketing_lite"]))
                    if message_type == "template"
                    else None
                ),
                "status": "received" if inbound else draw(st.sampled_from(["delivered", "read", "sent", "failed", None])),
                "entry_point": draw(st.sampled_from([None, None, "ctwa", "page_cta"])) if inbound else None,
            }
        )
    return pl.DataFrame(rows, schema=schema.MESSAGE_SCHEMA)


configs = st.builds(
    BillingConfig,
    timezone=st.sampled_from(["UTC", "Europe/Rome", "America/Sao_Paulo", "Asia/Kolkata"]),
    waba_timezones=st.sampled_from([{}, {"W2": "America/Mexico_City"}]),
    rules=st.sampled_from([None, None, None, *[r.name for r in rules.rule_sets()]]),
    fep_window=st.sampled_from([rules.FEP_WINDOW, 24 * rules.HOUR]),
    authentication_international=st.sampled_from(
        [
            AuthenticationInternational(),
            AuthenticationInternational(home_country="IT", start_dates={"IN": dt.date(2022, 1, 1), "IT": dt.date(2022, 1, 1)}),
            AuthenticationInternational(home_country=None, start_dates={"IN": dt.date(2025, 7, 1)}),
        ]
    ),
)


@pytest.fixture
def small_free_tiers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two free units per counter, so small traffic crosses every free tier."""
    monkeypatch.setattr(rules, "CBP_2022_FREE_CONVERSATIONS", 2)
    monkeypatch.setattr(rules, "CBP_2023_FREE_SERVICE_CONVERSATIONS", 2)
    monkeypatch.setattr(rules, "PMP_2026_FREE_SERVICE_MESSAGES", 2)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(messages=traffic(), config=configs)
def test_fast_engine_agrees_with_reference(small_free_tiers: None, messages: pl.DataFrame, config: BillingConfig) -> None:
    note(f"config: {config}")
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=400, fmt_str_lengths=40):
        note(f"traffic:\n{messages.sort('timestamp')}")
        try:
            expected = reference.bill(messages, config)
        except ValueError:  # traffic before 2022-02-01 in its WABA time zone: both engines refuse it
            with pytest.raises(ValueError, match="before"):
                charges.bill(messages, config)
            return
        actual = charges.bill(messages, config)
        note(f"reference:\n{expected}\nfast engine:\n{actual}")
    assert actual.to_dicts() == expected.to_dicts()
