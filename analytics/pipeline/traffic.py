"""The entry point for analysts: `analytics.load` gives a `Traffic`, and every question is one
attribute or method of it.

```python
import analytics as wa

t = wa.load("export/*.parquet", settings="analytics.toml")
t.costs()                         # contracts.md §4, per month, market, category and pricing type
t.chart.cost_by_category()
```

Each stage is computed once per `Traffic`, when first asked for, and kept: the messages are read
and validated once, billed once and priced once, whatever is asked of them afterwards (`repr`
shows what has been computed so far). A `Traffic` never changes: `with_settings` gives another,
which reuses the messages read (billing depends on the settings, reading does not).

The stages underneath are the package's own, in the order a message goes through them:
`analytics.read.ingest` (files to canonical messages), `analytics.bill.charges` (the fast
engine), `analytics.price.pricing`, `analytics.whatif` (scenarios and projection),
`analytics.reconcile` and `analytics.present` (roll-ups and charts). Use them directly for what
this object does not offer; it passes them the one `Settings`.

Sizes: a `Traffic` holds its frames in memory, which suits notebooks up to some tens of millions
of messages on a laptop; past that, `wa-analytics charges` (Parquet in, Parquet out, in buckets)
and the Spark back end bill what does not fit.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from analytics.bill import charges as engine
from analytics.core.errors import UsageError
from analytics.price import pricing
from analytics.read import ingest
from analytics.settings import Settings

if TYPE_CHECKING:
    import altair as alt

    from analytics.present.templates import TemplateCosts
    from analytics.reconcile.matching import Reconciliation
    from analytics.reconcile.meta_reports import MetaReports
    from analytics.whatif.projection import Projection
    from analytics.whatif.scenarios import Comparison


def load(
    paths: str | Path | Sequence[str | Path],
    *,
    settings: Settings | str | Path | None = None,
    send_log: str | Path | None = None,
    templates: str | Path | None = None,
    **overrides: Any,
) -> Traffic:
    """The traffic in `paths` (files, folders' glob patterns such as `"export/*.parquet"`, in any
    format `wa-analytics ingest` reads), with `settings`: a `Settings`, the path of a TOML config
    file, or None for the defaults (UTC, the rules in force at each message, the shipped rate
    card). Keyword `overrides` change single settings, e.g. `timezone="Europe/Rome"`,
    `currency="EUR"`, `rules="pmp-2026-10"`.

    Nothing is read until something is asked for; then the files are read and validated once (rows
    that cannot be used are set aside in `quarantine`, never dropped). `send_log` and `templates`
    name the category of webhook messages, as for `wa-analytics ingest`.
    """
    return Traffic(
        paths=_expanded(paths),
        settings=_settings(settings, overrides),
        send_log=send_log,
        templates=templates,
    )


def _expanded(paths: str | Path | Sequence[str | Path]) -> tuple[str, ...]:
    """Every file named, glob patterns expanded (sorted, so runs are repeatable)."""
    given = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not given:
        raise UsageError("no input files: give at least one file or pattern, e.g. wa.load('export/*.parquet')")
    found: list[str] = []
    for path in given:
        text = str(path)
        if glob.has_magic(text):
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                raise UsageError(f"{text}: no file matches this pattern")
            found.extend(matches)
        else:
            found.append(text)
    return tuple(found)


def _settings(settings: Settings | str | Path | None, overrides: dict[str, Any]) -> Settings:
    unknown = sorted(set(overrides) - set(Settings.__dataclass_fields__))
    if unknown:
        known = ", ".join(Settings.__dataclass_fields__)
        raise UsageError(f"unknown setting {', '.join(unknown)}: the settings are {known}")
    if settings is None or isinstance(settings, Settings):
        return (settings or Settings()).replace(**overrides)
    return Settings.from_toml(settings, **overrides)


@dataclass(frozen=True, eq=False)
class Traffic:
    """A business's traffic, read once and answered from: see the module docstring.

    Attributes, computed when first read: `messages` (canonical, contracts.md §1), `quarantine`
    (rows set aside, with their file, line and reason), `ingest_summary` (what was read and set
    aside), `charges` (§2), `priced` (charges with their cost). Methods: `describe_reading`,
    `summary`, `describe_charges`, `costs`, `invoice`, `volumes`, `template_costs`, `budget`, `compare`,
    `project`, `reconcile`, `with_settings`; charts under `chart`.
    """

    paths: tuple[str, ...]
    settings: Settings = field(default_factory=Settings)
    send_log: str | Path | None = None
    templates: str | Path | None = None
    _read: dict[str, Any] = field(default_factory=dict, repr=False)  # the reading, shared by `with_settings`
    _answers: dict[tuple, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_ingested(cls, paths: Sequence[str | Path], ingested: ingest.Ingested, settings: Settings) -> Traffic:
        """A `Traffic` of inputs already read (the command line reads them itself, to write the
        quarantine and print the run summary as it goes)."""
        return cls(tuple(map(str, paths)), settings, _read={"ingested": ingested})

    # --- the stages ---

    @property
    def _ingested(self) -> ingest.Ingested:
        if "ingested" not in self._read:
            self._read["ingested"] = ingest.read_messages(
                self.paths,
                send_log=self.send_log,
                templates=self.templates,
                timezone=self.settings.timezone,
                waba_timezones=self.settings.waba_timezones,
            )
        return self._read["ingested"]

    @property
    def messages(self) -> pl.DataFrame:
        """Canonical messages (contracts.md §1): validated, deduplicated, with user countries."""
        if "messages" not in self._read:
            self._read["messages"] = self._ingested.messages.collect()
        return self._read["messages"]

    @property
    def quarantine(self) -> pl.DataFrame:
        """The input rows that could not be used: file, line, reason, and the row as read."""
        if "quarantine" not in self._read:
            self._read["quarantine"] = self._ingested.quarantine.collect()
        return self._read["quarantine"]

    @property
    def ingest_summary(self) -> ingest.IngestSummary:
        """What was read, set aside and why, per file, as data (`describe_reading` is its text)."""
        return self._ingested.summary

    @cached_property
    def charges(self) -> pl.DataFrame:
        """The charges (contracts.md §2) of the messages under the settings: billed once."""
        return engine.bill(self.messages, self.settings)

    @cached_property
    def priced(self) -> pl.DataFrame:
        """The charges with what each costs (`pricing.PRICED_SCHEMA`), at the settings' rate card."""
        return pricing.price(self.charges, self.settings)

    # --- answers ---

    def describe_reading(self) -> Text:
        """What was read, used and set aside, per file and reason (what `wa-analytics ingest` prints)."""
        from analytics.present import summaries

        return Text(summaries.format_ingest_summary(self.ingest_summary))

    def summary(self, top_markets: int = 5) -> Text:
        """Messages per month, direction, category and market (what `wa-analytics summary` prints)."""
        from analytics.present import summaries

        described = self._answer(("summary",), lambda: ingest.describe_traffic(self.messages, timezone=self.settings.timezone))
        return Text(summaries.format_traffic(described, top_markets=top_markets))

    def describe_charges(self) -> Text:
        """The charges in a few lines: per rule set and pricing type, and any rule read from a
        secondary source (what `wa-analytics charges` prints)."""
        from analytics.present import summaries

        return self._answer(("describe_charges",), lambda: Text(summaries.describe_charges(self.charges, self.settings)))

    def costs(self) -> pl.DataFrame:
        """contracts.md §4: cost per month, market, category and pricing type."""
        return self._answer(("costs",), lambda: pricing.costs(self.priced))

    def invoice(self) -> pl.DataFrame:
        """Invoice lines: month, WABA, business number, category and market, rounded to cents."""
        return self._answer(("invoice",), lambda: pricing.invoice(self.priced))

    def volumes(self) -> pl.DataFrame:
        """Charges and billable charges per local month, rule set and category (the volumes chart's table)."""
        from analytics.present import rollups

        return self._answer(("volumes",), lambda: rollups.volumes(self.charges, self.settings))

    def template_costs(self) -> TemplateCosts:
        """Cost by template and month, and the templates Meta billed in another category than
        written (its pricing objects among the inputs, `template_category_update` webhooks among
        the JSON inputs), with what the difference cost (analytics/present/templates.py)."""
        from analytics.present import templates

        def run() -> TemplateCosts:
            compared = self.reconcile().rows if self._ingested.billing.height else None
            return templates.template_costs(self.messages, self.priced, self.settings, reconciliation_rows=compared, sources=self.paths)

        return self._answer(("template_costs",), run)

    def budget(self, month: str | None = None, as_of: Any = None) -> pl.DataFrame:
        """The budgets of the settings (`[[pricing.budget]]`) that apply to `month` (default: the
        month of the last charge): spent by `as_of` (default: the last charge's start), projected
        to month end with its back-tested band, and whether it will be exceeded
        (analytics/present/budget.py; `budget.format_budget` is its text)."""
        from analytics.present import budget

        return self._answer(("budget", month, as_of), lambda: budget.budget_status(self.priced, self.settings, month=month, as_of=as_of))

    def compare(self, scenarios: str | Path | Sequence[Any] | None = None) -> Comparison:
        """What the traffic would have cost under each scenario (a scenarios TOML file, or
        `Scenario` objects; default: the shipped examples/scenarios.toml), beside the baseline."""
        from analytics.whatif import scenarios as whatif

        return self._answer(("compare", scenarios), lambda: whatif.compare(self.messages, self._scenarios(scenarios), self.settings))

    def project(self, months: int = 3, scenarios: str | Path | Sequence[Any] | None = None, **options: Any) -> Projection:
        """The `months` months after the traffic, per scenario (default: the baseline alone), with
        the back-tested band; `options` go to `analytics.whatif.projection.project`."""
        from analytics.whatif import projection
        from analytics.whatif import scenarios as whatif

        def run() -> Projection:
            chosen = self._scenarios(scenarios) if scenarios is not None else [whatif.Scenario(whatif.BASELINE)]
            return projection.project(self.messages, chosen, months=months, settings=self.settings, **options)

        return self._answer(("project", months, scenarios, tuple(sorted(options.items()))), run)

    def reconcile(self, analytics: Sequence[str | Path] | MetaReports = (), *, notes: Sequence[str] = ()) -> Reconciliation:
        """Our charges against what Meta reported: the webhook `pricing` objects among the inputs,
        and the `conversation_analytics` / `pricing_analytics` responses and provider billing
        events in `analytics` (paths, or what `meta_reports.read_reports` read of them). Costs are
        compared at Meta's list rates where the analytics have a currency the card prices (the
        summary says why not otherwise); `notes` go to the summary too."""
        from analytics.reconcile import matching, meta_reports

        reports = analytics if isinstance(analytics, meta_reports.MetaReports) else meta_reports.read_reports(list(analytics))

        def run() -> Reconciliation:
            return matching.against_reports(
                self.messages,
                self.charges,
                input_paths=self.paths,
                webhook_pricing=meta_reports.webhook_pricing(self._ingested.billing),
                reports=reports,
                quarantine=self.quarantine,
                settings=self.settings,
                notes=notes,
            )

        given = analytics if isinstance(analytics, meta_reports.MetaReports) else tuple(map(str, analytics))
        return self._answer(("reconcile", given, tuple(notes)), run)

    def with_settings(self, settings: Settings | str | Path | None = None, **overrides: Any) -> Traffic:
        """The same traffic under other settings (e.g. `t.with_settings(rules="pmp-2026-10")`): the
        messages already read are reused; billing and everything after it is computed again."""
        chosen = _settings(self.settings if settings is None else settings, overrides)
        read = self._read if _reading_settings(chosen) == _reading_settings(self.settings) else {}
        return Traffic(self.paths, chosen, self.send_log, self.templates, _read=read)

    @cached_property
    def chart(self) -> Charts:
        """The charts of this traffic: `t.chart.cost_by_category()`, `t.chart.volumes()`..."""
        return Charts(self)

    # --- in Jupyter ---

    def computed(self) -> list[str]:
        """The stages computed so far, in order."""
        done = [name for name in ("messages", "quarantine") if name in self._read]
        done += [name for name in ("charges", "priced") if name in self.__dict__]
        done += [key[0] for key in self._answers]
        return done

    def __repr__(self) -> str:
        shown = [_shown_path(p) for p in self.paths[:3]]
        files = ", ".join(shown) + (f" and {len(self.paths) - 3} more" if len(self.paths) > 3 else "")
        lines = [f"Traffic of {files}", f"  settings: {_describe_settings(self.settings)}"]
        sizes = {"messages": "messages", "quarantine": "rows set aside", "charges": "charges", "priced": "priced charges"}
        for name in self.computed():
            frame = self._read.get(name) if name in ("messages", "quarantine") else self.__dict__.get(name)
            lines.append(f"  computed: {name}" + (f" ({frame.height:,} {sizes[name]})" if isinstance(frame, pl.DataFrame) else ""))
        if not self.computed():
            lines.append("  nothing computed yet: ask for t.messages, t.charges, t.costs()...")
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:
        return "```\n" + repr(self) + "\n```"

    # --- helpers ---

    def _answer(self, key: tuple, compute: Any) -> Any:
        """`compute()`, kept under `key`; asked with what has no value to compare by (a list of
        scenarios, reports read), it is computed again rather than kept under an identity that a
        later object may reuse."""
        try:
            hash(key)
        except TypeError:
            return compute()
        if key not in self._answers:
            self._answers[key] = compute()
        return self._answers[key]

    def _scenarios(self, scenarios: str | Path | Sequence[Any] | None) -> list[Any]:
        from analytics.present import report
        from analytics.whatif import scenarios as whatif

        if scenarios is None or isinstance(scenarios, (str, Path)):
            return whatif.load_scenarios(report.scenarios_path(scenarios))
        return list(scenarios)


