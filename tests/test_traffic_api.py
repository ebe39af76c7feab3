"""The entry point for analysts: `analytics.load` and the `Traffic` it gives (analytics/pipeline/traffic.py).

Each answer is compared with what the stages give when called one by one, and each stage is
counted: reading, billing and pricing happen once per `Traffic`, whatever is asked afterwards.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import analytics as wa
from analytics.bill import charges
from analytics.core.errors import UsageError
from analytics.present import charts, rollups
from analytics.price import pricing
from analytics.read import ingest
from analytics.settings import Settings

FIXTURES = Path(__file__).parent / "fixtures" / "pricing"
TRAFFIC = FIXTURES / "traffic.csv"
CARD = FIXTURES / "card.csv"


@pytest.fixture
def counted(monkeypatch) -> dict[str, int]:
    """How often each stage runs: reading, billing, pricing."""
    calls = {"read": 0, "bill": 0, "price": 0}
    for name, module, function in (("read", ingest, "read_messages"), ("bill", charges, "bill"), ("price", pricing, "price")):
        original = getattr(module, function)

        def wrapped(*args, _original=original, _name=name, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(module, function, wrapped)
    return calls


def stage_by_stage(settings: Settings) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    messages = ingest.read_messages([TRAFFIC], timezone=settings.timezone).messages.collect()
    billed = charges.bill(messages, settings)
    return messages, billed, pricing.price(billed, settings)


def test_the_answers_equal_the_stages_called_one_by_one():
    settings = Settings(timezone="Europe/Rome", rate_card=CARD)
    messages, billed, priced = stage_by_stage(settings)
    t = wa.load(TRAFFIC, timezone="Europe/Rome", rate_card=CARD)
    assert t.messages.height == messages.height > 0
    assert_frame_equal(t.messages, messages)
    assert_frame_equal(t.charges, billed)
    assert_frame_equal(t.priced, priced)
    assert_frame_equal(t.costs(), pricing.costs(priced))
    assert_frame_equal(t.invoice(), pricing.invoice(priced))
    assert t.costs()["cost"].sum() > 0
    # the five-line example of issue 16, and its one-line form, draw the same chart
    by_hand = charts.cost_by_category_chart(rollups.costs_by_month(pricing.costs(priced)))
    assert t.chart.cost_by_category().to_dict() == by_hand.to_dict()


def test_each_stage_runs_once_whatever_is_asked(counted):
    t = wa.load(TRAFFIC, rate_card=CARD)
    assert counted == {"read": 0, "bill": 0, "price": 0}  # nothing before something is asked
    t.costs(), t.invoice(), t.volumes(), t.summary(), t.describe_charges()
    t.chart.cost_by_category(), t.chart.free_and_paid(), t.chart.volumes(), t.chart.openings()
    t.costs(), t.charges, t.priced
    assert counted == {"read": 1, "bill": 1, "price": 1}


def test_repr_says_what_has_been_computed():
    t = wa.load(TRAFFIC, rate_card=CARD)
    assert "nothing computed yet" in repr(t)
    _ = t.charges
    shown = repr(t)
    assert f"computed: messages ({t.messages.height:,} messages)" in shown
    assert f"computed: charges ({t.charges.height:,} charges)" in shown
    assert "priced" not in shown
    assert t.computed() == ["messages", "charges"]
    assert t._repr_markdown_().startswith("```\nTraffic of ")


def test_settings_come_from_the_config_file_and_keywords_win(tmp_path):
    config = tmp_path / "analytics.toml"
    config.write_text('[billing]\ntimezone = "Europe/Rome"\n\n[pricing]\ncurrency = "usd"\nmarkup_percent = 10\n')
    t = wa.load(TRAFFIC, settings=config, currency="EUR", rate_card=CARD)
    assert (t.settings.timezone, t.settings.currency, t.settings.markup_percent) == ("Europe/Rome", "EUR", 10)
    own = Settings(timezone="Asia/Kolkata")
    assert wa.load(TRAFFIC, settings=own).settings == own
    assert wa.load(TRAFFIC, settings=own, rules="pmp-2025").settings.rules == "pmp-2025"


def test_unknown_settings_and_patterns_that_match_nothing_are_refused(tmp_path):
    with pytest.raises(UsageError, match="unknown setting time_zone: the settings are timezone, "):
        wa.load(TRAFFIC, time_zone="Europe/Rome")
    with pytest.raises(UsageError, match=r"no file matches this pattern"):
        wa.load(str(tmp_path / "export" / "*.parquet"))
    with pytest.raises(UsageError, match="no input files"):
        wa.load([])


def test_a_pattern_reads_every_matching_file_in_order(tmp_path):
    lines = TRAFFIC.read_text().splitlines(keepends=True)
    header, rows = lines[0], lines[1:]
    half = len(rows) // 2
    (tmp_path / "b.csv").write_text(header + "".join(rows[half:]))
    (tmp_path / "a.csv").write_text(header + "".join(rows[:half]))
    t = wa.load(str(tmp_path / "*.csv"), rate_card=CARD)
    assert [Path(p).name for p in t.paths] == ["a.csv", "b.csv"]
    assert_frame_equal(t.charges, wa.load(TRAFFIC, rate_card=CARD).charges)


def test_other_settings_reuse_the_messages_read_and_bill_again(counted):
    t = wa.load(TRAFFIC, rate_card=CARD)
    in_force = t.charges
    what_if = t.with_settings(rules="cbp-2023")
    assert what_if.settings.rules == "cbp-2023" and t.settings.rules is None
    assert set(in_force["rule_set"]) == {"pmp-2025"} and set(what_if.charges["rule_set"]) == {"cbp-2023"}
    assert counted["read"] == 1 and counted["bill"] == 2
    # another time zone reads again: which rows come before the first supported rules depends on it
    _ = t.with_settings(timezone="Asia/Kolkata").messages
    assert counted["read"] == 2


def test_the_entry_point_keeps_import_analytics_instant():
    import subprocess
    import sys

    modules = subprocess.run(
        [sys.executable, "-c", "import sys, analytics; print('polars' in sys.modules)"], capture_output=True, text=True, check=True
    )
    assert modules.stdout.strip() == "False"
    assert "load" in dir(wa) and wa.Settings is Settings


def test_the_texts_are_what_the_commands_print_and_show_plainly_in_jupyter():
    from analytics.present import summaries

    t = wa.load(TRAFFIC, rate_card=CARD)
    ingested = ingest.read_messages([TRAFFIC])
    assert t.describe_reading() == summaries.format_ingest_summary(ingested.summary)
    assert f"Used {t.messages.height:,} rows." in t.describe_reading()
    assert t.summary() == summaries.format_traffic(ingest.describe_traffic(t.messages))
    assert t.describe_charges() == summaries.describe_charges(t.charges)
    assert t.describe_charges().startswith(f"Charges: {t.charges.height:,} (")
    assert repr(t.summary()) == str(t.summary())  # not quoted, line breaks not escaped
