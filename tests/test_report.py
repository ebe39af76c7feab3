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
from decimal import Decimal
from pathlib import Path

import papermill
import polars as pl
import pytest

from analytics import cli
from analytics.bill import charges
from analytics.core.money import money, rounded
from analytics.present import explain_text, report, rollups, summary_text, tables
from analytics.price import pricing
from analytics.read import ingest
from analytics.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"
RECONCILE = FIXTURES / "reconcile"
CHARTS_PER_NOTEBOOK = {
    "01_conversation_volumes": 2,
    "02_costs": 4,
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
    """Execute a report notebook (into tmp_path/NAME.ipynb) and return what its cells printed and
    the plain text of their results, one string per cell."""
    target = tmp_path / f"{name}.ipynb"
    papermill.execute_notebook(
        str(report.notebook_path(name)), str(target), parameters=parameters, kernel_name="python3", progress_bar=False, cwd=str(tmp_path)
    )
    notebook = json.loads(target.read_text())
    return ["".join(_printed(o) for o in cell.get("outputs", [])) for cell in notebook["cells"] if cell["cell_type"] == "code"]


def _printed(output: dict) -> str:
    """What an output says as text: a stdout stream, or a result's plain text (a table's exact CSV)."""
    if output.get("output_type") == "stream" and output.get("name") == "stdout":
        return "".join(output["text"])
    if output.get("output_type") == "execute_result":
        return "".join(output["data"].get("text/plain", ""))
    return ""


def checked_output(executed: Path) -> pl.DataFrame:
    """The figures of an executed notebook's nbval-checked cell: a table (`tables.Table`) whose plain
    text, what nbval compares, is the exact figures as CSV."""
    notebook = json.loads(executed.read_text())
    checked = [c for c in notebook["cells"] if "NBVAL_CHECK_OUTPUT" in "".join(c["source"])]
    results = [o for c in checked for o in c["outputs"] if o["output_type"] == "execute_result" and "text/html" in o["data"]]
    result = results[0]  # the first checked table (later checked cells: the explanation's sentences, people / own AI / agent)
    assert "<table" in "".join(result["data"]["text/html"])
    return pl.read_csv("".join(result["data"]["text/plain"]).encode(), infer_schema_length=0)


def test_volumes_notebook_under_another_rule_set_month_and_time_zone(tmp_path):
    run_notebook("01_conversation_volumes", tmp_path, month="2026-03", timezone="Asia/Kolkata", rule_set="pmp-2026-10", chart_format="png")
    got = checked_output(tmp_path / "01_conversation_volumes.ipynb")
    traffic = report.load_traffic(month="2026-03", timezone="Asia/Kolkata", rules_name="pmp-2026-10")
    month = rollups.volumes(traffic.charges, traffic.settings).filter(pl.col("month").cast(pl.String).str.slice(0, 7) == "2026-03")
    assert set(got["rule_set"]) == {"pmp-2026-10"}
    assert got["billable_charges"].cast(pl.Int64).sum() == month["billable_charges"].sum() > 0
    assert got["free_charges"].cast(pl.Int64).sum() == month["free_charges"].sum()
    service = got.filter(pl.col("category") == "service")
    assert int(service["free_charges"][0]) == month.filter(pl.col("category") == "service")["free_charges"].sum() > 0


def test_costs_notebook_with_another_card_currency_and_month(tmp_path):
    card = FIXTURES / "pricing" / "card.csv"  # EUR, Italy only: the rest is unpriced
    run_notebook("02_costs", tmp_path, month="2026-05", rate_card=str(card), currency="EUR", timezone="Europe/Rome")
    got = checked_output(tmp_path / "02_costs.ipynb")
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
    got = checked_output(tmp_path / "03_strategies_and_projection.ipynb")
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
    got = checked_output(tmp_path / "04_reconciliation.ipynb")
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


@pytest.fixture(scope="module")
def interactive_report(tmp_path_factory) -> Path:
    """The sample's report with --interactive."""
    output = tmp_path_factory.mktemp("interactive") / "report.html"
    assert cli.main(["report", "--month", "2026-10", "--interactive", "-o", str(output)]) == 0
    return output


def test_the_interactive_report_carries_every_chart_as_a_vega_spec_and_the_vega_code_inline(interactive_report, sample_report):
    page, code = interactive_report.read_text().split('<script type="module">\n')
    assert code.endswith("\n</script>\n</body>\n</html>\n") and "</script" not in code.removesuffix("\n</script>\n</body>\n</html>\n")
    assert "<img" not in page
    assert not re.search(r"""(src|href)\s*=\s*["']?https?:""", page + code)  # nothing fetched: no script or style from a CDN
    assert re.findall(r"<script[^>]*>", page) == [
        f'<script type="application/json" id="chart-{i}-spec">' for i in range(1, 1 + sum(CHARTS_PER_NOTEBOOK.values()))
    ]
    charts = re.findall(r'<div class="chart" id="(chart-\d+)"></div><script type="application/json" id="\1-spec">(.*?)</script>', page)
    assert len(charts) == sum(CHARTS_PER_NOTEBOOK.values())
    titles = []
    for _, spec in charts:
        spec = json.loads(spec)
        assert spec["$schema"].startswith("https://vega.github.io/schema/vega-lite/") and spec["datasets"]
        titles.append(spec["title"] if isinstance(spec["title"], str) else spec["title"]["text"])
    assert "Projected cost per month by scenario" in titles and "Scenarios: cost and saving against the baseline" in titles
    assert 'document.querySelectorAll("div.chart")' in code and 'renderer:"svg"' in code  # _EMBED_ALL, minified in the bundle
    # the same page otherwise: the summary and the tables of the static report
    static = sample_report.read_text()
    for part in (re.search(r'<p class="summary">.*?</p>', static).group(0), *re.findall(r'<table class="figures">.*?</table>', static)):
        assert part in page


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
    assert f"<td{TEXT}>Italy</td>" in page and "&quot;" not in page  # table cells without Polars' quotes
    assert not re.search(r"<pre>[a-z_]+(,[a-z_]+)+\n", page)  # no table as CSV text
    assert '<p class="printed">Report month 2026-10 (UTC), from the shipped synthetic sample: ' in page  # prose as prose
    assert "<pre>Costs in USD:\n2026-10 " in page  # the invoice keeps its columns
    assert page.count('<table class="figures">') == 5  # the key figures of each notebook and the market table


TEXT, NUMBER = ' style="text-align: left"', ' class="num" style="text-align: right"'


def test_the_report_shows_the_checked_key_totals(sample_report):
    page = sample_report.read_text()
    traffic = report.load_traffic(month="2026-10")
    costs = pricing.costs(pricing.price(traffic.charges, traffic.settings.replace(report_unpriced=True)))
    marketing = costs.filter((pl.col("month") == "2026-10") & (pl.col("category") == "marketing"))
    billable, cost = marketing["billable_charges"].sum(), marketing["cost"].sum()
    assert billable > 1000  # so the thousands separator shows
    row = f"<tr><td{TEXT}>marketing</td><td{NUMBER}>{billable:,}</td><td{NUMBER}>USD {money(cost)}</td></tr>"
    assert row in page


def test_the_report_opens_with_the_month_s_cost_and_its_change(sample_report):
    page = sample_report.read_text()
    traffic = report.load_traffic(month="2026-10")
    costs = pricing.costs(pricing.price(traffic.charges, traffic.settings.replace(report_unpriced=True)))
    october, september = (costs.filter((pl.col("month") == m) & pl.col("priced"))["cost"].sum() for m in ("2026-10", "2026-09"))
    billable = costs.filter(pl.col("month") == "2026-10")["billable_charges"].sum()
    change = "more" if october > september else "less"
    difference = rounded(october, 2) - rounded(september, 2)  # the two invoices' difference, as explain's total
    share = f"{abs(difference) / september:.1%}"
    summary = (
        f"In 2026-10 the traffic cost USD {money(october)} ({billable:,} billable charges), USD {money(abs(difference))} "
        f"({share}) {change} than in 2026-09 (USD {money(september)})."
    )
    explained = explain_text.for_report(traffic, traffic.settings.replace(report_unpriced=True))
    effect, amount = max(explained.effects.items(), key=lambda item: (abs(item[1]), item[0]))
    driver = f"The biggest driver of the change was {summary_text.EFFECT_WORDS[effect]}: {'+' if amount >= 0 else '-'}USD {money(abs(amount))}."
    assert f'<h1>WhatsApp Business traffic report, 2026-10</h1>\n<p class="summary">{html.escape(summary)} {html.escape(driver)}</p>' in page


def test_the_report_shows_what_the_notebooks_print_when_run_alone(sample_report):
    """nbval holds the stored outputs of the checked cells to a run of each notebook alone (reading
    and billing the sample itself); the report, made from the prepared state, prints the same."""
    page = sample_report.read_text()
    for name in report.REPORT_NOTEBOOKS:
        stored = json.loads(report.notebook_path(name).read_text())
        checked = [c for c in stored["cells"] if "NBVAL_CHECK_OUTPUT" in "".join(c["source"])]
        assert checked, name
        for cell in checked:
            tables = ["".join(o["data"]["text/html"]) for o in cell["outputs"] if o.get("output_type") == "execute_result"]
            printed = ["".join(o["text"]) for o in cell["outputs"] if o.get("output_type") == "stream"]
            assert tables or printed, name
            assert all(shown in page for shown in tables), name
            # printed text: every line of it, as the page escapes it (prose becomes paragraphs)
            assert all(html.escape(line.strip()) in page for text in printed for line in text.splitlines() if line.strip()), name


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
    assert checked_output(tmp_path / "02_costs.ipynb").height > 0


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
    # Read once, billed once (prepare); the only other billings are of the synthetic Meta side of 04
    # (the sample's traffic perturbed in known ways), which no other notebook needs, and the replays
    # of 02's explanation: each of the two months under the other's rule set (analytics/whatif/explain.py).
    assert made.count("read_messages read_and_bill") == 1 and made.count("bill read_and_bill") == 1
    # the explanation's replays (the other month's rules), once for the summary at the top and once in notebook 02
    assert sorted(made) == [*["bill _billed_under"] * 4, "bill read_and_bill", "bill reconciliation", "read_messages read_and_bill"]
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


# Per image: loaded, natural width and height, width on the page, and the share of its pixels that
# are inked, neither white nor transparent (drawn onto a canvas: a data URI does not taint it).
INKED_IMAGES = """images => images.map(image => {
    const canvas = document.createElement("canvas");
    canvas.width = image.naturalWidth;
    canvas.height = image.naturalHeight;
    const context = canvas.getContext("2d");
    context.drawImage(image, 0, 0);
    const pixels = context.getImageData(0, 0, canvas.width, canvas.height).data;
    let inked = 0;
    for (let k = 0; k < pixels.length; k += 4) {
        if (pixels[k + 3] > 16 && (pixels[k] < 240 || pixels[k + 1] < 240 || pixels[k + 2] < 240)) inked++;  // opaque and not white
    }
    return [image.complete, image.naturalWidth, image.naturalHeight, image.getBoundingClientRect().width, inked / (pixels.length / 4 || 1)];
})"""

# Screenshots of the report as Chromium shows it, kept as CI artifacts (README: "The monthly report").
SCREENSHOTS = Path(os.environ.get("WA_ANALYTICS_SCREENSHOTS") or ROOT / "out" / "screenshots")


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium); .ci/run installs it")
@pytest.mark.parametrize("variant", ["static", "interactive"])
def test_every_chart_renders_in_headless_chromium_offline(variant, sample_report, interactive_report):
    """Both variants opened with the network cut: nothing asked for, no console error, every chart
    drawn at its size (an image loaded, or an SVG that Vega drew), and a screenshot kept."""
    from playwright.sync_api import sync_playwright

    opened = {"static": sample_report, "interactive": interactive_report}[variant]
    asked_for: list[str] = []
    errors: list[str] = []

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
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.route("**/*", offline)
        page.goto(opened.as_uri())
        page.wait_for_load_state("load")
        if variant == "interactive":  # vega-embed draws asynchronously: wait for every chart's SVG
            page.wait_for_function("[...document.querySelectorAll('div.chart')].every(c => c.querySelector('svg'))", timeout=30_000)
        images = page.eval_on_selector_all("img", INKED_IMAGES)
        drawn = page.eval_on_selector_all(
            "div.chart svg",
            "svgs => svgs.map(s => [s.getBoundingClientRect().width, s.getBoundingClientRect().height, s.querySelectorAll('path, rect, line, text').length])",
        )
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        screenshot = SCREENSHOTS / f"report-{variant}.png"
        page.screenshot(path=str(screenshot), full_page=True)
        browser.close()
    assert asked_for == []
    assert errors == []
    # each chart at the size vl-convert drew it for the static report: the PNGs' own sizes
    expected = [png_size(data) for data in re.findall(r'<img src="data:image/png;base64,([^"]+)"', sample_report.read_text())]
    assert len(expected) == sum(CHARTS_PER_NOTEBOOK.values())
    if variant == "static":
        assert drawn == []
        assert [(width, height) for _, width, height, _, _ in images] == expected
        assert all(complete and on_page > 200 and inked > 0.02 for complete, _, _, on_page, inked in images)  # loaded, shown, not blank
    else:
        assert images == []
        assert [(round(width), round(height)) for width, height, _ in drawn] == expected  # Vega in the page draws what vl-convert drew
        assert all(marks > 20 for _, _, marks in drawn)
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


