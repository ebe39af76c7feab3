"""Benchmark of `wa-analytics report`: this checkout against another version, on the same traffic.

    git worktree add /tmp/report-base dff9ea9     # the version to compare with, once
    .venv/bin/python benchmarks/report.py --base /tmp/report-base
    .venv/bin/python benchmarks/report.py --base /tmp/report-base --input traffic.parquet --runs 3

The traffic is benchmarks/engine.py's (`traffic_file`: canonical messages of 2025-01 to 2026-10,
generated once and kept in benchmarks/data/), 1 M messages unless `--input` names another file.
Each run is `wa-analytics report --month 2026-10` in a fresh process, in USD (the shipped card has
a few other currencies in 2025, so the report needs one named), with this checkout's virtual
environment; the base version runs with `PYTHONPATH` pointing at its checkout, so both use the same
libraries. Runs alternate (base, this, base, this, ...) so that both see the same load on a
shared machine: compare the ratio, not the seconds. CPU is user plus system time of the command
and every process it waited for (the notebook kernels), and the peak RSS that of its largest
process (this version runs two kernels at once). Two notebooks at once shorten the wall time
more on a loaded machine (they get a larger share of its cores) than on an idle one, so the CPU
ratio is printed beside the wall ratio. The two reports are compared byte for byte. It prints a
table and writes benchmarks/results/report.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))
from engine import traffic_file  # noqa: E402  (benchmarks/ is not a package)

MONTH = "2026-10"
TARGET = 0.5  # issue 16 item 4: at most half of the time before


def run_report(traffic: Path, output: Path, *, checkout: Path | None) -> dict[str, float]:
    """One `wa-analytics report` in a fresh process: wall and CPU seconds, and the peak RSS of its largest process."""
    params = output.with_suffix(".toml")
    params.write_text('currency = "USD"\n')
    env = dict(os.environ)
    if checkout is not None:
        env["PYTHONPATH"] = str(checkout)
    command = [sys.executable, "-m", "analytics.cli", "report", "--input", str(traffic), "--month", MONTH, "--params", str(params), "-o", str(output)]
    log = output.with_suffix(".log")
    started = time.perf_counter()
    with log.open("w") as stderr:
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr, cwd=tempfile.gettempdir())
        _, status, usage = os.wait4(process.pid, 0)  # its own usage, with every process it waited for (the kernels)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({process.returncode}):\n{log.read_text()}")
    cpu = usage.ru_utime + usage.ru_stime
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, type=Path, help="a checkout of the version to compare with (git worktree add)")
    parser.add_argument("--input", type=Path, help="canonical traffic; default: benchmarks/data/traffic-1000000.parquet, generated if missing")
    parser.add_argument("--runs", type=int, default=2, help="runs of each version, alternating (default 2)")
    args = parser.parse_args()
    traffic = args.input or traffic_file(1_000_000)
    versions = {"base": args.base.resolve(), "this": None}
    timings: dict[str, list[dict[str, float]]] = {name: [] for name in versions}
    with tempfile.TemporaryDirectory(prefix="report-benchmark-") as scratch:
        for run in range(args.runs):
            for name, checkout in versions.items():
                timing = run_report(traffic, Path(scratch) / f"{name}-{run}.html", checkout=checkout)
                timings[name].append(timing)
                print(f"run {run + 1} {name}: {timing}", flush=True)
        pages = {name: (Path(scratch) / f"{name}-0.html").read_bytes() for name in versions}
        same_report = pages["base"] == pages["this"]
    summary = {name: {key: statistics.median(t[key] for t in runs) for key in ("wall_s", "cpu_s", "peak_rss_mb")} for name, runs in timings.items()}
    wall_ratio = round(summary["this"]["wall_s"] / summary["base"]["wall_s"], 2)
    cpu_ratio = round(summary["this"]["cpu_s"] / summary["base"]["cpu_s"], 2)
    print(f"\ninput: {traffic}, month {MONTH}, {args.runs} runs of each, alternating; medians")
    print("| version | wall s | CPU s | peak RSS MB |")
    print("|---|---:|---:|---:|")
    for name, figures in summary.items():
        print(f"| {name} | {figures['wall_s']:.1f} | {figures['cpu_s']:.1f} | {figures['peak_rss_mb']:,.0f} |")
    print(f"this / base: wall {wall_ratio}, CPU {cpu_ratio} (target {TARGET}); same report: {same_report}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "report.json").write_text(
        json.dumps(
            {
                "input": str(traffic),
                "month": MONTH,
                "base": str(versions["base"]),
                "runs": timings,
                "medians": summary,
                "wall_ratio": wall_ratio,
                "cpu_ratio": cpu_ratio,
                "same_report": same_report,
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
