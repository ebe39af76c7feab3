"""Issue 15 through the installed command: inputs never written, outputs atomic, exit statuses, signals,
no secret echoed, no spreadsheet formula written. Each test runs `wa-analytics` as a subprocess and
checks the exit status, the one-line message and that the inputs are byte for byte as they were."""

from __future__ import annotations

import gzip
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from analytics.core import outputs
from analytics.core.errors import UsageError, found_names

ROOT = Path(__file__).resolve().parents[1]
CONSOLE_SCRIPT = Path(sys.executable).with_name("wa-analytics")
SAMPLE = ROOT / "data" / "sample" / "messages.csv.gz"
CARD = ROOT / "data" / "rate_cards" / "meta-usd-2026-04-01.csv"


def wa(*argv: object, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CONSOLE_SCRIPT), *map(str, argv)], capture_output=True, text=True, check=False, cwd=cwd, env=env, timeout=300)


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The run's stderr, which must be one line 'wa-analytics: error: ...' (exit 2)."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("wa-analytics: error: ")
    return lines[0]


def fingerprint(*paths: Path) -> dict[Path, tuple[str, int, int]]:
    """Content hash, size and modification time: what "untouched" means."""
    return {p: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_size, p.stat().st_mtime_ns) for p in paths}


def leftovers(folder: Path) -> list[str]:
    """Temporary files a run may have left in `folder`."""
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".partial") or p.name.startswith(".wa-analytics"))


