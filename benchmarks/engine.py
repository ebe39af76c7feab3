"""Benchmark of the billing engine on generated traffic read from Parquet.

    .venv/bin/python benchmarks/engine.py --sizes 1M,10M          # or: make benchmark
    .venv/bin/python benchmarks/engine.py --sizes 100M --no-reference
    .venv/bin/python benchmarks/engine.py --shape bursty --sizes 1756800 --no-pricing

For each size it generates canonical traffic once (cached in benchmarks/data/, deduplicated and
with user countries derived, i.e. what `wa-analytics ingest` writes), then measures, each in a
fresh process so that peak memory (RSS) is the measurement's own:

- `window`: one plain DuckDB window pass over the same file, `lag(timestamp) over (partition by
  business_phone, user_id order by timestamp)`, counted: the floor any engine must pay;
- `engine`: `analytics.bill.partitioned.bill_parquet`, Parquet in, charges Parquet out;
- `pricing`: what `wa-analytics costs` runs on those charges, `analytics.price.pricing.cost_partials_of_charges`
  and `costs_from_partials`, with the shipped card in USD (unpriced charges reported, not failed:
  the card knows no rates for some of 2025); the charges are read before the clock starts, as the
  command has them in memory;
- `price`: `analytics.price.pricing.price` and `costs` on the same charges, every charge priced (what
  the analyses that need priced charges pay), also read before the clock;
- `reference`: the reference state machine (`analytics.bill.reference.bill`), at 1 M only, from the
  messages already in memory to a charges frame in memory;
- `engine-in-memory`: `analytics.bill.charges.bill` timed the same way, at 1 M only. The speed-up
  over the reference is this one's: both implementations get the same frame and return the
  same charges, and neither reads nor writes a file on the clock. The file-to-file speed-up
  (`engine` against `reference`) is reported beside it.

With `--shape bursty` the traffic is long bursts instead (`bursty_file`): size / 8,784 users, each
sent a utility template every hour of 2024, so under `cbp-2023` every user has 365 back-to-back
24 h conversations (1,756,800 messages: 200 users).

Up to 2 M every measurement but the reference is the median of `SMALL_RUNS` fresh processes, with
the largest peak. It prints a table and writes benchmarks/results/engine.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
RESULTS = HERE / "results"
START = dt.date(2025, 1, 1)
MONTHS = 22  # 2025-01 to 2026-10: crosses cbp-2023 → pmp-2025 and pmp-2025 → pmp-2026-10
MESSAGES_PER_USER_MONTH = 1.6  # what analytics.synthetic.generate produces, measured
BURSTY_YEAR = 2024  # --shape bursty: a template every hour of this year (8,784 hours), per user
# Runs of a second or less move by about 10% from one process to the next: at 1 M each
# measurement but the reference (21 s) is the median of this many fresh processes.
SMALL_RUNS = 5


def parse_size(text: str) -> int:
    units = {"K": 1_000, "M": 1_000_000}
    return int(float(text[:-1]) * units[text[-1].upper()]) if text[-1].upper() in units else int(text)


def traffic_file(size: int) -> Path:
    """Canonical messages of about `size` rows, generated once and kept.

    The generator writes one block of users at a time; each block is deduplicated and given its
    users' countries on its own (a block's duplicates stay inside it), so 100 M rows never need
    to be in memory at once.
    """
    path = DATA / f"traffic-{size}.parquet"
    if path.exists():
        return path
    import polars as pl
    import pyarrow.parquet as pq

    from analytics.synthetic import generate
    from analytics.terms import markets

    DATA.mkdir(parents=True, exist_ok=True)
    raw = DATA / f"raw-{size}.parquet"
    users = max(1, round(size / (MONTHS * MESSAGES_PER_USER_MONTH)))
    if not raw.exists():
        generate.generate_to_parquet(raw, users=users, start=START, months=MONTHS, seed=1)
    source, writer = pq.ParquetFile(raw), None
    for group in range(source.metadata.num_row_groups):
        block = pl.from_arrow(source.read_row_group(group)).unique(subset="message_id", keep="first", maintain_order=True)
        table = markets.with_user_country(block).to_arrow()
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    writer.close()
    raw.unlink()
    return path


def bursty_file(size: int) -> Path:
    """Canonical messages of about `size` rows in long bursts: size / 8,784 users on one business
    number, each sent a delivered utility template at every hour of `BURSTY_YEAR`. Under
    `cbp-2023` every user then has one burst of 365 back-to-back 24 h conversations."""
    path = DATA / f"bursty-{size}.parquet"
    if path.exists():
        return path
    import polars as pl

    hours = pl.datetime_range(
        dt.datetime(BURSTY_YEAR, 1, 1, tzinfo=dt.UTC),
        dt.datetime(BURSTY_YEAR, 12, 31, 23, tzinfo=dt.UTC),
        "1h",
        time_unit="us",
        time_zone="UTC",
        eager=True,
    )
    users = pl.DataFrame({"user": pl.int_range(max(1, round(size / hours.len())), eager=True)})
    messages = users.join(pl.DataFrame({"timestamp": hours}), how="cross").select(
        message_id=pl.format("b{}", pl.int_range(pl.len())),
        timestamp="timestamp",
        direction=pl.lit("outbound"),
        business_phone=pl.lit("15550000001"),
        waba_id=pl.lit("W1"),
        user_id=pl.format("39333{}", pl.col("user").cast(pl.String).str.zfill(7)),
        user_phone=pl.lit(None, dtype=pl.String),
        user_country=pl.lit("IT"),
        message_type=pl.lit("template"),
        template_category=pl.lit("utility"),
        status=pl.lit("delivered"),
        entry_point=pl.lit(None, dtype=pl.String),
    )
    DATA.mkdir(parents=True, exist_ok=True)
    messages.write_parquet(path)
    return path


def measure(kind: str, path: Path) -> dict[str, float]:
    """Run one measurement in this process; print seconds and peak RSS as JSON. Imports and
    reading the file for the reference happen before the clock starts."""
    import duckdb
    import polars as pl

    from analytics.bill import charges, partitioned, reference
    from analytics.price import pricing
    from analytics.settings import Settings

    messages = pl.read_parquet(path) if kind in ("reference", "engine-in-memory") else None
    billed = pl.read_parquet(charges_file(path)) if kind in ("pricing", "price") else None
    started = time.perf_counter()
    if kind == "window":
        duckdb.sql(
            "SELECT count(previous) FROM (SELECT lag(timestamp) OVER (PARTITION BY business_phone, user_id "
            "ORDER BY timestamp) AS previous FROM read_parquet($path))",
            params={"path": str(path)},
        ).fetchall()
    elif kind == "engine":
        partitioned.bill_parquet([path], charges_file(path))
    elif kind == "pricing":
        usd = Settings(currency="USD", report_unpriced=True)
        pricing.costs_from_partials(pricing.cost_partials_of_charges(billed, usd))
    elif kind == "price":
        usd = Settings(currency="USD", report_unpriced=True)
        pricing.costs(pricing.price(billed, usd))
    elif kind == "engine-in-memory":
        charges.bill(messages)
    elif kind == "reference":
        reference.bill(messages)
    else:
        raise SystemExit(f"unknown measurement {kind}")
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": round(seconds, 2), "peak_rss_mb": round(peak_mb)}


def charges_file(path: Path) -> Path:
    return path.with_name(path.stem + "-charges.parquet")


def run(kind: str, path: Path, times: int = 1) -> dict[str, float]:
    """One measurement in `times` fresh processes: the median time, and the largest peak."""
    runs = []
    for _ in range(times):
        done = subprocess.run([sys.executable, __file__, "--measure", kind, str(path)], check=True, capture_output=True, text=True)
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return {"seconds": statistics.median(r["seconds"] for r in runs), "peak_rss_mb": max(r["peak_rss_mb"] for r in runs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1M,10M", help="comma-separated message counts, e.g. 1M,10M,100M")
    parser.add_argument(
        "--shape",
        choices=["generated", "bursty"],
        default="generated",
        help="generated: analytics.synthetic.generate's traffic; bursty: a utility template every hour of 2024 per user",
    )
    parser.add_argument("--no-reference", action="store_true", help="skip the reference implementation at 1 M")
    parser.add_argument("--no-pricing", action="store_true", help="skip pricing (at 100 M it needs more memory than the engine)")
    parser.add_argument("--measure", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure[0], Path(args.measure[1]))))
        return

    rows = []
    for size in [parse_size(s) for s in args.sizes.split(",")]:
        path = bursty_file(size) if args.shape == "bursty" else traffic_file(size)
        import polars as pl

        messages = pl.scan_parquet(path).select(pl.len()).collect().item()
        times = SMALL_RUNS if size <= 2_000_000 else 1
        window, engine = run("window", path, times), run("engine", path, times)
        priced = None if args.no_pricing else run("pricing", path, times)
        priced_each = None if args.no_pricing else run("price", path, times)
        charges_file(path).unlink()
        row = {
            "shape": args.shape,
            "messages": messages,
            "window_seconds": window["seconds"],
            "window_peak_rss_mb": window["peak_rss_mb"],
            "engine_seconds": engine["seconds"],
            "engine_peak_rss_mb": engine["peak_rss_mb"],
            "engine_messages_per_second": round(messages / engine["seconds"]),
            "engine_vs_window": round(engine["seconds"] / window["seconds"], 2),
        }
        if priced:
            row |= {
                "pricing_seconds": priced["seconds"],
                "pricing_share_of_engine": round(priced["seconds"] / engine["seconds"], 2),
                "pricing_peak_rss_mb": priced["peak_rss_mb"],
                "price_seconds": priced_each["seconds"],
                "price_share_of_engine": round(priced_each["seconds"] / engine["seconds"], 2),
            }
        if size == 1_000_000 and args.shape == "generated" and not args.no_reference:
            in_memory, ref = run("engine-in-memory", path, times), run("reference", path)
            row |= {
                "engine_in_memory_seconds": in_memory["seconds"],
                "reference_seconds": ref["seconds"],
                "engine_speedup_vs_reference": round(ref["seconds"] / in_memory["seconds"], 1),
                "file_to_file_speedup_vs_reference": round(ref["seconds"] / engine["seconds"], 1),
            }
        rows.append(row)
        print_table(rows)

    RESULTS.mkdir(exist_ok=True)
    machine = {"cores": __import__("os").cpu_count(), "python": sys.version.split()[0]}
    results = RESULTS / "engine.json"
    kept = json.loads(results.read_text())["runs"] if results.exists() else []
    measured = {(r["shape"], r["messages"]) for r in rows}
    kept = [r for r in kept if (r.get("shape", "generated"), r["messages"]) not in measured]
    runs = sorted(kept + rows, key=lambda r: (r.get("shape", "generated"), r["messages"]))
    results.write_text(json.dumps({"machine": machine, "runs": runs}, indent=2) + "\n")
    print(f"\nwritten: {RESULTS / 'engine.json'}")


def print_table(rows: list[dict]) -> None:
    columns = [
        ("shape", "shape"),
        ("messages", "messages"),
        ("window_seconds", "window s"),
        ("engine_seconds", "engine s"),
        ("engine_vs_window", "engine/window"),
        ("engine_peak_rss_mb", "engine RSS MB"),
        ("engine_messages_per_second", "msgs/s"),
        ("pricing_seconds", "pricing s"),
        ("pricing_share_of_engine", "pricing/engine"),
        ("price_share_of_engine", "price/engine"),
        ("engine_in_memory_seconds", "in memory s"),
        ("reference_seconds", "reference s"),
        ("engine_speedup_vs_reference", "speed-up"),
        ("file_to_file_speedup_vs_reference", "file to file"),
    ]
    print("\n" + " | ".join(title for _, title in columns))
    for row in rows:
        print(" | ".join(str(row.get(key, "")) for key, _ in columns))


if __name__ == "__main__":
    main()
