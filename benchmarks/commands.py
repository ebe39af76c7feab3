"""Benchmark of the commands users type, end to end, against DuckDB doing the least the same job needs.

    .venv/bin/python benchmarks/commands.py              # 10 M messages
    .venv/bin/python benchmarks/commands.py --size 1M

On canonical traffic (benchmarks/data/traffic-N.parquet, generated once by benchmarks/engine.py's
`traffic_file`, or reused), each measurement in a fresh process, all in the same run, timed from
the process's start to its end (imports included) with its CPU time (user + system: less moved by
other work on a shared machine than wall time) and peak RSS:

- `duckdb-window`: one DuckDB window pass over the file, `lag(timestamp) over (partition by
  business_phone, user_id order by timestamp)`, counted: the floor of billing;
- `ingest`: `wa-analytics ingest FILE -o messages.parquet` (every row validated, repeats resolved,
  a stage file written: analytics/core/stages.py);
- `duckdb-dedupe`: DuckDB deduplicating the file on message_id and writing Parquet: the floor of ingest;
- `charges`: `wa-analytics charges messages.parquet -o charges.parquet`, on the file `ingest` wrote;
- `costs`: `wa-analytics costs messages.parquet -o costs.csv --currency USD --report-unpriced` on the same file
  (the shipped card has no rates for some months of the generated traffic).

It prints the table and the ratios charges / window, costs / window and ingest / dedupe (wall and CPU), and writes
benchmarks/results/commands.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from engine import parse_size, traffic_file  # noqa: E402

RESULTS = HERE / "results"
WORK = HERE / "data" / "commands"
COMMAND = str(Path(sys.executable).with_name("wa-analytics"))

WINDOW_SQL = (
    "SELECT count(previous) FROM (SELECT lag(timestamp) OVER (PARTITION BY business_phone, user_id "
    "ORDER BY timestamp) AS previous FROM read_parquet($path))"
)
DEDUPE_SQL = "COPY (SELECT DISTINCT ON (message_id) * FROM read_parquet('{source}')) TO '{target}' (FORMAT parquet)"


def duckdb_job(kind: str, source: str, target: str) -> None:
    """The DuckDB side, run as its own process (`--duckdb`)."""
    import duckdb

    if kind == "window":
        duckdb.sql(WINDOW_SQL, params={"path": source}).fetchall()
    else:  # COPY takes no bound file names: the paths are this script's own
        duckdb.sql(DEDUPE_SQL.format(source=source.replace("'", "''"), target=target.replace("'", "''")))


def timed(argv: list[str]) -> dict[str, float]:
    """Run `argv` as the only child of a fresh process (`--time`): wall seconds and its peak RSS."""
    done = subprocess.run([sys.executable, __file__, "--time", *argv], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stderr.strip())
    return json.loads(done.stdout.strip().splitlines()[-1])


def time_child(argv: list[str]) -> None:
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr[-2000:]}")
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = used.ru_utime + used.ru_stime  # less moved than wall time by other work on the machine
    print(json.dumps({"seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2), "peak_rss_mb": round(used.ru_maxrss / 1024)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="10M", help="messages (default 10M)")
    parser.add_argument("--time", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    parser.add_argument("--duckdb", nargs=3, metavar=("KIND", "SOURCE", "TARGET"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.time:
        return time_child(args.time)
    if args.duckdb:
        return duckdb_job(*args.duckdb)

    size = parse_size(args.size)
    source = traffic_file(size)
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    messages, deduped = WORK / "messages.parquet", WORK / "deduped.parquet"
    python = [sys.executable, __file__, "--duckdb"]
    runs = {
        "duckdb-window": [*python, "window", str(source), "-"],
        "ingest": [COMMAND, "ingest", str(source), "-o", str(messages)],
        "duckdb-dedupe": [*python, "dedupe", str(source), str(deduped)],
        "charges": [COMMAND, "charges", str(messages), "-o", str(WORK / "charges.parquet")],
        "costs": [COMMAND, "costs", str(messages), "-o", str(WORK / "costs.csv"), "--currency", "USD", "--report-unpriced"],
    }
    measured = {}
    for name, argv in runs.items():
        measured[name] = timed(argv)
        m = measured[name]
        print(f"{name:>14}: {m['seconds']:7.2f} s wall  {m['cpu_seconds']:7.2f} s CPU  {m['peak_rss_mb']:6,} MB", flush=True)
    ratios = {}
    for measure in ("seconds", "cpu_seconds"):
        for slow, fast in (("charges", "duckdb-window"), ("costs", "duckdb-window"), ("ingest", "duckdb-dedupe")):
            name = f"{slow}_over_{fast.removeprefix('duckdb-')}" + ("_cpu" if measure == "cpu_seconds" else "")
            ratios[name] = round(measured[slow][measure] / measured[fast][measure], 2)
    for name, ratio in ratios.items():
        print(f"{name}: {ratio}x")
    RESULTS.mkdir(exist_ok=True)
    result = {"messages": size, "file": source.name, "machine": platform.platform(), "runs": measured, "ratios": ratios}
    (RESULTS / "commands.json").write_text(json.dumps(result, indent=2) + "\n")
    shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
