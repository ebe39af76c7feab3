"""The report notebooks and `wa-analytics report`.

nbval checks the notebooks as shipped (default parameters, the shipped sample; see the `addopts` of
pyproject.toml); here each notebook runs through papermill with other parameters, and what it
prints is compared with the same figures computed through the package. The HTML report is checked
for what a mail client needs (no code, no script, images inline) and, in headless Chromium with
the network cut, for every chart actually showing.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import papermill
import polars as pl
import pytest

from analytics import cli
from analytics.bill import charges
from analytics.present import report, rollups
from analytics.price import pricing
from analytics.read import ingest
from analytics.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"
RECONCILE = FIXTURES / "reconcile"
CHARTS_PER_NOTEBOOK = {
    "01_conversation_volumes": 2,
    "02_costs": 3,
    "03_strategies_and_projection": 3,
    "04_reconciliation": 1,
    "05_templates_and_budget": 0,
}


# --- the report month ------------------------------------------------------------------------------


def test_previous_month_is_the_month_before_today_in_the_report_time_zone():
    assert report.report_month("previous", today=dt.date(2026, 1, 1)) == "2025-12"
    assert report.report_month("previous", today=dt.date(2026, 3, 31)) == "2026-02"
    assert report.report_month("2026-10") == "2026-10"


@pytest.mark.parametrize("text", ["2026-13", "2026-1", "October", "2026-10-01"])
def test_a_month_that_is_not_yyyy_mm_is_a_usage_error(text):
    with pytest.raises(report.UsageError, match="expected YYYY-MM"):
        report.report_month(text)


def test_a_report_month_runs_from_local_midnight_to_local_midnight():
    rome = report.period("2026-10", "Europe/Rome")
    assert rome.start == dt.datetime(2026, 9, 30, 22, tzinfo=dt.UTC)  # CEST, UTC+2
    assert rome.end == dt.datetime(2026, 10, 31, 23, tzinfo=dt.UTC)  # CET from 25 October, UTC+1
    december = report.period("2026-12")
    assert (december.start, december.end) == (dt.datetime(2026, 12, 1, tzinfo=dt.UTC), dt.datetime(2027, 1, 1, tzinfo=dt.UTC))


def test_load_traffic_keeps_what_precedes_the_end_of_the_month_and_bills_it():
    traffic = report.load_traffic(month="2026-03", timezone="America/Sao_Paulo")
    assert traffic.is_sample
    end = dt.datetime(2026, 4, 1, 3, tzinfo=dt.UTC)  # midnight in São Paulo (UTC-3)
    assert traffic.messages["timestamp"].max() < end
    everything = ingest.read_messages([ROOT / "data/sample/messages.csv.gz"]).messages.collect()
    assert traffic.messages.height == everything.filter(pl.col("timestamp") < end).height
    expected = charges.bill(everything.filter(pl.col("timestamp") < end), Settings(timezone="America/Sao_Paulo"))
    assert traffic.charges.equals(expected)


def test_parameters_file_paths_are_relative_to_the_file(tmp_path):
    (tmp_path / "params.toml").write_text('currency = "USD"\nrate_card = "cards/eur.csv"\nanalytics_paths = ["a.json"]\nmonths_ahead = 2\n')
    params = report.read_params(tmp_path / "params.toml")
    assert params == {
        "currency": "USD",
        "rate_card": str(tmp_path / "cards/eur.csv"),
        "analytics_paths": [str(tmp_path / "a.json")],
        "months_ahead": 2,
    }


def test_every_report_notebook_declares_the_shared_parameters():
    declared = report.declared_parameters()
    for shared in ("input_paths", "month", "timezone", "rule_set", "config_file", "chart_format"):
        assert declared[shared] == set(report.REPORT_NOTEBOOKS), shared
    assert declared["scenarios_file"] == {"03_strategies_and_projection"}
    assert declared["meta_source"] == {"04_reconciliation"}


# --- each notebook through papermill with non-default parameters ----------------------------------------


def run_notebook(name: str, tmp_path: Path, **parameters) -> list[str]:
    """Execute a report notebook and return what its cells printed, one string per cell."""
    target = tmp_path / f"{name}.ipynb"
    papermill.execute_notebook(
        str(report.notebook_path(name)), str(target), parameters=parameters, kernel_name="python3", progress_bar=False, cwd=str(tmp_path)
    )
    notebook = json.loads(target.read_text())
    return [
        "".join("".join(o["text"]) for o in cell.get("outputs", []) if o.get("output_type") == "stream" and o.get("name") == "stdout")
        for cell in notebook["cells"]
        if cell["cell_type"] == "code"
    ]


def checked_output(printed: list[str]) -> pl.DataFrame:
    """The figures a notebook prints as CSV (its nbval-checked cell)."""
    (csv,) = [text for text in printed if re.fullmatch(r"[a-z_]+(,[a-z_]+)+", text.split("\n", 1)[0])]
    return pl.read_csv(csv.strip().encode(), infer_schema_length=0)


def test_volumes_notebook_under_another_rule_set_month_and_time_zone(tmp_path):
    printed = run_notebook("01_conversation_volumes", tmp_path, month="2026-03", timezone="Asia/Kolkata", rule_set="pmp-2026-10", chart_format="png")
    got = checked_output(printed)
    traffic = report.load_traffic(month="2026-03", timezone="Asia/Kolkata", rules_name="pmp-2026-10")
    month = rollups.volumes(traffic.charges, traffic.settings).filter(pl.col("month").cast(pl.String).str.slice(0, 7) == "2026-03")
    assert set(got["rule_set"]) == {"pmp-2026-10"}
    assert got["billable_charges"].cast(pl.Int64).sum() == month["billable_charges"].sum() > 0
    assert got["free_charges"].cast(pl.Int64).sum() == month["free_charges"].sum()
    service = got.filter(pl.col("category") == "service")
    assert int(service["free_charges"][0]) == month.filter(pl.col("category") == "service")["free_charges"].sum() > 0


def test_costs_notebook_with_another_card_currency_and_month(tmp_path):
    card = FIXTURES / "pricing" / "card.csv"  # EUR, Italy only: the rest is unpriced
    printed = run_notebook("02_costs", tmp_path, month="2026-05", rate_card=str(card), currency="EUR", timezone="Europe/Rome")
    got = checked_output(printed)
    traffic = report.load_traffic(month="2026-05", timezone="Europe/Rome")
    priced = pricing.price(traffic.charges, traffic.settings.replace(rate_card=card, currency="EUR", report_unpriced=True))
    expected = pricing.costs(priced).filter(pl.col("month") == "2026-05").group_by("category").agg(pl.col("cost").sum()).sort("category")
    assert set(got["currency"]) == {"EUR"}
    assert got["category"].to_list() == expected["category"].to_list()
    assert [float(c) for c in got["cost"]] == pytest.approx([float(c) for c in expected["cost"]], abs=1e-6)


def test_strategies_notebook_with_its_own_scenarios_and_horizon(tmp_path):
    scenarios = tmp_path / "scenarios.toml"
    scenarios.write_text('[scenario.baseline]\n[scenario.marketing_cap]\nstrategies = [{ name = "cap_marketing", per_user = 1, period = "month" }]\n')
    printed = run_notebook("03_strategies_and_projection", tmp_path, month="2026-08", scenarios_file=str(scenarios), months_ahead=1)
    got = checked_output(printed)
    assert got["scenario"].to_list() == ["baseline", "marketing_cap"]
    baseline, capped = (float(c) for c in got["cost"])
    assert capped < baseline
    assert float(got["cost_difference"][1]) == pytest.approx(capped - baseline, abs=1e-6)
    assert any("Projected 1 month from 2026-09" in text for text in printed)


def test_reconciliation_notebook_on_meta_webhooks_from_the_input(tmp_path):
    printed = run_notebook(
        "04_reconciliation",
        tmp_path,
        month="2026-03",
        meta_source="input",
        input_paths=[str(RECONCILE / "webhooks_pmp.jsonl")],
        send_log=str(RECONCILE / "send_log_pmp.csv"),
    )
    got = checked_output(printed)
    traffic = report.load_traffic([RECONCILE / "webhooks_pmp.jsonl"], month="2026-03", send_log=RECONCILE / "send_log_pmp.csv")
    expected = report.reconciliation(traffic, meta_source="input").result.rows.group_by("level", "status", "reason").len()
    assert got.height == expected.height > 0
    assert sum(int(n) for n in got["len"]) == expected["len"].sum()
    assert any("Meta's side: the pricing objects" in text for text in printed)


# --- wa-analytics report --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample_report(tmp_path_factory) -> Path:
    """The report of the sample, made with temporary folders in a folder of its own (`temporaries`)."""
    output = tmp_path_factory.mktemp("report") / "report.html"
    temporaries = output.with_name("temporaries")
    temporaries.mkdir()
    saved, tempfile.tempdir = tempfile.tempdir, str(temporaries)
    try:
        assert cli.main(["report", "--month", "2026-10", "-o", str(output)]) == 0
    finally:
        tempfile.tempdir = saved
    return output


def working_folders(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith("wa-analytics-report-")]


def png_size(data_uri: str) -> tuple[int, int]:
    png = base64.b64decode(data_uri)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", png[16:24])


def test_the_report_is_one_html_file_without_code_or_scripts_and_with_every_chart_inline(sample_report):
    page = sample_report.read_text()
    assert "<script" not in page.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?https?:""", page)  # nothing fetched
    assert "load_traffic" not in page and "import " not in page  # no code cells
    images = re.findall(r'<img src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == sum(CHARTS_PER_NOTEBOOK.values())
    for data in images:
        width, height = png_size(data)
        assert width > 200 and height > 100
    for heading in ("Conversation volumes", "Costs", "Strategies and projection", "Reconciliation", "Templates and budget"):
        assert f">{heading}</h1>" in page or f">{heading}</a>" in page
    assert "Report month 2026-10 (UTC)" in page
    assert "<td>Italy</td>" in page and "&quot;" not in page  # table cells without Polars' quotes


def test_the_report_shows_the_checked_key_totals(sample_report):
    page = sample_report.read_text()
    traffic = report.load_traffic(month="2026-10")
    costs = pricing.costs(pricing.price(traffic.charges, traffic.settings.replace(report_unpriced=True)))
    marketing = costs.filter((pl.col("month") == "2026-10") & (pl.col("category") == "marketing"))
    assert f"marketing,USD,{marketing['billable_charges'].sum()},{marketing['cost'].sum()}" in page


def test_the_report_shows_what_the_notebooks_print_when_run_alone(sample_report):
    """nbval holds the stored outputs of the checked cells to a run of each notebook alone (reading
    and billing the sample itself); the report, made from the prepared state, prints the same."""
    page = sample_report.read_text()
    for name in report.REPORT_NOTEBOOKS:
        stored = json.loads(report.notebook_path(name).read_text())
        checked = [c for c in stored["cells"] if "NBVAL_CHECK_OUTPUT" in "".join(c["source"])]
        assert checked, name
        for cell in checked:
            (printed,) = ["".join(o["text"]) for o in cell["outputs"] if o.get("output_type") == "stream"]
            assert f"<pre>{html.escape(printed)}</pre>" in page, name


def test_the_working_folder_is_removed_after_the_report(sample_report):
    temporaries = sample_report.with_name("temporaries")
    assert working_folders(temporaries) == []


# --- the prepared state: read and bill once --------------------------------------------------------------


def test_prepare_writes_the_traffic_that_a_notebook_reads_back(tmp_path):
    parameters = report.traffic_parameters(month="2026-05", timezone="Europe/Rome")
    prepared = report.prepare(tmp_path, parameters)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "charges.parquet",
        "messages.parquet",
        "meta_pricing.parquet",
        "quarantine.parquet",
        "run.json",
    ]
    alone = report.load_traffic(month="2026-05", timezone="Europe/Rome")
    read = report.load_traffic(month="2026-05", timezone="Europe/Rome", work_dir=tmp_path)
    for traffic in (prepared, read):
        assert traffic.messages.equals(alone.messages) and traffic.charges.equals(alone.charges)
        assert traffic.meta_pricing.equals(alone.meta_pricing)
        assert traffic.quarantine.collect().equals(alone.quarantine.collect())
        assert (traffic.summary, traffic.period, traffic.sources, traffic.is_sample) == (alone.summary, alone.period, alone.sources, True)
        assert traffic.settings.timezone == "Europe/Rome"
    assert read.describe() == alone.describe()
    assert alone.quarantine.collect().height > 0  # the sample has rows to set aside: the comparison means something


