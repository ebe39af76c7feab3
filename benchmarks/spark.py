"""Benchmark of the Spark engine (analytics/pipeline/spark.py) in local mode next to the local engine.

    .venv/bin/python benchmarks/spark.py --sizes 10M                  # Spark local[2], 4 GB driver
    .venv/bin/python benchmarks/spark.py --sizes 1M,10M --master 'local[*]'

It bills the same cached traffic as benchmarks/engine.py (benchmarks/data/traffic-<size>.parquet,
generated once: January 2025 to October 2026, so it crosses the `pmp-2025` and `pmp-2026-10`
switches) four ways, each in a fresh process, in the same run:

- `local charges`: `analytics.bill.partitioned.bill_parquet`, Parquet in, charges Parquet out;
- `local costs`: the same, then `pricing.price` and `pricing.costs` (shipped card, USD);
- `spark charges`: `analytics.pipeline.spark.bill_files`, Parquet in, a Parquet directory of charges out;
- `spark costs`: `analytics.pipeline.spark.cost_partials_of_files` (billed, priced and summed on Spark;
  the exact sums come to the driver), then `pricing.costs_from_partials`.

Peak memory is the process tree's: the Python driver, the JVM Spark starts and its Python workers,
sampled every 0.2 s from /proc (RSS summed, and PSS, which counts pages the processes share
once). Time is wall-clock from the start of the measurement; for Spark it includes starting the
JVM (`spark start s`, also shown alone). Results go to benchmarks/results/spark.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from engine import RESULTS, parse_size, traffic_file  # noqa: E402  (the same cached traffic)

KINDS = ("local-charges", "local-costs", "spark-charges", "spark-costs")


def measure(kind: str, path: Path, master: str, scratch: Path) -> dict[str, float]:
    """Run one measurement in this process; print seconds as JSON."""
    import polars as pl

    from analytics.bill import partitioned
    from analytics.pipeline import spark as spark_engine
    from analytics.price import pricing
    from analytics.settings import Settings

    card = Settings(currency="USD", report_unpriced=True)
    started = time.perf_counter()
    result: dict[str, float] = {}
    if kind in ("local-charges", "local-costs"):
        run = partitioned.bill_parquet([path], scratch / "charges.parquet", workdir=scratch)
        result["charges"] = run.charges
        if kind == "local-costs":
            pricing.costs(pricing.price(pl.read_parquet(scratch / "charges.parquet"), settings=card))
    else:
        spark_engine.session(master)
        result["spark_start_seconds"] = round(time.perf_counter() - started, 2)
        if kind == "spark-charges":
            result["charges"] = spark_engine.bill_files([path], scratch / "charges", master=master).charges
        else:
            partials = spark_engine.cost_partials_of_files([path], settings=card, master=master)
            result["charges"] = int(partials["charges"].sum())
            pricing.costs_from_partials(partials)
    result["seconds"] = round(time.perf_counter() - started, 2)
    return result


def _tree(root: int) -> list[int]:
    """`root` and every process descended from it, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    parent = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _memory_kb(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in kB; zeros if it has gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            fields = {line.split(":")[0]: line.split()[1] for line in handle if line.startswith(("Rss:", "Pss:"))}
        return int(fields["Rss"]), int(fields["Pss"])
    except (OSError, KeyError, ValueError):
        return 0, 0


def run(kind: str, path: Path, master: str) -> dict[str, float]:
    """One measurement in a fresh process, its process tree's peak memory sampled meanwhile."""
    scratch = Path(os.environ.get("TMPDIR", "/tmp")) / f"wa-analytics-bench-{os.getpid()}"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    process = subprocess.Popen(
        [sys.executable, __file__, "--measure", kind, str(path), "--master", master, "--scratch", str(scratch)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    peak = {"rss": 0, "pss": 0}

    def sample() -> None:
        while process.poll() is None:
            totals = [_memory_kb(pid) for pid in _tree(process.pid)]
            peak["rss"] = max(peak["rss"], sum(t[0] for t in totals))
            peak["pss"] = max(peak["pss"], sum(t[1] for t in totals))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = process.communicate()
    sampler.join()
    shutil.rmtree(scratch, ignore_errors=True)
    if process.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{err[-3000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    return result | {"peak_rss_mb": round(peak["rss"] / 1024), "peak_pss_mb": round(peak["pss"] / 1024)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10M", help="comma-separated message counts, e.g. 1M,10M")
    parser.add_argument("--master", default="local[2]", help="Spark master (default local[2])")
    parser.add_argument("--measure", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    parser.add_argument("--scratch", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure[0], Path(args.measure[1]), args.master, Path(args.scratch))))
        return

    import polars as pl

    rows = []
    for size in [parse_size(s) for s in args.sizes.split(",")]:
        path = traffic_file(size)
        messages = pl.scan_parquet(path).select(pl.len()).collect().item()
        load_before = os.getloadavg()[0]
        row: dict[str, object] = {"messages": messages, "master": args.master}
        for kind in KINDS:
            measured = run(kind, path, args.master)
            prefix = kind.replace("-", "_")
            row |= {f"{prefix}_{key}": value for key, value in measured.items() if key != "charges"}
            row[f"{prefix}_charges"] = measured.get("charges")
            print(f"{kind}: {measured}", flush=True)
        counts = {row[f"{k.replace('-', '_')}_charges"] for k in KINDS}
        if len(counts) != 1:
            raise SystemExit(f"the engines disagree on the number of charges: {counts}")
        row["spark_charges_vs_local"] = round(row["spark_charges_seconds"] / row["local_charges_seconds"], 1)
        row["load_average_before"] = round(load_before, 2)
        row["load_average_after"] = round(os.getloadavg()[0], 2)
        rows.append(row)
        print_table(rows)

    RESULTS.mkdir(exist_ok=True)
    import pyspark

    machine = {"cores": os.cpu_count(), "python": sys.version.split()[0], "pyspark": pyspark.__version__, "driver_memory": "4g"}
    results = RESULTS / "spark.json"
    kept = json.loads(results.read_text())["runs"] if results.exists() else []
    sizes = {(r["messages"], r["master"]) for r in rows}
    runs = sorted([r for r in kept if (r["messages"], r["master"]) not in sizes] + rows, key=lambda r: r["messages"])
    results.write_text(json.dumps({"machine": machine, "runs": runs}, indent=2) + "\n")
    print(f"\nwritten: {results}")


def print_table(rows: list[dict]) -> None:
    columns = [("messages", "messages")]
    for kind in KINDS:
        prefix = kind.replace("-", "_")
        columns += [(f"{prefix}_seconds", f"{kind} s"), (f"{prefix}_peak_rss_mb", "RSS MB"), (f"{prefix}_peak_pss_mb", "PSS MB")]
    columns += [("spark_charges_spark_start_seconds", "spark start s"), ("spark_charges_vs_local", "spark/local")]
    print("\n" + " | ".join(title for _, title in columns))
    for row in rows:
        print(" | ".join(str(row.get(key, "")) for key, _ in columns))


if __name__ == "__main__":
    main()
