"""The `wa-analytics` command (contracts.md §4).

Each subcommand is a pair of small functions: `add_<name>_command(subcommands)` declares its
arguments and sets `run`, and `run_<name>(args) -> int` does the work through the package. To add
one, write the pair and append the first to `SUBCOMMANDS`; `add_input_arguments` and
`read_inputs` give it the same inputs, options and run summary as `ingest`.

Exit status: 0 success (rows may have been quarantined: the summary says how many and where); 2 bad
input or usage (`InputError`, `UsageError`, a command line argparse rejects), with
"wa-analytics: error: <message>"; 1 anything else, with "wa-analytics: internal error: <message>"
(`--debug` prints the traceback); 130 stopped by Ctrl-C (SIGINT), 143 by SIGTERM, with one line and
no half-written file left (`stop_on_signals`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn


def _stop_while_starting(number: int, _frame: object) -> None:
    os.write(2, f"wa-analytics: stopped by {signal.Signals(number).name} while starting; nothing was written\n".encode())
    os._exit(128 + number)


# The console script stops on SIGINT and SIGTERM from its first instant, before the second its imports
# take, and even when started with SIGINT ignored (`wa-analytics ... &` in a script: Python would keep
# ignoring it, and the run finish with exit 0); `main` then installs `stop_on_signals`.
if Path(sys.argv[0]).name == "wa-analytics" and threading.current_thread() is threading.main_thread():
    for _number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(_number, _stop_while_starting)

import polars as pl  # noqa: E402 - after the signal handlers: importing takes a second

from analytics import __version__  # noqa: E402
from analytics.bill import charges, partitioned  # noqa: E402
from analytics.core import outputs, progress, stages  # noqa: E402
from analytics.core.errors import InputError, UsageError, printable  # noqa: E402
from analytics.core.schema import CHARGE_SCHEMA  # noqa: E402
from analytics.pipeline.traffic import Traffic  # noqa: E402
from analytics.present import budget, invoice_text, reconciliation_text, summaries, whatif_text  # noqa: E402
from analytics.price import pricing  # noqa: E402
from analytics.read import ingest  # noqa: E402
from analytics.read.pseudonymise import key_from_env  # noqa: E402
from analytics.reconcile import meta_reports  # noqa: E402
from analytics.settings import BILLING_FIELDS, Settings  # noqa: E402
from analytics.terms import ratecards, rules  # noqa: E402
from analytics.whatif import projection, scenarios  # noqa: E402

PROG = "wa-analytics"
EXIT_OK, EXIT_INTERNAL, EXIT_USAGE = 0, 1, 2
EXIT_SIGNALLED = 128  # + the signal's number: 130 for SIGINT (Ctrl-C), 143 for SIGTERM
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of exiting, so every error leaves through `main`."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def main(argv: Sequence[str] | None = None) -> int:
    """Run `wa-analytics` with `argv` (default: the process's arguments, and then SIGINT and SIGTERM
    stop the process: `stop_on_signals`); returns the exit status."""
    args = argparse.Namespace(debug=False)
    if argv is None and threading.current_thread() is threading.main_thread():
        stop_on_signals()
    try:
        args = build_parser().parse_args(argv)
        with progress.shown(not getattr(args, "quiet", False)):  # stderr a terminal only: logs and pipes get none
            return args.run(args)
    except KeyboardInterrupt:  # Ctrl-C in a caller that kept Python's own handler (main(argv) in a test)
        _say(_stopped_line(signal.SIGINT))
        return EXIT_SIGNALLED + signal.SIGINT
    except SystemExit as exit_:  # --help, --version
        return exit_.code if isinstance(exit_.code, int) else EXIT_OK
    except (InputError, UsageError) as error:
        _say(f"{PROG}: error: {printable(error)}")
        return EXIT_USAGE
    except Exception as error:  # noqa: BLE001 - the last line of defence: a message, not a traceback
        if getattr(args, "debug", False):
            traceback.print_exc()
        _say(f"{PROG}: internal error: {printable(error) or type(error).__name__} (run with --debug for the traceback)")
        return EXIT_INTERNAL


def _say(text: str) -> None:
    sys.stderr.write(text + "\n")  # one write: print's two let a signal's line land after a line's text, before its end


# --- Signals ---------------------------------------------------------------------------------------

_stopping = threading.Lock()
_stderr = 2  # the terminal's stderr, kept apart: `report` points descriptor 2 at its kernels' log for a while


def stop_on_signals() -> None:
    """SIGINT (Ctrl-C) and SIGTERM end the process at once: temporaries removed (no half-written
    output survives, analytics/core/outputs.py), one line on stderr, exit 128 + the signal's number.

    Python's own handling failed twice: a KeyboardInterrupt raised wherever the main thread was
    printed a traceback, and a run started with SIGINT ignored (a background job of a script, which
    is how a Ctrl-C "4 s into a run" once finished with exit 0) kept ignoring it. Handlers are
    installed for both signals whatever they were. And Python runs a handler only when the main
    thread is between bytecodes, which it may not be while Polars or DuckDB work in native code: so
    the C-level handler's wake-up byte is read by a watcher thread, which stops the process itself;
    the Python handler does the same, should another library take the wake-up file descriptor.
    """
    global _stderr
    _stderr = os.dup(2)
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    for number in STOP_SIGNALS:
        signal.signal(number, lambda number, _frame: _stop(number))
    threading.Thread(target=_watch_signals, args=(read_end,), name="wa-analytics-signals", daemon=True).start()


def _watch_signals(read_end: int) -> None:
    while True:
        for number in os.read(read_end, 64):
            if number in STOP_SIGNALS:
                _stop(number)


def _stop(number: int) -> None:
    if not _stopping.acquire(blocking=False):  # the other path is already stopping the process
        return
    outputs.remove_temporaries()
    progress.abandon()  # the terminal left as it was: no half-drawn bar, the cursor shown
    os.write(_stderr, f"{_stopped_line(number)}\n".encode())  # not print: the main thread may hold sys.stderr's lock
    os._exit(EXIT_SIGNALLED + number)


def _stopped_line(number: int) -> str:
    name = signal.Signals(number).name + (" (Ctrl-C)" if number == signal.SIGINT else "")
    return f"{PROG}: stopped by {name}; no half-written file was left, outputs not yet written are unchanged"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="What WhatsApp Business Platform traffic costs under Meta's billing rules.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("--debug", action="store_true", help="print the traceback of an internal error")
    subcommands = parser.add_subparsers(title="subcommands", metavar="SUBCOMMAND", required=True)
    for add_command in SUBCOMMANDS:
        add_command(subcommands)
    return parser


def _common_options() -> argparse.ArgumentParser:
    """Options every subcommand takes after its name too (`wa-analytics ingest --debug ...`)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    common.add_argument(
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show no progress display on the terminal (the summary lines are printed all the same)",
    )
    return common


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    """INPUT... and the options of reading them (ingest, and every subcommand that reads messages)."""
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="CSV, Parquet or JSON/JSONL (canonical or Meta webhooks)")
    parser.add_argument(
        "--send-log",
        metavar="CSV",
        help="message_id with message_type, template_name or template_category: fills the types of webhook statuses",
    )
    parser.add_argument("--templates", metavar="JSON", help="Meta's template list (name, language, category), for webhook statuses")
    parser.add_argument(
        "--timezone",
        metavar="TZ",
        help="the WABA time zone that sets month and rule-set boundaries (IANA name; default UTC, or the config file's)",
    )
    parser.add_argument(
        "--pseudonymise",
        action="store_true",
        help="replace user ids and phones by keyed pseudonyms (key from WA_ANALYTICS_PSEUDONYM_KEY)",
    )
    parser.add_argument(
        "--latest-timestamp",
        metavar="WHEN",
        type=ingest.latest_option,
        help="quarantine messages later than this date (UTC, the whole day counts) or instant with an offset (default: the run's start plus one day)",
    )


