"""Reports: what the report notebooks start from, and the monthly HTML report that runs them.

Two halves, one module, because they share the notebooks' parameters:

- **For the notebooks** (`notebooks/reports/*.ipynb`): `load_traffic` reads the input (the shipped
  synthetic sample when none is given), bills it up to the end of the report month and returns
  what every notebook needs (`Traffic`), or reads it from a folder `prepare` wrote. The notebooks
  hold no other logic: roll-ups come from `analytics.present.rollups`, charts from
  `analytics.present.charts`.
- **For schedulers** (`wa-analytics report`): `run_report` reads and bills the input once into a
  working folder (`prepare`), executes each report notebook on it with papermill, two at a time,
  with the same parameters for all (`REPORT_NOTEBOOKS`), and renders them into one HTML
  file without code, charts embedded as PNG images made by vl-convert (`chart_format = "png"`), so
  the file renders offline and in a mail client, fetching nothing. A notebook that fails stops the
  run with its name, the failing cell and the error, and the executed notebook is kept beside the
  output for a look.

Parameters a notebook does not declare are refused, so a typo in `--params` is an error, not a
silently ignored setting. Paths in a parameters file are relative to that file.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import importlib
import json
import os
import re
import shutil
import sys
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl

from analytics import config_schema
from analytics.bill import charges
from analytics.config_schema import Value
from analytics.core import outputs, progress
from analytics.core.errors import InputError, UsageError
from analytics.core.resources import resource
from analytics.core.text import plural
from analytics.read import ingest
from analytics.read.ingest import IngestSummary, InputFile, UnknownMarkets
from analytics.reconcile import matching as reconcile
from analytics.reconcile import meta_reports, outcomes
from analytics.settings import Settings
from analytics.synthetic import meta_billing
from analytics.terms import ratecards

# In the order the report shows them.
REPORT_NOTEBOOKS = ("01_conversation_volumes", "02_costs", "03_strategies_and_projection", "04_reconciliation", "05_templates_and_budget")
SAMPLE = ("data", "sample", "messages.csv.gz")
SCENARIOS = ("examples", "scenarios.toml")
# Parameters that name files: relative to the parameters file they are written in.
PATH_PARAMETERS = frozenset({"input_paths", "analytics_paths", "rate_card", "scenarios_file", "config_file", "send_log", "templates"})
PREVIOUS = "previous"
# Report notebooks run two at a time (a report runs on small servers: two cores, memory for two
# kernels holding the traffic); those that take longest on large inputs are started first.
NOTEBOOKS_AT_ONCE = 2
LONGEST_NOTEBOOKS = frozenset({"03_strategies_and_projection"})  # bills the traffic again for every scenario and projected month


# --- The report month ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    """A calendar month in a time zone: `start` inclusive and `end` exclusive, as UTC instants."""

    month: str  # YYYY-MM
    timezone: str
    start: dt.datetime
    end: dt.datetime

    @property
    def first_day(self) -> dt.date:
        return dt.date.fromisoformat(f"{self.month}-01")


def report_month(text: str, timezone: str = "UTC", *, today: dt.date | None = None) -> str:
    """`YYYY-MM` as given, or the month before today's (in `timezone`) for `previous`."""
    if text == PREVIOUS:
        today = today or dt.datetime.now(ZoneInfo(timezone)).date()
        last = today.replace(day=1) - dt.timedelta(days=1)
        return f"{last.year:04d}-{last.month:02d}"
    try:
        dt.date.fromisoformat(f"{text}-01")
    except ValueError:
        raise UsageError(f"--month {text!r}: expected YYYY-MM (e.g. 2026-10) or 'previous'") from None
    if len(text) != 7:
        raise UsageError(f"--month {text!r}: expected YYYY-MM (e.g. 2026-10) or 'previous'")
    return text


def period(month: str, timezone: str = "UTC") -> Period:
    """The report month `month` (YYYY-MM) in `timezone`."""
    month = report_month(month, timezone)
    zone = ZoneInfo(timezone)
    first = dt.date.fromisoformat(f"{month}-01")
    following = (first.replace(day=28) + dt.timedelta(days=4)).replace(day=1)

    def instant(day: dt.date) -> dt.datetime:
        return dt.datetime.combine(day, dt.time(), zone).astimezone(dt.UTC)

    return Period(month=month, timezone=timezone, start=instant(first), end=instant(following))


