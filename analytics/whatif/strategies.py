"""Messaging strategies: what the business would do differently, as transformations of its traffic.

A strategy is a pure function from canonical messages (contracts.md §1, a Polars `LazyFrame`) to
the messages the business would have sent under that strategy; `analytics.whatif.scenarios` bills and
prices the result with the same engine and rate cards as the real traffic, because Meta's prices
depend on windows and timing (billing-rules.md §2), so a saving can only be computed by replaying
the changed traffic, never by multiplying a spreadsheet.

Each strategy is registered by name (`STRATEGIES`), takes keyword parameters (a scenario file sets
them, `analytics.whatif.scenarios`), and marks what it did in the `change` column, so that every saving
can be traced to its cause:

- `moved`: the message is sent at another time;
- `converted`: the message is sent in another form (a template as a free-form message, a user
  message now coming from an ad);
- `added`: the message is new (the traffic of a new user, copied from an existing one);
- `dropped`: the message is not sent;
- `other_channel`: the message is sent through another channel (SMS, e-mail), at its own cost;
- `by_own_ai`: the message is the same for Meta, written by the business's own AI at its own cost.

A strategy may give the business's own cost of what it changed (`unit_cost`, in the scenario's
currency): `analytics.whatif.scenarios` puts it on a line of its own (`StrategySpec.cost_line`: the
change kind counted and the line's category), beside what Meta bills, so totals compare fairly.

Rows marked `dropped` or `other_channel` stay in the frame so that they can be counted and priced
on their channel; `sent(frame)` is what goes to WhatsApp. Strategies compose: each one only sees
the rows still sent (`@strategy` keeps the others aside), so
`messages.pipe(cap_marketing, per_user=4).pipe(utility_into_window, tolerance_hours=4)` works.

Everything random is seeded: a message or user is chosen when a hash of its id and the seed falls
below the share asked for, so the same traffic, parameters and seed choose the same messages (for
the same Polars version, whose hash this is).

Times follow billing-rules.md §2: a customer service window (CSW) is open at `t` iff the user's
latest message at or before `t` came less than 24 h earlier (a user message at the same instant
comes first, §2 Order).
"""

from __future__ import annotations

import datetime as dt
import functools
import inspect
import os
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from types import MappingProxyType

import polars as pl

from analytics.core import schema
from analytics.settings import Settings
from analytics.terms import rules
from analytics.terms.markets import MARKETS, market_expr, missing_user_country

# The `change` column and its values (module docstring).
CHANGE = "change"
MOVED, CONVERTED, ADDED, DROPPED, OTHER_CHANNEL = "moved", "converted", "added", "dropped", "other_channel"
BY_OWN_AI = "by_own_ai"
CHANGE_KINDS = (MOVED, CONVERTED, ADDED, DROPPED, OTHER_CHANNEL, BY_OWN_AI)
NOT_SENT = (DROPPED, OTHER_CHANNEL)  # kept in the frame, not sent through WhatsApp
SAME_FOR_META = (BY_OWN_AI,)  # marked for a cost line of its own, but billed by Meta as before: no key to bill again

KEY = ("business_phone", "user_id")  # billing-rules.md §2 Key
MARKETING = ("marketing", "marketing_lite")  # §2: marketing_lite is billed as marketing
SERVICE = "service"  # non-template messages, in both directions: what users start
GROWTH_CATEGORIES = ("marketing", "utility", "authentication", SERVICE)
PERIODS = {"day": "1d", "week": "1w", "month": "1mo"}  # calendar periods (weeks start on Monday)
OTHER_CHANNEL_CATEGORY = "authentication_other_channel"  # the cost line of `channel_shift`
OWN_AI_CATEGORY = "own_ai"  # the cost line of `service_by_own_ai`: the business's own AI per reply
AGENT_OWN_COST_CATEGORY = "meta_business_agent_own_cost"  # `service_by_business_agent`'s optional line
OWN_COST_CATEGORIES = (OTHER_CHANNEL_CATEGORY, OWN_AI_CATEGORY, AGENT_OWN_COST_CATEGORY)  # lines Meta does not bill
# Tokens of a Meta Business Agent reply when not given: the design's `agent_tokens_per_message`, the
# top of Meta's 20,000-25,000 a reply (changes-2026-h2.md §5), so that costs are not understated.
AGENT_TOKENS_PER_REPLY = 25_000
# Meta's "Groups API" (Updated Jun 16, 2026): "Groups can have a maximum of 8 participants",
# https://developers.facebook.com/documentation/business-messaging/whatsapp/groups/
MAX_GROUP_PARTICIPANTS = 8
ENTRY_POINT_NAMES = {"ctwa": "a Click-to-WhatsApp ad", "page_cta": "a Facebook Page call-to-action"}
# The customer service window of the rules (data/rules/rule_sets.toml; every rule set's so far).
_CSW_US = rules.shipped().longest("customer_service_window") // dt.timedelta(microseconds=1)
_ROW = "_row"
_NO_FACTORS: Mapping[str, float] = MappingProxyType({})
# Bounds on what a scenario may ask for: beyond them a value is a typo, not a plan.
MAX_GROWTH_FACTOR = 100.0
# What billing holds per message at its peak, rounded up (benchmarks/README.md: 10 M messages, 2.6 GB).
BYTES_PER_MESSAGE = 500


