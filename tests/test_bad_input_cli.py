"""Bad input and bad usage through the installed command (issue 15): exit status 2, one line that
names the file or option and what to do, and the inputs untouched."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from analytics.whatif import strategies

CONSOLE_SCRIPT = Path(sys.executable).with_name("wa-analytics")
ROOT = Path(__file__).parent.parent
SAMPLE = ROOT / "data" / "sample" / "messages.csv.gz"
TRAFFIC = Path(__file__).parent / "fixtures" / "ingest" / "messages.csv"


def wa_analytics(*argv: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([str(CONSOLE_SCRIPT), *map(str, argv)], capture_output=True, text=True, env=env, check=False, cwd=cwd)


def one_line_error(run: subprocess.CompletedProcess[str]) -> str:
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("wa-analytics: error: ")]
    assert len(errors) == 1 and errors[0] == lines[-1], run.stderr
    return errors[0]


def copied(source: Path, folder: Path) -> Path:
    target = folder / source.name
    target.write_bytes(source.read_bytes())
    return target


# --- Scenarios: bounded, and sized before they are built -------------------------------------------


def compare_refuses(tmp_path: Path, scenario_bytes: bytes, traffic: Path = TRAFFIC) -> str:
    inputs = copied(traffic, tmp_path)
    scenario_file = tmp_path / "s.toml"
    scenario_file.write_bytes(scenario_bytes)
    out = tmp_path / "x.csv"
    message = one_line_error(wa_analytics("compare", inputs, "--scenarios", scenario_file, "-o", out))
    assert not out.exists()
    assert inputs.read_bytes() == traffic.read_bytes() and scenario_file.read_bytes() == scenario_bytes
    return message


def test_growth_of_a_billion_is_refused_before_the_traffic_is_read(tmp_path):
    message = compare_refuses(tmp_path, b"[scenario.a]\ngrowth = { marketing = 1e9 }\n")
    assert message == (
        f"wa-analytics: error: {tmp_path / 's.toml'}: scenario a: strategy growth: growth factor marketing = 1e+09 must be "
        "between 0 and 100 (1.2 is 20% more customers; 100 is 100 times today's)"
    )


def test_a_market_growth_factor_is_bounded_too(tmp_path):
    message = compare_refuses(tmp_path, b"[scenario.a]\ngrowth = { markets = { Italy = 101 } }\n")
    assert "scenario a: strategy growth: growth factor Italy = 101 must be between 0 and 100" in message


def test_growth_that_would_not_fit_in_memory_is_sized_and_refused_before_it_is_built(tmp_path):
    memory = strategies.physical_memory()
    # Every user of the sample ×100, its Italian users ×100 again: about 260 M messages.
    if memory is None or memory > 100e9:
        pytest.skip("the estimate is held to this machine's memory, which is too large for the test")
    message = compare_refuses(
        tmp_path,
        b"[scenario.big]\ngrowth = { marketing = 100, utility = 100, authentication = 100, service = 100, markets = { Italy = 100 } }\n",
        traffic=SAMPLE,
    )
    assert message.startswith("wa-analytics: error: scenario big: growth would build about ")
    assert "messages, which need about " in message and "ask for smaller growth factors" in message
    built = int(message.split("about ")[1].split(" messages")[0].replace(",", ""))
    assert 100_000_000 < built < 500_000_000


def test_project_months_are_bounded(tmp_path):
    inputs = copied(TRAFFIC, tmp_path)
    message = one_line_error(wa_analytics("project", inputs, "--months", "100000", "-o", tmp_path / "p.csv"))
    assert message == "wa-analytics: error: --months 100000: project at least one month and at most 60 (each is built as traffic)"
    assert not (tmp_path / "p.csv").exists() and inputs.read_bytes() == TRAFFIC.read_bytes()


# --- Scenario files ------------------------------------------------------------------------------------


def test_a_scenario_file_of_invalid_bytes_exits_2_naming_it(tmp_path):
    message = compare_refuses(tmp_path, b"\xff\xfe[scenario.a]\x00\x81\n")
    assert message == (f"wa-analytics: error: {tmp_path / 's.toml'} is not a TOML scenario file: invalid UTF-8 at byte 0; save it as UTF-8 text")


def test_a_bad_strategy_value_names_the_scenario_and_the_strategy(tmp_path):
    message = compare_refuses(tmp_path, b'[scenario.caps]\nstrategies = [{ name = "cap_marketing", per_user = 2, period = "fortnight" }]\n')
    assert message == (
        f"wa-analytics: error: {tmp_path / 's.toml'}: scenario caps: strategy cap_marketing: period = 'fortnight': choose day, week, month"
    )


# --- report: parameters checked before any notebook runs ------------------------------------------------


def report_refuses(tmp_path: Path, *argv: str | Path, params: str | None = None) -> str:
    """`wa-analytics report` with `argv` (and a params file of `params`): exit 2 with one line, no
    report and no kept notebook written, every file in the folder untouched."""
    if params is not None:
        (tmp_path / "params.toml").write_text(params)
    before = {p: p.read_bytes() for p in tmp_path.iterdir()}
    extra = ["--params", tmp_path / "params.toml"] if params is not None else []
    message = one_line_error(wa_analytics("report", "--month", "2026-10", *argv, *extra, "-o", tmp_path / "report.html"))
    assert {p: p.read_bytes() for p in tmp_path.iterdir()} == before
    return message


def test_report_on_garbage_input_exits_2_before_any_notebook(tmp_path):
    garbage = tmp_path / "garbage.csv"
    garbage.write_bytes(b"\x89\xb8\xff\x00garbage" * 300)
    message = report_refuses(tmp_path, "--input", garbage)
    assert message.startswith(f"wa-analytics: error: {garbage}: line 1 is not UTF-8 text")
    assert garbage.read_bytes() == b"\x89\xb8\xff\x00garbage" * 300


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ('timezone = "Mars/Olympus"\n', 'timezone = \'Mars/Olympus\': expected an IANA time zone name such as "Europe/Rome" or "UTC"'),
        (
            'currency = "XXX"\n',
            "currency = 'XXX': the rate card has no rates in it; it has BRL, EUR, INR, USD: choose one, or give a rate_card in that currency",
        ),
        ('months_ahead = "three"\n', "months_ahead = 'three': expected a whole number of months from 1 to 60, such as 3"),
        ('meta_source = "meta"\n', 'meta_source = \'meta\': expected "input", "synthetic" or "auto"'),
        ('rule_set = "pmp-2027"\n', "rule_set = 'pmp-2027': expected the name of a rule set: \"cbp-2022\""),
        ('rate_card = "missing.csv"\n', "rate_card: "),
    ],
)
def test_report_parameters_are_checked_before_any_notebook(tmp_path, params, expected):
    message = report_refuses(tmp_path, params=params)
    assert message.startswith(f"wa-analytics: error: --params {tmp_path / 'params.toml'}: ")
    assert expected in message


def test_report_checks_the_config_file_a_parameter_names(tmp_path):
    config = tmp_path / "analytics.toml"
    config.write_text("[billing]\nfep_window_hours = -5\n")
    message = report_refuses(tmp_path, params='config_file = "analytics.toml"\n')
    assert message == (
        f"wa-analytics: error: {config}: [billing] fep_window_hours: expected a number of hours above 0 and at most 168, such as 72, got -5"
    )


def test_report_checks_the_scenarios_file_a_parameter_names(tmp_path):
    (tmp_path / "s.toml").write_text("[scenario.a]\ngrowth = { marketing = 1e9 }\n")
    message = report_refuses(tmp_path, params='scenarios_file = "s.toml"\n')
    assert "scenario a: strategy growth: growth factor marketing = 1e+09 must be between 0 and 100" in message


def test_report_without_the_notebook_extras_says_which_extra_to_install(tmp_path):
    script = (
        "import sys; sys.modules['papermill'] = None\n"  # as if the extra were not installed
        "from analytics import cli; sys.exit(cli.main(sys.argv[1:]))"
    )
    run = subprocess.run(
        [sys.executable, "-c", script, "report", "--month", "2026-10", "-o", str(tmp_path / "r.html")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 2
    assert run.stderr.strip() == (
        "wa-analytics: error: the report needs the notebook extras (papermill not installed): "
        "pip install 'wa-analytics[notebooks]' (make install does)"
    )
    assert list(tmp_path.iterdir()) == []


def test_a_report_on_one_month_of_history_says_what_the_projection_needs(tmp_path):
    import polars as pl

    one_month = tmp_path / "october.csv"
    sample = pl.read_csv(SAMPLE, infer_schema_length=0)
    sample.filter(pl.col("timestamp").str.starts_with("2026-10")).write_csv(one_month)
    before = one_month.read_bytes()
    out = tmp_path / "report.html"
    run = wa_analytics("report", "--input", one_month, "--month", "2026-10", "-o", out)
    assert run.returncode == 0, run.stderr
    page = out.read_text()
    assert "No projection: it needs 2 months of history, and the input holds 1 month up to 2026-10." in page
    assert "Strategies and projection" in page and "Traceback" not in page
    assert one_month.read_bytes() == before


# --- rate-card messages: one line, complete, with a fix that exists ---------------------------------------

CARD_HEADER = "effective_from,currency,market,category,tier_from,rate\n"
META_RATES = Path(__file__).parent / "fixtures" / "pricing" / "meta_gbp_rates.csv"


def test_rate_card_problems_are_one_line_naming_file_and_line(tmp_path):
    card = tmp_path / "card.csv"
    card.write_text(CARD_HEADER + "2026-01-01,USD,Italy,marketing,1,abc\n2026-01-01,USD,Narnia,marketing,1,0.1\n")
    traffic = copied(TRAFFIC, tmp_path)
    message = one_line_error(wa_analytics("costs", traffic, "--rate-card", card, "-o", tmp_path / "c.csv"))
    assert message.startswith(
        f"wa-analytics: error: invalid rate card: {card}, line 2: rate 'abc' is not a number (write it like 0.0245; "
        f"leave it empty when not known); {card}, line 3: unknown market 'Narnia': did you mean"
    )
    assert not (tmp_path / "c.csv").exists() and traffic.read_bytes() == TRAFFIC.read_bytes()


def test_a_header_only_card_says_it_has_no_rates(tmp_path):
    card = tmp_path / "card.csv"
    card.write_text(CARD_HEADER)
    traffic = copied(TRAFFIC, tmp_path)
    message = one_line_error(wa_analytics("costs", traffic, "--rate-card", card, "-o", tmp_path / "c.csv"))
    assert message == "wa-analytics: error: the rate card has no rates: give a card with rows of rates (contracts.md §3, data/rate_cards/README.md)"
    with_currency = one_line_error(wa_analytics("costs", traffic, "--rate-card", card, "--currency", "USD", "-o", tmp_path / "c.csv"))
    assert with_currency == "wa-analytics: error: the rate card has no USD rates: it has no rates at all (a header without rows)"
    assert card.read_text() == CARD_HEADER and not (tmp_path / "c.csv").exists()


def test_rates_on_before_the_card_names_the_scenario_and_the_first_date(tmp_path):
    message = compare_refuses(tmp_path, b"[scenario.old]\nrates_on = 1900-01-01\n")
    assert message == (
        "wa-analytics: error: scenario old: rates_on = 1900-01-01: the rate card has no rates in force then "
        "(its first are from 2022-02-01): choose a later date"
    )


def test_compare_suggests_only_options_it_takes(tmp_path):
    card = tmp_path / "card.csv"
    card.write_text(CARD_HEADER + "2022-02-01,USD,Italy,marketing,1,0.05\n2022-02-01,EUR,Italy,marketing,1,0.05\n")
    scenario_file = tmp_path / "s.toml"
    scenario_file.write_text("[scenario.a]\n")
    traffic = copied(TRAFFIC, tmp_path)
    message = one_line_error(wa_analytics("compare", traffic, "--scenarios", scenario_file, "--rate-card", card, "-o", tmp_path / "x.csv"))
    assert "no currency of the rate card prices every billable charge" in message
    assert "choose one with --currency (`costs` then needs --report-unpriced" in message
    assert "`compare` and `project` count them as unpriced" in message
    # the fix it names exists: with --currency, compare runs and counts the rest as unpriced
    fixed = wa_analytics("compare", traffic, "--scenarios", scenario_file, "--rate-card", card, "--currency", "USD", "-o", tmp_path / "x.csv")
    assert fixed.returncode == 0, fixed.stderr
    assert "billable charges have no rate in the card and are not in the cost" in fixed.stderr


def test_rate_card_import_names_the_input_file_and_line(tmp_path):
    rates = tmp_path / "rates.csv"
    # line 9 of Meta's file (its header spans lines 4 and 5); the card it would generate has it on another line
    rates.write_text(META_RATES.read_text().replace("\nOther,GBD,", "\nNarnia,GBD,"))
    before = rates.read_bytes()
    out = tmp_path / "card.csv"
    message = one_line_error(wa_analytics("rate-card", "import", rates, "--effective", "2027-03-01", "--currency", "GBP", "-o", out))
    assert message.startswith(
        f"wa-analytics: error: the imported card does not validate: invalid rate card: {rates}, line 9: unknown market 'Narnia'"
    )
    assert message.count("unknown market") == 1  # one input line, once, however many card rows it makes
    assert not out.exists() and rates.read_bytes() == before


def test_rate_card_import_names_the_input_line_of_a_bad_rate(tmp_path):
    rates = tmp_path / "rates.csv"
    rates.write_text(META_RATES.read_text().replace("\nIndia,GBD,0.0100,", "\nIndia,GBD,abc,"))
    message = one_line_error(wa_analytics("rate-card", "import", rates, "--effective", "2027-03-01", "--currency", "GBP", "-o", tmp_path / "c.csv"))
    assert message == f"wa-analytics: error: {rates}, line 8: rate 'abc' is not a number (write it like 0.0245; leave it empty when not known)"


# --- what the README promises, as written ---------------------------------------------------------------


def test_project_in_a_currency_the_card_lacks_for_some_months_reports_them_unpriced(tmp_path):
    sample = copied(SAMPLE, tmp_path)
    out = tmp_path / "x.csv"
    run = wa_analytics("project", sample, "--months", "1", "--currency", "EUR", "-o", out)
    assert run.returncode == 0, run.stderr
    assert "internal error" not in run.stderr
    assert (
        "cost not compared in 8 of 8 months: their cost is incomplete (charges without a rate in EUR in the card are unpriced); no band" in run.stderr
    )
    assert "billable charges have no rate in the card and are not in the cost" in run.stderr
    import polars as pl

    table = pl.read_csv(out)
    assert set(table["currency"].drop_nulls()) == {"EUR"} and table["unpriced_charges"].sum() > 0
    assert table["cost_low"].null_count() == table.height  # no band without a cost back-test
    assert sample.read_bytes() == SAMPLE.read_bytes()


def readme_crontab_line() -> str:
    readme = (ROOT / "README.md").read_text()
    (line,) = [text for text in readme.splitlines() if text.startswith("0 6 2 * * cd /srv/wa-analytics")]
    return line


def test_the_readme_crontab_line_runs_with_the_example_parameters_copied_beside_the_checkout(tmp_path):
    """The README's schedule, paths moved under tmp_path: the checkout (its .venv/bin/wa-analytics),
    the example parameters copied beside it as the README says, traffic as Parquet, the reports and
    the log. `--month previous` becomes 2026-10, the sample's last whole month, so the test does not
    depend on today's date; the rest of the line runs as written, through the shell."""
    checkout, data, reports, log = (tmp_path / name for name in ("srv", "data", "reports", "log"))
    for folder in (checkout / ".venv" / "bin", data, reports, log):
        folder.mkdir(parents=True)
    (checkout / ".venv" / "bin" / "wa-analytics").symlink_to(CONSOLE_SCRIPT)
    params = checkout / "report-params.toml"
    params.write_bytes((ROOT / "examples" / "report-params.toml").read_bytes())  # cp examples/report-params.toml report-params.toml
    ingested = wa_analytics("ingest", SAMPLE, "-o", data / "whatsapp.parquet", "--quarantine", tmp_path / "q.csv")
    assert ingested.returncode == 0, ingested.stderr
    command = readme_crontab_line().split(" ", 5)[5].replace("\\%", "%")  # cron passes \% to the shell as %
    assert "--month previous" in command
    command = (
        command.replace("/srv/wa-analytics", str(checkout))
        .replace("/data/whatsapp", str(data))
        .replace("/srv/reports", str(reports))
        .replace("/var/log", str(log))
        .replace("--month previous", "--month 2026-10")
    )
    before = params.read_bytes()
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, check=False, cwd=tmp_path)
    said = (log / "wa-analytics-report.log").read_text()
    assert done.returncode == 0, said
    (written,) = list(reports.iterdir())
    assert written.name.startswith("whatsapp-") and written.suffix == ".html"
    assert "Report month 2026-10 (UTC)" in written.read_text()
    assert said.strip().endswith(f"Report: {written}")
    assert params.read_bytes() == before


