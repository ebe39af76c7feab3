"""The synthetic traffic generator: deterministic, in the contract's schema, and showing every
pattern the billing rules care about (analytics/synthetic/generate.py docstring)."""

from __future__ import annotations

import datetime as dt
import gzip

import phonenumbers
import polars as pl
import pytest

from analytics.core.errors import UsageError
from analytics.core.schema import MESSAGE_SCHEMA
from analytics.synthetic.generate import (
    BUSINESS_NUMBERS,
    COUNTRIES,
    DEFECTS,
    GROUPS_FROM,
    generate_to_parquet,
    generate_traffic,
    max_users,
    synthetic_number_pattern,
    write_traffic,
)

START = dt.date(2026, 1, 1)
DAY = dt.timedelta(days=1)
KEY = ["business_phone", "user_id"]


@pytest.fixture(scope="module")
def traffic() -> pl.DataFrame:
    return generate_traffic(users=1500, start=START, months=4, seed=11)


@pytest.fixture(scope="module")
def messages(traffic: pl.DataFrame) -> pl.DataFrame:
    """One row per message (webhook duplicates dropped), as ingest would leave it."""
    return traffic.unique(maintain_order=True)


def _with_last_inbound(messages: pl.DataFrame, rows: pl.DataFrame) -> pl.DataFrame:
    """`rows` with `last_inbound`: the latest inbound message of the same key at or before each row."""
    inbound = messages.filter(pl.col("direction") == "inbound").select(*KEY, "timestamp", last_inbound="timestamp")
    return rows.sort("timestamp").join_asof(inbound.sort("timestamp"), on="timestamp", by=KEY, strategy="backward", check_sortedness=False)


def test_same_seed_gives_the_same_frame_and_the_same_bytes(tmp_path):
    first = generate_traffic(users=300, start=START, months=2, seed=3)
    second = generate_traffic(users=300, start=START, months=2, seed=3)
    assert first.equals(second)
    for name in ("a.csv.gz", "b.csv.gz"):
        write_traffic(second, tmp_path / name)
    assert (tmp_path / "a.csv.gz").read_bytes() == (tmp_path / "b.csv.gz").read_bytes()


def test_another_seed_gives_other_traffic():
    first = generate_traffic(users=300, start=START, months=2, seed=3)
    other = generate_traffic(users=300, start=START, months=2, seed=4)
    assert not first.equals(other)
    assert set(first["user_id"]) != set(other["user_id"])  # the seed also shuffles who lives where


def test_schema_is_exactly_the_contract(traffic):
    assert list(traffic.schema.items()) == list(MESSAGE_SCHEMA.items())
    required = ["message_id", "timestamp", "direction", "business_phone", "waba_id", "user_id", "message_type"]
    required.append("status")  # optional in the contract, always set here
    assert traffic.select(pl.col(required).null_count()).sum_horizontal().item() == 0


def test_rows_are_sorted_by_time_then_id(traffic):
    assert traffic.equals(traffic.sort("timestamp", "message_id"))


def test_timestamps_lie_in_the_range_at_whole_seconds(traffic):
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    end = dt.datetime(2026, 5, 1, tzinfo=dt.UTC)
    assert traffic["timestamp"].min() >= start
    assert traffic["timestamp"].max() < end
    assert (traffic["timestamp"].dt.microsecond() == 0).all()


def test_every_kind_of_message_is_present(messages):
    assert set(messages["direction"]) == {"inbound", "outbound"}
    assert set(messages["message_type"]) == {"text", "image", "interactive", "reaction", "template"}
    templates = messages.filter(pl.col("message_type") == "template")
    assert set(templates["template_category"]) == {"marketing", "marketing_lite", "utility", "authentication"}
    assert messages.filter(pl.col("message_type") != "template")["template_category"].null_count() == (
        messages.filter(pl.col("message_type") != "template").height
    )
    assert set(messages["entry_point"].drop_nulls()) == {"ctwa", "page_cta"}
    assert set(messages.filter(pl.col("entry_point").is_not_null())["direction"]) == {"inbound"}
    reactions = messages.filter(pl.col("message_type") == "reaction")
    assert set(reactions["direction"]) == {"inbound", "outbound"}
    assert set(messages.filter(pl.col("direction") == "inbound")["status"]) == {"received"}
    assert set(messages.filter(pl.col("direction") == "outbound")["status"]) == {"delivered", "read", "sent", "failed"}