# --- What the notebooks start from -----------------------------------------------------------------


@dataclass
class Traffic:
    """The input up to the end of the report month: messages, their charges and Meta's own view.

    `messages` and `charges` hold everything before `period.end` (charges by their start), so a
    chart over time shows the history that led to the month. `meta_pricing` holds the `pricing`
    and `conversation` objects of webhook inputs (meta_reports.PRICING_SCHEMA), empty for others.
    """

    messages: pl.DataFrame
    charges: pl.DataFrame
    settings: Settings
    period: Period
    summary: IngestSummary
    quarantine: pl.LazyFrame  # read only by a notebook that needs it (reconciliation): it rescans the input
    meta_pricing: pl.DataFrame
    sources: tuple[str, ...]
    is_sample: bool

    def in_month(self, frame: pl.DataFrame, column: str = "started_at") -> pl.DataFrame:
        """The rows of `frame` whose `column` (an instant) falls in the report month."""
        return frame.filter((pl.col(column) >= self.period.start) & (pl.col(column) < self.period.end))

    def describe(self) -> str:
        """Where the figures come from, in a sentence or two, for the top of a report."""
        what = "the shipped synthetic sample" if self.is_sample else ", ".join(Path(s).name for s in self.sources)
        first = self.messages["timestamp"].min()
        history = f" History from {first:%Y-%m-%d}." if first is not None else ""
        return (
            f"Report month {self.period.month} ({self.period.timezone}), from {what}: "
            f"{self.summary.rows_used:,} messages used, {self.summary.duplicates_dropped:,} repeats dropped, "
            f"{self.summary.rows_quarantined:,} rows quarantined.{history}"
        )


def load_traffic(
    input_paths: Sequence[str | Path] | None = None,
    *,
    month: str,
    timezone: str | None = None,
    rules_name: str | None = None,
    config_file: str | Path | None = None,
    send_log: str | Path | None = None,
    templates: str | Path | None = None,
    work_dir: str | Path | None = None,
) -> Traffic:
    """Read `input_paths` (default: the shipped sample), bill them and keep what precedes the end
    of the report month `month` (YYYY-MM or `previous`) in `timezone`.

    `timezone` and `rules_name` (one rule set for all traffic) override `config_file`'s `[billing]`
    table (Settings); without either, UTC and the rules in force at each message.
    `work_dir` is a folder `prepare` wrote with the same parameters (`wa-analytics report` passes
    its working folder to every notebook): the traffic is read from its stage files instead of
    being read and billed again.
    """
    parameters = traffic_parameters(
        input_paths, month=month, timezone=timezone, rule_set=rules_name, config_file=config_file, send_log=send_log, templates=templates
    )
    if work_dir is not None:
        return read_prepared(work_dir, parameters)
    return read_and_bill(parameters)


# The notebook parameters that decide the traffic every report notebook starts from (`load_traffic`).
TRAFFIC_PARAMETERS = ("input_paths", "month", "timezone", "rule_set", "config_file", "send_log", "templates")


def traffic_parameters(input_paths: Sequence[str | Path] | None = None, *, month: str, **options: str | Path | None) -> dict[str, object]:
    """`load_traffic`'s arguments as plain JSON values, named as the notebooks' parameters
    (TRAFFIC_PARAMETERS; unset is None): what a prepared folder records and is checked against."""
    plain: dict[str, object] = {"input_paths": [str(p) for p in input_paths] if input_paths else None, "month": month}
    plain |= {name: str(value) if value else None for name, value in options.items()}
    return {name: plain.get(name) for name in TRAFFIC_PARAMETERS}


def _settings_of(parameters: Mapping[str, object]) -> Settings:
    overrides = {k: v for k, v in (("timezone", parameters["timezone"]), ("rules", parameters["rule_set"])) if v}
    config_file = parameters["config_file"]
    return Settings.from_toml(config_file, **overrides) if config_file else Settings(**overrides)  # type: ignore[arg-type]


