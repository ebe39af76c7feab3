"""Billing on Apache Spark: the local engine's kernel on whole keys, the monthly counters in Spark SQL.

For traffic that outgrows one machine (billions of messages as partitioned Parquet in a lake), the
same rules run on the engine users already have, without a second implementation of them:

1. **Per key, the local kernel.** Keys are independent except for the monthly counters
   (billing-rules.md §2 Key), so the messages are hash-partitioned by (`business_phone`,
   `user_id`, or `group_id` for a group message), sorted by key inside each partition, and handed through Arrow (`mapInArrow`) to
   `charges.kernel`, the very function `charges.bill` and `analytics.bill.partitioned` call. It puts
   each chunk's messages in §2 order itself. A partition is cut into chunks of about
   `ROWS_PER_CHUNK` messages at key boundaries, so a Python worker holds one chunk, however large
   its partition is.
2. **Across keys, the same SQL.** The free tiers of §3.3, §4.4 and §5 count charges per WABA or
   business number per month: `queries/free_tiers.sql`, the file DuckDB runs for the local engine,
   runs here as a Spark SQL window (partitioned by the counter, its scope and the month), after
   two mechanical dialect changes (`spark_dialect`). Only the charges a counter decides go
   through it; their other columns pass through as one struct.
3. **Costs, where the charges are.** `price` runs the stages of `pricing.price` on Spark, none
   rewritten: `pricing.priceable` (local date and month, portfolio, tier family) in each
   partition's Python worker through `mapInArrow`, persisted; the volume-tier counter of
   contracts.md §3 as `queries/tier_positions.sql`, the file DuckDB runs for `pricing.price`, as
   a Spark SQL window partitioned by portfolio, market, family and month (only the charges a
   counter counts are shuffled for it; the others pass by, the card's tiered markets are a
   broadcast join); then `pricing.priced_rows` (rate lookup, markup, exact decimal cost) per
   partition again, with the card's rows in the currency (a few thousand) shipped to every task.
   The currency, when not given, is chosen on the driver from the distinct (market, category,
   local date) of billable charges. `costs` and `cost_partials` price and sum each partition
   in its worker (`pricing.cost_partials`: exact sums, no rounding) and bring only the sums to
   the driver, which rounds once (`pricing.costs_from_partials`); no charge leaves the
   executors. A billable charge without a rate raises `pricing.MissingRateError` with the local
   engine's message, built from a few collected rows.

Why `repartition` + `sortWithinPartitions` + `mapInArrow`, measured with Spark 4.3 in local mode
on 2 cores (a machine shared with other work, so within perhaps 20%):

- `groupBy(business_phone, user_id).applyInArrow(kernel)`: one kernel call per key, each with a
  fixed cost of about 20 ms. 10,000 messages (6,282 keys) took 138 s, against 1.3 s to 4.3 s
  the other ways; 972,303 messages (42,331 keys) would take a quarter of an hour.
- `repartition` + `mapInArrow`, one kernel call per whole partition: 6.6 s for the kernel stage
  on 972,303 messages, as fast as the next way. But a partition must then fit in a Python
  worker's memory, whatever partition count a notebook or Spark's adaptive execution chooses.
- `repartition` + `sortWithinPartitions` + `mapInArrow`, partitions cut into chunks of whole keys
  (`whole_key_chunks`): 6.6 s at 972,303 messages; at 9.7 M the sort adds 10 to 14 s to a 16 to
  21 s shuffle, a tenth of the whole run. It buys a worker's memory bounded by one chunk, however
  large or few the partitions: this is what runs.

The output is the charges table of contracts.md §2 with the local engine's values, in Spark's
order (`bill_files` sorts a file like `charges.bill`, and each part file of a directory by key
and time). pyspark is an optional dependency (`pip install 'wa-analytics[spark]'`): this module
imports it only when called, and says how to install it when it is missing.
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl
import pyarrow as pa

from analytics.bill import charges
from analytics.core import outputs, progress, schema
from analytics.core.errors import InputError, UsageError
from analytics.core.resources import query
from analytics.present import summaries
from analytics.price import pricing
from analytics.settings import Settings
from analytics.terms.ratecards import load_card

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

INSTALL = "pip install 'wa-analytics[spark]'"
DEFAULT_MASTER = "local[*]"
DEFAULT_DRIVER_MEMORY = "4g"
# billing-rules.md §2 Key: `billing_key` is the user, or the group of a group message (whose
# participants must meet in one kernel call); a group and a user of the same id share a chunk, harmlessly.
KEY = ("business_phone", "billing_key")
# Messages handed to the kernel at once: its fixed cost per call is amortised well before 1 M, and
# a worker then peaks near 300 MB (the kernel's ~260 bytes a message, analytics/bill/partitioned.py).
ROWS_PER_CHUNK = 1_000_000
# Messages per Spark partition: enough partitions to keep every core busy and retries cheap.
ROWS_PER_PARTITION = 2_000_000

# What the kernel hands over for each charge candidate (`charges.CANDIDATE_SCHEMA`: the charge
# columns of contracts.md §2 but `billable`, decided once the counters have run, and what the
# counters need), with plain strings where the kernel keeps codes.
CANDIDATE_COLUMNS: dict[str, pl.DataType] = {
    name: pl.String() if isinstance(dtype, pl.Categorical | pl.Enum) else dtype for name, dtype in charges.CANDIDATE_SCHEMA.items()
}
CHARGE_COLUMNS = [c for c in schema.CHARGE_SCHEMA if c != "billable"]
_SPARK_TYPES = {pl.String(): "string", schema.INSTANT: "timestamp", pl.Int64(): "bigint", pl.Date(): "date", pl.Boolean(): "boolean"}


# --------------------------------------------------------------------------------------------
# A Spark session for the command line and the benchmarks (a notebook brings its own).


def require_pyspark() -> None:
    """pyspark, or a UsageError that says how to install it."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        raise UsageError(
            f"the Spark engine needs pyspark, which is not installed: {INSTALL} (pyspark 4.0 or later, with Java 17 or later on PATH or in JAVA_HOME)"
        ) from None