def test_three_numbers_in_two_wabas(messages):
    pairs = set(messages.select("business_phone", "waba_id").unique().iter_rows())
    assert pairs == {(b.phone_number_id, b.waba_id) for b in BUSINESS_NUMBERS}
    assert len({b.waba_id for b in BUSINESS_NUMBERS}) == 2


def test_support_sessions_are_answered_within_the_window(messages):
    """Non-template messages need an open customer service window (billing-rules.md §2): the
    generator never sends one outside it, and most answers come within minutes."""
    free_form = messages.filter((pl.col("direction") == "outbound") & (pl.col("message_type") != "template"))
    checked = _with_last_inbound(messages, free_form)
    assert checked["last_inbound"].null_count() == 0
    assert (checked["timestamp"] - checked["last_inbound"] < DAY).all()
    delays = checked["timestamp"] - checked["last_inbound"]
    assert (delays < dt.timedelta(hours=1)).mean() > 0.5
    assert (delays > dt.timedelta(hours=8)).sum() > 0  # the night's messages are answered in the morning


def test_some_sessions_span_more_than_a_day(messages):
    inbound = messages.filter(pl.col("direction") == "inbound").sort("timestamp")
    gaps = inbound.with_columns(gap=pl.col("timestamp").diff().over(KEY))["gap"].drop_nulls()
    assert ((gaps > DAY) & (gaps < 2 * DAY)).sum() > 0


def test_click_to_whatsapp_entries_get_an_answer_within_24_hours(messages):
    entries = messages.filter(pl.col("entry_point").is_not_null()).select(*KEY, entry_at="timestamp")
    outbound = messages.filter(pl.col("direction") == "outbound").select(*KEY, answer_at="timestamp")
    answered = entries.sort("entry_at").join_asof(
        outbound.sort("answer_at"),
        left_on="entry_at",
        right_on="answer_at",
        by=KEY,
        strategy="forward",
        check_sortedness=False,
    )
    within = (answered["answer_at"] - answered["entry_at"]) < DAY
    assert entries.height >= 20
    assert 0.6 < within.mean() < 1.0  # usually, not always
    assert (messages["entry_point"] == "ctwa").sum() > (messages["entry_point"] == "page_cta").sum() > 0


def test_templates_after_an_ad_fall_inside_and_outside_the_72_hour_window(messages):
    entries = messages.filter(pl.col("entry_point").is_not_null()).select(*KEY, entry_at="timestamp")
    marketing = messages.filter(pl.col("template_category") == "marketing").select(*KEY, "timestamp")
    after = (
        marketing.sort("timestamp")
        .join_asof(
            entries.sort("entry_at"),
            left_on="timestamp",
            right_on="entry_at",
            by=KEY,
            strategy="backward",
            check_sortedness=False,
        )
        .drop_nulls("entry_at")
    )
    since = after["timestamp"] - after["entry_at"]
    assert (since < dt.timedelta(hours=72)).sum() > 0
    assert ((since > dt.timedelta(hours=100)) & (since < dt.timedelta(days=8))).sum() > 0


def test_utility_templates_land_inside_and_outside_the_service_window(messages):
    utility = messages.filter(pl.col("template_category") == "utility")
    checked = _with_last_inbound(messages, utility)
    inside = (checked["timestamp"] - checked["last_inbound"] < DAY).fill_null(False)
    assert utility.height > 200
    assert 0.1 < inside.mean() < 0.7


