"""Rules as data (data/rules/rule_sets.toml) and the rules of July to December 2026 (billing-rules.md §9).

Each rule is a named test on both engines (the `bill` fixture). The rules file decides every
behaviour: a test that edits it (or a copy, or a `Choices`) sees the charges change, with no code
change.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from traffic import Traffic, merge, rows, with_free_tier_size

from analytics.core import schema
from analytics.core.resources import resource
from analytics.present import summaries
from analytics.settings import Settings
from analytics.terms import rules

HOUR = dt.timedelta(hours=1)
CONSOLE_SCRIPT = Path(sys.executable).with_name("wa-analytics")
SHIPPED = resource("data", "rules", "rule_sets.toml").read_text(encoding="utf-8")

# A hypothetical rule set of 2027, as the next change of Meta's rules would be written: a copy of
# the last rule set with a free tier of 500 and a 48 h customer service window inside which
# utility templates are free again.
NEXT_CHANGE = """
[[rule_set]]
name = "pmp-2027-01"
effective_from = 2027-01-01
pricing_model = "PMP"
status = "unverified"
source = "a test: tests/test_rules_as_data.py"
note = "Hypothetical: 500 free service messages, a 48 h window"
conversations = "none"
conversation_window_hours = 24
customer_service_window_hours = 48
fep_offer_hours = 24
fep_window_hours = 72
ctwa_fep_window_up_to_hours = 168
ctwa_fep_extension_hours = 24
free_in_customer_service_window = ["utility"]
free_categories = []
reactions_free = true
free_tiers = [{ name = "service", size = 500, scope = "business_phone", categories = ["service"] }]
volume_tier_categories = ["utility", "authentication", "authentication_international"]
service_rate_from = "utility"
"""


def pricing_types(billed: pl.DataFrame) -> dict[str, int]:
    counts = billed.group_by("pricing_type").len()
    return dict(zip(counts["pricing_type"], counts["len"], strict=True))


def with_choices(**changed: object) -> Settings:
    book = rules.shipped()
    return Settings(rule_book=dataclasses.replace(book, choices=dataclasses.replace(book.choices, **changed)))


# --- The next change is a data edit --------------------------------------------------------------------


def test_a_rule_set_added_to_a_copy_of_the_rules_file_bills_traffic_across_its_switch(bill, tmp_path: Path) -> None:
    rules_file = tmp_path / "rules.toml"
    rules_file.write_text(SHIPPED + NEXT_CHANGE, encoding="utf-8")
    config = Settings(rule_book=rules.load(rules_file))

    december = Traffic("2026-12-30T00:00:00Z", id_prefix="d")
    december.user(0).template(30, "utility")  # 30 h after the user: the 24 h window of pmp-2026-10 is closed
    january = Traffic("2027-01-05T00:00:00Z", user_id="393330000002", id_prefix="j")
    january.user(0).template(30, "utility")  # inside the 48 h window of the new rules: free
    for n in range(501):
        january.text(31 + n / 100)
    billed = bill(merge(december, january), config)

    assert rows(billed.filter(pl.col("category") == "utility"), ("rule_set", "pricing_type", "opening_message_id")) == [
        ("pmp-2026-10", "regular", "d0002"),
        ("pmp-2027-01", "free_customer_service", "j0002"),
    ]
    service = billed.filter(pl.col("category") == "service")
    assert pricing_types(service) == {"free_tier": 500, "regular": 1}
    assert service.filter(pl.col("pricing_type") == "regular")["opening_message_id"].to_list() == ["j0503"]
    assert "pmp-2027-01 (Hypothetical: 500 free service messages, a 48 h window) is unverified" in summaries.describe_charges(billed, config)


def test_a_rules_file_of_your_own_is_read_from_the_config_and_checked(tmp_path: Path) -> None:
    (tmp_path / "rules.toml").write_text(SHIPPED + NEXT_CHANGE, encoding="utf-8")
    config_file = tmp_path / "analytics.toml"
    config_file.write_text('[billing]\nrules_file = "rules.toml"\n', encoding="utf-8")
    assert Settings.from_toml(config_file).rule_book.names[-1] == "pmp-2027-01"

    (tmp_path / "rules.toml").write_text(SHIPPED.replace("reactions_free = true", "reactions_free = true\nreaction_rate = 1", 1))
    with pytest.raises(rules.RulesFileError, match=r"rule set 'pmp-2025': unknown key 'reaction_rate'"):
        Settings.from_toml(config_file)
    (tmp_path / "rules.toml").write_text(SHIPPED.replace("customer_service_window_hours = 24", "customer_service_window_hours = 1e308", 1))
    with pytest.raises(rules.RulesFileError, match="customer_service_window_hours must be a number of hours above 0 and at most 8784"):
        Settings.from_toml(config_file)
    (tmp_path / "rules.toml").write_text(SHIPPED.replace('scope = "business_phone"', 'scope = "phone"'))
    with pytest.raises(rules.RulesFileError, match="scope must be one of waba, business_phone, not 'phone'"):
        Settings.from_toml(config_file)


def test_no_rule_set_name_is_written_in_the_code() -> None:
    """The engines, pricing, reconciliation, strategies and Spark read rule-set properties only."""
    names = [p.name for p in rules.rule_sets()]
    package = Path(rules.__file__).parent
    sources = [*package.glob("*.py"), *package.parent.joinpath("queries").glob("*.sql")]
    found = [(path.name, name) for path in sources for name in names if name in path.read_text(encoding="utf-8")]
    assert found == []


# --- Every [choice] of billing-rules.md is read ----------------------------------------------------------


def test_choice_inbound_first_at_equal_time(bill) -> None:
    t = Traffic("2025-09-01T08:00:00Z")
    t.template(0, "utility").user(0)  # the same instant: the order decides whether the window is open

    assert rows(bill(t.frame()), ("pricing_type",)) == [("free_customer_service",)]
    assert rows(bill(t.frame(), with_choices(inbound_first_at_equal_time=False)), ("pricing_type",)) == [("regular",)]


def test_choice_fep_reopens_inside_open_window(bill) -> None:
    t = Traffic("2025-09-01T08:00:00Z")
    t.user(0, entry_point="ctwa").text(1).user(10, entry_point="ctwa").text(20).template(80, "marketing")

    assert rows(bill(t.frame()), ("pricing_type",))[-1] == ("regular",)  # the window of h1 ended at h73
    assert rows(bill(t.frame(), with_choices(fep_reopens_inside_open_window=True)), ("pricing_type",))[-1] == ("free_entry_point",)


def test_choice_fep_counts_toward_free_tier(bill) -> None:
    t = Traffic("2026-11-02T08:00:00Z")
    t.user(0, entry_point="ctwa").text(1).text(80)  # a free entry point service message, then one past the window
    small = with_free_tier_size(rules.shipped(), 1)
    counting = dataclasses.replace(small, choices=dataclasses.replace(small.choices, fep_counts_toward_free_tier=True))

    assert rows(bill(t.frame(), Settings(rule_book=small)), ("pricing_type",)) == [("free_entry_point",), ("free_tier",)]
    assert rows(bill(t.frame(), Settings(rule_book=counting)), ("pricing_type",)) == [("free_entry_point",), ("regular",)]


def test_choice_marketing_lite_billed_as(bill) -> None:
    t = Traffic("2025-09-01T08:00:00Z")
    t.template(0, "marketing_lite")

    assert rows(bill(t.frame()), ("category",)) == [("marketing",)]
    assert rows(bill(t.frame(), with_choices(marketing_lite_billed_as="utility")), ("category",)) == [("utility",)]


def test_choice_crossover(bill) -> None:
    t = Traffic("2025-06-30T20:00:00Z")
    t.template(0, "marketing").template(14, "marketing")  # 2025-07-01 10:00, per-message pricing

    assert rows(bill(t.frame()), ("rule_set", "message_count")) == [("cbp-2023", 2)]
    assert rows(bill(t.frame(), with_choices(crossover="utility")), ("rule_set", "message_count")) == [
        ("cbp-2023", 1),
        ("pmp-2025", 1),
    ]


# --- October 2026 as Meta documents it -------------------------------------------------------------------


def test_the_october_2026_rules_are_meta_documented_and_warn_nowhere(bill) -> None:
    assert rules.rule_set("pmp-2026-10").status == "meta_documented"
    t = Traffic("2026-11-02T08:00:00Z")
    t.user(0).text(1).template(2, "utility")
    billed = bill(t.frame())

    assert rows(billed, ("category", "pricing_type")) == [("service", "free_tier"), ("utility", "regular")]
    assert "warning" not in summaries.describe_charges(billed)


def test_service_exemption_makes_service_past_the_free_tier_free_until_its_date(bill) -> None:
    t = Traffic("2027-12-14T20:00:00Z")
    t.user(0).text(1).text(3).text(29)  # 2027-12-14 21:00 and 23:00, 2027-12-16 01:00
    exempt = Settings(service_exempt_until=dt.date(2027, 12, 15), rule_book=with_free_tier_size(rules.shipped(), 1))

    assert rows(bill(t.frame(), exempt), ("pricing_type", "billable")) == [
        ("free_tier", False),
        ("free_exempt", False),
        ("regular", True),
    ]
    assert rows(bill(t.frame(), Settings(rule_book=exempt.rule_book)), ("pricing_type",))[1] == ("regular",)


def test_service_exemption_is_read_from_the_config(tmp_path: Path) -> None:
    config_file = tmp_path / "analytics.toml"
    config_file.write_text('[billing]\nservice_exempt_until = 2027-12-31\nfep_model = "fixed-7d"\n', encoding="utf-8")
    config = Settings.from_toml(config_file)
    assert (config.service_exempt_until, config.fep_model) == (dt.date(2027, 12, 31), "fixed-7d")


# --- Free entry point windows: dated lengths and the model options (§9) -----------------------------------


def fep_rows(bill, t: Traffic, config: Settings | None = None) -> list[tuple[object, ...]]:
    return rows(bill(t.frame(), config or Settings()), ("pricing_type", "opening_message_id"))


def _ctwa(start: str, entry_point: str = "ctwa") -> Traffic:
    t = Traffic(start)
    t.user(0, entry_point=entry_point).text(1)  # the reply opens the window at h1
    return t


@pytest.mark.parametrize(
    ("model", "at_h100"),
    [("fixed-72h", "regular"), ("fixed-7d", "free_entry_point"), ("extend-24h-per-user-message", "regular")],
)
def test_click_to_whatsapp_windows_from_2026_09_28_follow_the_fep_model(bill, model: str, at_h100: str) -> None:
    t = _ctwa("2026-10-05T08:00:00Z")
    t.template(100, "marketing")

    assert fep_rows(bill, t, Settings(fep_model=model))[-1] == (at_h100, "m0003")


def test_a_window_extends_24_hours_from_each_user_message_inside_it_up_to_7_days(bill) -> None:
    t = _ctwa("2026-10-05T08:00:00Z")
    t.user(60).template(83.5, "marketing").template(84.5, "marketing")  # the end moves from h73 to h60 + 24 h
    t2 = _ctwa("2026-10-05T08:00:00Z", entry_point="ctwa")
    for h in range(20, 200, 20):
        t2.user(h)
    t2.template(168.5, "marketing").template(169.5, "marketing")  # capped at h1 + 168 h

    extend = Settings(fep_model="extend-24h-per-user-message")
    assert fep_rows(bill, t, extend)[-2:] == [("free_entry_point", "m0004"), ("regular", "m0005")]
    assert [r[0] for r in fep_rows(bill, t2, extend)[-2:]] == ["free_entry_point", "regular"]


def test_page_call_to_action_windows_and_earlier_ad_windows_keep_72_hours(bill) -> None:
    page = _ctwa("2026-10-05T08:00:00Z", entry_point="page_cta")
    page.template(74, "marketing")
    before = _ctwa("2026-09-20T08:00:00Z")
    before.template(74, "marketing")

    seven_days = Settings(fep_model="fixed-7d")
    assert fep_rows(bill, page, seven_days)[-1][0] == "regular"
    assert fep_rows(bill, before, seven_days)[-1][0] == "regular"


def test_a_cbp_free_entry_point_conversation_lasts_as_its_window_does(bill) -> None:
    t = Traffic("2023-09-04T08:00:00Z")
    t.user(0, entry_point="ctwa").text(1).user(60).template(80, "marketing")
    billed = bill(t.frame(), Settings(fep_model="extend-24h-per-user-message"))

    # before 2026-09-28 the rules allow no more than 72 h: the user message at h60 extends nothing
    assert rows(billed, ("category", "expires_at", "message_count")) == [
        ("referral_conversion", t.at(73), 1),
        ("marketing", t.at(104), 1),
    ]


def test_meta_s_own_window_wins_over_the_model(bill) -> None:
    t = _ctwa("2026-10-05T08:00:00Z")
    t.template(90, "marketing").template(120, "marketing")
    reported = {"m0002": t.at(101)}  # Meta kept this window open until h101
    messages = t.frame().with_columns(fep_expires_at=pl.col("message_id").replace_strict(reported, default=None, return_dtype=schema.INSTANT))

    billed = bill(messages)
    assert rows(billed, ("pricing_type", "opening_message_id")) == [
        ("free_entry_point", "m0002"),
        ("free_entry_point", "m0003"),
        ("regular", "m0004"),
    ]
    assert summaries.describe_fep_windows(messages, billed, Settings()) == (
        "Free entry point windows: 1; 1 with the end Meta reported (fep_expires_at), 0 modelled (fep_model fixed-72h)."
    )


# --- The 2022-02-01 cut in each WABA's time zone ---------------------------------------------------------


def test_the_first_supported_day_is_decided_in_each_waba_s_time_zone_by_ingest_and_engines(tmp_path: Path) -> None:
    rows_csv = (
        "message_id,timestamp,direction,business_phone,waba_id,user_id,message_type,template_category,status\n"
        "rome,2022-01-31T23:30:00Z,outbound,B1,W-ROME,393330000001,template,marketing,delivered\n"  # 00:30 on Feb 1 in Rome
        "saopaulo,2022-02-01T01:30:00Z,outbound,B2,W-SP,5511999990000,template,marketing,delivered\n"  # Jan 31 in São Paulo
    )
    (tmp_path / "in.csv").write_text(rows_csv, encoding="utf-8")
    (tmp_path / "analytics.toml").write_text(
        '[billing]\ntimezone = "UTC"\nwaba_timezones = { "W-ROME" = "Europe/Rome", "W-SP" = "America/Sao_Paulo" }\n',
        encoding="utf-8",
    )
    run = subprocess.run(
        [str(CONSOLE_SCRIPT), "charges", "in.csv", "-o", "charges.csv", "--config", "analytics.toml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert pl.read_csv(tmp_path / "charges.csv")["opening_message_id"].to_list() == ["rome"]
    quarantine = pl.read_csv(tmp_path / "charges.quarantine.csv")
    assert quarantine["message_id"].to_list() == ["saopaulo"]
    assert quarantine["reason"].to_list() == ["before 2022-02-01: notification-based pricing is not modelled"]
