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
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from analytics import __version__, ingest
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
    parser.add_argument("--timezone", metavar="TZ", default="UTC", help="the WABA time zone (IANA name; default UTC)")
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
        timezone=args.timezone,
        pseudonymise_key=key_from_env() if args.pseudonymise else None,
    )
    if ingested.summary.rows_quarantined and quarantine_path is not None:
        ingest.write_frame(ingested.quarantine, quarantine_path)
    _say(ingested.summary.format(quarantine_path=quarantine_path))
    return ingested


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
    print(ingest.describe_traffic(ingested.messages, timezone=args.timezone).format(top_markets=args.top))
    return EXIT_OK


SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [add_ingest_command, add_summary_command]


if __name__ == "__main__":
    sys.exit(main())