def test_order_notifications_follow_each_other_by_days(messages):
    utility = messages.filter(pl.col("template_category") == "utility").sort("timestamp")
    gaps = utility.with_columns(gap=pl.col("timestamp").diff().over(KEY))["gap"].drop_nulls()
    assert ((gaps >= DAY) & (gaps <= 4 * DAY)).mean() > 0.5


def test_one_time_passwords_come_in_bursts(messages):
    codes = messages.filter(pl.col("template_category") == "authentication").sort("timestamp")
    gaps = codes.with_columns(gap=pl.col("timestamp").diff().over(KEY))["gap"].drop_nulls()
    assert (gaps < dt.timedelta(minutes=10)).sum() > 20
    per_user = codes.group_by("user_id").len()
    india_indonesia = per_user.filter(pl.col("user_id").str.contains(r"^(91|62)|^(IN|ID)\."))
    others = per_user.filter(~pl.col("user_id").str.contains(r"^(91|62)|^(IN|ID)\."))
    assert india_indonesia["len"].mean() > others["len"].mean()


def test_campaigns_arrive_in_waves_with_ties(messages):
    marketing = messages.filter(pl.col("template_category").is_in(["marketing", "marketing_lite"]))
    by_hour = marketing.group_by(pl.col("timestamp").dt.truncate("1h")).len()
    assert by_hour["len"].max() > 20 * by_hour["len"].median()
    assert marketing.group_by("timestamp").len()["len"].max() >= 2  # same-second deliveries
    lite = marketing.filter(pl.col("template_category") == "marketing_lite")
    assert 0 < lite.height < marketing.height


def test_failed_and_unconfirmed_deliveries(messages):
    status = messages.filter(pl.col("direction") == "outbound")["status"]
    assert 0.015 < (status == "failed").mean() < 0.025
    assert 0.02 < (status == "sent").mean() < 0.04


def test_webhook_duplicates_repeat_rows_identically(traffic, messages):
    repeated = traffic.filter(pl.col("message_id").is_duplicated())
    assert repeated.height > 0
    assert repeated.unique().height == repeated["message_id"].n_unique()  # same id, same values
    assert messages["message_id"].n_unique() == messages.height
    assert 0.002 < (traffic.height - messages.height) / messages.height < 0.01


def test_user_numbers_are_synthetic_and_valid(messages):
    users = messages.select("user_id", "user_phone", "user_country").unique()
    pattern = synthetic_number_pattern()
    by_phone = users.filter(~pl.col("user_id").str.contains(r"\."))
    assert by_phone["user_id"].str.contains(pattern).all()
    bsuid = users.filter(pl.col("user_id").str.contains(r"\."))
    assert bsuid["user_id"].str.contains(r"^[A-Z]{2}\.7\d{18}$").all()
    assert 0.01 < bsuid.height / users.height < 0.06
    with_phone = bsuid.filter(pl.col("user_phone").is_not_null())
    assert with_phone["user_phone"].str.strip_prefix("+").str.contains(pattern).all()
    assert with_phone.height > 0 and bsuid.filter(pl.col("user_phone").is_null())["user_country"].null_count() == 0
    assert by_phone["user_phone"].null_count() == by_phone.height  # wa_id users need no separate phone
    iso = {c.iso for c in COUNTRIES}
    for digits in by_phone["user_id"].to_list() + with_phone["user_phone"].str.strip_prefix("+").to_list():
        number = phonenumbers.parse("+" + digits)
        assert phonenumbers.is_valid_number(number), digits
        assert phonenumbers.region_code_for_number(number) in iso, digits


def test_users_come_from_the_markets_described():
    frame = generate_traffic(users=3000, start=START, months=1, seed=5)
    phones = pl.concat(
        [
            frame.filter(~pl.col("user_id").str.contains(r"\."))["user_id"],
            frame["user_phone"].drop_nulls().str.strip_prefix("+"),
        ]
    ).unique()
    regions = [phonenumbers.region_code_for_number(phonenumbers.parse("+" + p)) for p in phones]
    share = {iso: regions.count(iso) / len(regions) for iso in set(regions)}
    assert share["IT"] > 0.45
    assert share["IT"] > share["DE"] > share["FR"]
    assert {"BR", "MX", "US", "DO", "ZW"} <= set(share)