def read_and_bill(parameters: Mapping[str, object], *, quarantine: bool = False, month_option: str = "month") -> Traffic:
    """The traffic of `parameters` (`traffic_parameters`), read and billed. `quarantine` reads the
    quarantined rows now, in the same pass as the messages, instead of leaving them to a rescan;
    `month_option` is how the month was given, for the message when nothing precedes its end."""
    settings = _settings_of(parameters)
    sample = Path(str(resource(*SAMPLE))).resolve()
    paths = list(parameters["input_paths"] or [str(sample)])  # type: ignore[call-overload]
    is_sample = all(Path(p).resolve() == sample for p in paths)
    the_period = period(str(parameters["month"]), settings.timezone)
    ingested = ingest.read_messages(
        paths,
        send_log=parameters["send_log"],
        templates=parameters["templates"],  # type: ignore[arg-type]
        timezone=settings.timezone,
        waba_timezones=settings.waba_timezones,
    )
    before_end = ingested.messages.filter(pl.col("timestamp") < the_period.end)
    if quarantine:
        messages, set_aside = pl.collect_all([before_end, ingested.quarantine])
        quarantined = set_aside.lazy()
    else:
        messages, quarantined = before_end.collect(), ingested.quarantine
    if messages.height == 0:
        raise InputError(
            f"no messages before the end of {the_period.month} ({settings.timezone}) in {', '.join(paths)}: choose a later {month_option}"
        )
    billed = charges.bill(messages, settings)
    return Traffic(
        messages=messages,
        charges=billed,
        settings=settings,
        period=the_period,
        summary=ingested.summary,
        quarantine=quarantined,
        meta_pricing=meta_reports.webhook_pricing(ingested.billing),
        sources=tuple(paths),
        is_sample=is_sample,
    )


# --- The prepared state: read and bill once for every notebook of a report -------------------------

# A prepared folder holds these stage files (Parquet, one per Traffic frame) and RUN_FILE, written last.
STAGE_FILES = ("messages", "charges", "quarantine", "meta_pricing")
RUN_FILE = "run.json"
PREPARED_FILES = (*(f"{name}.parquet" for name in STAGE_FILES), RUN_FILE)


def prepare(work_dir: str | Path, parameters: Mapping[str, object], *, month_option: str = "month") -> Traffic:
    """Read and bill the traffic of `parameters` (`traffic_parameters`) once, and write it to
    `work_dir` for the report notebooks (`load_traffic(..., work_dir=...)`): a Parquet file per
    frame of `Traffic` (STAGE_FILES) and RUN_FILE, JSON of the parameters, the report month, the
    sources and the ingest summary. Each file is written whole or not at all; RUN_FILE comes last,
    so a folder that has it is complete."""
    traffic = read_and_bill(parameters, quarantine=True, month_option=month_option)
    folder = Path(work_dir)
    frames = {
        "messages": traffic.messages,
        "charges": traffic.charges,
        "quarantine": traffic.quarantine.collect(),
        "meta_pricing": traffic.meta_pricing,
    }
    for name in STAGE_FILES:
        with outputs.atomic(folder / f"{name}.parquet") as partial:
            frames[name].write_parquet(partial)
    run = {
        "parameters": dict(parameters),
        "month": traffic.period.month,
        "timezone": traffic.period.timezone,
        "sources": list(traffic.sources),
        "is_sample": traffic.is_sample,
        "summary": asdict(traffic.summary),
    }
    with outputs.atomic(folder / RUN_FILE) as partial:
        partial.write_text(json.dumps(run, indent=2) + "\n", encoding="utf-8")
    return traffic