def read_inputs(args: argparse.Namespace, *, quarantine_path: str | None = None, output: str | None = None) -> ingest.Ingested:
    """Read the INPUTs as `add_input_arguments` declared them; print the run summary to stderr.
    `output`: also write the canonical messages there, in the same pass (`ingest`)."""
    timezone, waba_timezones = _zones(args)
    ingested = ingest.read_messages(
        args.inputs,
        send_log=args.send_log,
        templates=args.templates,
        timezone=timezone,
        waba_timezones=waba_timezones,
        pseudonymise_key=key_from_env() if args.pseudonymise else None,
        latest=args.latest_timestamp,
        output=output,
    )
    if ingested.summary.rows_quarantined and quarantine_path is not None:
        ingest.write_frame(ingested.quarantine, quarantine_path, for_people=True)
    _say(summaries.format_ingest_summary(ingested.summary, quarantine_path=quarantine_path))
    return ingested


def _zones(args: argparse.Namespace) -> tuple[str, dict[str, str] | None]:
    """The time zone (--timezone, else the config file's `[billing] timezone`, else UTC) and the
    config file's per-WABA zones, the file read once."""
    if not getattr(args, "config", None):
        return args.timezone or "UTC", None
    settings = settings_of(args)
    return settings.timezone, settings.waba_timezones


# Options that name files the command reads: no output may be one of them.
_INPUT_OPTIONS = ("inputs", "send_log", "templates", "config", "rate_card", "scenarios", "analytics", "params", "input", "rates", "tiers")


def check_outputs(args: argparse.Namespace, given: dict[str, str | None], *, inputs: Sequence[object] = (), folders: Sequence[str] = ()) -> None:
    """Before any work (outputs.check): no output is an input (the files the options name, and
    `inputs`, e.g. the rate cards a scenario file names), another output, a folder (but `folders`),
    or in a folder that cannot be written. `given` maps how each output was given to its path."""
    read: list[object] = [*inputs]
    for name in _INPUT_OPTIONS:
        value = getattr(args, name, None)
        read += value if isinstance(value, list) else [value]
    outputs.check(given, [str(p) for p in read if isinstance(p, (str, Path))], folders=folders)


def _quarantine_option(args: argparse.Namespace, path: str) -> dict[str, str]:
    return {f"--quarantine {path}" if args.quarantine else f"the quarantine file {path} (beside -o)": path}