def test_busier_in_business_hours_and_on_weekdays(messages):
    inbound = messages.filter(pl.col("direction") == "inbound")
    hour = inbound["timestamp"].dt.hour()
    assert ((hour >= 8) & (hour < 17)).sum() > 3 * ((hour >= 0) & (hour < 5)).sum() * 9 / 5
    weekday = inbound["timestamp"].dt.weekday()
    assert (weekday <= 5).sum() / 5 > 1.3 * (weekday >= 6).sum() / 2


def test_november_is_busier_than_october():
    frame = generate_traffic(users=600, start=dt.date(2026, 10, 1), months=2, seed=2)
    month = frame["timestamp"].dt.month()
    assert (month == 11).sum() > 1.2 * (month == 10).sum()


@pytest.mark.parametrize(
    ("start", "switch"),
    [
        (dt.date(2025, 5, 1), dt.datetime(2025, 7, 1, tzinfo=dt.UTC)),
        (dt.date(2026, 8, 1), dt.datetime(2026, 10, 1, tzinfo=dt.UTC)),
        (dt.date(2023, 5, 15), dt.datetime(2023, 6, 1, tzinfo=dt.UTC)),
    ],
)
def test_conversations_are_open_across_a_rule_set_switch(start, switch):
    frame = generate_traffic(users=400, start=start, months=3, seed=7).unique()
    before = frame.filter(pl.col("timestamp").is_between(switch - DAY, switch, closed="left"))
    after = frame.filter(pl.col("timestamp").is_between(switch, switch + DAY, closed="left"))
    crossing = before.select(KEY).unique().join(after.select(KEY).unique(), on=KEY)
    assert crossing.height >= 10
    evening = frame.filter(
        pl.col("timestamp").is_between(switch - dt.timedelta(hours=6), switch, closed="left") & (pl.col("template_category") == "utility")
    )
    assert evening.height > 0  # utility opened the evening before, more utility after midnight (§5 crossover)


def test_the_shipped_sample_size():
    frame = generate_traffic(users=2500, start=START, months=11, seed=7)
    assert 30_000 < frame.height < 60_000


def test_blocks_of_users_are_independent(tmp_path):
    small = generate_traffic(users=600, start=START, months=2, seed=9, chunk_users=300)
    large = generate_traffic(users=900, start=START, months=2, seed=9, chunk_users=300)
    assert small.equals(large.filter(pl.col("message_id").str.slice(9, 5) != "00002"))
    rows = generate_to_parquet(tmp_path / "big.parquet", users=900, start=START, months=2, seed=9, chunk_users=300)
    written = pl.read_parquet(tmp_path / "big.parquet")
    assert rows == written.height == large.height
    assert written.sort("timestamp", "message_id").equals(large)


def test_csv_and_parquet_round_trip(tmp_path, traffic):
    for name in ("m.csv", "m.csv.gz", "m.parquet"):
        write_traffic(traffic, tmp_path / name)
    assert pl.read_parquet(tmp_path / "m.parquet").equals(traffic)
    text = (tmp_path / "m.csv").read_text()
    assert gzip.decompress((tmp_path / "m.csv.gz").read_bytes()).decode() == text
    back = pl.read_csv(tmp_path / "m.csv", schema=MESSAGE_SCHEMA)
    assert back.equals(traffic)
    assert "Z," in text.splitlines()[1]