class TrafficTooLarge(ValueError):
    """A strategy would build more traffic than this machine can bill."""


# --- The registry ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class StrategySpec:
    """A registered strategy: `function` (what the module exports: any tracked or canonical
    frame), `core` (the same on a frame whose rows are all still sent, as `analytics.whatif.scenarios`
    gives it: no rows to set aside), its parameters (name -> annotation, default or `REQUIRED`)
    and `explain`, a sentence with `{moved}`, `{converted}`, `{added}`, `{dropped}`,
    `{other_channel}`, `{added_users}`, ... and the parameters as fields. `cost_line` is
    (change kind, category) for a strategy whose `unit_cost`, when given, prices the rows it marked
    with that kind on a line of that category (module docstring); None for the others."""

    name: str
    function: Callable[..., pl.LazyFrame]
    core: Callable[..., pl.LazyFrame]
    parameters: dict[str, tuple[object, object]]
    explain: str
    cost_line: tuple[str, str] | None = None


REQUIRED = inspect.Parameter.empty
STRATEGIES: dict[str, StrategySpec] = {}


def strategy(explain: str, cost_line: tuple[str, str] | None = None) -> Callable[[Callable[..., pl.LazyFrame]], Callable[..., pl.LazyFrame]]:
    """Register a strategy under its function's name. The wrapped function receives the rows still
    sent (with a `change` column, null where nothing happened yet) and returns them changed; rows
    already not sent bypass it and are appended back unchanged. `cost_line`: `StrategySpec`."""

    def register(function: Callable[..., pl.LazyFrame]) -> Callable[..., pl.LazyFrame]:
        hints = typing.get_type_hints(function)
        parameters = {
            name: (hints[name], p.default) for name, p in inspect.signature(function).parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY
        }

        @functools.wraps(function)
        def wrapped(messages: pl.LazyFrame | pl.DataFrame, **params: object) -> pl.LazyFrame:
            frame = tracked(messages)
            gone = pl.col(CHANGE).is_in(NOT_SENT).fill_null(False)
            return pl.concat([function(frame.filter(~gone), **params), frame.filter(gone)], how="vertical")

        STRATEGIES[function.__name__] = StrategySpec(function.__name__, wrapped, function, parameters, explain, cost_line)
        return wrapped

    return register


def tracked(messages: pl.LazyFrame | pl.DataFrame) -> pl.LazyFrame:
    """Canonical messages with a `change` column (null: unchanged), as strategies take them."""
    frame = messages.lazy()
    if CHANGE in frame.collect_schema().names():
        return frame
    return frame.with_columns(pl.lit(None, dtype=pl.String).alias(CHANGE))


def sent(frame: pl.LazyFrame | pl.DataFrame) -> pl.LazyFrame:
    """The canonical messages a changed traffic sends through WhatsApp: what `analytics.bill.charges` bills."""
    frame = frame.lazy()
    if CHANGE not in frame.collect_schema().names():
        return frame.select(list(schema.MESSAGE_SCHEMA))
    return frame.filter(~pl.col(CHANGE).is_in(NOT_SENT).fill_null(False)).select(list(schema.MESSAGE_SCHEMA))


def build(name: str, params: Mapping[str, object]) -> tuple[StrategySpec, dict[str, object]]:
    """The strategy `name` with `params` checked and converted (TOML values: numbers, strings,
    arrays, tables). Raises ValueError naming what is wrong and what is expected."""
    spec = STRATEGIES.get(name)
    if spec is None:
        raise ValueError(f"unknown strategy {name!r}: expected one of {', '.join(STRATEGIES)}")
    unknown = sorted(set(params) - set(spec.parameters))
    if unknown:
        raise ValueError(f"strategy {name} has no parameter {', '.join(unknown)}: its parameters are {_described(spec)}")
    missing = [p for p, (_, default) in spec.parameters.items() if default is REQUIRED and p not in params]
    if missing:
        raise ValueError(f"strategy {name} needs {', '.join(missing)}: its parameters are {_described(spec)}")
    values = {p: _converted(name, p, params[p], spec.parameters[p][0]) for p in params}
    try:
        spec.function(schema.empty_messages().lazy(), **values)  # the function checks ranges and choices
    except ValueError as error:
        raise ValueError(f"strategy {name}: {error}") from None
    return spec, values


def _described(spec: StrategySpec) -> str:
    def one(name: str, annotation: object, default: object) -> str:
        kind = getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
        return f"{name} ({kind}{'' if default is REQUIRED else f', default {default!r}'})"

    return ", ".join(one(n, a, d) for n, (a, d) in spec.parameters.items()) or "none"