def session(master: str = DEFAULT_MASTER, *, driver_memory: str = DEFAULT_DRIVER_MEMORY) -> SparkSession:
    """A Spark session configured as billing needs: UTC session time zone (timestamps show as
    the local engine writes them; the charges do not depend on it, since instants cross Arrow as
    instants), Arrow for Python data exchange, and Parquet timestamps written as UTC microseconds.

    In local mode the Python workers are this interpreter, which has polars and this package."""
    require_pyspark()
    from pyspark.sql import SparkSession

    if master.startswith("local"):
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.master(master)
        .appName("wa-analytics")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        # Parquet timestamps as UTC instants in microseconds (contracts.md), not Spark's legacy INT96.
        .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
        .config("spark.driver.memory", driver_memory)
        .config("spark.ui.showConsoleProgress", "false")
    )
    try:
        spark = builder.getOrCreate()
    except Exception as error:  # the JVM did not start: most often no Java
        raise UsageError(
            f"Spark did not start ({str(error).splitlines()[0] if str(error) else type(error).__name__}): "
            "it needs Java 17 or later on PATH or in JAVA_HOME"
        ) from None
    spark.sparkContext.setLogLevel("ERROR")
    return spark


# --------------------------------------------------------------------------------------------
# Canonical messages in.


def read_messages(spark: SparkSession, inputs: Sequence[str | Path]) -> DataFrame:
    """Canonical messages (contracts.md §1) from Parquet files or directories of them, as
    `wa-analytics ingest` writes them (validated and deduplicated: this engine does neither)."""
    paths = []
    for item in inputs:
        text = str(item)
        if "://" not in text:
            path = Path(text)
            if not path.exists():
                raise InputError("no such file or directory", path=text)
            if path.is_file() and not path.name.lower().endswith(".parquet"):
                raise UsageError(
                    f"{text}: the Spark engine reads canonical messages as Parquet files or directories; "
                    f"run `wa-analytics ingest {text} -o messages.parquet` first and give it that"
                )
        paths.append(text)
    try:
        frame = spark.read.parquet(*paths)
    except Exception as error:  # noqa: BLE001 - Spark's analysis errors, named for the user
        raise InputError(f"cannot read as Parquet ({str(error).splitlines()[0]})", path=", ".join(paths)) from None
    return conform_messages(frame, where=", ".join(paths))


