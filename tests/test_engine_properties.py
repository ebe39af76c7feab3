"""The fast engine (`analytics.bill.charges`) agrees exactly with the reference state machine.

Random traffic is drawn around the instants where the rules are delicate: rule-set switches,
exact 24 h and 72 h boundaries (times on an hour grid), equal timestamps, failed messages,
entry-point offers and Meta's own free entry point ends, several keys and WABAs, markets on both
sides of 2026-07-01, non-UTC time zones, `--rules` overrides, authentication-international
settings, the free entry point models, the service exemption and every [choice] of the rules
file; and issue 17's traffic: group messages (one row per participant, some failed, now and then a
refused one), Meta Business Agent replies, tokens and template names, AI Providers on and off
around the dates of data/rules/ai_providers.csv. Free tiers are shrunk to two units so that counters overflow in small traffic. On failure hypothesis shrinks the traffic and the smallest failing
traffic is printed as a table.

`make test` runs a few thousand examples; set WA_ANALYTICS_PROPERTY_EXAMPLES for more.
"""

from __future__ import annotations

import datetime as dt
import os

import polars as pl
import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st
from traffic import with_free_tier_size

from analytics.bill import charges, reference
from analytics.core import schema
from analytics.settings import Settings
from analytics.terms import rules
from analytics.terms.rules import AuthenticationInternational

EXAMPLES = int(os.environ.get("WA_ANALYTICS_PROPERTY_EXAMPLES", "2000"))

# Where the rules change, in UTC; traffic starts a little before one of them.
PIVOTS = [
    dt.datetime(2022, 2, 1, tzinfo=dt.UTC),
    dt.datetime(2023, 6, 1, tzinfo=dt.UTC),
    dt.datetime(2024, 10, 31, tzinfo=dt.UTC),
    dt.datetime(2025, 7, 1, tzinfo=dt.UTC),
    dt.datetime(2025, 9, 30, tzinfo=dt.UTC),
    dt.datetime(2026, 3, 11, tzinfo=dt.UTC),
    dt.datetime(2026, 5, 13, tzinfo=dt.UTC),
    dt.datetime(2026, 7, 1, tzinfo=dt.UTC),
    dt.datetime(2026, 8, 1, tzinfo=dt.UTC),
    dt.datetime(2026, 9, 28, tzinfo=dt.UTC),
    dt.datetime(2026, 10, 1, tzinfo=dt.UTC),
    dt.datetime(2026, 11, 30, tzinfo=dt.UTC),
]
USERS = [  # (user_id, user_country)
    ("393330000001", "IT"),
    ("919990000002", "IN"),
    ("263770000003", "ZW"),
    ("48221234567", "PL"),
    ("IT.1234567890123456789", None),
    ("5511987654321", "BR"),
]
GROUPS = ["G1", "G2"]
BUSINESS_NUMBERS = [("B1", "W1"), ("B2", "W1"), ("B3", "W2")]
IDS = "aAbB0é_z"


