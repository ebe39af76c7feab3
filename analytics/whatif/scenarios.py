"""Scenarios: what the same traffic would cost under other strategies, rules or rate cards.

A scenario file (TOML) names scenarios; each `[scenario.NAME]` table may set:

```toml
[scenario.baseline]                 # optional: actual traffic, rules by date, shipped card
[scenario.orders_in_window]
description = "Shipping updates wait for the customer's next message, up to 4 h"
strategies = [{ name = "utility_into_window", tolerance_hours = 4 }]
[scenario.today_rules]
rules = "<rule set>"                # one rule set for all traffic (data/rules/rule_sets.toml)
rates_on = 2026-10-01               # price every charge at the card's rates in force that day
[scenario.campaigns_grow]
growth = { marketing = 1.2, markets = { Italy = 1.1 } }
rate_card = "cards/provider.csv"    # relative to the scenario file
currency = "EUR"
```

`strategies` is an array of inline tables, each a `name` from `analytics.whatif.strategies.STRATEGIES`
and its parameters, applied in order after `growth` (the `growth` strategy with the table's
factors). A scenario that leaves `rules`, `rate_card` or `currency` out takes the run's (command
line or config file); its currency defaults to the one the baseline is priced in.

`compare` runs every scenario on one traffic and rolls each up per month and category, with its
difference from the scenario named `baseline`. The work they share is done once:

- the traffic is read, validated and held in memory once (`messages`, a DataFrame);
- the unchanged traffic is billed once per rule set that several scenarios need (`SharedWork`), and
  a scenario that changes only the rate card or currency re-prices those charges;
- a scenario with strategies re-bills only the keys (business number, user) its strategies
  changed: keys are billed independently except for the monthly counters (billing-rules.md §2
  Key), so the per-key charge candidates of every unchanged key are taken from the shared run, the
  changed keys go through `charges.kernel`, and the free tiers are decided again over all of them.
  The changed keys are those with a row a strategy marked (`change`: moved, converted, added,
  dropped, sent by another channel; not `by_own_ai`, which Meta bills as before), and the keys
  they share a group with (`with_group_members`); `changed_keys` finds them from the messages alone, exactly
  but slower, and the tests hold every strategy's marks to it.

Costs follow `analytics.price.pricing`. Billable charges without a rate are never priced at zero: they
are counted in `unpriced_charges` and left out of `cost` (a what-if under other rules may need
rates the card does not have), and `analytics.present.whatif_text.format_comparison` says so.

Each result carries an explanation: what the scenario changes (rules, rates, currency), what each
strategy did (messages moved, converted, dropped, added, sent by another channel), how the
WhatsApp volumes by category moved, and which categories the cost difference comes from.
"""

from __future__ import annotations

import datetime as dt
import time
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path

import polars as pl

from analytics.bill import charges
from analytics.core import progress, schema
from analytics.core.errors import UsageError
from analytics.core.money import money, rounded, signed_money
from analytics.core.times import local_time
from analytics.price import pricing
from analytics.settings import Settings
from analytics.terms import rules
from analytics.terms.ratecards import load_card
from analytics.whatif import strategies
from analytics.whatif.strategies import CHANGE, KEY, OTHER_CHANNEL, StrategyEffect, StrategySpec

BASELINE = "baseline"
SCENARIO_SETTINGS = ("description", "rules", "rate_card", "rates_on", "currency", "growth", "strategies")
COST_DTYPE = pricing.ROLLUP_SCHEMA["cost"]

# One row per scenario, month and category (contracts.md §4 money, at this grain).
COMPARE_SCHEMA: dict[str, pl.DataType] = {
    "scenario": pl.String(),
    "month": pl.String(),
    "category": pl.String(),
    "charges": pl.Int64(),
    "billable_charges": pl.Int64(),
    "cost": COST_DTYPE,
    "currency": pl.String(),
    "unpriced_charges": pl.Int64(),
    "charges_difference": pl.Int64(),
    "billable_charges_difference": pl.Int64(),
    "cost_difference": COST_DTYPE,
}
ROLLUP_COLUMNS = ("month", "category", "charges", "billable_charges", "cost", "currency", "unpriced_charges")
EXPLANATION_SCHEMA: dict[str, pl.DataType] = {
    "scenario": pl.String(),
    "step": pl.Int64(),
    "change": pl.String(),  # description, rules, rates, currency, a strategy's name, volumes, cost
    "moved": pl.Int64(),
    "converted": pl.Int64(),
    "dropped": pl.Int64(),
    "added": pl.Int64(),
    "other_channel": pl.Int64(),
    "explanation": pl.String(),
}