def test_a_notebook_never_reads_a_state_prepared_with_other_parameters(tmp_path):
    report.prepare(tmp_path, report.traffic_parameters(month="2026-05"))
    with pytest.raises(report.UsageError, match=r"prepared with month = '2026-05', not '2026-06'"):
        report.load_traffic(month="2026-06", work_dir=tmp_path)
    with pytest.raises(report.UsageError, match=r"prepared with timezone = None, not 'Europe/Rome'"):
        report.load_traffic(month="2026-05", timezone="Europe/Rome", work_dir=tmp_path)
    with pytest.raises(report.UsageError, match=r"no run.json, so not a folder"):
        report.load_traffic(month="2026-05", work_dir=tmp_path / "elsewhere")


def test_a_notebook_prints_the_same_from_the_prepared_state_as_alone(tmp_path):
    parameters = {"month": "2026-05", "timezone": "Europe/Rome", "currency": "USD", "chart_format": "png"}
    alone = run_notebook("02_costs", tmp_path, **parameters)
    report.prepare(tmp_path / "state", report.traffic_parameters(month="2026-05", timezone="Europe/Rome"))
    prepared = run_notebook("02_costs", tmp_path, **parameters, work_dir=str(tmp_path / "state"))
    assert prepared == alone
    assert any("Report month 2026-05 (Europe/Rome)" in text for text in alone)
    assert checked_output(alone).height > 0