def test_defects_are_appended_to_csv_only(tmp_path, traffic):
    write_traffic(traffic, tmp_path / "d.csv", with_defects=True)
    lines = (tmp_path / "d.csv").read_text().splitlines()
    assert len(lines) == 1 + traffic.height + sum(d.count for d in DEFECTS)
    raw = pl.read_csv(tmp_path / "d.csv", infer_schema=False)
    bad = raw.filter(pl.col("message_id").str.starts_with("wamid.SYNBAD"))
    assert bad["message_id"].to_list() == [i for d in DEFECTS for i in d.message_ids]
    by_id = {row["message_id"]: row for row in bad.to_dicts()}
    for defect in DEFECTS:
        for message_id in defect.message_ids:
            row = by_id[message_id]
            if defect.kind == "missing_user_id":
                assert row["user_id"] is None
            elif defect.kind == "template_without_category":
                assert row["message_type"] == "template" and row["template_category"] is None
            elif defect.kind == "timestamp_without_zone":
                assert dt.datetime.strptime(row["timestamp"], "%Y-%m-%d %H:%M:%S")
            elif defect.kind == "unknown_direction":
                assert row["direction"] not in ("inbound", "outbound")
    assert 3 <= bad.height <= 10
    with pytest.raises(UsageError, match="CSV"):
        write_traffic(traffic, tmp_path / "d.parquet", with_defects=True)


def test_unknown_output_extension_is_refused(tmp_path, traffic):
    with pytest.raises(UsageError, match=r"\.csv, \.csv\.gz or \.parquet"):
        write_traffic(traffic, tmp_path / "m.xlsx")


def test_impossible_sizes_are_refused():
    with pytest.raises(UsageError):
        generate_traffic(users=0, start=START, months=1, seed=1)
    with pytest.raises(UsageError):
        generate_traffic(users=10, start=START, months=0, seed=1)
    with pytest.raises(UsageError, match="synthetic phone numbers"):
        generate_traffic(users=max_users() + 1, start=START, months=1, seed=1)


def test_the_shipped_sample_validates_with_only_its_deliberate_defects_quarantined() -> None:
    """data/sample/messages.csv.gz is `make sample`: every row is used except the DEFECTS lines
    (quarantined, each for its reason) and the deliberate webhook-style repeats (dropped)."""
    from pathlib import Path

    from analytics.read import ingest

    sample = Path(__file__).resolve().parents[1] / "data" / "sample" / "messages.csv.gz"
    ingested = ingest.read_messages([sample])
    quarantine = ingested.quarantine.collect()
    assert sorted(quarantine["message_id"].drop_nulls().to_list()) == sorted(i for d in DEFECTS for i in d.message_ids if i is not None)
    assert quarantine.height == sum(d.count for d in DEFECTS) == 6
    assert ingested.summary.duplicates_dropped == 199
    assert ingested.summary.rows_used == 44_130  # 1,242 of them group rows (one per participant)


# --- The traffic of 2026: groups, Meta Business Agent, template names (issue 17) --------------------


@pytest.fixture(scope="module")
def traffic_2026() -> pl.DataFrame:
    return generate_traffic(users=1200, start=dt.date(2026, 5, 1), months=4, seed=5).unique(maintain_order=True)


def test_the_traffic_of_2026_is_deterministic_too():
    first = generate_traffic(users=800, start=dt.date(2026, 7, 1), months=2, seed=3)
    assert first["group_id"].drop_nulls().len() > 0 and first["sent_by"].drop_nulls().len() > 0
    assert first.equals(generate_traffic(users=800, start=dt.date(2026, 7, 1), months=2, seed=3))


