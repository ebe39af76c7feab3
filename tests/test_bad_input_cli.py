"""Bad input and bad usage through the installed command (issue 15): exit status 2, one line that
names the file or option and what to do, and the inputs untouched."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from analytics import strategies

CONSOLE_SCRIPT = Path(sys.executable).with_name("wa-analytics")
ROOT = Path(__file__).parent.parent
SAMPLE = ROOT / "data" / "sample" / "messages.csv.gz"
TRAFFIC = Path(__file__).parent / "fixtures" / "ingest" / "messages.csv"


def wa_analytics(*argv: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [str(CONSOLE_SCRIPT), *map(str, argv)], capture_output=True, text=True, env=env, check=False, cwd=cwd
    )


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
    memory = strategies._physical_memory()
    # Every user of the sample ×100, its Italian users ×100 again: about 260 M messages.
    if memory is None or memory > 100e9:
        pytest.skip("the estimate is held to this machine's memory, which is too large for the test")
    message = compare_refuses(
        tmp_path,
        b"[scenario.big]\ngrowth = { marketing = 100, utility = 100, authentication = 100, service = 100, "
        b"markets = { Italy = 100 } }\n",
        traffic=SAMPLE,
    )
    assert message.startswith(f"wa-analytics: error: scenario big: growth would build about ")
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
    assert message == (
        f"wa-analytics: error: {tmp_path / 's.toml'} is not a TOML scenario file: invalid UTF-8 at byte 0; save it as UTF-8 text"
    )


def test_a_bad_strategy_value_names_the_scenario_and_the_strategy(tmp_path):
    message = compare_refuses(
        tmp_path, b'[scenario.caps]\nstrategies = [{ name = "cap_marketing", per_user = 2, period = "fortnight" }]\n'
    )
    assert message == (
        f"wa-analytics: error: {tmp_path / 's.toml'}: scenario caps: strategy cap_marketing: period = 'fortnight': "
        "choose day, week, month"
    )