# --- Scenarios and their file ----------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One strategy with its checked parameters."""

    spec: StrategySpec
    params: dict[str, object]

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True)
class Scenario:
    """A named what-if: strategies applied to the traffic, and the rules and rates it is billed by.

    `rules`, `rate_card` and `currency` left None take the run's; `rates_on` prices every charge at
    the rates in force on that date instead of at its own date.
    """

    name: str
    description: str = ""
    rules: str | None = None
    rate_card: str | None = None
    rates_on: dt.date | None = None
    currency: str | None = None
    steps: tuple[Step, ...] = ()

    @property
    def changes_traffic(self) -> bool:
        return bool(self.steps)


def scenario(name: str, **settings: object) -> Scenario:
    """A scenario from the settings of a `[scenario.NAME]` table, as Python values; ValueError if wrong.

    ```python
    scenario("window", strategies=[{"name": "utility_into_window", "tolerance_hours": 4}])
    ```
    """
    return _scenario(name, settings, base=None)


def load_scenarios(path: str | Path) -> list[Scenario]:
    """The scenarios of a TOML file, `baseline` first (the default one if the file has none).

    Every problem is a UsageError naming the file, the scenario and what is expected.
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
    except OSError as error:
        raise UsageError(f"cannot read the scenario file {path}: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise UsageError(f"{path} is not a TOML scenario file: invalid UTF-8 at byte {error.start}; save it as UTF-8 text") from None
    except tomllib.TOMLDecodeError as error:
        raise UsageError(f"{path} is not valid TOML: {error}") from None
    unknown = sorted(set(document) - {"scenario"})
    if unknown:
        raise UsageError(f"{path}: unknown table {', '.join(unknown)}: scenarios are [scenario.NAME] tables")
    tables = document.get("scenario", {})
    if not isinstance(tables, dict) or not tables or not all(isinstance(t, dict) for t in tables.values()):
        raise UsageError(f"{path}: no scenarios: write each as a [scenario.NAME] table (see the README)")
    loaded = []
    for name, table in tables.items():
        try:
            loaded.append(_scenario(name, table, base=path.parent))
        except ValueError as error:
            raise UsageError(f"{path}: scenario {name}: {error}") from None
    if not any(s.name == BASELINE for s in loaded):
        loaded.insert(0, Scenario(BASELINE, description="actual traffic, rules by date, the run's rate card"))
    return sorted(loaded, key=lambda s: s.name != BASELINE)


def _scenario(name: str, table: Mapping[str, object], base: Path | None) -> Scenario:
    unknown = sorted(set(table) - set(SCENARIO_SETTINGS))
    if unknown:
        raise ValueError(f"unknown setting {', '.join(unknown)}: a scenario may set {', '.join(SCENARIO_SETTINGS)}")

    def text(key: str) -> str | None:
        value = table.get(key)
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{key} = {value!r} must be a string")
        return value

    rule_set = text("rules")
    if rule_set is not None:
        rules.rule_set(rule_set)  # ValueError naming the known rule sets
    given = card = text("rate_card")
    if card is not None and base is not None:
        card = str(base / card)
    if card is not None and not Path(card).exists():
        beside = f" (looked for {card}: a path is read relative to the scenario file)" if card != given else ""
        raise ValueError(f"rate_card {given} does not exist{beside}")
    rates_on = table.get("rates_on")
    if rates_on is not None:
        try:
            rates_on = rates_on if isinstance(rates_on, dt.date) else dt.date.fromisoformat(str(rates_on))
        except ValueError:
            raise ValueError(f"rates_on = {rates_on!r} is not a date: write it as 2026-10-01") from None
    currency = text("currency")
    steps = []
    growth = table.get("growth")
    if growth is not None:
        if not isinstance(growth, dict):
            raise ValueError("growth must be a table of category = factor, such as { marketing = 1.2 }")
        factors = {k: v for k, v in growth.items() if k not in ("markets", "seed")}
        params = {"factors": factors} | {k: growth[k] for k in ("markets", "seed") if k in growth}
        steps.append(Step(*strategies.build("growth", params)))
    listed = table.get("strategies", [])
    if not isinstance(listed, list) or not all(isinstance(s, dict) for s in listed):
        raise ValueError('strategies must be an array of inline tables, such as [{ name = "cap_marketing", per_user = 4 }]')
    for position, entry in enumerate(listed, start=1):
        if "name" not in entry:
            raise ValueError(f"strategy {position} has no name: give name = one of {', '.join(strategies.STRATEGIES)}")
        params = {k: v for k, v in entry.items() if k != "name"}
        steps.append(Step(*strategies.build(str(entry["name"]), params)))
    return Scenario(
        name=name,
        description=text("description") or "",
        rules=rule_set,
        rate_card=card,
        rates_on=rates_on,  # type: ignore[arg-type]
        currency=currency.strip().upper() if currency else None,
        steps=tuple(steps),
    )


# --- Shared work --------------------------------------------------------------------------------


def changed_keys(before: pl.DataFrame, after: pl.DataFrame) -> pl.DataFrame:
    """The keys (business number, user) whose messages differ between two traffics, found by
    comparing every key's row count and the sum of its rows' hashes (wrapping): exact but for a
    2^-64 chance, and slower than the strategies' own `change` marks, which `compare` uses; tests
    hold the marks to this."""
    row_hash = pl.struct([pl.col(c).cast(t) for c, t in schema.MESSAGE_SCHEMA.items()]).hash()

    def fingerprints(frame: pl.DataFrame) -> pl.DataFrame:
        return frame.group_by(*KEY).agg(rows=pl.len(), fingerprint=row_hash.sum())

    return (
        fingerprints(before)
        .join(fingerprints(after), on=list(KEY), how="full", coalesce=True)
        .filter(~pl.col("rows").eq_missing(pl.col("rows_right")) | ~pl.col("fingerprint").eq_missing(pl.col("fingerprint_right")))
        .select(*KEY)
        .sort(*KEY)
    )


class SharedWork:
    """The unchanged traffic, and what is computed from it once and reused by every scenario."""

    def __init__(self, messages: pl.DataFrame, settings: Settings):
        self.messages = conform_messages(messages)
        self.settings = settings
        self._candidates: dict[str | None, pl.DataFrame] = {}
        self._charges: dict[str | None, pl.DataFrame] = {}
        self.kernel_messages = 0  # messages that went through the kernel, for the run summary

    def settings_for(self, rule_set: str | None) -> Settings:
        return replace(self.settings, rules=rule_set)

    def charges(self, rule_set: str | None) -> pl.DataFrame:
        """The unchanged traffic billed under `rule_set` (None: by date), computed once."""
        if rule_set not in self._charges:
            candidates = self._kernel(self.messages, rule_set)
            self._candidates[rule_set] = candidates
            self._charges[rule_set] = charges.finish(charges.apply_free_tiers(candidates))
        return self._charges[rule_set]

    def charges_of(self, messages: pl.DataFrame, changed: pl.DataFrame, rule_set: str | None) -> pl.DataFrame:
        """`messages` (the traffic after strategies) billed under `rule_set`. `changed` holds the
        keys (business_phone, user_id) whose messages differ from the unchanged traffic's: when
        the unchanged traffic has been billed under the same rules, only they are billed again."""
        if rule_set not in self._candidates:
            return charges.finish(charges.apply_free_tiers(self._kernel(messages, rule_set)))
        changed = with_group_members(changed.select(*KEY).unique(), self.messages, messages)
        kept = self._candidates[rule_set].join(changed.with_columns(pl.col("business_phone").cast(pl.Categorical)), on=list(KEY), how="anti")
        rebilled = self._kernel(messages.join(changed, on=list(KEY), how="semi"), rule_set)
        candidates = pl.concat([kept, rebilled], how="vertical") if rebilled.height else kept
        return charges.finish(charges.apply_free_tiers(candidates))

    def _kernel(self, messages: pl.DataFrame, rule_set: str | None) -> pl.DataFrame:
        self.kernel_messages += messages.height
        return charges.kernel(messages, self.settings_for(rule_set))


def with_group_members(changed: pl.DataFrame, *traffics: pl.DataFrame) -> pl.DataFrame:
    """`changed` keys with every key that shares a group with one of them in any of `traffics`,
    and so on (the keys of the groups they are connected through): a participant's message opens
    the customer service window of the whole group (the design of issue 17, Meta's "Groups API
    Pricing"), so the members of a group can only be billed together."""
    groups = pl.concat([t.filter(pl.col("group_id").is_not_null()).select(*KEY, "group_id") for t in traffics]).unique()
    if groups.height == 0:
        return changed
    while True:
        touched = groups.join(changed, on=list(KEY), how="semi").select("business_phone", "group_id").unique()
        members = groups.join(touched, on=["business_phone", "group_id"], how="semi").select(*KEY)
        grown = pl.concat([changed, members]).unique()
        if grown.height == changed.height:
            return changed
        changed = grown


def conform_messages(messages: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """Canonical messages (contracts.md §1) in memory, in the schema's columns and types (an
    optional column that is absent is null)."""
    frame = messages.lazy()
    names = frame.collect_schema().names()
    return frame.select([(pl.col(c) if c in names else pl.lit(None)).cast(t).alias(c) for c, t in schema.MESSAGE_SCHEMA.items()]).collect(
        engine="in-memory"
    )


def load_cards(scenarios: Sequence[Scenario], settings: Settings | None = None) -> dict[tuple[object, dt.date | None], pl.DataFrame]:
    """Every rate card the scenarios price with, read and checked once (`ratecards.load_card`),
    keyed by (card, `rates_on`): the default is `settings.rate_card`, else the shipped card."""
    default = (settings or Settings()).rate_card
    cards: dict[tuple[object, dt.date | None], pl.DataFrame] = {}
    read: dict[object, pl.DataFrame] = {}
    for item in scenarios:
        path = item.rate_card or default
        if path not in read:
            read[path] = load_card(path)
        if (path, item.rates_on) not in cards:
            cards[(path, item.rates_on)] = card_in_force_on(read[path], item.rates_on) if item.rates_on else read[path]
            if item.rates_on and cards[(path, item.rates_on)].height == 0 and read[path].height:
                raise UsageError(
                    f"scenario {item.name}: rates_on = {item.rates_on}: the rate card has no rates in force then "
                    f"(its first are from {read[path]['effective_from'].min()}): choose a later date"
                )
    return cards


def card_in_force_on(card: pl.DataFrame, on: dt.date) -> pl.DataFrame:
    """The card's rows in force on `on` (every tier, per currency, market and category), made to
    apply from the first supported date: every charge is priced at that day's rates."""
    in_force = card.filter(pl.col("effective_from") <= on).group_by("currency", "market", "category").agg(pl.col("effective_from").max())
    rows = card.join(in_force, on=["currency", "market", "category", "effective_from"], how="semi")
    return rows.with_columns(effective_from=pl.lit(rules.first_supported_date())).sort("currency", "market", "category", "tier_from")


# --- Running scenarios -----------------------------------------------------------------------------


@dataclass
class ScenarioResult:
    """A scenario's roll-up (month, category; `ROLLUP_COLUMNS`) and what explains it."""

    scenario: Scenario
    rollup: pl.DataFrame
    currency: str | None
    effects: list[StrategyEffect] = field(default_factory=list)
    volumes_before: dict[str, int] = field(default_factory=dict)
    volumes_after: dict[str, int] = field(default_factory=dict)
    rule_sets: tuple[str, ...] = ()
    seconds: float = 0.0

    @property
    def name(self) -> str:
        return self.scenario.name

    @property
    def cost(self) -> Decimal:
        return _total(self.rollup, "cost")

    @property
    def billable_charges(self) -> int:
        return int(self.rollup["billable_charges"].sum())

    @property
    def unpriced_charges(self) -> int:
        return int(self.rollup["unpriced_charges"].sum())


@dataclass
class Comparison:
    """Every scenario's result, the table of `COMPARE_SCHEMA` and the explanations."""

    results: list[ScenarioResult]
    table: pl.DataFrame
    explanations: pl.DataFrame
    shared_kernel_messages: int = 0

    @property
    def baseline(self) -> ScenarioResult:
        return next(r for r in self.results if r.name == BASELINE)


def compare(
    messages: pl.DataFrame | pl.LazyFrame,
    scenarios: Sequence[Scenario],
    settings: Settings | None = None,
    *,
    keep_from: dt.datetime | None = None,
    cards: Mapping[tuple[object, dt.date | None], pl.DataFrame] | None = None,
) -> Comparison:
    """Run `scenarios` (one named `baseline`, e.g. from `load_scenarios`) on `messages`.

    `settings` are what a scenario does not set. `keep_from` keeps only the
    charges from that instant on (a projection bills some history before it, for the windows open
    when it starts). `cards` are the scenarios' rate cards from `load_cards`, read here if not given.
    """
    settings = settings or Settings()
    if not any(s.name == BASELINE for s in scenarios):
        raise UsageError("no baseline scenario: name one scenario baseline")
    scenarios = sorted(scenarios, key=lambda s: s.name != BASELINE)
    shared = SharedWork(messages if isinstance(messages, pl.DataFrame) else messages.collect(), settings)
    for rule_set in progress.track(_rule_sets_to_share(scenarios, settings), "Billing the traffic scenarios share", unit="rule sets"):
        shared.charges(rule_set)
    cards = cards or load_cards(scenarios, settings)
    before = strategies.volumes(shared.messages)
    results: list[ScenarioResult] = []
    for item in progress.track(scenarios, "Scenarios", unit="scenarios", label=lambda s: s.name):
        started = time.perf_counter()
        rule_set = item.rules or settings.rules
        try:
            changed = apply_steps(shared.messages, item.steps, settings)
        except strategies.TrafficTooLarge as error:
            raise UsageError(f"scenario {item.name}: {error}") from None
        traffic, effects, own_cost = changed.messages, changed.effects, changed.own_cost
        billed = shared.charges_of(traffic, changed.changed_keys, rule_set) if item.changes_traffic else shared.charges(rule_set)
        if keep_from is not None:
            billed = billed.filter(pl.col("started_at") >= keep_from)
            own_cost = own_cost.filter(pl.col("timestamp") >= keep_from)
        card_key = (item.rate_card or settings.rate_card, item.rates_on)
        currency = item.currency or settings.currency or (results[0].currency if results else None)
        priced_with = replace(shared.settings_for(rule_set), rate_card=card_key[0], currency=currency, report_unpriced=True)
        priced = pricing.price(billed, priced_with, card=cards[card_key])
        currency = (priced.select(pl.col("currency").drop_nulls().first()).item() if priced.height else None) or currency
        rollup = _rollup(priced, currency)
        rule_sets = tuple(sorted(billed["rule_set"].unique().drop_nulls().to_list()))
        del priced, billed  # the largest frames of a scenario: gone before the next one
        lines = _own_cost_lines(own_cost, item.steps, shared.settings_for(rule_set), currency)
        if lines.height:
            rollup = pl.concat([rollup, lines]).sort("month", "category")
        results.append(
            ScenarioResult(
                scenario=item,
                rollup=rollup,
                currency=currency,
                effects=effects,
                volumes_before=before,
                volumes_after=strategies.volumes(traffic) if item.changes_traffic else before,
                rule_sets=rule_sets,
                seconds=time.perf_counter() - started,
            )
        )
    return Comparison(
        results=results,
        table=comparison_table(results),
        explanations=explanations(results, settings),
        shared_kernel_messages=shared.kernel_messages,
    )


def _rule_sets_to_share(scenarios: Sequence[Scenario], settings: Settings) -> list[str | None]:
    """Rule sets under which billing the unchanged traffic once saves work: the baseline's, those
    of scenarios that do not change the traffic, and those two or more changing scenarios share."""
    rule_sets = [s.rules or settings.rules for s in scenarios]
    changing = [r for r, s in zip(rule_sets, scenarios, strict=False) if s.changes_traffic]
    shared = [r for r, s in zip(rule_sets, scenarios, strict=False) if not s.changes_traffic or s.name == BASELINE]
    shared += [r for r in changing if changing.count(r) > 1]
    return list(dict.fromkeys(shared))


@dataclass
class ChangedTraffic:
    """The traffic after a scenario's strategies: the messages still sent through WhatsApp, the
    keys whose messages changed, what each strategy did, and the messages that cost the business
    something of its own (`StrategySpec.cost_line`: sent by another channel, written by its own AI;
    `timestamp`, `waba_id` and the `step` whose `unit_cost` prices them)."""

    messages: pl.DataFrame
    changed_keys: pl.DataFrame  # business_phone, user_id
    effects: list[StrategyEffect]
    own_cost: pl.DataFrame


def apply_steps(messages: pl.DataFrame, steps: Sequence[Step], settings: Settings) -> ChangedTraffic:
    """Apply `steps` in order. Each runs on the rows still sent, with `change` reset, so its marks
    are its own; a strategy's `timezone` defaults to the billing time zone."""
    traffic = strategies.tracked(messages).collect()
    effects, elsewhere, keys = [], [pl.DataFrame(schema=_ELSEWHERE_SCHEMA)], [pl.DataFrame(schema={k: pl.String for k in KEY})]
    for position, step in enumerate(steps):
        params = dict(step.params)
        if "timezone" in step.spec.parameters and "timezone" not in params:
            params["timezone"] = settings.timezone  # calendar periods in the WABA time zone
        changed = step.spec.core(traffic.lazy(), **params).collect(engine="in-memory")  # every row is still sent
        effect = strategies.effect_of(step.name, step.params, changed)
        effects.append(effect)
        keys.append(changed.filter(pl.col(CHANGE).is_not_null() & ~pl.col(CHANGE).is_in(strategies.SAME_FOR_META)).select(*KEY).unique())
        if step.spec.cost_line is not None and "unit_cost" in step.params:
            counted = changed.filter(pl.col(CHANGE) == step.spec.cost_line[0]).select("timestamp", "waba_id", step=pl.lit(position))
            elsewhere.append(counted.cast(_ELSEWHERE_SCHEMA))  # type: ignore[arg-type]
        if any(effect.count(kind) for kind in strategies.NOT_SENT):
            changed = changed.filter(~pl.col(CHANGE).is_in(strategies.NOT_SENT).fill_null(False))
        traffic = changed.with_columns(pl.lit(None, dtype=pl.String).alias(CHANGE))
    sent = traffic.drop(CHANGE)
    if sent.schema != pl.Schema(schema.MESSAGE_SCHEMA):
        sent = conform_messages(sent)
    return ChangedTraffic(sent, pl.concat(keys).unique(), effects, pl.concat(elsewhere))


_ELSEWHERE_SCHEMA: dict[str, pl.DataType] = {
    "timestamp": schema.INSTANT,
    "waba_id": pl.String(),
    "step": pl.Int64(),
}


def _rollup(priced: pl.DataFrame, currency: str | None) -> pl.DataFrame:
    """`pricing.costs` (contracts.md §4) summed per month and category; unpriced charges counted apart."""
    return (
        pricing.costs(priced)
        .group_by("month", "category")
        .agg(
            charges=pl.col("charges").sum(),
            billable_charges=pl.col("billable_charges").sum(),
            cost=pl.col("cost").filter("priced").sum().cast(COST_DTYPE),
            unpriced_charges=pl.col("billable_charges").filter(~pl.col("priced")).sum(),
        )
        .with_columns(currency=pl.lit(currency, dtype=pl.String))
        .select(ROLLUP_COLUMNS)
        .cast({"charges": pl.Int64, "billable_charges": pl.Int64, "unpriced_charges": pl.Int64})
        .sort("month", "category")
    )


def _own_cost_lines(counted: pl.DataFrame, steps: Sequence[Step], settings: Settings, currency: str | None) -> pl.DataFrame:
    """Messages that cost the business something of its own (`ChangedTraffic.own_cost`), at their
    step's `unit_cost` each (in the scenario's currency): one line a month and category (the
    step's `cost_line`: `authentication_other_channel`, `own_ai`, ...), counted in the WABA's time
    zone like charges."""
    per_step = counted.group_by(month=_local_month(settings), step="step").len().sort("month", "step")
    totals: dict[tuple[str, str], tuple[int, Decimal]] = {}
    for month, step, n in per_step.iter_rows():
        line = (month, steps[step].spec.cost_line[1])  # type: ignore[index]
        count, cost = totals.get(line, (0, Decimal(0)))
        totals[line] = (count + n, cost + Decimal(str(steps[step].params["unit_cost"])) * n)
    return pl.DataFrame(
        {
            "month": [month for month, _ in totals],
            "category": [category for _, category in totals],
            "charges": [n for n, _ in totals.values()],
            "billable_charges": [n for n, _ in totals.values()],
            "cost": [rounded(c, pricing.ROLLUP_DECIMALS) for _, c in totals.values()],
            "currency": [currency] * len(totals),
            "unpriced_charges": [0] * len(totals),
        },
        schema=_rollup_schema(),
    ).sort("month", "category")


def _local_month(settings: Settings) -> pl.Expr:
    """YYYY-MM of `timestamp` in the WABA's time zone (billing-rules.md §2 Months, `core.times.local_time`)."""
    return local_time(settings, "timestamp").dt.strftime("%Y-%m")


def _rollup_schema() -> dict[str, pl.DataType]:
    return {c: COMPARE_SCHEMA[c] for c in ROLLUP_COLUMNS}


def comparison_table(results: Sequence[ScenarioResult]) -> pl.DataFrame:
    """`COMPARE_SCHEMA`: each scenario's roll-up beside the baseline's, on every month and category
    either has (a category a scenario no longer has shows zero, so differences add up)."""
    baseline = next(r for r in results if r.name == BASELINE)
    base = baseline.rollup.select("month", "category", *[pl.col(c).alias(f"base_{c}") for c in ("charges", "billable_charges", "cost")])
    parts = []
    for result in results:
        joined = result.rollup.join(base, on=["month", "category"], how="full", coalesce=True)
        comparable = result.currency == baseline.currency
        zero_cost = pl.lit(Decimal(0), dtype=COST_DTYPE)
        parts.append(
            joined.select(
                scenario=pl.lit(result.name),
                month="month",
                category="category",
                charges=pl.col("charges").fill_null(0),
                billable_charges=pl.col("billable_charges").fill_null(0),
                cost=pl.col("cost").fill_null(zero_cost),
                currency=pl.lit(result.currency, dtype=pl.String),
                unpriced_charges=pl.col("unpriced_charges").fill_null(0),
                charges_difference=pl.col("charges").fill_null(0) - pl.col("base_charges").fill_null(0),
                billable_charges_difference=pl.col("billable_charges").fill_null(0) - pl.col("base_billable_charges").fill_null(0),
                cost_difference=(pl.col("cost").fill_null(zero_cost) - pl.col("base_cost").fill_null(zero_cost)).cast(COST_DTYPE)
                if comparable
                else pl.lit(None, dtype=COST_DTYPE),
            ).sort("month", "category")
        )
    return pl.concat(parts).cast(COMPARE_SCHEMA)  # type: ignore[arg-type]


def side_by_side(table: pl.DataFrame, names: Sequence[str], month: str | None = None) -> pl.DataFrame:
    """The scenarios `names` of a `COMPARE_SCHEMA` table (in that order; those it has), for one
    `month` or all: what Meta bills (`meta_cost`, its `billable_charges` and `unpriced_charges`,
    which are not in the cost), what the business pays itself (`own_cost`: the strategies'
    `unit_cost` lines, `strategies.OWN_COST_CATEGORIES`), `total`, and `total_difference` against
    the first of `names` present. "People, our own AI, or Meta's agent?" is
    `side_by_side(table, ["people", "own_ai", "meta_agent"], month)`."""
    rows = table.filter(pl.col("scenario").is_in(list(names)))
    if month is not None:
        rows = rows.filter(pl.col("month") == month)
    own = pl.col("category").is_in(strategies.OWN_COST_CATEGORIES)
    zero = pl.lit(Decimal(0), dtype=COST_DTYPE)
    summed = rows.group_by("scenario").agg(
        meta_cost=pl.col("cost").filter(~own).sum().cast(COST_DTYPE),
        own_cost=pl.col("cost").filter(own).sum().cast(COST_DTYPE),
        currency=pl.col("currency").drop_nulls().first(),
        billable_charges=pl.col("billable_charges").filter(~own).sum().cast(pl.Int64),
        unpriced_charges=pl.col("unpriced_charges").sum().cast(pl.Int64),
    )
    order = {name: i for i, name in enumerate(names)}
    ordered = summed.with_columns(total=(pl.col("meta_cost").fill_null(zero) + pl.col("own_cost").fill_null(zero)).cast(COST_DTYPE)).sort(
        pl.col("scenario").replace_strict(order, return_dtype=pl.Int64)
    )
    first = ordered["total"][0] if ordered.height else None
    return ordered.select(
        "scenario",
        "meta_cost",
        "own_cost",
        "total",
        total_difference=(pl.col("total") - pl.lit(first, dtype=COST_DTYPE)).cast(COST_DTYPE),
        currency="currency",
        billable_charges="billable_charges",
        unpriced_charges="unpriced_charges",
    )


# --- Explanations ---------------------------------------------------------------------------------


def explanations(results: Sequence[ScenarioResult], settings: Settings) -> pl.DataFrame:
    """`EXPLANATION_SCHEMA`: per scenario, what it changes and what that did, step by step."""
    baseline = next(r for r in results if r.name == BASELINE)
    rows: list[dict[str, object]] = []
    for result in results:
        item, step = result.scenario, 0

        def add(change: str, text: str, effect: StrategyEffect | None = None, scenario: str = item.name) -> None:
            nonlocal step
            counts = {k: (effect.count(k) if effect else None) for k in ("moved", "converted", "dropped", "added", OTHER_CHANNEL)}
            rows.append({"scenario": scenario, "step": step, "change": change, **counts, "explanation": text})
            step += 1

        if item.description:
            add("description", item.description)
        rule_set = item.rules or settings.rules
        if rule_set != (baseline.scenario.rules or settings.rules) or (item.name == BASELINE and rule_set):
            add("rules", f"billed under {rule_set} for all traffic" if rule_set else "billed under the rule set in force at each message's time")
        if item.rate_card and item.rate_card != baseline.scenario.rate_card:
            add("rates", f"priced with the rate card {item.rate_card}")
        if item.rates_on:
            add("rates", f"every charge priced at the card's rates in force on {item.rates_on}")
        if result.currency != baseline.currency:
            add("currency", f"priced in {result.currency}: differences from the baseline ({baseline.currency}) are not computed")
        for effect in result.effects:
            add(effect.name, effect.explain(), effect)
        moved_volumes = _volume_changes(result.volumes_before, result.volumes_after)
        if moved_volumes:
            add("volumes", f"WhatsApp messages by category: {moved_volumes}")
        undocumented = sorted({p.name for p in settings.rule_book.periods if p.status != "meta_documented"} & set(result.rule_sets))
        if undocumented:
            add("warning", f"part of the cost rests on {', '.join(undocumented)}, whose rules are not all read on Meta's own pages")
        if result.unpriced_charges:
            add("unpriced", f"{result.unpriced_charges:,} billable charges have no rate in the card and are not in the cost")
        add("cost", _cost_sentence(result, baseline))
    return pl.DataFrame(rows, schema=EXPLANATION_SCHEMA)


def _volume_changes(before: Mapping[str, int], after: Mapping[str, int]) -> str:
    parts = []
    for kind in (*strategies.GROWTH_CATEGORIES, "inbound"):
        b, a = before.get(kind, 0), after.get(kind, 0)
        if a != b:
            parts.append(f"{kind} {b:,} → {a:,}" + (f" (×{a / b:.2f})" if b else ""))
    return "; ".join(parts)


def _cost_sentence(result: ScenarioResult, baseline: ScenarioResult) -> str:
    unit = result.currency or ""
    text = f"cost {money(result.cost)} {unit}, {result.billable_charges:,} billable charges"
    if result is baseline:
        return text
    if result.currency != baseline.currency:
        return text + " (another currency than the baseline's)"
    difference = result.cost - baseline.cost
    share = f" ({difference / baseline.cost:+.1%})" if baseline.cost else ""
    text += f": {signed_money(difference)} {unit}{share} and {result.billable_charges - baseline.billable_charges:+,} billable charges against the baseline"
    by_category = (
        result.rollup.group_by("category")
        .agg(pl.col("cost").sum())
        .join(baseline.rollup.group_by("category").agg(base=pl.col("cost").sum()), on="category", how="full", coalesce=True)
        .select("category", difference=pl.col("cost").fill_null(Decimal(0)) - pl.col("base").fill_null(Decimal(0)))
        .filter(pl.col("difference") != 0)
        .sort(pl.col("difference").abs(), "category", descending=[True, False])
    )
    if by_category.height:
        text += "; by category: " + ", ".join(f"{c} {signed_money(d)}" for c, d in by_category.head(5).iter_rows())
    return text


def _total(frame: pl.DataFrame, column: str) -> Decimal:
    value = frame[column].sum() if frame.height else None
    return Decimal(value) if value is not None else Decimal(0)
