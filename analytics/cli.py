"""The `wa-analytics` command (contracts.md §4).

Each subcommand is a pair of small functions: `add_<name>_command(subcommands)` declares its
arguments and sets `run`, and `run_<name>(args) -> int` does the work through the package. To add
one, write the pair and append the first to `SUBCOMMANDS`; `add_input_arguments` and
`read_inputs` give it the same inputs, options and run summary as `ingest`.

Exit status: 0 success (rows may have been quarantined: the summary says how many and where); 2 bad
input or usage (`InputError`, `UsageError`, a command line argparse rejects), with
"wa-analytics: error: <message>"; 1 anything else, with "wa-analytics: internal error: <message>"
(`--debug` prints the traceback).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

import polars as pl

from analytics import __version__, charges, generate, ingest, partitioned, pricing, ratecards, rules
from analytics.errors import InputError, UsageError
from analytics.pseudonymise import key_from_env

PROG = "wa-analytics"
EXIT_OK, EXIT_INTERNAL, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of exiting, so every error leaves through `main`."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def main(argv: Sequence[str] | None = None) -> int:
    """Run `wa-analytics` with `argv` (default: the process's arguments); returns the exit status."""
    args = argparse.Namespace(debug=False)
    try:
        args = build_parser().parse_args(argv)
        return args.run(args)
    except SystemExit as exit_:  # --help, --version
        return exit_.code if isinstance(exit_.code, int) else EXIT_OK
    except (InputError, UsageError) as error:
        _say(f"{PROG}: error: {error}")
        return EXIT_USAGE
    except Exception as error:  # noqa: BLE001 - the last line of defence: a message, not a traceback
        if getattr(args, "debug", False):
            traceback.print_exc()
        _say(f"{PROG}: internal error: {error or type(error).__name__} (run with --debug for the traceback)")
        return EXIT_INTERNAL


def _say(text: str) -> None:
    print(text, file=sys.stderr)


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
    return common


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    """INPUT... and the options of reading them (ingest, and every subcommand that reads messages)."""
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="CSV, Parquet or JSON/JSONL (canonical or Meta webhooks)")
    parser.add_argument(
        "--send-log",
        metavar="CSV",
        help="message_id with message_type, template_name or template_category: fills the types of webhook statuses",
    )
    parser.add_argument(
        "--templates", metavar="JSON", help="Meta's template list (name, language, category), for webhook statuses"
    )
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


def read_inputs(args: argparse.Namespace, *, quarantine_path: str | None = None) -> ingest.Ingested:
    """Read the INPUTs as `add_input_arguments` declared them; print the run summary to stderr."""
    ingested = ingest.read_messages(
        args.inputs,
        send_log=args.send_log,
        templates=args.templates,
        timezone=_timezone(args),
        pseudonymise_key=key_from_env() if args.pseudonymise else None,
    )
    if ingested.summary.rows_quarantined and quarantine_path is not None:
        ingest.write_frame(ingested.quarantine, quarantine_path)
    _say(ingested.summary.format(quarantine_path=quarantine_path))
    return ingested


def _timezone(args: argparse.Namespace) -> str:
    """--timezone, else the config file's `[billing] timezone`, else UTC."""
    if args.timezone:
        return args.timezone
    if getattr(args, "config", None):
        return billing_config(args).timezone
    return "UTC"


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


def billing_config(args: argparse.Namespace) -> rules.BillingConfig:
    """The BillingConfig of a command line: the config file if any, then --timezone and --rules."""
    try:
        if args.config:
            return rules.BillingConfig.from_toml(args.config, timezone=args.timezone, rules=args.rules)
        return rules.BillingConfig(timezone=args.timezone or "UTC", rules=args.rules)
    except (OSError, ValueError, KeyError) as error:  # tomllib.TOMLDecodeError is a ValueError
        raise UsageError(f"{getattr(args, 'config', None) or 'options'}: {error}") from None


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
    ingested = read_inputs(args, quarantine_path=quarantine_path)
    ingest.write_frame(ingested.messages, args.output)
    if args.quarantine and not ingested.summary.rows_quarantined:
        ingest.write_frame(ingested.quarantine, args.quarantine)  # an asked-for file exists, even empty
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
    print(ingest.describe_traffic(ingested.messages, timezone=_timezone(args)).format(top_markets=args.top))
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
    parser.add_argument("-o", "--output", required=True, metavar="OUT", help="charges: .csv, .csv.gz or .parquet")
    parser.add_argument("--quarantine", metavar="FILE", help="quarantined input rows, CSV (default: OUT's name with .quarantine.csv)")
    parser.set_defaults(run=run_charges)