# Counts calls to the functions that read and bill traffic, in every Python process that imports this:
# the notebook kernels (through PYTHONPATH), one line per call: function, caller.
CALL_COUNTER = """
import os, sys

def _counted(module, name, log):
    original = getattr(module, name)

    def counted(*args, **kwargs):
        with open(log, "a") as calls:
            calls.write(f"{name} {sys._getframe(1).f_code.co_name}\\n")
        return original(*args, **kwargs)

    setattr(module, name, counted)

if os.environ.get("WA_ANALYTICS_TEST_CALLS"):
    from analytics.bill import charges
    from analytics.read import ingest

    _counted(ingest, "read_messages", os.environ["WA_ANALYTICS_TEST_CALLS"])
    _counted(charges, "bill", os.environ["WA_ANALYTICS_TEST_CALLS"])
"""


def test_a_report_reads_and_bills_the_input_once_and_keeps_the_prepared_state_in_its_work_dir(tmp_path, monkeypatch):
    calls = tmp_path / "calls.txt"
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(CALL_COUNTER)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path / "site"), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("WA_ANALYTICS_TEST_CALLS", str(calls))
    exec(CALL_COUNTER.replace("setattr(module", "monkeypatch.setattr(module"), {"monkeypatch": monkeypatch})  # this process too
    work_dir = tmp_path / "work"
    output = tmp_path / "report.html"
    assert cli.main(["report", "--month", "2026-10", "--work-dir", str(work_dir), "-o", str(output)]) == 0
    made = calls.read_text().splitlines()
    # Read once, billed once (prepare); the only other billing is of the synthetic Meta side of 04
    # (the sample's traffic perturbed in known ways), which no other notebook needs.
    assert made.count("read_messages read_and_bill") == 1 and made.count("bill read_and_bill") == 1
    assert sorted(made) == ["bill read_and_bill", "bill reconciliation", "read_messages read_and_bill"]
    run = json.loads((work_dir / "run.json").read_text())
    assert run["parameters"]["month"] == run["month"] == "2026-10" and run["is_sample"]
    kept = report.load_traffic(month="2026-10", work_dir=work_dir)
    assert kept.charges.height == pl.read_parquet(work_dir / "charges.parquet").height > 0
    assert f"{kept.summary.rows_used:,} messages used" in output.read_text()


