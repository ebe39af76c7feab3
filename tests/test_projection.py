"""Projection (analytics/whatif/projection.py): history replayed forward by whole weeks, the same month a
year earlier with recent growth, rules and rates of each future date, and the back-test on the
shipped sample."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
from traffic import Traffic, instant, merge

from analytics import cli
from analytics.bill import charges
from analytics.present.whatif_text import describe_source
from analytics.settings import Settings
from analytics.whatif import projection
from analytics.whatif.scenarios import BASELINE, Scenario

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = str(ROOT / "data" / "sample" / "messages.csv.gz")
CARD = Path(__file__).parent / "fixtures" / "strategies" / "card.csv"


def weekly(start: str, weeks: int, *, hour: int = 10, category: str = "marketing", user_id: str = "393330000001") -> Traffic:
    """One template a week at `hour` from `start` (a Monday), for `weeks` weeks."""
    traffic = Traffic(start=start, user_id=user_id, id_prefix=f"{user_id[-2:]}-")
    for week in range(weeks):
        traffic.template(24 * 7 * week + hour, category)
    return traffic


def test_a_month_is_replayed_from_the_latest_whole_weeks_of_history():
    # January 2026 (Thursday 1st to Saturday 31st), a template every day at 09:30. February (28 days)
    # is January's last 28 days moved 4 weeks on: Jan 4..31 -> Feb 1..28, same weekday and hour.
    traffic = Traffic(start="2026-01-01T09:30:00Z")
    for day in range(31):
        traffic.template(24 * day, "utility")
    replayed = projection.replay(traffic.frame(), months=1, history_months=1)
    assert replayed.start == instant("2026-02-01T00:00:00Z") and replayed.months == ("2026-02",)
    source = replayed.sources[0]
    assert (source.seasonal, source.shifts_in_weeks, source.windows) == (
        False,
        (4,),
        ((instant("2026-01-04T00:00:00Z"), instant("2026-02-01T00:00:00Z")),),
    )
    february = replayed.messages.filter(pl.col("timestamp") >= replayed.start).sort("timestamp")
    assert february.height == 28
    assert february["timestamp"][0] == instant("2026-02-01T09:30:00Z")  # Jan 4 (a Sunday) -> Feb 1 (a Sunday)
    assert february["message_id"][0] == "m0004~p2026-02"
    # the last 7 days of history (the longest window the rules have, a click-to-WhatsApp ad's since
    # 2026-09-28) come along, unchanged, for the windows open at the start
    context = replayed.messages.filter(pl.col("timestamp") < replayed.start)
    assert context["message_id"].to_list() == [f"m{d:04d}" for d in range(25, 32)]


def test_recent_windows_share_the_users_between_them_and_ids_stay_unique():
    # 60 users, each with a template every day from 2025-09-01 to 2025-11-30. December (31 days) comes
    # from the windows 5 and 9 weeks back (14 weeks back would start before the history), January
    # from 9 and 13 weeks back; each user takes all its messages of a month from one window.
    users = []
    for i in range(60):
        traffic = Traffic(start="2025-09-01T08:00:00Z", user_id=f"39333{i:07d}", id_prefix=f"u{i}-")
        for day in range(91):
            traffic.template(24 * day, "marketing")
        users.append(traffic)
    replayed = projection.replay(merge(*users), months=2, history_months=3)
    assert [s.shifts_in_weeks for s in replayed.sources] == [(5, 9), (9, 13)]
    december = replayed.messages.filter(pl.col("timestamp").dt.month() == 12)
    assert december.height == 60 * 31  # every user, every day
    # Dec 1 is day 91 of the history; a user replayed from w weeks back starts at day 91 - 7w.
    first_day = december.group_by("user_id").agg(pl.col("message_id").str.extract(r"-(\d+)~").cast(pl.Int64).min() - 1, days=pl.len())
    assert set(first_day["days"]) == {31}
    assert set(first_day["message_id"]) == {91 - 7 * 5, 91 - 7 * 9}
    assert replayed.messages["message_id"].is_unique().all()


def test_an_incomplete_last_month_is_left_out_of_the_history():
    traffic = weekly("2025-12-01T00:00:00Z", 11)  # Mondays from Dec 1 to Feb 9
    replayed = projection.replay(traffic.frame(), months=1, history_months=1)
    assert replayed.start == instant("2026-02-01T00:00:00Z") and replayed.months == ("2026-02",)
    assert replayed.notes == ("2026-02 is left out of the history: its messages end on 2026-02-09, before its last day",)


def test_the_same_month_a_year_earlier_is_replayed_with_the_growth_since():
    # A template every Monday from 2025-01-06 to the end of April 2026, and in the last 13 weeks one
    # every Thursday too: recent marketing is 26 a 13 weeks against 13 a year earlier, growth × 2.
    # May 2026 is May 2025 moved 52 weeks on (2025-05-02..2025-06-01: the Mondays May 5, 12, 19
    # and 26), with every user copied once: 4 × 2 messages, on Mondays.
    mondays = weekly("2025-01-06T00:00:00Z", 69)  # to Monday 2026-04-27
    thursdays = Traffic(start="2026-01-29T10:00:00Z", user_id="393330000001", id_prefix="th-")
    for week in range(1, 14):
        thursdays.template(24 * 7 * week, "marketing")  # Thursdays Feb 5 .. Apr 30
    messages = pl.concat([mondays.frame(), thursdays.frame()])
    replayed = projection.replay(messages, months=1)
    source = replayed.sources[0]
    assert (source.seasonal, source.level, source.shifts_in_weeks) == (True, {"marketing": 2.0}, (52,))
    may = replayed.messages.filter(pl.col("timestamp") >= replayed.start).sort("timestamp", "user_id")
    assert may.height == 8
    assert may["timestamp"].dt.weekday().unique().to_list() == [1]  # Mondays
    assert may["timestamp"].dt.date().unique().sort().to_list() == [dt.date(2026, 5, d) for d in (4, 11, 18, 25)]
    assert sorted(set(may["user_id"])) == ["393330000001", "393330000001~g1"]
    recent_only = projection.replay(messages, months=1, seasonal=False)
    assert not recent_only.sources[0].seasonal


def test_with_less_than_65_weeks_of_history_last_years_month_is_replayed_as_it_was():
    # Mondays from 2024-12-30 to 2025-12-29 and a message on Wednesday 2025-12-31: January 2026 is
    # Jan 2..31 2025 moved 52 weeks on (the Mondays Jan 6, 13, 20, 27), and the growth since cannot
    # be measured (no October 2024), so nothing is added or dropped.
    traffic = weekly("2024-12-30T00:00:00Z", 53).template(24 * 366, "utility")
    replayed = projection.replay(traffic.frame(), months=1)
    source = replayed.sources[0]
    assert (source.seasonal, source.level) == (True, None)
    assert "recent growth not known (less than 65 weeks of history)" in describe_source(source, "UTC")
    january = replayed.messages.filter(pl.col("timestamp") >= replayed.start)
    assert january["timestamp"].dt.date().sort().to_list() == [dt.date(2026, 1, d) for d in (5, 12, 19, 26)]


def test_a_projection_across_2026_10_01_is_billed_under_the_rules_of_each_date():
    # History to the end of August 2026: the user writes every Monday at 09:00 and a utility
    # template follows at 10:00, inside the window. Projected September is billed under pmp-2025
    # (free: inside the window), October under pmp-2026-10 (regular).
    traffic = Traffic(start="2026-07-06T09:00:00Z")
    for week in range(9):
        traffic.user(24 * 7 * week).template(24 * 7 * week + 1, "utility")
    replayed = projection.replay(traffic.frame(), months=2, history_months=1, until=instant("2026-09-01T00:00:00Z"))
    billed = charges.bill(replayed.messages).filter(pl.col("started_at") >= replayed.start)
    by_month = billed.group_by(month=pl.col("started_at").dt.strftime("%Y-%m")).agg(
        pl.col("rule_set").unique(), pl.col("pricing_type").unique(), pl.len()
    )
    assert sorted(by_month.rows()) == [
        ("2026-09", ["pmp-2025"], ["free_customer_service"], 4),
        ("2026-10", ["pmp-2026-10"], ["regular"], 4),
    ]


def test_rates_the_card_does_not_know_are_reported_unpriced_not_invented(tmp_path):
    # History: a marketing template every Monday from 2025-08-25 to 2025-09-29, and one on the 30th.
    # October is Aug 27..Sep 26 moved 5 weeks on (the Mondays Sep 1, 8, 15, 22), November Aug 30..
    # Sep 28 moved 9 weeks (the same four). The card knows Italy's marketing rate (0.05) until
    # 2025-10-31 and says "not known" from November.
    card = tmp_path / "card.csv"
    card.write_text(CARD.read_text() + "2025-11-01,EUR,Italy,marketing,1,,tests,not known from November\n")
    traffic = weekly("2025-08-25T00:00:00Z", 6)
    traffic.template(24 * 36 + 12, "marketing")
    projected = projection.project(
        traffic.frame(),
        [Scenario(BASELINE)],
        months=2,
        settings=Settings(rate_card=str(card)),
        history_months=1,
        run_backtest=False,
    )
    rows = projected.table.select("month", "horizon", "billable_charges", "unpriced_charges", "cost").sort("month").rows()
    assert rows == [
        ("2025-10", 1, 4, 0, Decimal("0.20")),  # 4 × 0.05
        ("2025-11", 2, 4, 4, Decimal("0")),
    ]
    assert projected.table["cost_low"].null_count() == 2  # no back-test, no band


# --- The back-test on the shipped sample ----------------------------------------------------------


@pytest.fixture(scope="module")
def sample_projection(tmp_path_factory):
    folder = tmp_path_factory.mktemp("project")
    status = cli.main(["project", SAMPLE, "--months", "3", "-o", str(folder / "project.csv")])
    assert status == 0
    return folder


def test_the_back_test_on_the_sample_misses_by_about_19_percent_a_month(sample_projection):
    # Measured (tests pin what was measured, to the tolerance of a seeded replay): origins 2026-04 to
    # 2026-11, each projected from the months before it, 3 months ahead at most. MAPE of the monthly
    # cost 19.1%, of billable charges 18.5%; by horizon 17.5%, 18.2%, 22.3% (the sample with issue
    # 17's groups and Meta Business Agent, ingest keying group rows by participant). November's
    # Black Friday campaigns are the largest miss (-65%): recent months cannot foresee them.
    errors = pl.read_csv(sample_projection / "project.backtest.csv")
    assert errors["origin"].unique().sort().to_list() == [f"2026-{m:02d}" for m in range(4, 12)]
    assert errors.height == 8 + 7 + 6
    assert errors["cost_error"].abs().mean() == pytest.approx(0.191, abs=0.01)
    assert errors["billable_charges_error"].abs().mean() == pytest.approx(0.185, abs=0.01)
    by_horizon = errors.group_by("horizon").agg(pl.col("cost_error").abs().mean()).sort("horizon")["cost_error"].to_list()
    assert by_horizon == pytest.approx([0.175, 0.182, 0.223], abs=0.01)
    worst = errors.sort(pl.col("cost_error").abs(), descending=True).row(0, named=True)
    assert (worst["month"], round(worst["cost_error"], 2)) == ("2026-11", -0.65)
    # each error is the projected over the actual month, less one
    row = errors.row(0, named=True)
    assert row["cost_error"] == pytest.approx(row["projected_cost"] / row["actual_cost"] - 1)


def test_the_projection_of_the_sample_carries_the_back_tested_band(sample_projection):
    table = pl.read_csv(sample_projection / "project.csv", schema_overrides={c: pl.Decimal(38, 6) for c in ("cost", "cost_low", "cost_high")})
    assert table.columns == list(projection.PROJECT_SCHEMA)
    assert table["month"].unique().sort().to_list() == ["2026-12", "2027-01", "2027-02"]
    assert set(table["scenario"]) == {"baseline"}
    errors = pl.read_csv(sample_projection / "project.backtest.csv")
    bands = errors.group_by("horizon").agg(pl.col("cost_error").abs().mean()).sort("horizon")["cost_error"].cum_max().to_list()
    priced = table.filter(pl.col("cost") > 0)
    for row in priced.iter_rows(named=True):
        band = bands[row["horizon"] - 1]
        assert float(row["cost_high"]) == pytest.approx(float(row["cost"]) * (1 + band), rel=1e-6)  # the factor has 6 decimals
        assert float(row["cost_low"]) == pytest.approx(float(row["cost"]) * (1 - band), rel=1e-6)
    # December is replayed from the three latest month-long windows: a month like Sep-Nov
    december = float(table.filter(pl.col("month") == "2026-12")["cost"].sum())
    assert 150 < december < 260


def test_project_takes_scenarios_and_refuses_a_nonsense_horizon(capsys, tmp_path):
    toml = tmp_path / "s.toml"
    toml.write_text('[scenario.cap]\nstrategies = [{ name = "cap_marketing", per_user = 1 }]\n')
    out = tmp_path / "p.parquet"
    status = cli.main(["project", SAMPLE, "--months", "1", "--scenarios", str(toml), "--no-backtest", "-o", str(out)])
    err = capsys.readouterr().err
    assert status == 0, err
    table = pl.read_parquet(out)
    assert set(table["scenario"]) == {"baseline", "cap"} and table["cost_low"].null_count() == table.height
    assert table.filter(pl.col("scenario") == "cap")["cost_difference"].sum() < 0
    assert "marketing templates beyond 1 per user per month were not sent" in err
    status = cli.main(["project", SAMPLE, "--months", "0", "-o", str(out)])
    assert status == 2 and "--months 0: project at least one month" in capsys.readouterr().err