@st.composite
def traffic(draw: st.DrawFn) -> pl.DataFrame:
    pivot = draw(st.sampled_from(PIVOTS))
    start = pivot - dt.timedelta(hours=draw(st.integers(0, 60)))
    count = draw(st.integers(1, 24))
    keys = draw(st.lists(st.tuples(st.sampled_from(BUSINESS_NUMBERS), st.sampled_from(USERS)), min_size=1, max_size=3))
    ids = draw(st.lists(st.text(IDS, min_size=1, max_size=3), min_size=count, max_size=count, unique=True))
    groups = pivot >= dt.datetime(2025, 7, 1, tzinfo=dt.UTC) and draw(st.booleans())  # groups are per-message only
    rows = []
    for message_id in ids:
        (business_phone, waba_id), (user_id, country) = draw(st.sampled_from(keys))
        group_id = draw(st.sampled_from([None, None, *GROUPS])) if groups else None
        hours = draw(st.integers(0, 200))
        jitter = draw(st.sampled_from([0, 0, 0, 1, -1, 1800]))  # µs or half an hour off the grid
        timestamp = start + dt.timedelta(hours=hours, microseconds=jitter if abs(jitter) == 1 else 0)
        timestamp += dt.timedelta(seconds=jitter if jitter == 1800 else 0)
        inbound = draw(st.booleans())
        message_type = "text" if inbound else draw(st.sampled_from(["template", "template", "text", "reaction", "image"]))
        if group_id is not None and message_type == "template":  # now and then an authentication one, refused
            category = draw(st.sampled_from(["marketing", "utility", "utility", "marketing_lite"] * 4 + ["authentication"]))
        elif message_type == "template":
            category = draw(st.sampled_from(["marketing", "utility", "authentication", "marketing_lite"]))
        else:
            category = None
        # An outbound group message: one row per participant it went to, same id, some failed.
        participants = (
            draw(st.lists(st.sampled_from(USERS), min_size=1, max_size=3, unique=True)) if group_id and not inbound else [(user_id, country)]
        )
        for user_id, country in participants:
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
                    "template_category": category,
                    "status": "received" if inbound else draw(st.sampled_from(["delivered", "read", "sent", "failed", None])),
                    "entry_point": draw(st.sampled_from([None, None, "ctwa", "page_cta"])) if inbound else None,
                    "fep_expires_at": (
                        None if inbound else draw(st.sampled_from([None] * 6 + [timestamp + dt.timedelta(hours=h) for h in (1, 72, 100)]))
                    ),
                    "group_id": group_id,
                    "sent_by": None if inbound else draw(st.sampled_from([None, None, None, "business", schema.META_BUSINESS_AGENT])),
                    "tokens": None if inbound else draw(st.sampled_from([None, None, 20_000])),
                    "template_name": draw(st.sampled_from([None, "welcome"])) if message_type == "template" else None,
                }
            )
    return pl.DataFrame(rows, schema={**schema.MESSAGE_SCHEMA, schema.FEP_EXPIRES_AT: schema.INSTANT})


@st.composite
def rule_books(draw: st.DrawFn) -> rules.RuleBook:
    """The shipped rules with two free units per tier, and every [choice] drawn."""
    choices = rules.Choices(
        inbound_first_at_equal_time=draw(st.sampled_from([True, True, False])),
        fep_reopens_inside_open_window=draw(st.sampled_from([False, False, True])),
        fep_counts_toward_free_tier=draw(st.booleans()),
        marketing_lite_billed_as=draw(st.sampled_from(["marketing", "marketing", "utility"])),
        crossover=draw(st.sampled_from(rules.CROSSOVERS)),
    )
    return with_free_tier_size(rules.shipped(), 2, choices)


configs = st.builds(
    Settings,
    timezone=st.sampled_from(["UTC", "Europe/Rome", "America/Sao_Paulo", "Asia/Kolkata"]),
    waba_timezones=st.sampled_from([{}, {"W2": "America/Mexico_City"}]),
    rules=st.sampled_from([None, None, None, *[r.name for r in rules.rule_sets()]]),
    fep_window=st.sampled_from([None, None, 24 * rules.HOUR]),
    fep_model=st.sampled_from(rules.FEP_MODELS),
    service_exempt_until=st.sampled_from([None, None, dt.date(2026, 11, 15)]),
    authentication_international=st.sampled_from(
        [
            AuthenticationInternational(),
            AuthenticationInternational(home_country="IT", start_dates={"IN": dt.date(2022, 1, 1), "IT": dt.date(2022, 1, 1)}),
            AuthenticationInternational(home_country=None, start_dates={"IN": dt.date(2025, 7, 1)}),
        ]
    ),
    rule_book=rule_books(),
    ai_provider=st.booleans(),
)


@settings(max_examples=EXAMPLES, deadline=None)
@given(messages=traffic(), settings=configs)
def test_fast_engine_agrees_with_reference(messages: pl.DataFrame, settings: Settings) -> None:
    note(f"settings: { {k: v for k, v in vars(settings).items() if k != 'rule_book'} }, choices: {settings.rule_book.choices}")
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=400, fmt_str_lengths=40):
        note(f"traffic:\n{messages.sort('timestamp')}")
        try:
            expected = reference.bill(messages, settings)
        except ValueError as refused:  # before 2022-02-01 in its WABA time zone, a group under CBP, a group
            # authentication template: both engines refuse the traffic (the first refused row may differ)
            assert any(why in str(refused) for why in ("before", "bills no groups", "authentication template in a group")), refused
            with pytest.raises(ValueError, match="before|bills no groups|authentication template in group"):
                charges.bill(messages, settings)
            return
        actual = charges.bill(messages, settings)
        note(f"reference:\n{expected}\nfast engine:\n{actual}")
    assert actual.to_dicts() == expected.to_dicts()