# --- tables and the summary paragraph --------------------------------------------------------------------


def test_a_table_shows_numbers_right_aligned_with_separators_and_money_with_its_currency():
    frame = pl.DataFrame(
        {
            "category": ["marketing", "utility <b>"],
            "currency": ["USD", "EUR"],
            "billable_charges": [12345, 7],
            "cost": [Decimal("1234.565000"), Decimal("-0.005000")],
            "share": [0.0795, None],
        }
    )
    shown = tables.table(frame, money=["cost"])
    assert repr(shown) == frame.write_csv()  # exact figures for nbval
    page = shown._repr_html_()
    assert "<th" + TEXT + ' scope="col">Category</th>' in page and "Currency" not in page  # each amount carries its currency
    assert f"<td{NUMBER}>12,345</td><td{NUMBER}>USD 1,234.57</td><td{NUMBER}>0.0795</td>" in page  # half away from zero
    assert f"<td{TEXT}>utility &lt;b&gt;</td><td{NUMBER}>7</td><td{NUMBER}>EUR -0.01</td><td{NUMBER}></td>" in page
    with pytest.raises(ValueError, match="money column.*price"):
        tables.table(frame, money=["price"])
    differences = tables.table(frame, signed=["cost"])._repr_html_()
    assert f"<td{NUMBER}>+USD 1,234.57</td>" in differences and f"<td{NUMBER}>-EUR 0.01</td>" in differences