def conform_messages(messages: DataFrame, *, where: str = "messages") -> DataFrame:
    """The canonical columns the kernel reads, optional ones filled with nulls; an InputError
    names what is missing or of the wrong type."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import LongType, StringType, TimestampType

    types = dict(messages.dtypes)
    missing = [c for c in schema.REQUIRED_MESSAGE_COLUMNS if c not in types]
    if missing:
        raise InputError(
            f"missing required column {', '.join(missing)}",
            path=where,
            fix="Give canonical messages (contracts.md §1), as `wa-analytics ingest` writes them",
        )
    if types["timestamp"] != "timestamp":
        raise InputError(
            f"column timestamp is {types['timestamp']}, not an instant with time zone",
            path=where,
            fix="Write the messages with `wa-analytics ingest`, which reads and checks timestamps",
        )
    return messages.select(
        [
            (F.col(c) if c in types else F.lit(None))
            .cast(TimestampType() if t == schema.INSTANT else LongType() if t == pl.Int64() else StringType())
            .alias(c)
            for c, t in schema.MESSAGE_SCHEMA.items()
        ]
    )


# --------------------------------------------------------------------------------------------
# Charges.


def bill(messages: DataFrame, settings: Settings | None = None, *, partitions: int | None = None) -> DataFrame:
    """Charges (contracts.md §2) for canonical messages: the same rows as `charges.bill`, as a
    Spark DataFrame in no particular order. The kernel's candidates are persisted (memory, then
    disk), because the counted and the uncounted ones are read separately. `partitions`: how
    many hash partitions of keys; by default one per `ROWS_PER_PARTITION` messages, at least one
    per core, from a count of the messages (an extra pass over them: give it to skip that)."""
    from pyspark import StorageLevel

    candidates = charge_candidates(messages, settings, partitions=partitions).persist(StorageLevel.MEMORY_AND_DISK)
    return apply_free_tiers(candidates)


def charge_candidates(messages: DataFrame, settings: Settings | None = None, *, partitions: int | None = None) -> DataFrame:
    """`charges.kernel` on whole keys: messages hash-partitioned by key, sorted by key within each
    partition, and billed chunk by chunk (module docstring). `free_tier_counter` names the monthly
    counter that still has to decide a candidate's pricing type."""
    settings = settings or Settings()
    from pyspark.sql import functions as F

    messages = conform_messages(messages).withColumn(KEY[1], F.coalesce(F.col("group_id"), F.col("user_id")))
    if partitions is None:
        parallelism = messages.sparkSession.sparkContext.defaultParallelism
        partitions = max(parallelism, math.ceil(messages.count() / ROWS_PER_PARTITION))
    keyed = messages.repartition(partitions, *KEY).sortWithinPartitions(*KEY)

    def bill_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for chunk in whole_key_chunks(batches, ROWS_PER_CHUNK):
            yield from candidates_as_arrow(charges.kernel(chunk, settings)).to_batches()

    return keyed.mapInArrow(bill_partition, spark_ddl(CANDIDATE_COLUMNS))


def whole_key_chunks(batches: Iterator[pa.RecordBatch], rows: int) -> Iterator[pl.DataFrame]:
    """Messages sorted by key, regrouped into frames of at least `rows` messages (the last may be
    smaller) that never split a key: a batch boundary may fall inside a key, a chunk's may not."""
    pending: list[pl.DataFrame] = []
    held = 0
    for batch in batches:
        if batch.num_rows == 0:
            continue
        pending.append(pl.from_arrow(pa.Table.from_batches([batch])))  # type: ignore[arg-type]
        held += batch.num_rows
        if held < rows:
            continue
        frame = pl.concat(pending, rechunk=False)
        last = frame.select(pl.col(k).last() for k in KEY).row(0)
        tail = frame.select(((pl.col(KEY[0]) == last[0]) & (pl.col(KEY[1]) == last[1])).sum()).item()
        if tail == frame.height:  # one key larger than a chunk: keep gathering it
            pending = [frame]
            continue
        yield frame.head(frame.height - tail)
        pending, held = [frame.tail(tail)], tail
    if held:
        yield pl.concat(pending)