def test_summary_keeps_stdout_for_its_table_and_stderr_for_the_run(tmp_path):
    traffic = copied(TRAFFIC, tmp_path)
    run = wa_analytics("summary", traffic)
    assert run.returncode == 0, run.stderr
    assert run.stderr.startswith("Read ") and "Used " in run.stderr
    assert "Read " not in run.stdout and run.stdout.strip()
    assert traffic.read_bytes() == TRAFFIC.read_bytes()


def test_report_in_eur_shows_the_projection_with_its_unpriced_months_said(tmp_path):
    params = tmp_path / "params.toml"
    params.write_text('currency = "EUR"\n')
    out = tmp_path / "report.html"
    run = wa_analytics("report", "--month", "2026-10", "--params", params, "-o", out)
    assert run.returncode == 0, run.stderr
    page = out.read_text()
    assert "cost not compared in 18 of 18 months: their cost is incomplete (charges without a rate in EUR in the card are unpriced); no band" in page
    assert params.read_text() == 'currency = "EUR"\n'


def test_a_projection_too_large_for_memory_is_refused_before_it_is_built(monkeypatch):
    from analytics.core.errors import UsageError
    from analytics.read import ingest
    from analytics.whatif import projection

    messages = ingest.read_messages([str(TRAFFIC)]).messages.collect()
    monkeypatch.setattr(strategies, "physical_memory", lambda: 1_000)  # a machine of 1 kB
    with pytest.raises(UsageError, match=r"^--months 2: the projection would hold about [\d,]+ messages, .* project fewer months$"):
        projection.replay(messages, months=2)
    monkeypatch.setattr(strategies, "physical_memory", lambda: None)  # no figure: no estimate to hold it to
    with pytest.raises(UsageError, match="no complete month of history|too short"):
        projection.replay(messages, months=2)


def test_a_report_month_before_the_traffic_exits_2_before_any_notebook(tmp_path):
    traffic = copied(TRAFFIC, tmp_path)
    message = one_line_error(wa_analytics("report", "--input", traffic, "--month", "2025-06", "-o", tmp_path / "r.html"))
    assert message == f"wa-analytics: error: no messages before the end of 2025-06 (UTC) in {traffic}: choose a later --month"
    assert [p.name for p in tmp_path.iterdir()] == [traffic.name] and traffic.read_bytes() == TRAFFIC.read_bytes()