@pytest.fixture(scope="module")
def sample_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The issue's `in.csv`: the first 200 lines of the shipped sample."""
    path = tmp_path_factory.mktemp("sample") / "in.csv"
    with gzip.open(SAMPLE, "rt", encoding="utf-8") as sample:
        path.write_text("".join(line for _, line in zip(range(200), sample, strict=False)), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def sample_parquet(sample_csv: Path) -> Path:
    """`in.csv` as canonical messages."""
    made = wa("ingest", sample_csv, "-o", sample_csv.with_name("m.parquet"))
    assert made.returncode == 0, made.stderr
    return sample_csv.with_name("m.parquet")


@pytest.fixture
def work(tmp_path: Path, sample_csv: Path, sample_parquet: Path) -> Path:
    """A folder holding in.csv and its canonical messages, m.parquet."""
    for source in (sample_csv, sample_parquet):
        (tmp_path / source.name).write_bytes(source.read_bytes())
    return tmp_path


# --- Item 4: an output that is an input is refused; every output is written atomically -------------


@pytest.mark.parametrize(
    ("argv", "victim", "expected"),
    [
        (["ingest", "in.csv", "-o", "out.parquet", "--quarantine", "in.csv"], "in.csv", "--quarantine in.csv is also an input (in.csv)"),
        (["charges", "m.parquet", "-o", "m.parquet"], "m.parquet", "-o m.parquet is also an input (m.parquet)"),
        (["costs", "m.parquet", "-o", "m.parquet"], "m.parquet", "-o m.parquet is also an input (m.parquet)"),
        (["costs", "m.parquet", "-o", "c.csv", "--invoice", "m.parquet"], "m.parquet", "--invoice m.parquet is also an input"),
        (["costs", "in.csv", "-o", "c.csv", "--quarantine", "./in.csv"], "in.csv", "--quarantine ./in.csv is also an input (in.csv)"),
        (
            ["compare", "in.csv", "--scenarios", "s.toml", "-o", "x.csv", "--explanations", "in.csv"],
            "in.csv",
            "--explanations in.csv is also an input",
        ),
        (["compare", "in.csv", "--scenarios", "card.toml", "-o", "card.csv"], "card.csv", "-o card.csv is also an input (card.csv)"),
        (["project", "in.csv", "--months", "1", "-o", "p.csv", "--backtest", "in.csv"], "in.csv", "--backtest in.csv is also an input"),
        (["reconcile", "in.csv", "-o", "in.csv"], "in.csv", "-o in.csv is also an input (in.csv)"),
        (["charges", "in.csv", "--send-log", "log.csv", "-o", "log.csv"], "log.csv", "-o log.csv is also an input (log.csv)"),
        (["rate-card", "import", "in.csv", "--effective", "2026-04-01", "-o", "in.csv"], "in.csv", "-o in.csv is also an input"),
        (["report", "--month", "2026-01", "--input", "in.csv", "--params", "p.toml", "-o", "p.toml"], "p.toml", "-o p.toml is also an input"),
    ],
)
def test_an_output_that_is_an_input_is_refused_and_the_input_untouched(work, argv, victim, expected):
    (work / "s.toml").write_text('[scenario.a]\nstrategies = [{ name = "cap_marketing", per_user = 4 }]\n')
    (work / "log.csv").write_text("message_id,message_type\nwamid.X,text\n")
    (work / "p.toml").write_text('timezone = "UTC"\n')
    (work / "card.toml").write_text('[scenario.a]\nrate_card = "card.csv"\n')
    (work / "card.csv").write_bytes(CARD.read_bytes())
    before = fingerprint(*(p for p in work.iterdir() if p.is_file()))
    line = error_line(wa(*argv, cwd=work))
    assert expected in line and "write the output to another file" in line
    assert fingerprint(*before) == before
    assert sorted(p.name for p in work.iterdir()) == sorted(p.name for p in before)  # nothing else written
    assert victim in line


@pytest.mark.parametrize("link", ["symbolic", "hard"])
def test_an_output_linked_to_an_input_is_refused(work, link):
    (work / "alias.parquet").symlink_to("m.parquet") if link == "symbolic" else os.link(work / "m.parquet", work / "alias.parquet")
    before = fingerprint(work / "m.parquet")
    line = error_line(wa("charges", "m.parquet", "-o", "alias.parquet", cwd=work))
    assert "-o alias.parquet is also an input (m.parquet)" in line
    assert fingerprint(work / "m.parquet") == before


def test_the_default_quarantine_file_may_not_be_an_input_either(work):
    """`-o out.parquet` puts quarantined rows in out.quarantine.csv: an input of that name is kept."""
    (work / "out.quarantine.csv").write_bytes((work / "in.csv").read_bytes())
    before = fingerprint(work / "out.quarantine.csv")
    line = error_line(wa("ingest", "out.quarantine.csv", "-o", "out.parquet", cwd=work))
    assert "the quarantine file out.quarantine.csv (beside -o) is also an input" in line
    assert fingerprint(work / "out.quarantine.csv") == before


def test_two_outputs_naming_one_file_are_refused(work):
    line = error_line(wa("costs", "m.parquet", "-o", "c.csv", "--invoice", "c.csv", cwd=work))
    assert "--invoice c.csv is also -o c.csv: give each output its own file" in line
    assert not (work / "c.csv").exists()


def test_an_output_is_replaced_whole_with_the_usual_permissions_and_no_temporary_left(work):
    (work / "c.csv").write_text("an older cost table\n")
    done = wa("costs", "m.parquet", "-o", "c.csv", cwd=work)
    assert done.returncode == 0, done.stderr
    assert pl.read_csv(work / "c.csv").columns[:3] == ["month", "market", "category"]
    umask = os.umask(0)
    os.umask(umask)
    assert (work / "c.csv").stat().st_mode & 0o777 == 0o666 & ~umask
    assert leftovers(work) == []


def test_a_failing_write_keeps_the_old_output_and_removes_its_temporary(tmp_path):
    old = tmp_path / "out.csv"
    old.write_text("old\n")
    with pytest.raises(RuntimeError), outputs.atomic(old) as partial:
        partial.write_text("half")
        raise RuntimeError("the writer failed")
    assert old.read_text() == "old\n"
    assert leftovers(tmp_path) == []


def test_spark_refuses_an_output_folder_that_is_its_input_folder(work):
    (work / "messages").mkdir()
    (work / "messages" / "part-0.parquet").write_bytes((work / "m.parquet").read_bytes())
    before = fingerprint(work / "messages" / "part-0.parquet")
    line = error_line(wa("charges", "--engine", "spark", "messages", "-o", "messages/", cwd=work))
    assert "-o messages/ is also an input (messages)" in line
    assert fingerprint(*before) == before and sorted(p.name for p in (work / "messages").iterdir()) == ["part-0.parquet"]


def test_a_spark_output_folder_is_replaced_whole(work):
    pytest.importorskip("pyspark")
    (work / "charges").mkdir()
    (work / "charges" / "stale.parquet").write_bytes((work / "m.parquet").read_bytes())  # an older run's
    done = wa("charges", "--engine", "spark", "--spark-master", "local[1]", "m.parquet", "-o", "charges", cwd=work)
    assert done.returncode == 0, done.stderr
    written = sorted(p.name for p in (work / "charges").iterdir())
    assert "stale.parquet" not in written and "_SUCCESS" in written
    local = wa("charges", "m.parquet", "-o", "local.parquet", cwd=work)
    assert local.returncode == 0, local.stderr
    assert pl.read_parquet(work / "charges" / "*.parquet").height == pl.read_parquet(work / "local.parquet").height
    assert leftovers(work) == []


def test_a_write_that_fails_names_the_output_never_the_temporary(tmp_path):
    folder = tmp_path / "gone"
    with pytest.raises(UsageError) as failure, outputs.atomic(folder / "out.csv") as partial:
        folder.rmdir()  # the folder vanishes under the writer
        pl.LazyFrame({"a": [1]}).sink_csv(partial)
    assert str(failure.value).startswith(f"cannot write {folder / 'out.csv'}: ")
    assert ".partial" not in str(failure.value)


# --- Item 8: outputs that cannot be written are usage errors, found before the work ---------------


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["ingest", "in.csv", "-o", "/proc/x.csv"], "-o /proc/x.csv"),
        (["ingest", "in.csv", "-o", "m.csv", "--quarantine", "/proc/q.csv"], "--quarantine /proc/q.csv"),
        (["costs", "m.parquet", "-o", "c.csv", "--invoice", "/proc/i.csv"], "--invoice /proc/i.csv"),
        (["compare", "in.csv", "--scenarios", "s.toml", "-o", "x.csv", "--explanations", "/proc/e.csv"], "--explanations /proc/e.csv"),
        (["generate", "--users", "5", "--start", "2026-01-01", "--months", "1", "-o", "/proc/g.csv"], "-o /proc/g.csv"),
        (["charges", "in.csv", "-o", "in.csv/x.parquet"], "-o in.csv/x.parquet"),
    ],
)
def test_an_output_in_a_folder_that_cannot_be_written_is_refused_before_the_work(work, argv, named):
    (work / "s.toml").write_text('[scenario.a]\nstrategies = [{ name = "cap_marketing", per_user = 4 }]\n')
    before = fingerprint(work / "in.csv", work / "m.parquet")
    line = error_line(wa(*argv, cwd=work))  # one line: no run summary, so nothing was read
    assert f"cannot write {named}:" in line and "choose another folder" in line
    assert ".partial" not in line and "probe" not in line
    assert fingerprint(*before) == before
    assert leftovers(work) == []