def run_charges(args: argparse.Namespace) -> int:
    ingest.output_suffix(args.output)
    config = billing_config(args)
    ingested = read_inputs(args, quarantine_path=args.quarantine or default_quarantine_path(args.output))
    if ingested.summary.rows_used <= partitioned.ROWS_PER_BUCKET:
        result = charges.bill(ingested.messages, config)
        ingest.write_frame(result, args.output)
        _say(charges.describe(result))
    else:  # larger than one bucket: billed bucket by bucket from a Parquet copy of the messages
        with tempfile.TemporaryDirectory(prefix="wa-analytics-") as scratch:
            messages, billed = Path(scratch) / "messages.parquet", Path(scratch) / "charges.parquet"
            ingest.write_frame(ingested.messages, messages)
            partitioned.bill_parquet([messages], billed, config, workdir=scratch)
            ingest.write_frame(pl.scan_parquet(billed), args.output)
            _say(charges.describe(pl.scan_parquet(billed)))
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
        "(see analytics/generate.py). Phone numbers are synthetic.",
    )
    parser.add_argument("--users", type=int, required=True, metavar="N")
    parser.add_argument("--start", type=_date, required=True, metavar="DATE", help="first day, YYYY-MM-DD")
    parser.add_argument("--months", type=int, required=True, metavar="M")
    parser.add_argument("--seed", type=int, default=0, metavar="S")
    parser.add_argument("--with-defects", action="store_true", help="append a few bad lines (CSV only) to show the quarantine")
    parser.add_argument("-o", "--output", required=True, metavar="FILE", help=".csv, .csv.gz or .parquet")
    parser.set_defaults(run=run_generate)


def run_generate(args: argparse.Namespace) -> int:
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
    parser.add_argument(
        "--rate-card", metavar="CSV", help="a rate card CSV, or a folder of them (default: the card shipped in data/rate_cards/)"
    )
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


def pricing_config(args: argparse.Namespace) -> pricing.PricingConfig:
    """The PricingConfig of a command line: the config file's [pricing] table if any, then the options."""
    overrides = {
        "rate_card": args.rate_card,
        "currency": args.currency,
        "markup_percent": args.markup_percent,
        "markup_per_charge": args.markup_per_charge,
        "report_unpriced": args.report_unpriced,
    }
    if args.config:
        try:
            return pricing.PricingConfig.from_toml(args.config, **overrides)
        except (OSError, ValueError, KeyError) as error:
            raise UsageError(f"{args.config}: {error}") from None
    return pricing.PricingConfig(**{k: v for k, v in overrides.items() if v is not None})


def run_costs(args: argparse.Namespace) -> int:
    ingest.output_suffix(args.output)
    if args.invoice:
        ingest.output_suffix(args.invoice)
    billing = billing_config(args)
    prices = pricing_config(args)
    card = ratecards.load_card(prices.rate_card)  # a bad card stops the run before the inputs are read
    ingested = read_inputs(args, quarantine_path=args.quarantine or default_quarantine_path(args.output))
    priced = pricing.price(charges.bill(ingested.messages, billing), billing, prices, card=card)
    ingest.write_frame(pricing.costs(priced), args.output)
    if args.invoice:
        ingest.write_frame(pricing.invoice(priced), args.invoice)
    card_name = str(prices.rate_card) if prices.rate_card else "the shipped card (data/rate_cards/)"
    _say(pricing.format_invoice(priced, prices, card_name=card_name))
    _say(f"Costs: {args.output}" + (f"; invoice lines: {args.invoice}" if args.invoice else ""))
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
    imported = ratecards.import_meta_card(
        args.rates, args.tiers, effective=args.effective, source=args.source, note=args.note, currency=args.currency
    )
    ratecards.write_card(imported.rows, args.output)
    _say(imported.format(args.output))
    return EXIT_OK


SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    add_ingest_command,
    add_summary_command,
    add_charges_command,
    add_costs_command,
    add_rate_card_command,
    add_generate_command,
]


if __name__ == "__main__":
    sys.exit(main())