def child_processes(pid: int) -> list[str]:
    """The processes `pid` started, from any of its threads (the notebooks start their kernels from a pool)."""
    started = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            started += children.read_text().split()
        except OSError:  # a thread that ended meanwhile
            pass
    return started


def test_ctrl_c_while_a_notebook_runs_removes_the_working_folder(tmp_path):
    temporaries = tmp_path / "temporaries"
    temporaries.mkdir()
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("wa-analytics")), "report", "--month", "2026-10", "-o", str(tmp_path / "r.html")],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(temporaries)},
    )
    while process.poll() is None and not child_processes(process.pid):  # a kernel runs on the prepared state
        time.sleep(0.05)
    (working,) = working_folders(temporaries)
    assert (temporaries / working / "state" / "run.json").exists()
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=120) == 130
    assert "stopped by SIGINT (Ctrl-C)" in process.stderr.read()
    assert working_folders(temporaries) == [] and not (tmp_path / "r.html").exists()


def test_a_work_dir_that_would_overwrite_an_input_is_refused(tmp_path, capsys):
    traffic = tmp_path / "messages.parquet"  # what `make report` writes: out/messages.parquet
    report.load_traffic(month="2026-10").messages.write_parquet(traffic)
    before = traffic.read_bytes()
    assert cli.main(["report", "--input", str(traffic), "--month", "2026-10", "--work-dir", str(tmp_path), "-o", str(tmp_path / "r.html")]) == 2
    assert f"--work-dir {traffic} is also an input ({traffic})" in capsys.readouterr().err
    assert traffic.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["messages.parquet"]