@pytest.mark.parametrize("output", ["folder", "folder.csv"])
def test_an_output_naming_a_folder_is_refused(work, output):
    (work / output).mkdir()
    line = error_line(wa("charges", "m.parquet", "-o", output, cwd=work))
    assert f"'{output}'" in line or f"-o {output} is a folder" in line
    assert list((work / output).iterdir()) == []


def test_a_send_log_with_two_columns_differing_in_case_is_an_input_error(work):
    (work / "log.csv").write_text("message_id,Message_Type,message_type\nwamid.X,template,text\n")
    before = fingerprint(work / "log.csv")
    line = error_line(wa("ingest", "in.csv", "--send-log", "log.csv", "-o", "out.csv", cwd=work))
    assert line == (
        "wa-analytics: error: log.csv: the send log has more than one message_type column (column names ignore case and spaces). Keep one of them"
    )
    assert fingerprint(work / "log.csv") == before


def test_a_rate_of_1e308_is_an_input_error_naming_file_and_line(work):
    (work / "card.csv").write_text("effective_from,currency,market,category,tier_from,rate\n2022-01-01,USD,Italy,marketing,1,1e308\n")
    result = wa("costs", "m.parquet", "--rate-card", "card.csv", "--report-unpriced", "-o", "c.csv", cwd=work)
    assert result.returncode == 2, result.stderr
    assert "card.csv, line 2: rate 1e308 is implausibly large" in result.stderr
    assert "internal error" not in result.stderr and not (work / "c.csv").exists()