def _converted(strategy_name: str, parameter: str, value: object, annotation: object) -> object:
    """A TOML value as the parameter's annotated type, or ValueError."""

    def fail(expected: str) -> typing.NoReturn:
        raise ValueError(f"strategy {strategy_name}: {parameter} = {value!r} is not {expected}")

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            fail("a number")
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail("a whole number")
        return value
    if annotation is str:
        if not isinstance(value, str):
            fail("a string")
        return value
    if annotation is Decimal:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            fail("a number")
        try:
            return Decimal(str(value))
        except InvalidOperation:
            fail("a number")
    if origin in (tuple, Sequence) and args and args[0] is str:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            fail("a list of strings")
        return tuple(value)
    if origin in (dict, Mapping) and args == (str, float):
        if not isinstance(value, dict) or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value.values()):
            fail("a table of numbers, such as { marketing = 1.2 }")
        return {str(k): float(v) for k, v in value.items()}
    raise TypeError(f"strategy {strategy_name}: parameter {parameter} has an unsupported type {annotation}")


# --- Shared pieces ----------------------------------------------------------------------------------


def _delivered_outbound() -> pl.Expr:
    """Outbound messages that reach the user (§2 Delivery: failed ones are never billed)."""
    return (pl.col("direction") == "outbound") & ~pl.col("status").eq_missing("failed")


def _template_of(categories: Sequence[str]) -> pl.Expr:
    return (pl.col("message_type") == schema.TEMPLATE) & pl.col("template_category").is_in(list(categories))


def _chosen(column: str, share: float, seed: int) -> pl.Expr:
    """True for a seeded pseudo-random `share` of the values of `column` (a string id)."""
    if share >= 1:
        return pl.lit(True)
    return (pl.col(column).hash(seed).cast(pl.Float64) / 2.0**64) < share


def _check_share(name: str, share: float) -> None:
    if not 0 <= share <= 1:
        raise ValueError(f"{name} = {share} must be between 0 and 1 (a share of the messages)")


def _with_csw_open(rows: pl.LazyFrame, inbound: pl.LazyFrame) -> pl.LazyFrame:
    """`rows` (key and `timestamp`) with `csw_open`: a user message of the key at or before the
    row's time, less than 24 h earlier (§2; a user message at the same instant comes first)."""
    return (
        rows.sort("timestamp")
        .join_asof(
            inbound.select(*KEY, last_user_message="timestamp").sort("last_user_message"),
            left_on="timestamp",
            right_on="last_user_message",
            by=list(KEY),
            strategy="backward",
            allow_exact_matches=True,
            check_sortedness=False,
        )
        .with_columns(csw_open=(pl.col("timestamp").dt.epoch("us") < pl.col("last_user_message").dt.epoch("us") + _CSW_US).fill_null(False))
        .drop("last_user_message")
    )


def _position_in_run(columns: Sequence[str]) -> pl.Expr:
    """1-based position of each row in its run of equal `columns` (a frame sorted by them): a
    vectorised count, cheaper than a window over groups."""
    new_run = pl.any_horizontal([pl.col(c) != pl.col(c).shift(1) for c in columns]).fill_null(True)
    index = pl.int_range(pl.len(), dtype=pl.Int64)
    return index - pl.when(new_run).then(index).forward_fill() + 1


def _updated(frame: pl.LazyFrame, changes: pl.LazyFrame, columns: Sequence[str]) -> pl.LazyFrame:
    """`frame` (with `_row`) with `columns` and `change` replaced on the rows `changes` lists, in
    the frame's order. Only the row numbers are joined (`_aligned`), not every column."""
    new = changes.select(_ROW, *[pl.col(c).alias(f"{c}_new") for c in (*columns, CHANGE)], _hit=pl.lit(True))
    joined = _aligned(frame, new, [_ROW])
    return joined.with_columns([pl.when(pl.col("_hit")).then(pl.col(f"{c}_new")).otherwise(pl.col(c)).alias(c) for c in (*columns, CHANGE)]).drop(
        _ROW, "_hit", *[f"{c}_new" for c in (*columns, CHANGE)]
    )


def _aligned(frame: pl.LazyFrame, other: pl.LazyFrame, on: Sequence[str]) -> pl.LazyFrame:
    """`frame` beside the columns of `other` matching each row on `on` (null where none; `other`
    unique on `on`): a left join of the `on` columns alone, in order, put beside the frame."""
    matched = frame.select(*on).join(other, on=list(on), how="left", maintain_order="left").drop(*on)
    return pl.concat([frame, matched], how="horizontal")


# --- The strategies ---------------------------------------------------------------------------------