def test_work_dir_is_the_report_s_own_parameter(tmp_path, capsys):
    params = tmp_path / "params.toml"
    params.write_text(f'work_dir = "{tmp_path}"\n')
    assert cli.main(["report", "--month", "2026-10", "--params", str(params), "-o", str(tmp_path / "r.html")]) == 2
    assert "report parameter work_dir: the report sets it itself; to keep the prepared state, give --work-dir DIR" in capsys.readouterr().err


def test_an_input_that_is_not_traffic_is_refused_before_any_notebook_runs(tmp_path, capsys):
    output = tmp_path / "report.html"
    status = cli.main(["report", "--month", "2026-10", "--input", str(RECONCILE / "card.csv"), "-o", str(output)])
    said = capsys.readouterr().err
    assert status == 2
    assert said.startswith(f"wa-analytics: error: {RECONCILE / 'card.csv'}: ") and "canonical message columns" in said
    assert list(tmp_path.iterdir()) == []


def test_a_failing_notebook_is_named_with_the_cell_and_line_that_raised_and_kept(tmp_path, capsys, monkeypatch):
    shipped = json.loads(report.notebook_path("01_conversation_volumes").read_text())
    cells = [c for c in shipped["cells"] if "parameters" in c["metadata"].get("tags", [])]
    cells.append(
        {
            "cell_type": "code",
            "id": "raises",
            "execution_count": None,
            "metadata": {},
            "outputs": [],
            "source": "import json\n\nvalue = 1\njson.loads('{')\n",
        }
    )
    failing = tmp_path / "01_conversation_volumes.ipynb"
    failing.write_text(json.dumps({**shipped, "cells": cells}))
    monkeypatch.setattr(report, "notebook_path", lambda name: failing)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    output = tmp_path / "out" / "report.html"
    here = Path.cwd()
    status = cli.main(["report", "--month", "2026-10", "-o", str(output)])
    said = capsys.readouterr().err
    assert status == 1
    assert said.startswith(
        # cell 3: papermill injects the parameters as cell 2
        "wa-analytics: report failed: report notebook 01_conversation_volumes failed in cell 3, line 4 (`json.loads('{')`): JSONDecodeError: "
    )
    assert (tmp_path / "out" / "report.failed-01_conversation_volumes.ipynb").exists()
    assert not output.exists()
    assert working_folders(tmp_path) == []  # the prepared state, in the working folder, is gone too
    assert Path.cwd() == here  # notebooks run side by side: none may move this process to another folder