def read_prepared(work_dir: str | Path, parameters: Mapping[str, object]) -> Traffic:
    """The Traffic `prepare` wrote to `work_dir`, which must have been prepared with `parameters`:
    a notebook never shows figures of other traffic than its parameters name."""
    folder = Path(work_dir)
    try:
        run = json.loads((folder / RUN_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(
            f"work_dir {folder}: no {RUN_FILE}, so not a folder that `wa-analytics report` prepared; "
            "set work_dir = None to read and bill the input here"
        ) from None
    differing = [name for name in TRAFFIC_PARAMETERS if run["parameters"].get(name) != parameters.get(name)]
    if differing:
        name = differing[0]
        raise UsageError(
            f"work_dir {folder} was prepared with {name} = {run['parameters'].get(name)!r}, not {parameters.get(name)!r}: "
            "give the notebook the parameters of that run, or set work_dir = None to read and bill the input here"
        )
    settings = _settings_of(run["parameters"])
    summary = run["summary"]
    return Traffic(
        messages=pl.read_parquet(folder / "messages.parquet"),
        charges=pl.read_parquet(folder / "charges.parquet"),
        settings=settings,
        period=period(run["month"], settings.timezone),
        summary=IngestSummary(
            **{
                **summary,
                "unknown_markets": tuple(UnknownMarkets(**u) for u in summary["unknown_markets"]),
                "notes": tuple(summary["notes"]),
                "files": tuple(InputFile(**f) for f in summary["files"]),
            }
        ),
        quarantine=pl.scan_parquet(folder / "quarantine.parquet"),
        meta_pricing=pl.read_parquet(folder / "meta_pricing.parquet"),
        sources=tuple(run["sources"]),
        is_sample=run["is_sample"],
    )


# A month of up to 31 days replayed in whole weeks needs up to 37 days of history before it (analytics.whatif.projection).
PROJECTION_HISTORY_MONTHS = 2


@dataclass(frozen=True)
class NotShown:
    """A report section this input cannot show, and why: false, and shown as its reason in its place."""

    reason: str

    def __bool__(self) -> bool:
        return False

    def _repr_markdown_(self) -> str:
        return f"*{self.reason}*"


def projected(traffic: Traffic, scenarios: Sequence[object], *, months: int, settings: Settings | None = None) -> object:
    """`projection.project` of the scenarios from the report's history, or `NotShown` saying how much
    history a projection needs when the input holds less (one month of traffic is a report, not a
    failure)."""
    from analytics.whatif import projection

    zone = traffic.period.timezone
    history = traffic.messages.select(pl.col("timestamp").dt.convert_time_zone(zone).dt.strftime("%Y-%m").n_unique()).item()
    if history < PROJECTION_HISTORY_MONTHS:
        return NotShown(
            f"No projection: it needs {PROJECTION_HISTORY_MONTHS} months of history, and the input holds "
            f"{plural(history, 'month')} up to {traffic.period.month}."
        )
    try:
        return projection.project(
            traffic.messages,
            scenarios,
            months=months,
            settings=settings or traffic.settings,  # type: ignore[arg-type]
        )
    except UsageError as error:  # the history cannot be replayed forward (too short in whole weeks)
        return NotShown(f"No projection: {error}.")


def scenarios_path(scenarios_file: str | Path | None) -> Path:
    """The scenarios file to use: the one given, else the shipped examples/scenarios.toml."""
    return Path(scenarios_file) if scenarios_file else Path(str(resource(*SCENARIOS)))


def month_figures(frame: pl.DataFrame, month: str, by: Sequence[str], values: Sequence[str]) -> str:
    """The report month's rows of a roll-up, summed `by` the given columns, as CSV text: the key
    totals a report notebook prints and nbval checks."""
    month_value = frame.filter(pl.col("month") == month)
    summed = month_value.group_by(by).agg(pl.col(v).sum() for v in values).sort(by)
    return summed.write_csv()


@dataclass
class Compared:
    """What reconciliation compared: the result, where Meta's side came from, and what to expect."""

    result: outcomes.Reconciliation
    meta_source: str  # "input" or "synthetic"
    perturbations: tuple[meta_billing.Perturbation, ...] = ()

    def describe(self) -> str:
        if self.meta_source == SYNTHETIC:
            return (
                "The shipped sample carries no figures of Meta's, so Meta's side here is made from our own charges "
                "(meta_billing.meta_pricing_objects) and then changed in "
                f"{len(self.perturbations)} known ways (meta_billing.perturb): every difference below is one of them."
            )
        compared = self.result.rows.height
        return f"Meta's side: the pricing objects and analytics in the input; {compared:,} items compared."


INPUT, SYNTHETIC, AUTO = "input", "synthetic", "auto"


def reconciliation(
    traffic: Traffic,
    *,
    meta_source: str = AUTO,
    analytics_paths: Sequence[str | Path] = (),
    settings: Settings | None = None,
    seed: int = 1,
) -> Compared:
    """Our charges against Meta's view (billing-rules.md §7; analytics.reconcile.matching).

    `meta_source`: `input` compares with the webhook pricing objects of the input and the analytics
    responses in `analytics_paths`; `synthetic` makes Meta's side from our own charges and perturbs
    it in known ways (the check of issue 7, and a demonstration on data without Meta's figures);
    `auto` is `synthetic` for the shipped sample and `input` otherwise.
    """
    if meta_source not in {INPUT, SYNTHETIC, AUTO}:
        raise UsageError(f"meta_source {meta_source!r}: expected 'input', 'synthetic' or 'auto'")
    source = (SYNTHETIC if traffic.is_sample else INPUT) if meta_source == AUTO else meta_source
    settings = settings or traffic.settings
    if source == SYNTHETIC:
        meta = meta_billing.meta_pricing_objects(traffic.charges, traffic.messages, settings)
        perturbed = meta_billing.perturb(traffic.messages, meta, traffic.charges, seed=seed)
        billed = charges.bill(perturbed.messages, settings)
        result = reconcile.reconcile(perturbed.messages, billed, meta_pricing=perturbed.meta_pricing, settings=settings)
        return Compared(result, SYNTHETIC, perturbed.perturbations)
    result = reconcile.against_reports(
        traffic.messages,
        traffic.charges,
        input_paths=traffic.sources,
        webhook_pricing=traffic.meta_pricing,
        reports=meta_reports.read_reports(analytics_paths),
        quarantine=traffic.quarantine,
        settings=settings,
    )
    return Compared(result, INPUT)


# --- The monthly HTML report -----------------------------------------------------------------------


class NotebookFailed(Exception):
    """A report notebook raised: which notebook, which cell, what error, where the evidence is."""


def notebook_path(name: str) -> Path:
    """A report notebook shipped with the package (notebooks/reports/NAME.ipynb)."""
    return Path(str(resource("notebooks", "reports", f"{name}.ipynb")))


def declared_parameters(names: Sequence[str] = REPORT_NOTEBOOKS) -> dict[str, set[str]]:
    """Each parameter any report notebook declares, with the notebooks that declare it."""
    import papermill

    declared: dict[str, set[str]] = {}
    for name in names:
        for parameter in papermill.inspect_notebook(str(notebook_path(name))):
            declared.setdefault(parameter, set()).add(name)
    return declared


def read_params(path: str | Path) -> dict[str, object]:
    """Notebook parameters from a TOML file (`currency = "EUR"`, ...); relative paths are relative
    to the file."""
    path = Path(path)
    try:
        values = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"--params {path}: no such file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"--params {path}: not valid TOML: {error}") from None
    base = path.resolve().parent
    return {key: _resolved(value, base) if key in PATH_PARAMETERS else value for key, value in values.items()}


def _resolved(value: object, base: Path) -> object:
    if isinstance(value, str):
        return str(base / value)
    if isinstance(value, list):
        return [str(base / v) if isinstance(v, str) else v for v in value]
    return value


def run_report(
    output: str | Path,
    *,
    month: str,
    input_paths: Sequence[str | Path] | None = None,
    parameters: Mapping[str, object] | None = None,
    notebooks: Sequence[str] = REPORT_NOTEBOOKS,
    keep_notebooks: str | Path | None = None,
    parameters_file: str | Path | None = None,
    work_dir: str | Path | None = None,
) -> Path:
    """Run the report notebooks for `month` on `input_paths` and write one HTML file to `output`.

    `parameters` override the notebooks' defaults (the names their `parameters` cells declare).
    `keep_notebooks` is a folder to keep the executed notebooks in; `parameters_file`, where the
    parameters come from, for messages. Every parameter is checked before any notebook runs
    (`check_parameters`). The input is read and billed once (`prepare`), into `work_dir` if given
    (kept), else into a temporary folder removed at the end, and every notebook starts from that
    prepared state (its `work_dir` parameter). Raises `NotebookFailed`.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    output = Path(output)
    if output.suffix.lower() not in {".html", ".htm"}:
        raise UsageError(f"-o {output}: the report is HTML; name the output .html")
    chosen = dict(parameters or {})
    declared = declared_parameters(notebooks)
    if "work_dir" in chosen:
        raise UsageError("report parameter work_dir: the report sets it itself; to keep the prepared state, give --work-dir DIR")
    unknown = sorted(set(chosen) - set(declared))
    if unknown:
        raise UsageError(f"unknown report parameter {', '.join(unknown)}: the report notebooks take {', '.join(sorted(declared))}")
    if input_paths:
        chosen["input_paths"] = [str(Path(p).resolve()) for p in input_paths]
    check_parameters(chosen, parameters_file)
    timezone = str(chosen.get("timezone") or "UTC")
    chosen["month"] = report_month(month, timezone)
    chosen["chart_format"] = "png"
    executed: list[tuple[str, dict]] = []
    with outputs.scratch_folder(prefix="wa-analytics-report-") as scratch:
        state = Path(work_dir) if work_dir else Path(scratch) / "state"
        prepare(state, {name: chosen.get(name) for name in TRAFFIC_PARAMETERS}, month_option="--month")
        chosen["work_dir"] = str(state.resolve())

        def execute(name: str) -> Path:
            target = Path(scratch) / f"{name}.ipynb"
            mine = {k: v for k, v in chosen.items() if name in declared.get(k, set())}
            # The kernel starts in the scratch folder; papermill's `cwd` would change this process's
            # folder instead, which two notebooks at once would leave pointing at the scratch folder.
            papermill.execute_notebook(
                str(notebook_path(name)),
                str(target),
                parameters=mine,
                kernel_name="python3",
                progress_bar=False,
                resources={"metadata": {"path": str(scratch)}},
            )
            return target

        # The notebooks only read the prepared state: they run side by side, the longest started first.
        started = sorted(notebooks, key=lambda name: name not in LONGEST_NOTEBOOKS)
        with _kernel_log(Path(scratch) / "kernel.log"), ThreadPoolExecutor(NOTEBOOKS_AT_ONCE) as pool:
            running = {name: pool.submit(execute, name) for name in started}
            try:
                # in the report's order: the first failing notebook is the one named
                for name in progress.track(notebooks, "Notebooks", unit="notebooks", label=str):
                    try:
                        target = running[name].result()
                    except PapermillExecutionError as error:
                        kept = output.with_name(f"{output.stem}.failed-{name}.ipynb")
                        with outputs.atomic(kept) as partial:
                            shutil.copyfile(Path(scratch) / f"{name}.ipynb", partial)
                        raise NotebookFailed(_failure_message(name, error, kept)) from None
                    executed.append((name, json.loads(target.read_text(encoding="utf-8"))))
                    if keep_notebooks:
                        with outputs.atomic(Path(keep_notebooks) / target.name) as partial:
                            shutil.copyfile(target, partial)
            finally:
                pool.shutdown(cancel_futures=True)  # a failure: the notebooks not started yet never start
    with outputs.atomic(output) as partial, progress.stage("Rendering the report"):
        partial.write_text(render_html(executed, title=f"WhatsApp Business traffic report, {chosen['month']}"), encoding="utf-8")
    return output


# What `wa-analytics report` imports besides the package's own dependencies: the `notebooks` extra.
NOTEBOOK_EXTRAS = ("papermill", "nbformat", "ipykernel", "altair", "vl_convert", "mistune")
MONTHS_AHEAD = Value("a whole number of months from 1 to 60, such as 3", lambda v: isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 60)
META_SOURCES = Value('"input", "synthetic" or "auto"', lambda v: v in {INPUT, SYNTHETIC, AUTO})
PATHS = Value('a list of file paths, such as ["meta/pricing_analytics.json"]', lambda v: isinstance(v, list) and all(isinstance(p, str) for p in v))
PATH = Value("a file path (a string)", lambda v: isinstance(v, str) and bool(v))
# Each parameter's kind; None is every parameter's default ("not set"), except where the notebooks say otherwise.
PARAMETER_SCHEMA: dict[str, Value] = {
    "timezone": config_schema.TIME_ZONE,
    "rule_set": config_schema.SCHEMA.settings["billing"].settings["rules"],  # type: ignore[union-attr]
    "currency": config_schema.SCHEMA.settings["pricing"].settings["currency"],  # type: ignore[union-attr]
    "months_ahead": MONTHS_AHEAD,
    "meta_source": META_SOURCES,
    "input_paths": PATHS,
    "analytics_paths": PATHS,
    **{name: PATH for name in ("config_file", "rate_card", "scenarios_file", "send_log", "templates")},
    "monthly_budget": Value("a number >= 0, such as 1500: the report month's budget when the config file sets none", config_schema._is_amount),
}


def require_extras() -> None:
    """UsageError naming the extra to install when the report's notebook machinery is missing."""
    missing = []
    for module in NOTEBOOK_EXTRAS:
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise UsageError(
            f"the report needs the notebook extras ({', '.join(missing)} not installed): pip install 'wa-analytics[notebooks]' (make install does)"
        )


def check_parameters(chosen: Mapping[str, object], parameters_file: str | Path | None = None) -> None:
    """Every report parameter checked before any notebook runs: bad input or usage is a UsageError
    or InputError (exit status 2) naming the parameter, not a notebook failing half-way (exit 1).

    Types and values first (`timezone = "Mars/Olympus"`, `currency = "XXX"`), then what the
    parameters name: the config file against its schema, the scenarios file, the rate card and its
    currency. The inputs are read next, once, by `prepare` (which stops on a file that is not
    traffic, or on no messages before the end of the report month), still before any notebook.
    `parameters_file`, where they were read from, is named in the message."""
    label = f"--params {parameters_file}:" if parameters_file else "report parameter"
    for name, value in chosen.items():
        kind = PARAMETER_SCHEMA.get(name)
        if kind is not None and value is not None and not kind.valid(value):
            raise UsageError(f"{label} {name} = {config_schema.excerpt(value)}: expected {kind.describe()}")
    for name in ("config_file", "rate_card", "scenarios_file", "send_log", "templates", "input_paths", "analytics_paths"):
        value = chosen.get(name)
        for path in value if isinstance(value, list) else [value] if value else []:
            if not Path(path).exists():
                raise UsageError(f"{label} {name}: {path}: no such file")
    settings = Settings.from_toml(chosen["config_file"]) if chosen.get("config_file") else Settings()  # type: ignore[arg-type]
    if chosen.get("rule_set") is not None and chosen["rule_set"] not in settings.rule_book.names:
        raise UsageError(f"{label} rule_set = {config_schema.excerpt(chosen['rule_set'])}: expected {PARAMETER_SCHEMA['rule_set'].describe()}")
    if chosen.get("scenarios_file"):
        from analytics.whatif import scenarios

        scenarios.load_scenarios(str(chosen["scenarios_file"]))
    currency = chosen.get("currency")
    card = ratecards.load_card(chosen.get("rate_card"))  # type: ignore[arg-type]
    if currency and str(currency).strip().upper() not in set(card["currency"]):
        known = ", ".join(sorted(card["currency"].unique()))
        raise UsageError(
            f"{label} currency = {config_schema.excerpt(currency)}: the rate card has no rates in it; "
            f"it has {known}: choose one, or give a rate_card in that currency"
        )


@contextmanager
def _kernel_log(path: Path) -> Iterator[None]:
    """Send what the notebook kernels print on the process's stderr (ipykernel's start-up warnings,
    its shutdown noise) to `path` instead of the terminal: the run's own messages stay readable."""
    sys.stderr.flush()
    saved = os.dup(2)
    with path.open("ab") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def _failure_message(name: str, error: Exception, kept: Path) -> str:
    cell, line, text = _failing_line(error)
    where = f"cell {cell}" + (f", line {line}" if line else "")
    return (
        f"report notebook {name} failed in {where} (`{text}`): {getattr(error, 'ename', 'error')}: "
        f"{getattr(error, 'evalue', error)}. The executed notebook, with the error, is {kept}"
    )


def _failing_line(error: Exception) -> tuple[object, int | None, str]:
    """The cell (its execution count), line and text that raised. IPython's traceback starts the
    frame of the notebook's cell with `Cell In[3], line 15` and marks the line with `--->`; a call
    deeper in the package is a later frame, so the cell's own frame names what the notebook ran."""
    cell: object = getattr(error, "exec_count", None) or "?"
    for frame in getattr(error, "traceback", None) or []:
        lines = _ANSI.sub("", frame).splitlines()
        header = _CELL_FRAME.match(lines[0]) if lines else None
        if header is None:
            continue
        for line in lines[1:]:
            marked = _MARKED_LINE.match(line)
            if marked:
                return header["cell"], int(marked["number"]), marked["text"].strip()
        return header["cell"], int(header["line"]), ""
    source = (getattr(error, "source", "") or "").strip().splitlines()
    return cell, None, source[0] if source else ""


_CELL_FRAME = re.compile(r"Cell In\[(?P<cell>\d+)\], line (?P<line>\d+)")
_MARKED_LINE = re.compile(r"\s*-+>\s*(?P<number>\d+)\s(?P<text>.*)")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_QUOTED_CELL = re.compile(r"<td>&quot;(.*?)&quot;</td>")


# --- Rendering ---------------------------------------------------------------------------------------

_STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 980px; margin: 2em auto;
       padding: 0 1em; color: #1f2933; line-height: 1.45; }
h1 { font-size: 1.7em; border-bottom: 2px solid #1f6f5c; padding-bottom: .3em; }
h2 { font-size: 1.35em; margin-top: 2em; }
section.notebook { border-top: 1px solid #d9e2ec; margin-top: 2.5em; }
table { border-collapse: collapse; font-size: .85em; margin: .8em 0; }
th, td { border: 1px solid #d9e2ec; padding: .25em .6em; text-align: right; }
th { background: #f0f4f8; }
img { max-width: 100%; height: auto; display: block; margin: 1em 0; }
pre { background: #f7f9fb; padding: .6em; white-space: pre-wrap; font-size: .85em; }
nav li { margin: .2em 0; }
"""


def render_html(notebooks: Sequence[tuple[str, dict]], *, title: str) -> str:
    """Executed notebooks (name, nbformat JSON) as one self-contained HTML page: markdown and
    outputs only, no code, no stderr, no script; images stay inline as data URIs."""
    sections = []
    contents = []
    for name, notebook in notebooks:
        heading = _first_heading(notebook) or name
        contents.append(f'<li><a href="#{name}">{html.escape(heading)}</a></li>')
        cells = "\n".join(_cell_html(cell) for cell in notebook.get("cells", []))
        sections.append(f'<section class="notebook" id="{name}">\n{cells}\n</section>')
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n<nav><ol>{''.join(contents)}</ol></nav>\n" + "\n".join(sections) + "\n</body>\n</html>\n"
    )


def _first_heading(notebook: dict) -> str | None:
    for cell in notebook.get("cells", []):
        if cell.get("cell_type") == "markdown":
            for line in _text(cell.get("source", "")).splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()
    return None


def _text(value: str | list[str]) -> str:
    return value if isinstance(value, str) else "".join(value)


def _cell_html(cell: dict) -> str:
    if cell.get("cell_type") == "markdown":
        import mistune

        return str(mistune.html(_text(cell.get("source", ""))))
    if cell.get("cell_type") != "code":
        return ""
    return "\n".join(filter(None, (_output_html(o) for o in cell.get("outputs", []))))


def _output_html(output: dict) -> str:
    kind = output.get("output_type")
    if kind == "stream":
        return "" if output.get("name") == "stderr" else f"<pre>{html.escape(_text(output.get('text', '')))}</pre>"
    if kind == "error":
        return f"<pre>{html.escape(output.get('ename', ''))}: {html.escape(output.get('evalue', ''))}</pre>"
    data = output.get("data", {})
    if "image/png" in data:
        encoded = _text(data["image/png"]).replace("\n", "")
        base64.b64decode(encoded, validate=True)  # a broken image is an error here, not a blank in the mail
        alt = html.escape(_text(data.get("text/plain", "chart")).strip("<>'\" "))
        return f'<img src="data:image/png;base64,{encoded}" alt="{alt}">'
    if "text/html" in data:
        fragment = _text(data["text/html"])
        if "<script" in fragment.lower():
            raise NotebookFailed("a report output carries a script (an interactive chart?): report charts must be images")
        return _QUOTED_CELL.sub(r"<td>\1</td>", fragment)  # Polars quotes strings in its tables; a reader needs no quotes
    if "text/markdown" in data:
        import mistune

        return str(mistune.html(_text(data["text/markdown"])))
    if "text/plain" in data:
        return f"<pre>{html.escape(_text(data['text/plain']))}</pre>"
    return ""