def candidates_as_arrow(candidates: pl.DataFrame) -> pa.Table:
    """The kernel's candidates in `CANDIDATE_COLUMNS`' columns and Arrow types (plain strings)."""
    return as_spark_arrow(candidates, CANDIDATE_COLUMNS)


def apply_free_tiers(candidates: DataFrame) -> DataFrame:
    """Charges with every pricing type decided: the candidates a monthly counter decides go
    through `queries/free_tiers.sql` in Spark SQL (a window per counter, scope and month, in
    delivery order); the others are final. `billable` is true only for `regular` (contracts.md
    §2). The query reads the temporary view `counted_charges`, registered and dropped here."""
    from pyspark.sql import functions as F

    spark = candidates.sparkSession
    kept = [c for c in CHARGE_COLUMNS if c != "pricing_type" and c in candidates.columns]
    counted = candidates.filter(F.col("free_tier_counter").isNotNull()).select(
        "free_tier_counter",
        "free_tier_scope",
        "local_month",
        "free_units",
        "beyond_free_tier",
        F.col("pricing_type").alias("placed_as"),
        *pricing.DELIVERY_ORDER,
        F.struct(*kept).alias("charge"),  # passes through the query as one column
    )
    counted.createOrReplaceTempView("counted_charges")
    decided = spark.sql(spark_dialect(query("free_tiers")))
    spark.catalog.dropTempView("counted_charges")
    uncounted = candidates.filter(F.col("free_tier_counter").isNull()).select(*kept, "pricing_type")
    billed = uncounted.unionByName(decided.select("charge.*", "pricing_type"))

    def column(name: str):  # an extension column the kernel does not produce is null
        return F.col(name) if name in billed.columns else F.lit(None).cast(spark_type(schema.CHARGE_SCHEMA[name])).alias(name)

    return billed.select(
        *[column(c) for c in CHARGE_COLUMNS[: CHARGE_COLUMNS.index("pricing_type") + 1]],
        (F.col("pricing_type") == "regular").alias("billable"),
        *[column(c) for c in CHARGE_COLUMNS[CHARGE_COLUMNS.index("pricing_type") + 1 :]],
    )


def spark_dialect(sql: str) -> str:
    """A DuckDB query of `queries/` in Spark SQL: `$name` parameters become `:name` (Spark's named
    parameter markers) and `* EXCLUDE (...)` becomes `* EXCEPT (...)`. The queries use nothing
    else that differs; the tests run the free-tier query on both engines and compare."""
    return re.sub(r"\*\s+EXCLUDE\s*\(", "* EXCEPT (", re.sub(r"\$([A-Za-z_]\w*)", r":\1", sql))


def to_polars(charges_frame: DataFrame) -> pl.DataFrame:
    """A Spark charges DataFrame on the driver, in contracts.md §2 types, sorted like `charges.bill`."""
    return schema.conform_charges(pl.from_arrow(charges_frame.toArrow()))  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Costs.


def price(
    charges_frame: DataFrame,
    settings: Settings | None = None,
    *,
    card: pl.DataFrame | None = None,
) -> DataFrame:
    """Spark charges with what each costs: `pricing.price`'s rows (`pricing.PRICED_SCHEMA`), as a
    Spark DataFrame in no particular order, priced where they are (module docstring, point 3).

    A billable charge without a rate raises `pricing.MissingRateError`, as locally, unless
    `report_unpriced`: finding out is one pass over the charges before this returns. The charges
    with their local dates, months and portfolios are persisted (memory, then disk): the
    currency, the counter and that pass read them, and the caller's next pass starts from them.
    """
    settings = settings or Settings()
    positioned, rates, currency = _tier_positioned(charges_frame, settings, card)
    priced = _priced_rows(positioned, rates, settings, currency)
    if not settings.report_unpriced:
        _raise_if_unpriced(priced, currency, settings)
    return priced.select(*pricing.PRICED_SCHEMA)