def test_an_unknown_parameter_is_refused_with_the_known_ones(tmp_path, capsys):
    params = tmp_path / "params.toml"
    params.write_text('curency = "EUR"\n')
    assert cli.main(["report", "--month", "2026-10", "--params", str(params), "-o", str(tmp_path / "r.html")]) == 2
    said = capsys.readouterr().err
    assert "unknown report parameter curency" in said and "currency" in said


# --- in a browser with the network cut ------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium); .ci/run installs it")
def test_every_chart_renders_in_headless_chromium_offline(sample_report):
    from playwright.sync_api import sync_playwright

    asked_for: list[str] = []

    def offline(route):
        url = route.request.url
        if url.startswith(("file:", "data:")):
            route.continue_()
        else:
            asked_for.append(url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.route("**/*", offline)
        page.goto(sample_report.as_uri())
        page.wait_for_load_state("load")
        shown = page.eval_on_selector_all("img", "images => images.map(i => [i.complete, i.naturalWidth, i.getBoundingClientRect().width])")
        screenshot = sample_report.with_suffix(".png")
        page.screenshot(path=str(screenshot), full_page=True)
        browser.close()
    assert asked_for == []
    assert len(shown) == sum(CHARTS_PER_NOTEBOOK.values())
    assert all(complete and natural > 200 and on_page > 200 for complete, natural, on_page in shown)
    assert screenshot.stat().st_size > 100_000


# --- nbval can fail: a changed rate changes a checked figure ---------------------------------------------


def nbval(notebook: Path) -> int:
    """pytest --nbval-lax on one notebook, outside this project's configuration; its exit status."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax", "--nbval-current-env", str(notebook)],
        cwd=notebook.parent,
        capture_output=True,
        text=True,
    )
    return done.returncode


def test_nbval_fails_when_a_rate_in_the_card_changes(tmp_path):
    shipped = Path(str(report.resource("data", "rate_cards")))
    same, changed = tmp_path / "same", tmp_path / "changed"
    for folder in (same, changed):
        shutil.copytree(shipped, folder)
    card = changed / "researched.csv"  # the card in force in October 2026, the notebook's month
    in_force = "2026-10-01,USD,Italy,marketing,1,0.0795,"
    text = card.read_text()
    assert text.count(in_force) == 1
    card.write_text(text.replace(in_force, "2026-10-01,USD,Italy,marketing,1,0.0796,"))
    notebook = json.loads(report.notebook_path("02_costs").read_text())
    (parameters,) = [c for c in notebook["cells"] if "parameters" in c["metadata"].get("tags", [])]
    source = "".join(parameters["source"])
    assert "rate_card = None" in source
    for folder in (same, changed):
        parameters["source"] = source.replace("rate_card = None", f"rate_card = {str(folder)!r}")
        (folder.parent / f"02_costs_{folder.name}.ipynb").write_text(json.dumps(notebook))
    assert nbval(tmp_path / "02_costs_same.ipynb") == 0
    assert nbval(tmp_path / "02_costs_changed.ipynb") == 1