@strategy(
    explain="{moved:,} utility templates sent outside a customer service window were delayed to the user's next "
    "message, which came within {tolerance_hours:g} h; the others were sent as before"
)
def utility_into_window(messages: pl.LazyFrame, *, tolerance_hours: float = 4.0) -> pl.LazyFrame:
    """Utility templates sent outside a customer service window wait for the user's next message.

    Business behaviour: an order or shipping update that is not urgent is held back until the user
    writes, if the user writes within `tolerance_hours`; it then goes out the moment the user's
    message arrives, inside the window the message opens (billing-rules.md §5: where the rules make
    utility free inside the window, `free_in_customer_service_window`, it costs nothing). If the user does not write within the tolerance,
    the template is sent as before. Assumptions: the user writes when they would have anyway (the
    held-back template does not change their behaviour); failed templates are left alone.
    """
    if not tolerance_hours > 0:
        raise ValueError(f"tolerance_hours = {tolerance_hours} must be more than 0")
    frame = messages.with_row_index(_ROW)
    inbound = frame.filter(pl.col("direction") == "inbound")
    utility = frame.filter(_delivered_outbound() & _template_of(["utility"])).select(_ROW, *KEY, "timestamp")
    outside = _with_csw_open(utility, inbound).filter(~pl.col("csw_open"))
    delayed = outside.join_asof(
        inbound.select(*KEY, next_user_message="timestamp").sort("next_user_message"),
        left_on="timestamp",
        right_on="next_user_message",
        by=list(KEY),
        strategy="forward",
        allow_exact_matches=False,
        tolerance=dt.timedelta(hours=tolerance_hours),
        check_sortedness=False,
    ).filter(pl.col("next_user_message").is_not_null())
    moved = delayed.select(_ROW, timestamp="next_user_message", change=pl.lit(MOVED))
    return _updated(frame, moved, ["timestamp"])


@strategy(explain="{converted:,} templates ({categories_text}) sent inside an open customer service window were sent as free-form messages instead")
def templates_to_free_form(messages: pl.LazyFrame, *, categories: Sequence[str] = ("utility",), share: float = 1.0, seed: int = 0) -> pl.LazyFrame:
    """Inside an open customer service window, templates of `categories` become free-form messages.

    Business behaviour: while the user's window is open the business may send any message
    (billing-rules.md §2), so a template whose text a plain reply would carry is sent as one.
    `share` is the part of those templates where a reply would do (chosen per message, seeded).
    Such replies are free service messages where the rules make service free, and metered past the
    free tier where they do not (from 2026-10-01, §5, §9). Assumptions: the message is sent at the same
    time; authentication codes should stay templates (Meta's policy), so choose them knowingly.
    """
    unknown = [c for c in categories if c not in schema.TEMPLATE_CATEGORIES]
    if unknown or not categories:
        raise ValueError(f"categories = {list(categories)}: choose among {', '.join(schema.TEMPLATE_CATEGORIES)}")
    _check_share("share", share)
    frame = messages.with_row_index(_ROW)
    inbound = frame.filter(pl.col("direction") == "inbound")
    templates = frame.filter(_delivered_outbound() & _template_of(categories) & _chosen("message_id", share, seed))
    inside = _with_csw_open(templates.select(_ROW, *KEY, "timestamp"), inbound).filter("csw_open")
    converted = inside.select(_ROW, message_type=pl.lit("text"), template_category=pl.lit(None, dtype=pl.String), change=pl.lit(CONVERTED))
    return _updated(frame, converted, ["message_type", "template_category"])


@strategy(explain="{dropped:,} marketing templates beyond {per_user} per user per {period} were not sent")
def cap_marketing(messages: pl.LazyFrame, *, per_user: int, period: str = "month", timezone: str = "UTC") -> pl.LazyFrame:
    """At most `per_user` marketing templates per user per calendar `period`; the rest are not sent.

    Business behaviour: a frequency cap on campaigns. A user is a `user_id`, across all of the
    business's numbers; `period` is `day`, `week` (Monday to Sunday) or `month`, in `timezone`
    (a scenario gives its billing time zone when the strategy's parameters do not). The first
    templates of a period are sent, in time order (then message id); marketing_lite counts as
    marketing (billing-rules.md §2). Assumptions: dropped campaigns are not replaced by anything,
    and a failed send counts toward the cap as a send does.
    """
    if per_user < 0:
        raise ValueError(f"per_user = {per_user} must be 0 or more")
    if period not in PERIODS:
        raise ValueError(f"period = {period!r}: choose {', '.join(PERIODS)}")
    Settings(timezone=timezone)  # checks the time zone
    frame = messages.with_row_index(_ROW)
    marketing = frame.filter((pl.col("direction") == "outbound") & _template_of(MARKETING)).select(
        _ROW,
        "user_id",
        "timestamp",
        "message_id",
        period_start=pl.col("timestamp").dt.convert_time_zone(timezone).dt.truncate(PERIODS[period]),
    )
    in_order = marketing.sort("user_id", "period_start", "timestamp", "message_id")
    dropped = in_order.filter(_position_in_run(["user_id", "period_start"]) > per_user).select(_ROW, change=pl.lit(DROPPED))
    return _updated(frame, dropped, [])