@pytest.mark.parametrize("option", ["--markup-per-charge", "--markup-percent"])
def test_a_markup_of_1e308_is_a_usage_error(work, option):
    line = error_line(wa("costs", "m.parquet", option, "1e308", "-o", "c.csv", cwd=work))
    assert "1e308 is implausibly large: give a number below 1,000,000" in line


# --- Item 13: SIGINT and SIGTERM stop at once, with one line, and leave no partial file -----------

STOPPED = "wa-analytics: stopped by {}; no half-written file was left, outputs not yet written are unchanged"


@pytest.fixture(scope="module")
def large_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generated traffic that takes seconds to bill (about 200,000 messages)."""
    path = tmp_path_factory.mktemp("large") / "large.csv"
    made = wa("generate", "--users", "50000", "--start", "2026-01-01", "--months", "3", "-o", path)
    assert made.returncode == 0, made.stderr
    return path


def start_and_signal_after_reading(folder: Path, number: int, *argv: object, **popen) -> tuple[int, list[str]]:
    """Run `wa-analytics argv` in `folder`, send signal `number` once its inputs are read (the run
    summary's "Used ..." line) and return its exit status and stderr lines."""
    process = subprocess.Popen([str(CONSOLE_SCRIPT), *map(str, argv)], cwd=folder, stderr=subprocess.PIPE, text=True, **popen)
    lines = []
    for line in process.stderr:
        lines.append(line.rstrip("\n"))
        if line.startswith("Used "):
            process.send_signal(number)
            break
    lines += process.stderr.read().splitlines()
    return process.wait(timeout=120), lines


@pytest.mark.parametrize(("number", "status", "name"), [(signal.SIGINT, 130, "SIGINT (Ctrl-C)"), (signal.SIGTERM, 143, "SIGTERM")])
def test_a_signal_stops_the_run_at_once_with_one_line_and_no_output(tmp_path, large_csv, number, status, name):
    before = fingerprint(large_csv)
    returned, lines = start_and_signal_after_reading(tmp_path, number, "charges", large_csv, "-o", "charges.csv")
    assert returned == status
    assert lines[-1] == STOPPED.format(name)
    assert not any("Traceback" in line or line.startswith("Charges") for line in lines)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # neither the output nor a temporary
    assert fingerprint(large_csv) == before


def test_sigint_stops_a_run_started_with_sigint_ignored(tmp_path, large_csv):
    """A background job of a script starts with SIGINT ignored: Python kept ignoring it, and the run
    finished with exit 0 and its whole output (the issue's "ignored 4 s into a run")."""
    ignoring = {"preexec_fn": lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)}
    returned, lines = start_and_signal_after_reading(tmp_path, signal.SIGINT, "charges", large_csv, "-o", "charges.parquet", **ignoring)
    assert returned == 130
    assert lines[-1] == STOPPED.format("SIGINT (Ctrl-C)")
    assert not (tmp_path / "charges.parquet").exists()


def child_processes(pid: int) -> list[str]:
    """The processes `pid` started, from any of its threads (report starts its kernels from a pool)."""
    started = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            started += children.read_text().split()
        except OSError:  # a thread that ended meanwhile
            pass
    return started