def add_billing_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of every billing subcommand (contracts.md §4), besides --timezone."""
    parser.add_argument(
        "--rules",
        metavar="NAME",
        choices=[r.name for r in rules.rule_sets()],
        help="apply one rule set to all traffic (what-if), instead of the one in force at each message",
    )
    parser.add_argument(
        "--config",
        metavar="TOML",
        help="a config file whose [billing] table sets timezone, per-WABA time zones, the FEP window and "
        "authentication-international (see the README); command-line options win",
    )


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """--engine and --spark-master (charges, costs): bill on this machine, or on Apache Spark (analytics/pipeline/spark.py)."""
    parser.add_argument(
        "--engine",
        choices=["local", "spark"],
        default="local",
        help="local (default): this machine; spark: Apache Spark, for canonical Parquet files or directories "
        "(as `ingest` writes them) and, for charges, a Parquet directory as OUT (pip install 'wa-analytics[spark]')",
    )
    parser.add_argument("--spark-master", default="local[*]", metavar="URL", help="the Spark master of --engine spark (default local[*])")


def _spark_inputs_only(args: argparse.Namespace) -> None:
    """--engine spark reads canonical Parquet: the options of reading other formats belong to `ingest`."""
    given = [f"--{name.replace('_', '-')}" for name in ("send_log", "templates", "pseudonymise", "quarantine") if getattr(args, name, None)]
    if given:
        raise UsageError(
            f"--engine spark reads canonical Parquet and takes no {', '.join(given)}: run `{PROG} ingest` with "
            f"{'it' if len(given) == 1 else 'them'} first, then --engine spark on the Parquet it writes"
        )


def settings_of(args: argparse.Namespace) -> Settings:
    """The one `Settings` of a command line: the config file's if any, then the options this
    command has (--timezone, --rules, --rate-card, --currency, the markups, --report-unpriced) win."""
    overrides = {
        name: getattr(args, name, None)
        for name in ("timezone", "rules", "rate_card", "currency", "markup_percent", "markup_per_charge", "report_unpriced")
    }
    config = getattr(args, "config", None)
    try:
        if config:
            return Settings.from_toml(config, **overrides)
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except (OSError, ValueError, KeyError) as error:  # tomllib.TOMLDecodeError is a ValueError
        raise UsageError(f"{config or 'options'}: {error}") from None


# --- ingest ----------------------------------------------------------------------------------------


def add_ingest_command(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser(
        "ingest",
        parents=[_common_options()],
        help="read and validate messages, write canonical messages",
        description="Read messages in any supported format, validate them (bad rows go to a quarantine "
        "file with their line and reason), and write canonical messages (contracts.md §1).",
    )
    add_input_arguments(parser)
    parser.add_argument("-o", "--output", required=True, metavar="OUT", help="canonical messages: .csv, .csv.gz or .parquet")
    parser.add_argument(
        "--quarantine",
        metavar="FILE",
        help="quarantined rows, CSV (default: OUT's name with .quarantine.csv, written only when rows are quarantined)",
    )
    parser.set_defaults(run=run_ingest)


def run_ingest(args: argparse.Namespace) -> int:
    ingest.output_suffix(args.output)
    quarantine_path = args.quarantine or default_quarantine_path(args.output)
    if ingest.output_suffix(quarantine_path) not in ingest.CSV_SUFFIXES:
        raise UsageError(f"the quarantine file '{quarantine_path}' must be CSV (.csv or .csv.gz)")
    check_outputs(args, {f"-o {args.output}": args.output, **_quarantine_option(args, quarantine_path)})
    ingested = read_inputs(args, quarantine_path=quarantine_path, output=args.output)
    if args.quarantine and not ingested.summary.rows_quarantined:
        ingest.write_frame(ingested.quarantine, args.quarantine, for_people=True)  # an asked-for file exists, even empty
    _say(f"Canonical messages: {args.output}")
    return EXIT_OK


def default_quarantine_path(output: str) -> str:
    """`out/messages.parquet` -> `out/messages.quarantine.csv`."""
    path = Path(output)
    stem = path.name[: -len(ingest.output_suffix(output))]
    return str(path.with_name(f"{stem}.quarantine.csv"))


# --- summary ---------------------------------------------------------------------------------------


def add_summary_command(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser(
        "summary",
        parents=[_common_options()],
        help="print what the traffic holds: period, numbers, users, markets, messages by month",
        description="Read messages (any supported format) and print a summary of the traffic.",
    )
    add_input_arguments(parser)
    parser.add_argument("--top", type=int, default=5, metavar="N", help="markets to list (default 5)")
    parser.set_defaults(run=run_summary)


def run_summary(args: argparse.Namespace) -> int:
    ingested = read_inputs(args)
    print(summaries.format_traffic(ingest.describe_traffic(ingested.messages, timezone=_zones(args)[0]), top_markets=args.top))
    return EXIT_OK


# --- charges ---------------------------------------------------------------------------------------


def add_charges_command(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser(
        "charges",
        parents=[_common_options()],
        help="bill messages under Meta's rules: one row per conversation or charged message",
        description="Read messages, replay them through Meta's billing rules of each period (or --rules), "
        "and write the charges table (contracts.md §2): one row per conversation (CBP) or delivered "
        "message (PMP), free ones included.",
    )
    add_input_arguments(parser)
    add_billing_arguments(parser)
    add_engine_arguments(parser)
    parser.add_argument(
        "-o", "--output", required=True, metavar="OUT", help="charges: .csv, .csv.gz or .parquet (--engine spark: also a Parquet directory)"
    )
    parser.add_argument("--quarantine", metavar="FILE", help="quarantined input rows, CSV (default: OUT's name with .quarantine.csv)")
    parser.set_defaults(run=run_charges)


def run_charges(args: argparse.Namespace) -> int:
    if args.engine == "spark":
        return run_charges_on_spark(args)
    ingest.output_suffix(args.output)
    quarantine_path = args.quarantine or default_quarantine_path(args.output)
    check_outputs(args, {f"-o {args.output}": args.output, **_quarantine_option(args, quarantine_path)})
    settings = settings_of(args)
    ingested = read_inputs(args, quarantine_path=quarantine_path)
    if ingested.summary.rows_used <= partitioned.ROWS_PER_BUCKET:
        with progress.stage(f"Billing {ingested.summary.rows_used:,} messages"):
            result = charges.bill(ingested.messages, settings)
        ingest.write_frame(result, args.output, metadata=_charges_marker(result.height, settings))
        _say(summaries.describe_charges(result, settings))
        _say(summaries.describe_fep_windows(ingested.messages, result, settings))
    else:  # larger than one bucket: billed bucket by bucket from a Parquet copy of the messages (a stage file is one)
        with outputs.scratch_folder() as scratch:
            messages, billed = Path(ingested.stage_file or Path(scratch) / "messages.parquet"), Path(scratch) / "charges.parquet"
            if ingested.stage_file is None:
                ingest.write_frame(ingested.messages, messages)
            partitioned.bill_parquet([messages], billed, settings, workdir=scratch)
            rows = pl.scan_parquet(billed).select(pl.len()).collect().item()
            ingest.write_frame(pl.scan_parquet(billed), args.output, metadata=_charges_marker(rows, settings))
            _say(summaries.describe_charges(pl.scan_parquet(billed), settings))
            _say(summaries.describe_fep_windows(ingested.messages, pl.scan_parquet(billed), settings))
    _say(f"Charges: {args.output}")
    return EXIT_OK


def _charges_marker(rows: int, settings: Settings) -> dict[str, str]:
    """The marker of a charges file (analytics/core/stages.py): the settings that billed it, so that
    `costs` can take the file instead of the messages."""
    return stages.metadata(stages.CHARGES, rows, settings=stages.settings_of(settings, BILLING_FIELDS))


def read_charges_file(args: argparse.Namespace, settings: Settings) -> pl.DataFrame | None:
    """The charges of a file `charges -o x.parquet` wrote, when it is the one INPUT, else None (messages).
    Refused (exit 2) when the settings given differ from those it was billed with."""
    if len(args.inputs) != 1:
        return None
    path = args.inputs[0]
    marker = stages.read_marker(path)
    if marker is None or marker["kind"] != stages.CHARGES:
        return None
    stages.check(path, marker, stages.CHARGES, CHARGE_SCHEMA)
    given = [f"--{name.replace('_', '-')}" for name in ("send_log", "templates", "pseudonymise", "latest_timestamp") if getattr(args, name, None)]
    if given:
        raise UsageError(f"{path} holds charges, billed already: {', '.join(given)} apply to reading messages; give the messages instead")
    differing = stages.differing_settings(marker, settings, BILLING_FIELDS)
    if differing:
        raise InputError(
            f"was billed with other settings than this run's: {', '.join(differing)}",
            path=path,
            fix="Give the options and config file it was billed with, or give the messages to bill them again",
        )
    _say(f"Read {marker['rows']:,} charges from {path} (written by {PROG} charges, with the same settings): not billed again.")
    return pl.read_parquet(path)


def run_charges_on_spark(args: argparse.Namespace) -> int:
    """`charges --engine spark`: canonical Parquet in, charges out (one file, or a Parquet directory)."""
    from analytics.pipeline import spark

    _spark_inputs_only(args)
    if not spark.is_directory_output(args.output):
        ingest.output_suffix(args.output)
    if "://" not in args.output:  # a local path; a cluster's storage is Spark's to check
        check_outputs(args, {f"-o {args.output}": args.output}, folders=[f"-o {args.output}"])
    run = spark.bill_files(args.inputs, args.output, settings_of(args), master=args.spark_master)
    _say(run.summary)
    _say(f"Charges: {args.output}")
    return EXIT_OK


# --- generate --------------------------------------------------------------------------------------


def add_generate_command(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser(
        "generate",
        parents=[_common_options()],
        help="write realistic synthetic traffic (an Italian retailer), deterministic for a seed",
        description="Write synthetic canonical messages: support sessions, order notifications, OTP bursts, "
        "marketing waves, Click-to-WhatsApp entries, failed deliveries and webhook-style duplicates "
        "(see analytics/synthetic/generate.py). Phone numbers are synthetic.",
    )
    parser.add_argument("--users", type=int, required=True, metavar="N")
    parser.add_argument("--start", type=_date, required=True, metavar="DATE", help="first day, YYYY-MM-DD")
    parser.add_argument("--months", type=int, required=True, metavar="M")
    parser.add_argument("--seed", type=int, default=0, metavar="S")
    parser.add_argument("--with-defects", action="store_true", help="append a few bad lines (CSV only) to show the quarantine")
    parser.add_argument("-o", "--output", required=True, metavar="FILE", help=".csv, .csv.gz or .parquet")
    parser.set_defaults(run=run_generate)


def run_generate(args: argparse.Namespace) -> int:
    from analytics.synthetic import generate  # imports pyarrow: a second of every other command's start under load

    check_outputs(args, {f"-o {args.output}": args.output})
    if ingest.output_suffix(args.output) == ".parquet" and not args.with_defects:
        rows = generate.generate_to_parquet(args.output, users=args.users, start=args.start, months=args.months, seed=args.seed)
    else:
        frame = generate.generate_traffic(users=args.users, start=args.start, months=args.months, seed=args.seed)
        generate.write_traffic(frame, args.output, with_defects=args.with_defects)
        rows = frame.height
    _say(f"{rows:,} messages written to {args.output}")
    return EXIT_OK


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date: write it as YYYY-MM-DD") from None


# --- costs -----------------------------------------------------------------------------------------


def add_costs_command(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser(
        "costs",
        parents=[_common_options()],
        help="bill and price messages: cost per month, market, category and pricing type",
        description="Read messages, bill them like `charges`, price every charge with a rate card (the rate in "
        "force at its date in the WABA time zone, volume tiers, a provider's markup) and write one row per "
        "month, market, category and pricing type (contracts.md §4); print an invoice-style summary.",
    )
    add_input_arguments(parser)
    add_billing_arguments(parser)
    add_engine_arguments(parser)
    parser.add_argument("--rate-card", metavar="CSV", help="a rate card CSV, or a folder of them (default: the card shipped in data/rate_cards/)")
    parser.add_argument("--currency", metavar="CUR", help="the card's currency to price in (default: the one that prices everything)")
    parser.add_argument("--markup-percent", metavar="P", help="a provider's markup on every billable charge, in percent")
    parser.add_argument("--markup-per-charge", metavar="AMOUNT", help="a provider's fixed amount per billable charge")
    parser.add_argument(
        "--report-unpriced",
        action="store_true",
        default=None,
        help="report billable charges without a rate as unpriced lines instead of failing",
    )
    parser.add_argument("-o", "--output", required=True, metavar="OUT", help="the cost roll-up: .csv, .csv.gz or .parquet")
    parser.add_argument("--invoice", metavar="FILE", help="also write invoice lines (month, WABA, number, category, market)")
    parser.add_argument("--quarantine", metavar="FILE", help="quarantined input rows, CSV (default: OUT's name with .quarantine.csv)")
    parser.set_defaults(run=run_costs)


def run_costs(args: argparse.Namespace) -> int:
    ingest.output_suffix(args.output)
    if args.invoice:
        ingest.output_suffix(args.invoice)
    settings = settings_of(args)
    quarantine_path = args.quarantine or default_quarantine_path(args.output)
    check_outputs(
        args,
        {
            f"-o {args.output}": args.output,
            f"--invoice {args.invoice}": args.invoice,
            **(_quarantine_option(args, quarantine_path) if args.engine == "local" else {}),
        },
        inputs=[settings.rate_card],
    )
    card = ratecards.load_card(settings.rate_card)  # a bad card stops the run before the inputs are read
    if args.engine == "spark":  # billed, priced and summed on Spark; the exact sums come back
        from analytics.pipeline import spark

        _spark_inputs_only(args)
        partials = spark.cost_partials_of_files(args.inputs, settings, card=card, master=args.spark_master)
    else:
        billed = read_charges_file(args, settings)
        if billed is None:
            ingested = read_inputs(args, quarantine_path=quarantine_path)
            with progress.stage(f"Billing {ingested.summary.rows_used:,} messages"):
                billed = charges.bill(ingested.messages, settings)
        with progress.stage(f"Pricing {billed.height:,} charges"):
            if settings.budgets:  # the budget's projection needs every charge's cost and time
                priced = pricing.price(billed, settings, card=card)
                partials = pricing.cost_partials(priced)
            else:
                partials = pricing.cost_partials_of_charges(billed, settings, card=card)
    ingest.write_frame(pricing.costs_from_partials(partials), args.output)
    if args.invoice:
        ingest.write_frame(pricing.invoice_from_partials(partials), args.invoice, for_people=True)
    card_name = str(settings.rate_card) if settings.rate_card else "the shipped card (data/rate_cards/)"
    _say(invoice_text.format_invoice_from_partials(partials, settings, card_name=card_name))
    if settings.budgets and args.engine == "spark":
        _say("Budgets: not checked with --engine spark (run costs on this machine, or Traffic.budget(), for the projection)")
    elif settings.budgets:
        _say(budget.format_budget(budget.budget_status(priced, settings)) or "Budgets: none applies to the month of the last charge")
    _say(f"Costs: {args.output}" + (f"; invoice lines: {args.invoice}" if args.invoice else ""))
    return EXIT_OK


# --- templates -------------------------------------------------------------------------------------


def add_templates_command(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser(
        "templates",
        parents=[_common_options()],
        help="cost by template and month, and the templates Meta billed in another category than written",
        description="Read messages (templates named by a template_name column, or --send-log / --templates with "
        "webhooks), bill and price them like `costs`, and write one row per month, template and category with "
        "charges, billable charges and cost; write the templates billed in another category than the one written "
        "(Meta's pricing objects, template_category_update webhooks among the inputs) with what the difference "
        "cost to --recategorised.",
    )
    add_input_arguments(parser)
    add_billing_arguments(parser)
    parser.add_argument("--rate-card", metavar="CSV", help="a rate card CSV, or a folder of them (default: the card shipped in data/rate_cards/)")
    parser.add_argument("--currency", metavar="CUR", help="the card's currency to price in (default: the one that prices everything)")
    parser.add_argument("--markup-percent", metavar="P", help="a provider's markup on every billable charge, in percent")
    parser.add_argument("--markup-per-charge", metavar="AMOUNT", help="a provider's fixed amount per billable charge")
    parser.add_argument(
        "--report-unpriced", action="store_true", default=None, help="count billable charges without a rate, without a cost, instead of failing"
    )
    parser.add_argument("-o", "--output", required=True, metavar="OUT", help="cost by month, template and category: .csv, .csv.gz or .parquet")
    parser.add_argument(
        "--recategorised",
        metavar="FILE",
        help="templates billed in another category, with the cost difference (default: OUT's name with .recategorised.csv)",
    )
    parser.add_argument("--quarantine", metavar="FILE", help="quarantined input rows, CSV (default: OUT's name with .quarantine.csv)")
    parser.set_defaults(run=run_templates)


def run_templates(args: argparse.Namespace) -> int:
    ingest.output_suffix(args.output)
    recategorised = args.recategorised or _beside(args.output, "recategorised")
    ingest.output_suffix(recategorised)
    settings = settings_of(args)
    quarantine_path = args.quarantine or default_quarantine_path(args.output)
    given = f"--recategorised {recategorised}" if args.recategorised else f"the recategorised templates {recategorised} (beside -o)"
    check_outputs(
        args, {f"-o {args.output}": args.output, given: recategorised, **_quarantine_option(args, quarantine_path)}, inputs=[settings.rate_card]
    )
    ratecards.load_card(settings.rate_card)  # a bad card stops the run before the inputs are read
    traffic = Traffic.from_ingested(args.inputs, read_inputs(args, quarantine_path=quarantine_path), settings)
    with progress.stage("Pricing by template"):
        answer = traffic.template_costs()
    ingest.write_frame(answer.by_month, args.output)
    ingest.write_frame(answer.recategorised, recategorised, for_people=True)
    _say(answer.describe())
    _say(f"Cost by template: {args.output}; recategorised templates: {recategorised}")
    return EXIT_OK


# --- rate-card -------------------------------------------------------------------------------------


def add_rate_card_command(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser(
        "rate-card",
        parents=[_common_options()],
        help="rate cards: import the CSV files Meta publishes",
        description="Rate cards (contracts.md §3; data/rate_cards/README.md).",
    )
    actions = parser.add_subparsers(title="actions", metavar="ACTION", required=True)
    importer = actions.add_parser(
        "import",
        parents=[_common_options()],
        help="Meta's rate and volume-tier CSVs into a rate card",
        description="Read the list-rate CSV and, optionally, the volume-tier CSV Meta publishes on its pricing "
        "page (any currency, as downloaded) and write them as a rate card effective from DATE.",
    )
    importer.add_argument("rates", metavar="RATES.csv", help="Meta's list rates")
    importer.add_argument("tiers", nargs="?", metavar="TIERS.csv", help="Meta's volume tiers")
    importer.add_argument("--effective", type=_date, required=True, metavar="DATE", help="first day of the card, YYYY-MM-DD")
    importer.add_argument("--currency", metavar="CUR", help="ISO code, for a currency token the importer does not know")
    importer.add_argument("--source", metavar="TEXT", help="the card's source column (default: the file names)")
    importer.add_argument("--note", metavar="TEXT", help="the card's note column, e.g. 'trust A; Meta's CSV verbatim'")
    importer.add_argument("-o", "--output", required=True, metavar="CARD.csv")
    importer.set_defaults(run=run_rate_card_import)


def run_rate_card_import(args: argparse.Namespace) -> int:
    check_outputs(args, {f"-o {args.output}": args.output})
    imported = ratecards.import_meta_card(
        args.rates, args.tiers, effective=args.effective, source=args.source, note=args.note, currency=args.currency
    )
    ratecards.write_card(imported.rows, args.output)
    _say(summaries.format_imported_card(imported, args.output))
    return EXIT_OK


# --- compare and project ---------------------------------------------------------------------------


def _add_scenario_arguments(parser: argparse.ArgumentParser) -> None:
    """What `compare` and `project` share: inputs, billing and pricing defaults, outputs."""
    add_input_arguments(parser)
    add_billing_arguments(parser)
    parser.add_argument("--rate-card", metavar="CSV", help="the rate card of scenarios that name none (default: the shipped card)")
    parser.add_argument("--currency", metavar="CUR", help="the currency of scenarios that name none (default: the baseline's)")
    parser.add_argument("-o", "--output", required=True, metavar="OUT", help="one row per scenario, month and category")
    parser.add_argument("--explanations", metavar="FILE", help="what each scenario changed (default: OUT's name with .explanations.csv)")
    parser.add_argument("--quarantine", metavar="FILE", help="quarantined input rows, CSV (default: OUT's name with .quarantine.csv)")
    parser.set_defaults(markup_percent=None, markup_per_charge=None, report_unpriced=None)


def _beside(output: str, what: str) -> str:
    """`out/compare.csv` -> `out/compare.<what>.csv`."""
    path = Path(output)
    return str(path.with_name(f"{path.name[: -len(ingest.output_suffix(output))]}.{what}.csv"))


def _explanations_option(args: argparse.Namespace, path: str) -> dict[str, str]:
    return {f"--explanations {path}" if args.explanations else f"the explanations file {path} (beside -o)": path}


def add_compare_command(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser(
        "compare",
        parents=[_common_options()],
        help="what the traffic would cost under other strategies, rules or rate cards",
        description="Read messages, run the scenarios of a TOML file (strategies, rules, rate card, currency, "
        "growth; see the README) through the same billing and pricing, and write one row per scenario, month "
        "and category with the difference from the scenario named baseline.",
    )
    _add_scenario_arguments(parser)
    parser.add_argument("--scenarios", required=True, metavar="TOML", help="the scenario file")
    parser.set_defaults(run=run_compare)


def run_compare(args: argparse.Namespace) -> int:
    ingest.output_suffix(args.output)
    explained = args.explanations or _beside(args.output, "explanations")
    settings = settings_of(args)
    loaded = scenarios.load_scenarios(args.scenarios)  # a bad scenario file stops the run before the inputs are read
    quarantine_path = args.quarantine or default_quarantine_path(args.output)
    check_outputs(
        args,
        {f"-o {args.output}": args.output, **_explanations_option(args, explained), **_quarantine_option(args, quarantine_path)},
        inputs=[settings.rate_card, *(s.rate_card for s in loaded)],
    )
    cards = scenarios.load_cards(loaded, settings)
    ingested = read_inputs(args, quarantine_path=quarantine_path)
    comparison = scenarios.compare(ingested.messages, loaded, settings, cards=cards)
    ingest.write_frame(comparison.table, args.output)
    ingest.write_frame(comparison.explanations, explained, for_people=True)
    _say(whatif_text.format_comparison(comparison))
    _say(f"Comparison: {args.output}; explanations: {explained}")
    return EXIT_OK


def add_project_command(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser(
        "project",
        parents=[_common_options()],
        help="what the next months will cost: recent history replayed forward, per scenario, with a back-tested band",
        description="Read messages, replay recent history forward (same weekday and hour, the same month a year "
        "earlier when the history has it), apply each scenario, bill and price under the rules and rates in force "
        "in each future month, and write one row per scenario, month and category with cost_low and cost_high "
        "from a back-test on the same history.",
    )
    _add_scenario_arguments(parser)
    parser.add_argument("--months", type=int, required=True, metavar="N", help="months to project")
    parser.add_argument("--scenarios", metavar="TOML", help="the scenario file (default: the baseline alone)")
    parser.add_argument(
        "--history-months",
        type=int,
        default=projection.DEFAULT_HISTORY_MONTHS,
        metavar="K",
        help=f"recent months averaged when the same month a year earlier is not in the history (default {projection.DEFAULT_HISTORY_MONTHS})",
    )
    parser.add_argument("--backtest", metavar="FILE", help="the back-test's errors (default: OUT's name with .backtest.csv)")
    parser.add_argument("--no-backtest", action="store_true", help="skip the back-test (no band)")
    parser.set_defaults(run=run_project)


def run_project(args: argparse.Namespace) -> int:
    ingest.output_suffix(args.output)
    explained, checked = args.explanations or _beside(args.output, "explanations"), args.backtest or _beside(args.output, "backtest")
    settings = settings_of(args)
    loaded = scenarios.load_scenarios(args.scenarios) if args.scenarios else [scenarios.Scenario(scenarios.BASELINE)]
    quarantine_path = args.quarantine or default_quarantine_path(args.output)
    written = {f"-o {args.output}": args.output, **_explanations_option(args, explained), **_quarantine_option(args, quarantine_path)}
    if not args.no_backtest:
        written[f"--backtest {checked}" if args.backtest else f"the back-test file {checked} (beside -o)"] = checked
    check_outputs(args, written, inputs=[settings.rate_card, *(s.rate_card for s in loaded)])
    cards = scenarios.load_cards(loaded, settings)
    ingested = read_inputs(args, quarantine_path=quarantine_path)
    projected = projection.project(
        ingested.messages,
        loaded,
        months=args.months,
        settings=settings,
        history_months=args.history_months,
        run_backtest=not args.no_backtest,
        cards=cards,
    )
    ingest.write_frame(projected.table, args.output)
    ingest.write_frame(projected.comparison.explanations, explained, for_people=True)
    if projected.backtest is not None:
        ingest.write_frame(projected.backtest.errors, checked)
    _say(whatif_text.format_projection(projected, settings.timezone))
    _say(f"Projection: {args.output}; explanations: {explained}" + (f"; back-test: {checked}" if projected.backtest else ""))
    return EXIT_OK


# --- reconcile -------------------------------------------------------------------------------------


def add_reconcile_command(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser(
        "reconcile",
        parents=[_common_options()],
        help="compare our charges with what Meta reported: per message, conversation and analytics bucket",
        description="Read traffic as `ingest` does (webhooks carry Meta's pricing and conversation objects), bill it, "
        "and compare it with every item Meta reported: pricing objects in status webhooks, Gupshup message and "
        "billing events, and conversation_analytics / pricing_analytics responses (--analytics). Write one row "
        "per item with status (match, missing_ours, missing_meta, different), reason and explanation; print the "
        "agreement rate by category.",
    )
    add_input_arguments(parser)
    add_billing_arguments(parser)
    parser.add_argument(
        "--analytics",
        nargs="+",
        action="extend",
        default=[],
        metavar="FILE",
        help="Meta's reports, JSON or JSONL: Graph API conversation_analytics or pricing_analytics responses, "
        "Gupshup message and billing events (v2, v3); give them after the INPUTs",
    )
    parser.add_argument("--rate-card", metavar="CSV", help="the rate card that prices our side of the analytics (default: the shipped card)")
    parser.add_argument("--currency", metavar="CUR", help="the currency to price in (default: the analytics' currency, else the card's)")
    parser.add_argument("-o", "--output", required=True, metavar="OUT", help="one row per item compared: .csv, .csv.gz or .parquet")
    parser.add_argument("--quarantine", metavar="FILE", help="quarantined input rows, CSV (default: OUT's name with .quarantine.csv)")
    parser.set_defaults(run=run_reconcile, markup_percent=None, markup_per_charge=None, report_unpriced=None)


def run_reconcile(args: argparse.Namespace) -> int:
    ingest.output_suffix(args.output)
    quarantine_path = args.quarantine or default_quarantine_path(args.output)
    check_outputs(args, {f"-o {args.output}": args.output, **_quarantine_option(args, quarantine_path)})
    settings = settings_of(args)
    reports = meta_reports.read_reports(args.analytics)  # bad report files stop the run before the inputs are read
    traffic = Traffic.from_ingested(args.inputs, read_inputs(args, quarantine_path=quarantine_path), settings)
    skipped = [f"not read from the --analytics files: {what} ({count:,})" for what, count in sorted(reports.skipped.items())]
    # Gupshup's v3 billing events arrive in Meta's envelope, among the webhook traffic: ingest skips them, the reconciliation reads them.
    result = traffic.reconcile(reports, notes=skipped)
    ingest.write_frame(result.rows, args.output, for_people=True)
    _say(reconciliation_text.format_summary(result))
    if args.rules:
        _say(f"Note: billed under --rules {args.rules} (what-if); Meta billed under the rules in force at each message.")
    _say(f"Reconciliation: {args.output}")
    return EXIT_OK


# --- report ----------------------------------------------------------------------------------------


def add_report_command(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser(
        "report",
        parents=[_common_options()],
        help="the monthly report: run the report notebooks and render one HTML file",
        description="Run the report notebooks (notebooks/reports: volumes, costs, strategies and projection, "
        "reconciliation) on the input for one month with papermill, and render them as one HTML file without "
        "code, charts embedded as images: it renders offline and in a mail client. Without --input, the "
        "shipped synthetic sample. A failing notebook stops the run, names the notebook and cell, and keeps "
        "the executed notebook beside OUT.",
    )
    parser.add_argument(
        "--input", nargs="+", action="extend", default=[], metavar="FILE", help="traffic as for `ingest` (default: the shipped sample)"
    )
    parser.add_argument(
        "--month", required=True, metavar="YYYY-MM", help="the report month, or 'previous' (the month before today, for scheduled runs)"
    )
    parser.add_argument(
        "--params", metavar="FILE", help="TOML of notebook parameters: timezone, currency, rate_card, scenarios_file, months_ahead, ..."
    )
    parser.add_argument("--keep-notebooks", metavar="DIR", help="also keep the executed notebooks in DIR")
    parser.add_argument(
        "--work-dir",
        metavar="DIR",
        help="keep the prepared state (the input read and billed once for every notebook: Parquet files and run.json) "
        "in DIR; default: a temporary folder removed at the end",
    )
    parser.add_argument("-o", "--output", required=True, metavar="REPORT.html")
    parser.set_defaults(run=run_report_command)


def run_report_command(args: argparse.Namespace) -> int:
    from analytics.present import report

    report.require_extras()
    parameters = report.read_params(args.params) if args.params else {}
    for path in args.input:
        if not Path(path).exists():
            raise UsageError(f"--input {path}: no such file")
    check_outputs(
        args,
        {
            f"-o {args.output}": args.output,
            f"--keep-notebooks {args.keep_notebooks}": args.keep_notebooks,
            f"--work-dir {args.work_dir}": args.work_dir,
            # the files prepared there: never an input (`--input out/messages.parquet --work-dir out`)
            **{f"--work-dir {Path(args.work_dir) / name}": str(Path(args.work_dir) / name) for name in report.PREPARED_FILES if args.work_dir},
        },
        inputs=[parameters.get("rate_card"), parameters.get("scenarios_file"), *(parameters.get("input_paths") or [])],
        folders=[f"--keep-notebooks {args.keep_notebooks}", f"--work-dir {args.work_dir}"],
    )
    try:
        written = report.run_report(
            args.output,
            month=args.month,
            input_paths=args.input or None,
            parameters=parameters,
            keep_notebooks=args.keep_notebooks,
            parameters_file=args.params,
            work_dir=args.work_dir,
        )
    except report.NotebookFailed as failure:
        _say(f"{PROG}: report failed: {failure}")
        return EXIT_INTERNAL
    _say(f"Report: {written}")
    return EXIT_OK


SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    add_ingest_command,
    add_summary_command,
    add_charges_command,
    add_costs_command,
    add_templates_command,
    add_rate_card_command,
    add_generate_command,
    add_compare_command,
    add_project_command,
    add_reconcile_command,
    add_report_command,
]


if __name__ == "__main__":
    sys.exit(main())