@strategy(explain="{converted:,} user-started sessions ({share:.0%} of them) began from {entry_point_text}")
def more_entry_points(messages: pl.LazyFrame, *, share: float, entry_point: str = "ctwa", seed: int = 0) -> pl.LazyFrame:
    """A `share` of the sessions users start begins from a Click-to-WhatsApp ad (`entry_point`).

    Business behaviour: the business runs Click-to-WhatsApp ads (or Facebook Page buttons,
    `page_cta`) that the same users would use to write. A session starts with a user message
    when no user message of the key came in the 24 h before (no open customer service window);
    a seeded `share` of those first messages gets the entry point, unless they have one. The
    business's reply then opens a 72 h free entry point window (billing-rules.md §2).
    Assumptions: the users and their messages are the same, only their way in changes; what the
    ads cost is not modelled (Meta bills ads apart from messaging).
    """
    _check_share("share", share)
    if entry_point not in schema.ENTRY_POINTS:
        raise ValueError(f"entry_point = {entry_point!r}: choose {' or '.join(schema.ENTRY_POINTS)}")
    frame = messages.with_row_index(_ROW)
    inbound = frame.filter(pl.col("direction") == "inbound").select(_ROW, *KEY, "timestamp", "message_id", "entry_point")
    previous = pl.when(_position_in_run(KEY) > 1).then(pl.col("timestamp").shift(1))
    starts = (
        inbound.sort(*KEY, "timestamp", "message_id")
        .with_columns(previous=previous)
        .filter(pl.col("previous").is_null() | (pl.col("timestamp").dt.epoch("us") >= pl.col("previous").dt.epoch("us") + _CSW_US))
    )
    converted = starts.filter(pl.col("entry_point").is_null() & _chosen("message_id", share, seed)).select(
        _ROW, entry_point=pl.lit(entry_point), change=pl.lit(CONVERTED)
    )
    return _updated(frame, converted, ["entry_point"])


@strategy(
    explain="volumes scaled by {factors_text} with whole users: {added_users:,} users added ({added:,} messages), "
    "{dropped_users:,} dropped ({dropped:,} messages)"
)
def growth(
    messages: pl.LazyFrame,
    *,
    factors: Mapping[str, float] = _NO_FACTORS,
    markets: Mapping[str, float] = _NO_FACTORS,
    seed: int = 0,
) -> pl.LazyFrame:
    """Volumes scaled by `factors` per category (and `markets` per market) by adding or dropping
    whole users, so that windows and timing stay those of real users.

    Business behaviour: more (or fewer) customers who behave like today's. Each user of a business
    number (a key, billing-rules.md §2) is assigned the category of most of its outbound messages
    (`marketing`, `utility`, `authentication`, or `service` for non-template replies and users who
    only write); its factor is that category's times its market's (1 where not given). A factor
    1.2 keeps every user and adds, for a seeded 20% of them, a copy of all their messages; 0.8
    drops a seeded 20% of them; 2.5 keeps each, adds one copy, and a second for half of them.
    Copies are new users: `user_id` and `message_id` get the suffix `~g1`, `~g2`, ...; they keep
    the original's country, timing and business number. Assumptions: a category's volume grows
    with the users mostly sent that category, so other categories move a little too (the
    explanation shows what was asked and what came out).
    """
    for category, factor in factors.items():
        if category not in GROWTH_CATEGORIES:
            raise ValueError(f"growth category {category!r}: choose among {', '.join(GROWTH_CATEGORIES)}")
        _check_factor(category, factor)
    for market, factor in markets.items():
        if market not in MARKETS:
            raise ValueError(f"growth market {market!r} is not one of Meta's markets (data/markets/regions.csv)")
        _check_factor(market, factor)
    names = messages.collect_schema().names()
    frame = messages.with_columns(user_country=missing_user_country(names))
    outbound = frame.filter(_delivered_outbound())
    kind = (
        pl.when(pl.col("message_type") == schema.TEMPLATE)
        .then(pl.col("template_category").replace(rules.shipped().choices.billed_category))
        .otherwise(pl.lit(SERVICE))
    )
    rank = {c: i for i, c in enumerate(GROWTH_CATEGORIES)}
    dominant = (
        outbound.group_by(*KEY, kind=kind)
        .agg(n=pl.len())
        .sort([*KEY, "n", pl.col("kind").replace_strict(rank, default=len(rank))], descending=[False, False, True, False])
        .group_by(*KEY)
        .agg(kind=pl.col("kind").first())
    )
    keys = (
        frame.group_by(*KEY)
        .agg(
            user_country=pl.col("user_country").drop_nulls().first(),
            first_date=pl.col("timestamp").min().dt.date(),
        )
        .join(dominant, on=list(KEY), how="left")
        .with_columns(kind=pl.col("kind").fill_null(SERVICE))
    )
    factor = pl.col("kind").replace_strict(dict(factors), default=1.0, return_dtype=pl.Float64)
    if markets:
        market = market_expr(pl.col("user_country"), pl.col("first_date"))
        factor = factor * market.replace_strict(dict(markets), default=1.0, return_dtype=pl.Float64)
    draw = pl.struct(*KEY).hash(seed).cast(pl.Float64) / 2.0**64
    copies = keys.select(*KEY, copies=(factor.floor() + (draw < factor - factor.floor()).cast(pl.Float64)).cast(pl.Int64)).filter(
        pl.col("copies") != 1
    )
    joined = _aligned(frame, copies, KEY)
    _check_size(joined)
    kept = joined.with_columns(pl.when(pl.col("copies") == 0).then(pl.lit(DROPPED)).otherwise(pl.col(CHANGE)).alias(CHANGE))
    added = (
        joined.filter(pl.col("copies") > 1)
        .with_columns(copy=pl.int_ranges(1, pl.col("copies")))
        .explode("copy")
        .with_columns(
            user_id=pl.col("user_id") + "~g" + pl.col("copy").cast(pl.String),
            message_id=pl.col("message_id") + "~g" + pl.col("copy").cast(pl.String),
            change=pl.lit(ADDED),
        )
        .drop("copy")
    )
    return pl.concat([kept, added], how="vertical").drop("copies")