def test_a_signal_stops_the_report_while_a_notebook_runs_and_still_says_so(tmp_path, sample_csv):
    """`report` points descriptor 2 at its kernels' log while a notebook runs: the line must still
    reach the terminal."""
    pytest.importorskip("papermill")
    process = subprocess.Popen(
        [str(CONSOLE_SCRIPT), "report", "--month", "2026-01", "--input", str(sample_csv), "-o", "r.html"],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )
    while process.poll() is None and not child_processes(process.pid):  # until a notebook kernel runs
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 143
    assert process.stderr.read().strip().splitlines()[-1] == STOPPED.format("SIGTERM")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


WRITING = """
import sys, time
from analytics import cli
from analytics.core import outputs
cli.stop_on_signals()
with outputs.atomic(sys.argv[1]) as partial, outputs.scratch_folder(folder=sys.argv[2]) as scratch:
    partial.write_text("half a file")
    print(partial.name, scratch.name, flush=True)
    time.sleep(120)
"""


@pytest.mark.parametrize(("number", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_during_a_write_removes_the_temporary_and_the_scratch_folder(tmp_path, number, status):
    (tmp_path / "out.csv").write_text("the previous output\n")
    process = subprocess.Popen(
        [sys.executable, "-c", WRITING, str(tmp_path / "out.csv"), str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    partial, scratch = process.stdout.readline().split()
    assert (tmp_path / partial).is_file() and (tmp_path / scratch).is_dir()
    process.send_signal(number)
    assert process.wait(timeout=60) == status
    assert process.stderr.read().strip().splitlines()[-1].startswith(f"wa-analytics: stopped by {signal.Signals(number).name}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]
    assert (tmp_path / "out.csv").read_text() == "the previous output\n"


# --- Item 1: no message echoes a file beyond a short, clean excerpt of the field at fault ----------

SECRET = "k3y-that-must-not-leak-7c1d"


def secret_env() -> dict[str, str]:
    return {**os.environ, "WA_ANALYTICS_PSEUDONYM_KEY": SECRET}


def assert_nothing_leaked(result: subprocess.CompletedProcess[str], folder: Path, *, holding: str = "") -> None:
    """Neither the messages nor a file the run wrote (any file of `folder` but `holding`) shows the secret."""
    written = (p.read_text(errors="replace") for p in folder.iterdir() if p.is_file() and p.name != holding)
    for text in (result.stderr, result.stdout, *written):
        assert SECRET not in text and "WA_ANALYTICS_PSEUDONYM_KEY" not in text and "PATH=" not in text


def test_a_scenario_naming_proc_environ_as_its_rate_card_prints_no_environment(work):
    (work / "s.toml").write_text('[scenario.a]\nrate_card = "/proc/self/environ"\n')
    result = wa("compare", "in.csv", "--scenarios", "s.toml", "-o", "x.csv", cwd=work, env=secret_env())
    line = error_line(result)
    assert line == "wa-analytics: error: /proc/self/environ: not a text file (it holds NUL bytes). A rate card is a CSV file"
    assert_nothing_leaked(result, work)


def test_report_params_naming_proc_environ_prints_no_environment(work):
    (work / "p.toml").write_text('rate_card = "/proc/self/environ"\n')
    result = wa("report", "--month", "2026-01", "--input", "in.csv", "--params", "p.toml", "-o", "r.html", cwd=work, env=secret_env())
    assert result.returncode != 0
    assert "/proc/self/environ: not a text file (it holds NUL bytes)" in result.stderr
    assert_nothing_leaked(result, work)  # the kept failed notebook included


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["ingest", "secrets.csv", "-o", "out.csv"], "has none of the canonical message columns (found: 1 header that is not a column name)"),
        (["ingest", "in.csv", "--send-log", "secrets.csv", "-o", "out.csv"], "found 1 header that is not a column name"),
        (["costs", "m.parquet", "--rate-card", "secrets.csv", "-o", "out.csv"], "unexpected column 1 header that is not a column name"),
    ],
)
def test_a_dotenv_file_given_as_data_is_not_echoed(work, argv, expected):
    (work / "secrets.csv").write_text(f"WA_ANALYTICS_PSEUDONYM_KEY={SECRET}\n")
    result = wa(*argv, cwd=work)
    assert result.returncode == 2 and expected in result.stderr
    assert_nothing_leaked(result, work, holding="secrets.csv")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["ingest", "broken.csv", "-o", "out.csv"], "broken.csv: line 3 opens a quoted value that is never closed"),
        (["ingest", "in.csv", "--send-log", "broken.csv", "-o", "out.csv"], "broken.csv: cannot read the send log as CSV (could not parse …)"),
    ],
)
def test_a_library_error_does_not_quote_the_file(work, argv, expected):
    """Polars quotes the line it could not parse: the message keeps its reason, not the line."""
    header = "message_id,timestamp,direction,business_phone,user_id,message_type,message_type_x"
    (work / "broken.csv").write_text(f'{header}\nwamid.1,a,b,c\n"{SECRET}\n')
    result = wa(*argv, cwd=work)
    assert expected in error_line(result)
    assert_nothing_leaked(result, work, holding="broken.csv")