def test_group_traffic_starts_in_june_2026_in_groups_of_at_most_eight_from_several_markets(traffic_2026):
    groups = traffic_2026.filter(pl.col("group_id").is_not_null())
    assert groups["timestamp"].min() >= dt.datetime.combine(GROUPS_FROM, dt.time(), dt.UTC)
    assert groups["group_id"].n_unique() >= 3
    participants = groups.group_by("group_id").agg(
        n=pl.col("user_id").n_unique(),
        numbers=pl.col("business_phone").n_unique(),
        codes=pl.col("user_id").map_elements(_calling_code, return_dtype=pl.String).n_unique(),
    )
    assert participants["n"].max() <= 8 and participants["n"].min() >= 2 and participants["numbers"].max() == 1
    assert participants["codes"].max() >= 2  # a group with participants in more than one market
    outbound = groups.filter(pl.col("direction") == "outbound")
    per_message = outbound.group_by("message_id").agg(pl.col("user_id").n_unique(), pl.len(), pl.col("group_id").first())
    assert (per_message["user_id"] == per_message["len"]).all()  # one row per participant, the same message id
    members = groups.group_by("group_id").agg(members=pl.col("user_id").n_unique())
    assert per_message.join(members, on="group_id").select((pl.col("user_id") == pl.col("members")).all()).item()
    assert {"failed", "delivered", "read"} <= set(outbound["status"])
    assert set(outbound["template_category"].drop_nulls()) == {"marketing", "utility"}  # never authentication
    assert set(outbound.filter(pl.col("message_type") == "template")["template_name"]) == {"group_offer", "group_update"}
    inbound = groups.filter(pl.col("direction") == "inbound")
    assert inbound.height > 0 and set(inbound["status"]) == {"received"}
    # every free-form group message answers a participant's message of the same group within 24 h
    replies = outbound.filter(pl.col("message_type") != "template").sort("timestamp")
    last = replies.join_asof(
        inbound.select("group_id", "timestamp", last_inbound="timestamp").sort("timestamp"),
        on="timestamp",
        by="group_id",
        strategy="backward",
        check_sortedness=False,
    )
    assert last["last_inbound"].null_count() == 0 and (last["timestamp"] - last["last_inbound"] < DAY).all()


def _calling_code(user_id: str) -> str:
    return next((c.calling_code for c in COUNTRIES if user_id.startswith(c.calling_code + c.mobile_prefix)), user_id[:2])


def test_meta_business_agent_answers_from_august_2026_with_its_tokens(traffic_2026):
    agent = traffic_2026.filter(pl.col("sent_by").is_not_null())
    assert set(agent["sent_by"]) == {"meta_business_agent"}
    assert agent["timestamp"].min() >= dt.datetime(2026, 8, 1, tzinfo=dt.UTC)
    assert set(agent["direction"]) == {"outbound"} and not set(agent["message_type"]) & {"template", "reaction"}
    assert agent["group_id"].null_count() == agent.height
    assert agent["tokens"].min() >= 20_000 and agent["tokens"].max() <= 25_000 and agent["tokens"].null_count() == 0
    replies = traffic_2026.filter(
        (pl.col("timestamp") >= dt.datetime(2026, 8, 1, tzinfo=dt.UTC)),
        pl.col("direction") == "outbound",
        ~pl.col("message_type").is_in(["template", "reaction"]),
        pl.col("business_phone") == BUSINESS_NUMBERS[0].phone_number_id,
    )
    assert 0.2 < agent.height / replies.height < 0.4  # AGENT_SHARE of the care number's replies
    assert traffic_2026.filter(pl.col("sent_by").is_null())["tokens"].null_count() == traffic_2026.filter(pl.col("sent_by").is_null()).height


def test_templates_have_names_and_a_campaign_one_name(traffic_2026):
    templates = traffic_2026.filter(pl.col("message_type") == "template")
    assert templates["template_name"].null_count() == 0
    assert traffic_2026.filter(pl.col("message_type") != "template")["template_name"].null_count() == traffic_2026.height - templates.height
    names = set(templates["template_name"])
    assert {"order_update", "login_code", "whatsapp_offer"} <= names
    campaigns = templates.filter(pl.col("template_name").str.starts_with("promo_"))
    assert campaigns.height > 0
    per_campaign = campaigns.group_by("template_name").agg(pl.col("timestamp").dt.date().n_unique(), pl.col("business_phone").n_unique(), pl.len())
    assert (per_campaign["timestamp"] == 1).all() and (per_campaign["business_phone"] == 1).all() and per_campaign["len"].min() > 10