def _check_factor(name: str, factor: float) -> None:
    if not 0 <= factor <= MAX_GROWTH_FACTOR:
        raise ValueError(
            f"growth factor {name} = {factor:g} must be between 0 and {MAX_GROWTH_FACTOR:g} "
            f"(1.2 is 20% more customers; {MAX_GROWTH_FACTOR:g} is {MAX_GROWTH_FACTOR:g} times today's)"
        )


def _check_size(joined: pl.LazyFrame) -> None:
    """Count the messages growth would build (rows × copies) before building them, and refuse
    traffic this machine cannot bill: a clear error instead of the kernel's out-of-memory kill."""
    size = joined.select(rows=pl.len(), added=(pl.col("copies").fill_null(1) - 1).clip(lower_bound=0).sum()).collect()
    total = int(size["rows"][0]) + int(size["added"][0] or 0)
    memory = physical_memory()
    if memory is not None and total * BYTES_PER_MESSAGE > memory:
        raise TrafficTooLarge(
            f"growth would build about {total:,} messages, which need about {total * BYTES_PER_MESSAGE / 1e9:,.0f} GB "
            f"to bill, more than this machine's {memory / 1e9:,.0f} GB of memory: ask for smaller growth factors"
        )


def physical_memory() -> int | None:
    """This machine's memory in bytes, or None where the platform does not say."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not on this platform: no estimate to hold it to
        return None


@strategy(
    explain="{other_channel:,} authentication messages ({share:.0%}) were sent by {channel} at {unit_cost} each instead of WhatsApp",
    cost_line=(OTHER_CHANNEL, OTHER_CHANNEL_CATEGORY),
)
def channel_shift(messages: pl.LazyFrame, *, share: float, unit_cost: Decimal, channel: str = "sms", seed: int = 0) -> pl.LazyFrame:
    """A `share` of authentication templates goes through another channel at `unit_cost` each.

    Business behaviour: one-time passwords sent by SMS (or e-mail, voice) instead of WhatsApp for a
    seeded `share` of the messages. They leave the WhatsApp traffic and are marked `other_channel`;
    `analytics.whatif.scenarios` prices them at `unit_cost` (in the scenario's currency) on a separate line,
    category `authentication_other_channel`, so totals compare fairly. Failed sends stay as they
    are (they cost nothing). Assumptions: the other channel delivers every message it is given.
    """
    _check_share("share", share)
    if unit_cost < 0:
        raise ValueError(f"unit_cost = {unit_cost} must be 0 or more")
    if not channel:
        raise ValueError("channel must be named (e.g. sms)")
    chosen = _delivered_outbound() & _template_of([rules.AUTH]) & _chosen("message_id", share, seed)
    return messages.with_columns(pl.when(chosen).then(pl.lit(OTHER_CHANNEL)).otherwise(pl.col(CHANGE)).alias(CHANGE))


@strategy(
    explain="{converted:,} service replies ({share:.0%}) were answered by Meta Business Agent at {tokens_per_message:,} tokens each",
    cost_line=(CONVERTED, AGENT_OWN_COST_CATEGORY),
)
def service_by_business_agent(
    messages: pl.LazyFrame, *, share: float = 1.0, tokens_per_message: int = AGENT_TOKENS_PER_REPLY, unit_cost: Decimal = Decimal(0), seed: int = 0
) -> pl.LazyFrame:
    """A `share` of service replies is written by Meta Business Agent instead of the business's people.

    Business behaviour: Meta's own AI agent answers customers (changes-2026-h2.md §2, Meta
    "Upcoming pricing updates for Meta Business Agent, service and utility messages", Updated:
    Jul 1, 2026, https://developers.facebook.com/documentation/business-messaging/whatsapp/pricing).
    A service reply is a delivered outbound one-to-one (no `group_id`) non-template message that
    is not a reaction and not already the agent's; a seeded `share` of them (chosen per message)
    gets `sent_by = meta_business_agent` and `tokens = tokens_per_message` (default 25,000, the top
    of Meta's 20,000-25,000 a reply, so costs are not understated). The engine bills them as
    `meta_business_agent` per token from 2026-08-01, never free, and as service before that date
    (the design of issue 17). `unit_cost`, when given, is what each such reply costs the business
    besides Meta's bill (set-up, staff supervising it), in the scenario's currency, on a line of its
    own (`meta_business_agent_own_cost`). Assumptions: the agent answers at the same moment and in
    one message per reply the people sent; users behave as before; failed replies stay as they are.
    """
    _check_share("share", share)
    if tokens_per_message <= 0:
        raise ValueError(f"tokens_per_message = {tokens_per_message} must be more than 0 (Meta: about 20,000-25,000 a reply)")
    if unit_cost < 0:
        raise ValueError(f"unit_cost = {unit_cost} must be 0 or more")
    frame = _with_extensions(messages).with_row_index(_ROW)
    chosen = frame.filter(_service_replies() & _chosen("message_id", share, seed)).select(
        _ROW,
        sent_by=pl.lit(schema.META_BUSINESS_AGENT),
        tokens=pl.lit(tokens_per_message, dtype=pl.Int64),
        change=pl.lit(CONVERTED),
    )
    return _updated(frame, chosen, ["sent_by", "tokens"])


@strategy(
    explain="{by_own_ai:,} service replies ({share:.0%}) were written by the business's own AI at {unit_cost} each; Meta bills them as before",
    cost_line=(BY_OWN_AI, OWN_AI_CATEGORY),
)
def service_by_own_ai(messages: pl.LazyFrame, *, unit_cost: Decimal, share: float = 1.0, seed: int = 0) -> pl.LazyFrame:
    """A `share` of service replies is written by the business's own AI instead of its people.

    Business behaviour: the business runs its own assistant (its model, its provider) behind its
    WhatsApp number. For Meta nothing changes: the replies are still the business's messages
    (`sent_by` unchanged), billed as service (free or metered as the rules say); Meta's AI Provider
    charge is only for general-purpose AI assistants, "not for businesses that use AI for their own
    support" (changes-2026-h2.md §6). What the AI costs, `unit_cost` a reply in the scenario's
    currency (the business's figure: no rate of Meta's), goes on a line of its own, category
    `own_ai`. The replies chosen are those of `service_by_business_agent` (the same seed and share
    choose the same messages), marked `by_own_ai`: their keys are not billed again. Assumptions: one AI reply per reply the people
    sent, at the same moment; failed replies cost nothing.
    """
    _check_share("share", share)
    if unit_cost < 0:
        raise ValueError(f"unit_cost = {unit_cost} must be 0 or more")
    chosen = _service_replies() & _chosen("message_id", share, seed)
    return _with_extensions(messages).with_columns(pl.when(chosen).then(pl.lit(BY_OWN_AI)).otherwise(pl.col(CHANGE)).alias(CHANGE))


@strategy(explain="{converted:,} one-to-one marketing templates to {converted_users:,} users went to groups of up to {size} users instead")
def groups_instead_of_broadcast(
    messages: pl.LazyFrame, *, size: int = MAX_GROUP_PARTICIPANTS, share: float = 1.0, timezone: str = "UTC", seed: int = 0
) -> pl.LazyFrame:
    """Marketing templates sent one-to-one go to groups of `size` users instead (Groups API).

    Business behaviour: instead of a broadcast to each user, the business puts its users in groups
    of at most `size` (Meta's maximum is 8: "Groups API", Updated: Jun 16, 2026,
    https://developers.facebook.com/documentation/business-messaging/whatsapp/groups/) and sends
    each campaign once per group. A campaign is the marketing templates (marketing_lite too) of one
    business number, one template (`template_name`, else the category) and one local day in
    `timezone`; its recipients, in a seeded order, fill groups of `size` (the last one smaller; a
    user sent the campaign twice is in two rounds). The deliveries are the same: each user's copy
    becomes a row of the group message, `group_id` `<first message id>~group`, `message_id`
    `<first message id>~to-group` (the group's first copy in time), at that copy's time, with its own status
    (failed participants are not billed). Meta bills each delivered participant as
    `group_marketing` at the rate of the participant's country ("Groups API Pricing", Updated: May
    21, 2026, https://developers.facebook.com/documentation/business-messaging/whatsapp/groups/pricing/),
    with no free entry point window in groups. `share` chooses the users (seeded) who agreed to
    join groups; the others keep their one-to-one templates. Assumptions: users join the groups
    and nobody writes in them (no group window opens); the campaign goes out in one go.
    """
    if not 1 <= size <= MAX_GROUP_PARTICIPANTS:
        raise ValueError(f"size = {size} must be between 1 and {MAX_GROUP_PARTICIPANTS} (Meta's maximum of group participants)")
    _check_share("share", share)
    Settings(timezone=timezone)  # checks the time zone
    frame = _with_extensions(messages).with_row_index(_ROW)
    campaign = ["business_phone", "campaign", "day"]
    broadcast = frame.filter(
        (pl.col("direction") == "outbound") & _template_of(MARKETING) & pl.col("group_id").is_null() & _chosen("user_id", share, seed)
    ).select(
        _ROW,
        "business_phone",
        "user_id",
        "timestamp",
        "message_id",
        campaign=pl.coalesce("template_name", "template_category"),
        day=pl.col("timestamp").dt.convert_time_zone(timezone).dt.date(),
    )
    rounds = broadcast.sort(*campaign, "user_id", "timestamp", "message_id").with_columns(round=_position_in_run([*campaign, "user_id"]))
    ordered = rounds.sort(*campaign, "round", pl.col("user_id").hash(seed), "user_id").with_columns(
        group=(_position_in_run([*campaign, "round"]) - 1) // size
    )
    grouping = [*campaign, "round", "group"]
    first = pl.col("message_id").sort_by("timestamp", "message_id").first().over(grouping)  # the group's first copy
    converted = ordered.select(
        _ROW,
        message_id=first + "~to-group",
        group_id=first + "~group",
        timestamp=pl.col("timestamp").min().over(grouping),
        change=pl.lit(CONVERTED),
    )
    return _updated(frame, converted, ["message_id", "group_id", "timestamp"])


@strategy(explain="{converted:,} replies Meta Business Agent wrote were written by the business's people instead")
def service_by_people(messages: pl.LazyFrame) -> pl.LazyFrame:
    """Every reply Meta Business Agent wrote is written by the business's people instead.

    Business behaviour: the business stops using Meta Business Agent (or never started): its
    one-to-one replies with `sent_by = meta_business_agent` become the business's own (`sent_by`
    and `tokens` null), billed as service messages, as every non-template message not powered by
    the agent is (changes-2026-h2.md §2). With `service_by_own_ai` after it, the business's own AI
    writes them. Assumptions: people answer at the same moment, in one message per reply; failed
    replies are changed too (they cost nothing either way).
    """
    frame = _with_extensions(messages).with_row_index(_ROW)
    agent = (pl.col("direction") == "outbound") & pl.col("group_id").is_null() & pl.col("sent_by").eq_missing(schema.META_BUSINESS_AGENT)
    back = frame.filter(agent).select(_ROW, sent_by=pl.lit(None, dtype=pl.String), tokens=pl.lit(None, dtype=pl.Int64), change=pl.lit(CONVERTED))
    return _updated(frame, back, ["sent_by", "tokens"])


def _service_replies() -> pl.Expr:
    """Delivered outbound one-to-one non-template messages that are not reactions and not Meta
    Business Agent's: the replies people (or an AI) write."""
    return (
        _delivered_outbound()
        & (pl.col("message_type") != schema.TEMPLATE)
        & (pl.col("message_type") != schema.REACTION)
        & pl.col("group_id").is_null()
        & ~pl.col("sent_by").eq_missing(schema.META_BUSINESS_AGENT)
    )


def _with_extensions(messages: pl.LazyFrame) -> pl.LazyFrame:
    """`messages` with the optional columns of 2026 (`group_id`, `sent_by`, `tokens`, `template_name`)
    added as null where a frame predates them."""
    names = messages.collect_schema().names()
    missing = [c for c in ("group_id", "sent_by", "tokens", "template_name") if c not in names]
    return messages.with_columns([pl.lit(None, dtype=schema.MESSAGE_SCHEMA[c]).alias(c) for c in missing]) if missing else messages


# --- What a strategy did --------------------------------------------------------------------------


@dataclass(frozen=True)
class StrategyEffect:
    """What one strategy did to the traffic, for the explanation of a scenario: messages and users
    (keys, billing-rules.md §2) per change kind."""

    name: str
    params: dict[str, object]
    messages: dict[str, int]  # change kind -> messages
    users: dict[str, int]  # change kind -> users (business number and user) with such messages

    def count(self, kind: str) -> int:
        return self.messages.get(kind, 0)

    def explain(self) -> str:
        spec = STRATEGIES[self.name]
        fields = {**{p: d for p, (_, d) in spec.parameters.items() if d is not REQUIRED}, **self.params}
        fields |= {kind: self.count(kind) for kind in CHANGE_KINDS}
        fields |= {f"{kind}_users": self.users.get(kind, 0) for kind in CHANGE_KINDS}
        fields["entry_point_text"] = ENTRY_POINT_NAMES.get(str(fields.get("entry_point")), "")
        fields["categories_text"] = ", ".join(fields.get("categories", ()))  # type: ignore[arg-type]
        factors = {**dict(fields.get("factors") or {}), **dict(fields.get("markets") or {})}  # type: ignore[arg-type]
        fields["factors_text"] = ", ".join(f"{k} ×{v:g}" for k, v in factors.items()) or "nothing"
        return spec.explain.format(**fields)


def effect_of(name: str, params: Mapping[str, object], changed: pl.DataFrame) -> StrategyEffect:
    """The effect of one strategy from its output (a frame whose `change` was null before it ran)."""
    counts = changed.filter(pl.col(CHANGE).is_not_null()).group_by(CHANGE).agg(messages=pl.len(), users=pl.struct(*KEY).n_unique())
    return StrategyEffect(
        name,
        dict(params),
        messages={k: int(n) for k, n, _ in counts.iter_rows()},
        users={k: int(u) for k, _, u in counts.iter_rows()},
    )


def volumes(frame: pl.DataFrame | pl.LazyFrame) -> dict[str, int]:
    """Messages sent through WhatsApp by growth category (delivered outbound) and `inbound`."""
    frame = sent(frame)
    kind = (
        pl.when(pl.col("direction") == "inbound")
        .then(pl.lit("inbound"))
        .when(pl.col("message_type") == schema.TEMPLATE)
        .then(pl.col("template_category").replace(rules.shipped().choices.billed_category))
        .otherwise(pl.lit(SERVICE))
    )
    counted = frame.filter(~pl.col("status").eq_missing("failed")).group_by(kind=kind).len().collect()
    return {k: int(n) for k, n in counted.iter_rows()}
