"""The progress display (analytics/core/progress.py): shown on a terminal, never in a pipe, a file,
with --quiet, or in library use; out of the way of the summary lines; erased, the cursor shown
again, when a signal stops the run.

Each run here is a real process whose stderr is a pseudo-terminal (`pty.openpty`) or a pipe, and
what reached it is read back byte for byte.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import textwrap
import threading
import time
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONSOLE_SCRIPT = Path(sys.executable).with_name("wa-analytics")
SAMPLE = ROOT / "data" / "sample" / "messages.csv.gz"
SCENARIOS = ROOT / "examples" / "scenarios.toml"
ESCAPE = "\x1b"
HIDE_CURSOR, SHOW_CURSOR = "\x1b[?25l", "\x1b[?25h"
CSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class Terminal:
    """A process run with stderr on a pseudo-terminal of 120 columns (stdout a pipe), the terminal's
    bytes collected as they come."""

    def __init__(self, argv: list[str], cwd: Path) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
        env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120"}
        self.process = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave, env=env)
        os.close(slave)
        self.master, self.received, self.lock = master, bytearray(), threading.Lock()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: every writer of the terminal has closed it
                return
            if not data:
                return
            with self.lock:
                self.received += data

    @property
    def text(self) -> str:
        with self.lock:
            return self.received.decode(errors="replace")

    def wait_for(self, needle: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while needle not in CSI.sub("", self.text):
            assert self.process.poll() is None, f"ended before showing {needle!r}: {self.text!r}"
            assert time.monotonic() < deadline, f"no {needle!r} within {timeout} s: {self.text!r}"
            time.sleep(0.05)

    def finish(self, timeout: float = 300) -> tuple[int, str, str]:
        status = self.process.wait(timeout=timeout)
        stdout = self.process.stdout.read().decode()
        self.reader.join(timeout=10)
        os.close(self.master)
        return status, self.text, stdout


def on_terminal(argv: list[object], cwd: Path) -> tuple[int, str, str]:
    return Terminal([str(a) for a in argv], cwd).finish()


def in_pipe(argv: list[object], cwd: Path) -> tuple[int, str, str]:
    done = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    return done.returncode, done.stderr, done.stdout


def as_seen(terminal: str) -> list[str]:
    """The lines a terminal shows once the run is over: escape sequences dropped, and a carriage
    return letting what follows overwrite what preceded it on the line (the display's frames)."""
    lines = CSI.sub("", terminal).replace("\r\n", "\n").split("\n")
    return [seen for line in lines if (seen := line.rsplit("\r", 1)[-1])]


def cursor_shown_at_the_end(terminal: str) -> bool:
    return HIDE_CURSOR in terminal and terminal.rfind(SHOW_CURSOR) > terminal.rfind(HIDE_CURSOR)


def python(script: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(script)]


# --- The command line ------------------------------------------------------------------------------


def test_charges_on_a_terminal_shows_each_stage_then_only_the_summary_lines(tmp_path):
    status, terminal, _ = on_terminal([CONSOLE_SCRIPT, "charges", SAMPLE, "-o", "charges.csv"], tmp_path)
    assert status == 0, terminal
    shown = CSI.sub("", terminal)
    for stage in ("Reading", "0/1 files", "Checking 1 file", "Billing ", " messages", "Writing charges.csv"):
        assert stage in shown, stage
    assert cursor_shown_at_the_end(terminal)
    # Once the display is erased, the terminal shows exactly what a pipe gets.
    (tmp_path / "piped").mkdir()
    piped_status, piped, _ = in_pipe([CONSOLE_SCRIPT, "charges", SAMPLE, "-o", "charges.csv"], tmp_path / "piped")
    assert piped_status == 0
    assert as_seen(terminal) == piped.splitlines()
    assert (tmp_path / "charges.csv").read_bytes() == (tmp_path / "piped" / "charges.csv").read_bytes()


def test_ingest_on_a_terminal_counts_the_files_it_reads(tmp_path):
    (tmp_path / "first.csv.gz").write_bytes(SAMPLE.read_bytes())
    (tmp_path / "second.csv.gz").write_bytes(SAMPLE.read_bytes())
    status, terminal, _ = on_terminal([CONSOLE_SCRIPT, "ingest", "first.csv.gz", "second.csv.gz", "-o", "m.parquet"], tmp_path)
    assert status == 0, terminal
    shown = CSI.sub("", terminal)
    assert "Reading" in shown and "0/2 files" in shown
    assert "Checking 2 files" in shown and "Writing m.parquet" in shown
    assert as_seen(terminal)[-1] == "Canonical messages: m.parquet"


@pytest.mark.parametrize("command", ["charges", "ingest"])
def test_in_a_pipe_stderr_has_no_display_and_is_the_quiet_runs(tmp_path, command):
    status, piped, _ = in_pipe([CONSOLE_SCRIPT, command, SAMPLE, "-o", "out.csv"], tmp_path)
    quiet_status, quiet, _ = in_pipe([CONSOLE_SCRIPT, command, "--quiet", SAMPLE, "-o", "out.csv"], tmp_path)
    assert status == quiet_status == 0
    assert ESCAPE not in piped and "\r" not in piped
    assert not any(stage in piped for stage in ("Reading", "Checking", "Writing", "━"))
    assert piped == quiet
    assert piped.startswith("Read ") and piped.endswith(": out.csv\n")


def test_quiet_on_a_terminal_shows_no_progress_and_the_same_lines_as_a_pipe(tmp_path):
    status, terminal, _ = on_terminal([CONSOLE_SCRIPT, "charges", "--quiet", SAMPLE, "-o", "charges.csv"], tmp_path)
    assert status == 0, terminal
    assert ESCAPE not in terminal and "Billing" not in terminal
    (tmp_path / "piped").mkdir()
    _, piped, _ = in_pipe([CONSOLE_SCRIPT, "charges", SAMPLE, "-o", "charges.csv"], tmp_path / "piped")
    assert terminal.replace("\r\n", "\n") == piped


def test_compare_on_a_terminal_shows_the_scenarios_one_by_one(tmp_path):
    status, terminal, _ = on_terminal([CONSOLE_SCRIPT, "compare", SAMPLE, "--scenarios", SCENARIOS, "-o", "compare.csv"], tmp_path)
    assert status == 0, terminal
    shown = CSI.sub("", terminal)
    assert "Billing the traffic scenarios share" in shown
    names = list(tomllib.loads(SCENARIOS.read_text())["scenario"])
    assert f"0/{len(names)} scenarios" in shown
    for name in names:  # each drawn as it starts, however short
        assert f"Scenarios: {name}" in shown
    assert cursor_shown_at_the_end(terminal)
    assert as_seen(terminal)[-1] == "Comparison: compare.csv; explanations: compare.explanations.csv"


def test_summary_prints_on_stdout_unchanged_under_the_display(tmp_path):
    status, terminal, stdout = on_terminal([CONSOLE_SCRIPT, "summary", SAMPLE], tmp_path)
    _, _, piped_stdout = in_pipe([CONSOLE_SCRIPT, "summary", SAMPLE], tmp_path)
    assert status == 0, terminal
    assert "Reading" in CSI.sub("", terminal)
    assert stdout == piped_stdout and ESCAPE not in stdout


@pytest.fixture(scope="module")
def large_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generated traffic that takes seconds to bill (about 120,000 messages)."""
    path = tmp_path_factory.mktemp("large") / "large.csv"
    made = subprocess.run(
        [CONSOLE_SCRIPT, "generate", "--users", "30000", "--start", "2026-01-01", "--months", "3", "-o", path],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert made.returncode == 0, made.stderr
    return path


@pytest.mark.parametrize(("number", "status", "name"), [(signal.SIGINT, 130, "SIGINT (Ctrl-C)"), (signal.SIGTERM, 143, "SIGTERM")])
def test_a_signal_erases_the_display_and_shows_the_cursor_before_its_line(tmp_path, large_csv, number, status, name):
    terminal = Terminal([str(CONSOLE_SCRIPT), "charges", str(large_csv), "-o", "charges.csv"], tmp_path)
    terminal.wait_for("Billing ")
    terminal.process.send_signal(number)
    returned, text, _ = terminal.finish()
    assert returned == status
    stopped = f"wa-analytics: stopped by {name}; no half-written file was left, outputs not yet written are unchanged"
    before, _, after = text.rpartition(stopped)
    assert after == "\r\n"
    # Just before the line: the display's line erased, then the cursor shown.
    assert before.endswith("\r\x1b[2K" + SHOW_CURSOR) and cursor_shown_at_the_end(before)
    assert as_seen(text)[-1] == stopped
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # neither the output nor a temporary


# --- The display itself ------------------------------------------------------------------------------


def test_library_use_shows_nothing_on_a_terminal(tmp_path):
    script = f"""
        from analytics.read import ingest
        ingested = ingest.read_messages([{str(SAMPLE)!r}])
        ingest.write_frame(ingested.messages, "m.parquet")
        print(ingested.summary.rows_used)
    """
    status, terminal, stdout = on_terminal(python(script), tmp_path)
    assert status == 0, terminal
    assert terminal == "" and int(stdout) > 0


def test_buckets_are_counted_when_billing_in_buckets(tmp_path):
    script = f"""
        from analytics.bill import partitioned
        from analytics.core import progress
        from analytics.read import ingest
        ingest.write_frame(ingest.read_messages([{str(SAMPLE)!r}]).messages, "m.parquet")
        with progress.shown():
            run = partitioned.bill_parquet(["m.parquet"], "charges.parquet", rows_per_bucket=3_000)
        print(run.buckets, run.messages)
    """
    status, terminal, stdout = on_terminal(python(script), tmp_path)
    assert status == 0, terminal
    buckets, messages = map(int, stdout.split())
    shown = CSI.sub("", terminal)
    assert buckets > 3  # split by DuckDB first
    assert f"Splitting {messages:,} messages into {buckets:,} buckets" in shown
    assert f"Billing {messages:,} messages" in shown and f"0/{buckets:,} buckets" in shown
    assert cursor_shown_at_the_end(terminal) and as_seen(terminal) == []


def test_lines_printed_meanwhile_go_above_the_display_and_to_descriptor_2_wherever_it_points(tmp_path):
    """`report` points descriptor 2 at its kernels' log for a while: the display goes on on the
    terminal, and what is printed on sys.stderr meanwhile goes to the log, not the terminal."""
    script = """
        import os, sys, time
        from analytics.core import progress
        with progress.shown(), progress.stage("Working", total=2, unit="parts") as step:
            print("a line above the display", file=sys.stderr)
            step.advance()
            sys.stderr.flush()
            saved = os.dup(2)
            with open("kernel.log", "w") as log:
                os.dup2(log.fileno(), 2)
                print("a line for the log", file=sys.stderr)
                step.describe("Still working")
                time.sleep(0.8)  # rich redraws meanwhile
                sys.stderr.flush()
                os.dup2(saved, 2)
        print("after", file=sys.stderr)
    """
    status, terminal, _ = on_terminal(python(script), tmp_path)
    assert status == 0, terminal
    shown = CSI.sub("", terminal)
    assert "Working" in shown and "Still working" in shown and "1/2 parts" in shown
    assert "a line for the log" not in terminal
    assert (tmp_path / "kernel.log").read_text() == "a line for the log\n"
    assert as_seen(terminal) == ["a line above the display", "after"]
    assert cursor_shown_at_the_end(terminal)


def test_report_shows_its_notebooks_while_their_kernels_write_to_the_log(tmp_path):
    pytest.importorskip("papermill")
    script = f"""
        from analytics.core import progress
        from analytics.present import report
        with progress.shown():
            report.run_report("r.html", month="2026-01", input_paths=[{str(SAMPLE)!r}], notebooks=["01_conversation_volumes"])
    """
    status, terminal, _ = on_terminal(python(script), tmp_path)
    assert status == 0, terminal
    shown = CSI.sub("", terminal)
    assert "Notebooks: 01_conversation_volumes" in shown
    # Frames drawn while the notebook ran, descriptor 2 pointing at the kernels' log: still on the terminal.
    seconds = [int(m) * 60 + int(s) for m, s in re.findall(r"0/1 notebooks \d+:(\d\d):(\d\d)", shown)]
    assert max(seconds) >= 2
    assert "Rendering the report" in shown
    assert as_seen(terminal) == [] and cursor_shown_at_the_end(terminal)
    assert (tmp_path / "r.html").stat().st_size > 0


def test_an_error_inside_a_stage_is_printed_after_the_display_is_erased(tmp_path):
    (tmp_path / "bad.csv").write_text("not,a,header\n1,2,3\n")
    status, terminal, _ = on_terminal([CONSOLE_SCRIPT, "ingest", "bad.csv", "-o", "m.parquet"], tmp_path)
    piped_status, piped, _ = in_pipe([CONSOLE_SCRIPT, "ingest", "bad.csv", "-o", "m.parquet"], tmp_path)
    assert status == piped_status == 2
    assert "Reading" in CSI.sub("", terminal) and cursor_shown_at_the_end(terminal)
    assert as_seen(terminal) == piped.splitlines() and piped.startswith("wa-analytics: error: bad.csv")
