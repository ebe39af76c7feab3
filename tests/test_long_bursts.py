"""Long bursts: keys whose messages never pause for a whole window, so that one burst holds many
back-to-back conversations (or free entry point windows). The fast engine opens them by pointer
doubling (`analytics.bill.charges._chain_in_bursts`); here it is held to the reference state machine,
message for message, on such traffic: exact 24 h boundaries, equal timestamps, one-slot
(`cbp-2022`) and per-category (`cbp-2023`) conversations, a burst that runs into `pmp-2025`, and
keys of different lengths billed together.
"""

from __future__ import annotations

import polars as pl
from hypothesis import given, note, settings
from hypothesis import strategies as st
from traffic import Traffic, merge, rows

from analytics.bill import charges, reference
from analytics.settings import Settings
from analytics.terms import rules


def hourly_utilities(start: str, hours: int, **key: object) -> Traffic:
    """A utility template every hour for `hours` hours: one burst of back-to-back conversations."""
    t = Traffic(start, **key)
    for h in range(hours):
        t.template(h, "utility")
    return t


def test_hourly_templates_open_one_conversation_a_day_on_both_engines():
    t = hourly_utilities("2024-03-04T00:00:00Z", 24 * 30)

    expected, actual = reference.bill(t.frame()), charges.bill(t.frame())

    assert actual.to_dicts() == expected.to_dicts()
    assert rows(actual, ("started_at", "expires_at", "message_count")) == [(t.at(24 * day), t.at(24 * day + 24), 24) for day in range(30)]


def bursty_keys() -> pl.DataFrame:
    """Several keys of different lengths, each one long burst or more, in CBP and PMP periods."""
    # cbp-2023: exactly 24 h apart, every message opens
    daily = Traffic("2024-05-01T00:00:00Z", "B1", "393330000001", id_prefix="d")
    for day in range(40):
        daily.template(24 * day, "marketing")
    # cbp-2023: every 23 h, with a second template at the same instant now and then (a tie)
    ties = Traffic("2024-05-01T00:00:00Z", "B1", "393330000002", id_prefix="t")
    for n in range(60):
        ties.template(23 * n, "utility")
        if n % 7 == 0:
            ties.template(23 * n, "utility").text(23 * n + 1)
    # cbp-2023 into pmp-2025 (2025-07-01): hourly utilities, a service text every 5 h
    crossing = Traffic("2025-06-20T00:00:00Z", "B2", "393330000003", id_prefix="c")
    for h in range(24 * 16):
        if h % 5:
            crossing.template(h, "utility")
        else:
            crossing.text(h)
    # cbp-2022 (one slot per key): a text every 3 h, a user message every 50 h
    one_slot = Traffic("2022-03-01T00:00:00Z", "B1", "393330000004", id_prefix="o")
    for h in range(0, 24 * 20, 3):
        one_slot.text(h)
        if h % 50 == 0:
            one_slot.user(h)
    # one short burst, then a gap, then a long one
    short = hourly_utilities("2024-07-01T00:00:00Z", 5, business_phone="B2", user_id="393330000005", id_prefix="s")
    for h in range(100, 100 + 24 * 9, 2):
        short.template(h, "authentication")
    return merge(daily, ties, crossing, one_slot, short)


def test_back_to_back_conversations_of_several_keys_bill_as_the_reference():
    messages = bursty_keys()

    expected, actual = reference.bill(messages), charges.bill(messages)

    assert actual.to_dicts() == expected.to_dicts()
    daily = actual.filter(pl.col("user_id") == "393330000001")
    assert daily.height == 40 and daily["message_count"].to_list() == [1] * 40  # each exactly 24 h later: a new one
    assert actual.filter(pl.col("user_id") == "393330000003")["rule_set"].unique().sort().to_list() == ["cbp-2023", "pmp-2025"]


def test_back_to_back_free_entry_point_windows_of_different_lengths_bill_as_the_reference():
    """Offers taken up again and again, click-to-WhatsApp (7 days under `fixed-7d`) and page
    call-to-action (72 h) in turn: a burst of windows each as long as its own opener says."""
    t = Traffic("2024-05-01T00:00:00Z")
    for h in range(0, 24 * 40, 6):
        t.user(h, entry_point="ctwa" if h % 36 else "page_cta").template(h + 1, "marketing")
    config = Settings(fep_model=rules.FIXED_7D)

    expected, actual = reference.bill(t.frame(), config), charges.bill(t.frame(), config)

    assert actual.to_dicts() == expected.to_dicts()
    assert actual.filter(pl.col("category") == rules.FEP_CATEGORY).height > 5


def test_pointer_doubling_and_the_round_by_round_loop_open_the_same_messages():
    """The loop is what `_chain_in_bursts` falls back on where its sorted search could overflow."""
    gaps = [1, 23, 24, 0, 25, 1, 1, 1, 47, 0, 2] * 40
    t = pl.Series([0, *gaps]).cum_sum() * 3_600_000_000
    bursts = pl.Series([0] * 150 + [1] * 100 + [2] * 191)
    pending = pl.DataFrame({"row": pl.int_range(t.len(), eager=True, dtype=pl.UInt32), "t": t, "window": [86_400_000_000] * t.len(), "burst": bursts})

    doubled = charges._chain_in_bursts(pending, "window", 86_400_000_000)

    assert doubled.sort().to_list() == charges._chain_round_by_round(pending, "window").sort().to_list()
    assert doubled.len() > 3 * 8  # each burst opens several times


@st.composite
def long_bursts(draw: st.DrawFn) -> pl.DataFrame:
    """Up to three keys, each a run of outbound messages a drawn number of hours apart (some 0:
    ties; some exactly 24 or 72), so runs of back-to-back conversations are long."""
    start = draw(st.sampled_from(["2022-02-10T00:00:00Z", "2024-03-04T00:00:00Z", "2025-06-25T00:00:00Z"]))
    frames = []
    for k in range(draw(st.integers(1, 3))):
        t = Traffic(start, "B1", f"39333000000{k}", id_prefix=f"k{k}-")
        h = draw(st.integers(0, 30))
        for _ in range(draw(st.integers(1, 60))):
            kind = draw(st.sampled_from(["utility", "marketing", "text", "text", "user"]))
            if kind == "user":
                t.user(h)
            elif kind == "text":
                t.text(h)
            else:
                t.template(h, kind)
            h += draw(st.sampled_from([0, 1, 5, 12, 23, 24, 24, 25, 72]))
        frames.append(t)
    return merge(*frames)


@settings(max_examples=100, deadline=None)
@given(messages=long_bursts())
def test_long_bursts_bill_as_the_reference(messages: pl.DataFrame) -> None:
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=400):
        note(f"traffic:\n{messages.sort('timestamp')}")
    assert charges.bill(messages).to_dicts() == reference.bill(messages).to_dicts()