class Text(str):
    """Text that Jupyter shows as it reads (a plain `str` shows quoted, its line breaks escaped)."""

    def __repr__(self) -> str:
        return str(self)


def _shown_path(path: str) -> str:
    """A path as short as it reads: relative to the working folder when it is below or near it."""
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive
        return path
    return relative if relative.count("..") <= 2 else path


def _reading_settings(settings: Settings) -> tuple:
    """What reading depends on: which rows come before the first supported rules (time zones)."""
    return settings.timezone, tuple(sorted(settings.waba_timezones.items()))


def _describe_settings(settings: Settings) -> str:
    parts = [settings.timezone + (f" (+{len(settings.waba_timezones)} WABA zones)" if settings.waba_timezones else "")]
    parts.append(f"rules {settings.rules}" if settings.rules else "the rules in force at each message")
    parts.append(f"card {settings.rate_card}" if settings.rate_card else "the shipped rate card")
    if settings.currency:
        parts.append(settings.currency)
    return ", ".join(parts)


@dataclass(frozen=True)
class Charts:
    """Altair charts of one `Traffic` (`analytics.present.charts`), each from the cached stages."""

    traffic: Traffic

    def volumes(self, measure: str = "billable_charges") -> alt.LayerChart:
        """Charges per month and category, with the rule-set switches marked."""
        from analytics.present import charts, rollups

        t = self.traffic
        first, last = t.messages["timestamp"].min(), t.messages["timestamp"].max()
        switches = rollups.rule_set_switches(first.date(), last.date()) if first is not None else None
        return charts.volumes_chart(t.volumes(), switches, measure=measure)

    def cost_by_category(self) -> alt.Chart:
        """Cost per month, stacked by category."""
        from analytics.present import charts, rollups

        return charts.cost_by_category_chart(rollups.costs_by_month(self.traffic.costs()))

    def cost_by_market(self, top: int | None = 10) -> alt.Chart:
        """Cost per market, the `top` largest (None: all)."""
        from analytics.present import charts, rollups

        return charts.cost_by_market_chart(rollups.costs_by_market(self.traffic.costs(), top=top))

    def free_and_paid(self) -> alt.Chart:
        """Free against paid charges per month."""
        from analytics.present import charts, rollups

        return charts.free_paid_chart(rollups.free_and_paid(self.traffic.costs()))

    def openings(self) -> alt.Chart:
        """When conversations and billable messages start: weekday by hour, in the settings' time zone."""
        from analytics.present import charts, rollups

        return charts.openings_heatmap(rollups.openings(self.traffic.charges, self.traffic.settings))

    def scenarios(self, scenarios: str | Path | Sequence[Any] | None = None) -> alt.HConcatChart:
        """Each scenario's cost beside the baseline's."""
        from analytics.present import charts

        return charts.scenario_chart(self.traffic.compare(scenarios).table)

    def projection(self, months: int = 3, scenarios: str | Path | Sequence[Any] | None = None) -> alt.LayerChart:
        """The months ahead per scenario, with the back-tested band."""
        from analytics.present import charts

        return charts.projection_chart(self.traffic.project(months, scenarios).table)

    def reconciliation(self, analytics: Sequence[str | Path] = ()) -> alt.Chart:
        """Where our charges and Meta's figures agree and differ, per month."""
        from analytics.present import charts, rollups

        rows = self.traffic.reconcile(analytics).rows
        return charts.reconciliation_chart(rollups.reconciliation_by_month(rows, self.traffic.settings))