def test_found_names_shows_names_of_any_script_and_only_counts_the_rest():
    names = ["Téléphone", "message id", "(unnamed)", "WA_ANALYTICS_PSEUDONYM_KEY=x", "y" * 41]
    assert found_names(names) == "Téléphone, message id, (unnamed), 2 headers that are not column names"
    assert found_names(["a=b"]) == "1 header that is not a column name"


def test_a_bad_rate_card_value_is_quoted_short_and_without_control_characters(work):
    long_value = "0.1\x1b[2J" + "x" * 200
    (work / "card.csv").write_text(f"effective_from,currency,market,category,tier_from,rate\n2022-01-01,USD,Italy,marketing,1,{long_value}\n")
    result = wa("costs", "m.parquet", "--rate-card", "card.csv", "-o", "out.csv", cwd=work)
    assert result.returncode == 2
    assert "card.csv, line 2: rate '0.1 [2J" + "x" * 24 + "…' is not a number" in result.stderr
    assert "\x1b" not in result.stderr and "x" * 40 not in result.stderr


# --- Item 3: the CSV files people open carry no formula; machine files keep every value exact ----

FORMULA = "=cmd|' /C calc'!A0"


@pytest.fixture
def formulas(work: Path) -> Path:
    """in.csv with formula-like cells: a WABA `@waba`, a used row whose message_id is a formula, and a row
    quarantined for its timestamp whose cells start with characters OWASP names."""
    lines = (work / "in.csv").read_text().splitlines()
    first = lines[1].split(",")
    first[0] = FORMULA
    bad = ["-2+3", "yesterday", "inbound", "+391234", "=1+1", "\tTAB", "", "", "text", "", "received", ""]
    rows = [",".join(first), ",".join(bad), *lines[2:]]
    (work / "f.csv").write_text("\n".join([lines[0], *rows]).replace(",104996122399150,", ",@waba,") + "\n")
    return work / "f.csv"


def csv_cells(path: Path) -> list[dict[str, str]]:
    return pl.read_csv(path, infer_schema=False).to_dicts()


def test_quarantine_cells_are_neutralised_while_canonical_messages_stay_exact(work, formulas):
    before = fingerprint(formulas)
    done = wa("ingest", "f.csv", "-o", "out.csv", "--quarantine", "q.csv", cwd=work)
    assert done.returncode == 0, done.stderr
    quarantined = csv_cells(work / "q.csv")
    assert [(r["message_id"], r["timestamp"], r["business_phone"], r["waba_id"], r["user_id"]) for r in quarantined] == [
        ("'-2+3", "yesterday", "'+391234", "'=1+1", "'\tTAB")
    ]
    assert wa("ingest", "f.csv", "-o", "out.parquet", cwd=work).returncode == 0
    for machine in (csv_cells(work / "out.csv"), pl.read_parquet(work / "out.parquet").to_dicts()):
        assert (machine[0]["message_id"], machine[0]["waba_id"]) == (FORMULA, "@waba")
    assert fingerprint(formulas) == before