def costs(
    charges_frame: DataFrame,
    settings: Settings | None = None,
    *,
    card: pl.DataFrame | None = None,
) -> DataFrame:
    """contracts.md §4: the cost roll-up of Spark charges (`pricing.costs`), as a Spark DataFrame."""
    partials = cost_partials(charges_frame, settings, card=card)
    return charges_frame.sparkSession.createDataFrame(pricing.costs_from_partials(partials).to_arrow())


def cost_partials(
    charges_frame: DataFrame,
    settings: Settings | None = None,
    *,
    card: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """`pricing.cost_partials` of Spark charges, on the driver: each partition's charges are priced
    and summed in its Python worker, and only the sums (a few thousand rows) come back, for
    `pricing.costs_from_partials`, `invoice_from_partials` and `present.invoice_text.format_invoice_from_partials`.
    A billable charge without a rate raises `pricing.MissingRateError` unless `report_unpriced`
    (its message costs another pass, made only then)."""
    settings = settings or Settings()
    positioned, rates, currency = _tier_positioned(charges_frame, settings, card)

    def sum_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for chunk in frames_of(batches, PRICING_ROWS_PER_CHUNK):
            priced = pricing.priced_rows(chunk, rates, settings, currency)
            yield from as_spark_arrow(pricing.cost_partials(priced), pricing.PARTIAL_SCHEMA).to_batches()

    summed = positioned.mapInArrow(sum_partition, spark_ddl(pricing.PARTIAL_SCHEMA))
    partials = pl.from_arrow(summed.toArrow()).cast(pricing.PARTIAL_SCHEMA)  # type: ignore[union-attr]
    if not settings.report_unpriced and not partials["priced"].all():
        _raise_if_unpriced(_priced_rows(positioned, rates, settings, currency), currency, settings)
    return partials  # type: ignore[return-value]


# Charges a Python worker prices at once: the lookups' fixed cost per call is amortised well
# before this, and a chunk's priced rows stay near 100 MB.
PRICING_ROWS_PER_CHUNK = 250_000


def _tier_positioned(charges_frame: DataFrame, settings: Settings, card: pl.DataFrame | None) -> tuple[DataFrame, pl.DataFrame, str | None]:
    """Stages 1 and 2 of `pricing.price` on Spark: `pricing.priceable` per partition (persisted:
    the counter and the currency read it), the currency chosen on the driver, then
    `queries/tier_positions.sql` as a Spark SQL window. Also the card's rows in that currency."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    card = load_card(settings.rate_card) if card is None else card
    pricing.require_charge_columns(charges_frame.columns)

    def priceable_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for chunk in frames_of(batches, PRICING_ROWS_PER_CHUNK):
            yield from as_spark_arrow(pricing.priceable(chunk, settings), pricing.PRICEABLE_SCHEMA).to_batches()

    priceable = (
        charges_frame.select(*schema.CHARGE_SCHEMA)
        .mapInArrow(priceable_partition, spark_ddl(pricing.PRICEABLE_SCHEMA))
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    currency = settings.currency
    if currency is None:
        # The distinct (market, category, local date) of billable charges: small, and needed only
        # when the card has several currencies to choose from.
        needed = pl.DataFrame(schema={k: pricing.PRICEABLE_SCHEMA[k] for k in pricing.RATE_KEYS})
        if card["currency"].n_unique() > 1:
            keys = priceable.filter(F.col("billable")).select(*pricing.RATE_KEYS).distinct()
            needed = pl.from_arrow(keys.toArrow()).cast(needed.schema)  # type: ignore[union-attr]
        currency = pricing.choose_currency(needed, card)  # type: ignore[arg-type]
    rates = pricing.rates_in(card, currency)
    tiered = pricing.tiered_families(rates)
    if tiered.height == 0:
        return priceable.withColumn("tier_position", F.lit(None).cast("bigint")), rates, currency
    spark = charges_frame.sparkSession
    # Dropping a view uncaches what has its plan, even under a no-op projection; a filter keeps the cache.
    priceable.filter(F.lit(True)).createOrReplaceTempView("priceable_charges")
    spark.createDataFrame(as_spark_arrow(tiered, {"market": pl.String(), "family": pl.String()})).createOrReplaceTempView("tiered_families")
    positioned = spark.sql(spark_dialect(query("tier_positions")))
    spark.catalog.dropTempView("priceable_charges")
    spark.catalog.dropTempView("tiered_families")
    return positioned, rates, currency


def _priced_rows(positioned: DataFrame, rates: pl.DataFrame, settings: Settings, currency: str | None) -> DataFrame:
    """Stage 3 of `pricing.price` on Spark: `pricing.priced_rows` per partition, with the card's
    rows in the currency (a few thousand) shipped to every task."""

    def price_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for chunk in frames_of(batches, PRICING_ROWS_PER_CHUNK):
            priced = pricing.priced_rows(chunk, rates, settings, currency)
            yield from as_spark_arrow(priced, pricing.PRICED_ROW_SCHEMA).to_batches()

    return positioned.mapInArrow(price_partition, spark_ddl(pricing.PRICED_ROW_SCHEMA))


def _raise_if_unpriced(priced: DataFrame, currency: str | None, settings: Settings) -> None:
    """`pricing.missing_rate_error` for priced Spark rows, as locally: the groups of unpriced charges
    and the first of them in delivery order come to the driver (a few rows)."""
    from pyspark.sql import functions as F

    unpriced = priced.filter(F.col("billable") & F.col("rate").isNull())
    groups = unpriced.groupBy("market", "category").agg(
        F.count(F.lit(1)).alias("charges"), F.min("local_date").alias("first_date"), F.max("local_date").alias("last_date")
    )
    counted = pl.from_arrow(groups.toArrow())
    if counted.height == 0:  # type: ignore[union-attr]
        return
    first = pl.from_arrow(unpriced.orderBy(*pricing.DELIVERY_ORDER).limit(1).toArrow())
    first = first.with_columns(pl.col("started_at").dt.convert_time_zone("UTC"))  # type: ignore[union-attr]
    raise pricing.missing_rate_error(first, counted, currency, settings)  # type: ignore[arg-type]


def frames_of(batches: Iterator[pa.RecordBatch], rows: int) -> Iterator[pl.DataFrame]:
    """Arrow batches regrouped into Polars frames of at least `rows` rows (the last may be smaller)."""
    pending: list[pa.RecordBatch] = []
    held = 0
    for batch in batches:
        if batch.num_rows == 0:
            continue
        pending.append(batch)
        held += batch.num_rows
        if held >= rows:
            yield pl.from_arrow(pa.Table.from_batches(pending))  # type: ignore[misc]
            pending, held = [], 0
    if held:
        yield pl.from_arrow(pa.Table.from_batches(pending))  # type: ignore[misc]


def spark_ddl(columns: dict[str, pl.DataType]) -> str:
    """A Spark DDL schema for Polars columns of the types this package uses."""
    return ", ".join(f"{name} {spark_type(dtype)}" for name, dtype in columns.items())


def spark_type(dtype: pl.DataType) -> str:
    if isinstance(dtype, pl.Decimal):
        return f"decimal({dtype.precision},{dtype.scale})"
    return _SPARK_TYPES[dtype]


def as_spark_arrow(frame: pl.DataFrame, columns: dict[str, pl.DataType]) -> pa.Table:
    """`frame`'s `columns` in their Polars types, as Arrow that Spark reads (plain strings)."""
    table = frame.select(pl.col(c).cast(t) for c, t in columns.items()).to_arrow()
    return table.cast(pa.schema([f.with_type(pa.string()) if pa.types.is_large_string(f.type) else f for f in table.schema]))


# --------------------------------------------------------------------------------------------
# The command line: `wa-analytics charges|costs --engine spark`.


def is_directory_output(output: str | Path) -> bool:
    """OUT is a Parquet directory when it exists as one, ends in '/', or has no file extension."""
    text = str(output)
    return text.endswith("/") or Path(text).is_dir() or not Path(text).suffix


@dataclass(frozen=True)
class SparkRun:
    charges: int
    summary: str  # `summaries.describe_charges` of the charges written


def bill_files(inputs: Sequence[str | Path], output: str | Path, settings: Settings | None = None, *, master: str = DEFAULT_MASTER) -> SparkRun:
    """Bill canonical-message Parquet (files or directories) on Spark into `output`: a Parquet
    directory (each part file sorted by key and time, as `analytics.bill.partitioned` sorts its
    buckets: no global sort of every charge) or one `.parquet`/`.csv`/`.csv.gz` file sorted like
    `charges.bill` (Spark writes the parts, Polars sorts and joins them)."""
    if not master.startswith("local") and not is_directory_output(output):
        raise UsageError(
            f"on a cluster ({master}) the executors write the charges: give OUT as a Parquet directory on storage "
            f"they share (e.g. s3://bucket/charges/), not the file {output}"
        )
    spark = session(master)  # no display meanwhile: the JVM's start-up lines go to descriptor 2 and would cut through it
    with _kernel_errors(), progress.stage("Billing on Spark"):
        billed = bill(read_messages(spark, inputs), settings).sortWithinPartitions(*schema.CHARGE_ORDER)
        if is_directory_output(output):
            if "://" in str(output):  # a cluster's storage: Spark's own commit protocol
                billed.write.mode("overwrite").parquet(str(output))
            else:
                with outputs.atomic_folder(output) as partial:
                    billed.write.parquet(str(partial))
            written = pl.scan_parquet(str(output).rstrip("/") + "/*.parquet")  # also s3://... and the like
            return SparkRun(charges=written.select(pl.len()).collect().item(), summary=summaries.describe_charges(written, settings or Settings()))
        from analytics.read import ingest

        ingest.output_suffix(output)
        with outputs.scratch_folder(prefix=".wa-analytics-spark-", folder=Path(output).parent) as scratch:
            billed.write.mode("overwrite").parquet(str(scratch / "charges"))
            parts = sorted((scratch / "charges").glob("part-*.parquet"))
            written = pl.scan_parquet(parts) if parts else schema.empty_charges().lazy()
            ingest.write_frame(written.sort(schema.CHARGE_ORDER), output)
            return SparkRun(charges=written.select(pl.len()).collect().item(), summary=summaries.describe_charges(written, settings or Settings()))


def cost_partials_of_files(
    inputs: Sequence[str | Path],
    settings: Settings | None = None,
    *,
    card: pl.DataFrame | None = None,
    master: str = DEFAULT_MASTER,
) -> pl.DataFrame:
    """Bill and price canonical-message Parquet on Spark; on the driver only the exact sums of
    `pricing.cost_partials`, from which `wa-analytics costs` writes costs, invoice and summary."""
    spark = session(master)
    with _kernel_errors(), progress.stage("Billing and pricing on Spark"):
        return cost_partials(bill(read_messages(spark, inputs), settings), settings, card=card)


class _kernel_errors:
    """The kernel's refusals (e.g. a message before 2022-02-01) reach the driver wrapped in a
    Python worker's traceback: raise them as the InputError they are."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type | None, error: BaseException | None, _tb: object) -> bool:
        if error is None or isinstance(error, InputError | UsageError):
            return False
        found = re.findall(r"^ValueError: (.+)$", str(error), flags=re.MULTILINE)
        if found:
            raise InputError(found[-1]) from None
        if "spark.driver.maxResultSize" in str(error):
            raise UsageError(
                "the charges are larger than spark.driver.maxResultSize allows the driver to collect: raise it "
                "(e.g. spark.driver.maxResultSize 8g in spark-defaults.conf, with spark.driver.memory above it)"
            ) from None
        return False
