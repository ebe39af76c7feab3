"""Billing inputs larger than memory: the same kernel, one hash bucket of whole keys at a time.

Keys are independent except for the monthly counters (billing-rules.md §2 Key), so a file of any
size is billed in three passes, each with bounded memory:

1. DuckDB splits the canonical messages into buckets by a hash of their key (business_phone,
   user_id; business_phone, group_id for a group message, whose participants stay together),
   written as Parquet (`queries/bucket_messages.sql`); DuckDB spills to disk if it must. With
   only a few buckets, each is instead a filtered scan of the input, which costs less than
   writing the whole input out again.
2. Each bucket goes through `charges.kernel` in Polars; the charges that no monthly counter
   decides are final and written out, the counted ones are set aside.
3. `queries/free_tiers.sql` decides the counted charges across all buckets, and each bucket's
   output gets its decided charges back.

The output is sorted by key and time within each bucket, buckets in order: deterministic for the
same input and bucket size, but not one global sort (that would cost a sort of every charge). An
input that fits in one bucket (`ROWS_PER_BUCKET`, 10 M messages; 20 M, `ROWS_PER_LARGE_BUCKET`,
when no bucket size is given) is billed in one pass, sorted like `charges.bill`.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl

from analytics.bill import charges
from analytics.core import progress, schema
from analytics.core.resources import query
from analytics.read import ingest
from analytics.settings import Settings

# Messages billed in one pass (`analytics.cli` bills up to this many in memory). A pass peaks near
# 270 bytes a message (benchmarks/README.md): 9.7 M messages 2.5 GB, 19.4 M 5.2 GB.
ROWS_PER_BUCKET = 10_000_000
# Above that, buckets of at most this many: each bucket costs a read of the input (below) or its
# share of a split, so fewer, larger buckets cost less time, and 20 M keeps a run near 5.5 GB.
ROWS_PER_LARGE_BUCKET = 20_000_000
# Up to this many buckets, reading the input once per bucket (keeping one bucket's keys) is cheaper
# than writing the input out again split by bucket: a filtered read of 10 M messages took 3.8 s
# where DuckDB's split of them took 54 s (benchmarks/README.md). Above it, DuckDB splits it once.
RESCAN_BUCKETS_AT_MOST = 5


@dataclass(frozen=True)
class PartitionedRun:
    messages: int
    buckets: int
    charges: int


def bill_parquet(
    inputs: Sequence[str | Path],
    output: str | Path,
    settings: Settings | None = None,
    *,
    rows_per_bucket: int | None = None,
    workdir: str | Path | None = None,
    memory_limit: str = "2GB",
) -> PartitionedRun:
    """Bill canonical-message Parquet files (validated, e.g. by `wa-analytics ingest`) into `output`
    (`.parquet`, `.csv` or `.csv.gz`, written by `ingest.write_frame`), never holding more than one
    bucket of messages in memory."""
    settings = settings or Settings()
    ingest.output_suffix(output)  # a bad name fails before any billing
    scratch = Path(tempfile.mkdtemp(prefix="wa-analytics-", dir=workdir))
    try:
        con = duckdb.connect(config={"memory_limit": memory_limit, "temp_directory": str(scratch / "spill"), "preserve_insertion_order": False})
        files = [str(p) for p in inputs]
        messages = con.sql("SELECT count(*) FROM read_parquet($files)", params={"files": files}).fetchall()[0][0]
        if rows_per_bucket:
            buckets = max(1, math.ceil(messages / rows_per_bucket))
        else:
            buckets = 1 if messages <= ROWS_PER_BUCKET else math.ceil(messages / ROWS_PER_LARGE_BUCKET)
        if buckets == 1:  # fits in one bucket: no need to split it first
            with progress.stage(f"Billing {messages:,} messages"):
                result = charges.bill(pl.scan_parquet(files), settings, con=con)
            ingest.write_frame(result, output)
            return PartitionedRun(messages=messages, buckets=1, charges=result.height)
        if buckets > RESCAN_BUCKETS_AT_MOST:
            with progress.stage(f"Splitting {messages:,} messages into {buckets:,} buckets"):
                split = con.read_parquet(files)
                if "group_id" not in split.columns:  # older canonical files: no group messages
                    split = split.project("*, NULL::VARCHAR AS group_id")
                split.create_view("messages_to_split")
                con.sql(query("bucket_messages"), params={"buckets": buckets}).write_parquet(
                    str(scratch / "messages"), partition_by=["bucket"], write_partition_columns=False
                )
        with progress.stage(f"Billing {messages:,} messages", total=buckets, unit="buckets") as step:
            for bucket in step.track(range(buckets)):
                _bill_bucket(scratch, bucket, _bucket_messages(scratch, files, bucket, buckets), settings)
        if any((scratch / "counted").glob("*.parquet")):
            with progress.stage("Deciding free tiers across buckets"):
                _decide_free_tiers(con, scratch)
        written = _write_output(scratch, buckets, Path(output))
        con.close()
        return PartitionedRun(messages=messages, buckets=buckets, charges=written)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _bucket_messages(scratch: Path, files: list[str], bucket: int, buckets: int) -> pl.LazyFrame | None:
    """A bucket's messages: a filtered scan of the input when there are few buckets, else the
    bucket's own files written by `queries/bucket_messages.sql` (None: no key fell into it)."""
    if buckets <= RESCAN_BUCKETS_AT_MOST:
        scan = pl.scan_parquet(files)
        key_hash = pl.struct(charges.key_columns("group_id" in scan.collect_schema().names())).hash()
        return scan.filter(key_hash % buckets == bucket)
    folder = scratch / "messages" / f"bucket={bucket}"
    return pl.scan_parquet(folder / "*.parquet") if folder.exists() else None


def _bill_bucket(scratch: Path, bucket: int, messages: pl.LazyFrame | None, settings: Settings) -> None:
    if messages is None:
        return
    candidates = charges.kernel(messages, settings)
    for kind, rows in (("candidates", candidates), ("counted", charges.counted_charges(candidates))):
        (scratch / kind).mkdir(exist_ok=True)
        rows.with_columns(bucket=pl.lit(bucket)).write_parquet(scratch / kind / f"{bucket}.parquet")


def _decide_free_tiers(con: duckdb.DuckDBPyConnection, scratch: Path) -> None:
    counted = sorted(str(p) for p in (scratch / "counted").glob("*.parquet"))
    con.read_parquet(counted).create_view("counted_charges")
    decided = con.sql(query("free_tiers"))
    decided.write_parquet(str(scratch / "decided"), partition_by=["bucket"], write_partition_columns=True)


def _write_output(scratch: Path, buckets: int, output: Path) -> int:
    """Each bucket's charges, with its free-tier decisions written back, in bucket order: read,
    decided and written as one stream, so that no bucket is held whole (the writer encodes on
    every core)."""
    parts = []
    for bucket in range(buckets):
        candidates = scratch / "candidates" / f"{bucket}.parquet"
        if not candidates.exists():
            continue
        part = pl.scan_parquet(candidates)
        decided = scratch / "decided" / f"bucket={bucket}"
        if decided.exists():
            part = charges.decide(part, pl.read_parquet(decided / "*.parquet"))
        parts.append(part)
    if not parts:
        ingest.write_frame(schema.empty_charges(), output)
        return 0
    ingest.write_frame(charges.finish(pl.concat(parts)), output)
    return pl.scan_parquet(sorted((scratch / "candidates").glob("*.parquet"))).select(pl.len()).collect().item()