def test_the_summary_names_the_biggest_driver_and_the_budget_when_given():
    def rows(month, cost, billable, priced=True):
        return {"month": month, "currency": "USD", "cost": Decimal(cost), "billable_charges": billable, "priced": priced}

    costs = pl.DataFrame(
        [rows("2026-09", "200.00", 900), rows("2026-10", "150.00", 1000), rows("2026-10", "80.00", 500), rows("2026-10", "0", 3, False)]
    )
    plain = summary_text.month_summary(costs, "2026-10")
    assert plain == (
        "In 2026-10 the traffic cost USD 230.00 (1,503 billable charges), USD 30.00 (15.0%) more than in 2026-09 (USD 200.00). "
        "3 billable charges had no rate in the card and are not in the cost."
    )
    drivers = {"volume": Decimal("12.5"), "rates": Decimal("-3"), "rules": Decimal("20.5")}
    full = summary_text.month_summary(costs, "2026-10", drivers=drivers, budget=Decimal("250"))
    assert "The biggest driver of the change was rules (Meta's billing rules in force): +USD 20.50." in full
    assert "That is 92% of the month's budget of USD 250.00, USD 20.00 left." in full
    over = summary_text.month_summary(costs, "2026-10", budget=Decimal("200"))
    assert "That is USD 30.00 over the month's budget of USD 200.00 (115% of it)." in over
    first = summary_text.month_summary(costs, "2026-09")
    assert first == "In 2026-09 the traffic cost USD 200.00 (900 billable charges), and nothing was billable in USD in 2026-08 to compare it with."
    unpriced_before = pl.concat([costs, pl.DataFrame([rows("2026-08", "0", 40, False)])])
    assert summary_text.month_summary(unpriced_before, "2026-09").endswith(
        "and none of the billable charges of 2026-08 had a rate in the card to compare it with."
    )
    assert summary_text.month_summary(costs, "2026-11") == "No billable charges in 2026-11."
    partly = pl.concat([costs, pl.DataFrame([rows("2026-09", "0", 5, False)])])
    assert "(USD 200.00). The cost of 2026-09 leaves out 5 unpriced billable charges. 3 billable" in summary_text.month_summary(partly, "2026-10")
    assert summary_text.previous_month("2026-01") == "2025-12"