def test_invoice_csv_is_neutralised_while_invoice_parquet_stays_exact(work, formulas):
    done = wa("costs", "f.csv", "-o", "c.csv", "--invoice", "inv.csv", cwd=work)
    assert done.returncode == 0, done.stderr
    assert "'@waba" in {r["waba_id"] for r in csv_cells(work / "inv.csv")}
    assert wa("costs", "f.csv", "-o", "c.parquet", "--invoice", "inv.parquet", cwd=work).returncode == 0
    assert "@waba" in set(pl.read_parquet(work / "inv.parquet")["waba_id"])


def test_reconciliation_csv_is_neutralised_while_its_parquet_stays_exact(tmp_path):
    for name in ("webhooks_pmp.jsonl", "send_log_pmp.csv"):  # Meta's statuses, one wamid a formula
        text = (ROOT / "tests" / "fixtures" / "reconcile" / name).read_text()
        (tmp_path / name).write_text(text.replace("wamid.R1", FORMULA))
    inputs = ["webhooks_pmp.jsonl", "--send-log", "send_log_pmp.csv"]
    done = wa("reconcile", *inputs, "-o", "rec.csv", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    ids = {r["message_id"] for r in csv_cells(tmp_path / "rec.csv")}
    assert f"'{FORMULA}" in ids and "wamid.R2" in ids and FORMULA not in ids
    assert wa("reconcile", *inputs, "-o", "rec.parquet", cwd=tmp_path).returncode == 0
    assert FORMULA in set(pl.read_parquet(tmp_path / "rec.parquet")["message_id"])


def test_explanations_csv_is_neutralised_while_the_comparison_stays_exact(work):
    (work / "s.toml").write_text('[scenario."=cmd"]\nstrategies = [{ name = "cap_marketing", per_user = 1 }]\n')
    done = wa("compare", "in.csv", "--scenarios", "s.toml", "-o", "x.csv", cwd=work)
    assert done.returncode == 0, done.stderr
    assert "'=cmd" in {r["scenario"] for r in csv_cells(work / "x.explanations.csv")}
    assert "=cmd" in {r["scenario"] for r in csv_cells(work / "x.csv")}


def test_only_text_cells_are_neutralised_and_numbers_stay_numbers():
    frame = pl.LazyFrame(
        {"cost": [-1.5, 2.0], "note": ["-1.5", "fine"], "tab": ["\tx", "a-b"], "when": [None, "+1"]},
    )
    assert outputs.neutralise_formulas(frame).collect().to_dicts() == [
        {"cost": -1.5, "note": "'-1.5", "tab": "'\tx", "when": None},
        {"cost": 2.0, "note": "fine", "tab": "a-b", "when": "'+1"},
    ]


def test_a_scenario_file_reads_its_paths_beside_itself_and_reports_them_as_given(work):
    (work / "plans").mkdir()
    (work / "plans" / "card.csv").write_bytes(CARD.read_bytes())
    (work / "plans" / "s.toml").write_text('[scenario.a]\nrate_card = "card.csv"\n[scenario.b]\nrate_card = "nope.csv"\n')
    line = error_line(wa("compare", "in.csv", "--scenarios", "plans/s.toml", "-o", "x.csv", cwd=work))
    assert line == (
        "wa-analytics: error: plans/s.toml: scenario b: rate_card nope.csv does not exist "
        "(looked for plans/nope.csv: a path is read relative to the scenario file)"
    )
    (work / "plans" / "s.toml").write_text('[scenario.a]\nrate_card = "card.csv"\n')
    done = wa("compare", "in.csv", "--scenarios", "plans/s.toml", "-o", "x.csv", cwd=work)
    assert done.returncode == 0, done.stderr
