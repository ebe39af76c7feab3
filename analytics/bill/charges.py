"""The production billing engine: canonical messages in, charges (contracts.md §2) out.

It computes exactly what `analytics.bill.reference` computes (property tests hold it to that), without a
Python loop over messages or users. Why the work is split the way it is:

- **Per key, in Polars** (`kernel`). Everything of billing-rules.md §2–5 except the monthly
  counters depends only on one (business_phone, user_id) key's own messages, in order. Polars
  window functions over the sorted key (forward fills, cumulative counts) give customer service
  windows, free-entry-point offers and each message's open conversations in a few vectorised
  passes. The kernel takes any frame of whole keys and returns one row per charge candidate, so
  it runs unchanged on one key, one hash bucket of a big file, or one Spark partition.
- **Across keys, in DuckDB SQL** (`queries/free_tiers.sql`). Free tiers count charges per WABA or
  business number per month in delivery order: a window function over all charges, which DuckDB
  runs in parallel and spills to disk when it must.

The only sequential part of the rules is the fixed 24 h (or 72 h) conversation: a conversation
opened at `s` absorbs what comes before `s + 24 h`, and the next message after that opens the next
one, so whether a message opens depends on the previous opening, not on the previous message.
`_chain_starts` solves it without a per-message loop: a gap of a full window between two
eligible messages always starts a new conversation, which cuts each key into bursts; a burst
shorter than one window is one conversation; the rest of the bursts longer than a window are
resolved by pointer doubling: each message points to the first at or after its window's end (a
sorted search), and the openers, the messages reached from a burst's first, are found in log₂ of
the longest run of back-to-back conversations vectorised rounds (a year of hourly messages: 9).

What the speed rests on, measured on 10 M messages (benchmarks/README.md):

- Sorting and windowing a narrow frame of numbers and flags; strings (message and user ids) are
  read once, kept in one chunk, and gathered only for the charge rows.
- Windows worked out only where they can reach: the CBP slot chains near CBP messages, the FEP
  windows near entry-point offers. Traffic since mid-2025 is mostly PMP.
- One filter for all charge rows, in billing order, with Enum codes for the few-valued columns;
  keys then move to their string order as whole blocks, never a sort of the rows.
- Codes from strings by chains of comparisons: Polars' `replace` holds whole string columns.

Issue 17's traffic (groups, Meta Business Agent, AI Providers; `analytics.bill.reference` says
the rules) costs nothing where the input has none: its columns are read only when some row uses
them. A group's rows are one key (business_phone, group_id), so the per-key passes need nothing
new; its charges then take their place among the one-to-one charges by one sort of the rows.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, TypeVar

import duckdb
import polars as pl

from analytics.core import schema
from analytics.core.errors import NotBillableUnder
from analytics.core.lookups import looked_up
from analytics.core.resources import ArrowStream, query
from analytics.core.times import local_time
from analytics.settings import Settings
from analytics.terms import markets, rules
from analytics.terms.rules import RuleSet

Frame = TypeVar("Frame", pl.DataFrame, pl.LazyFrame)

_SLOT_CODES = {"marketing": 1, "utility": 2, "authentication": 3}
# The few-valued charge columns are Enum codes inside the kernel, strings in its output (`finish`).
CATEGORY = pl.Enum(
    [
        *rules.INITIATOR_CATEGORIES,
        rules.SERVICE,
        *_SLOT_CODES,
        rules.AUTH_INTERNATIONAL,
        *rules.GROUP_CATEGORIES,
        rules.META_BUSINESS_AGENT,
        rules.GENERAL_PURPOSE_AI,
    ]
)
PRICING_TYPE = pl.Enum(schema.PRICING_TYPES)
PRICING_MODEL = pl.Enum([rules.CBP, rules.PMP])
_PERIOD = pl.UInt8  # a message's rule-set period: its place in `Settings.periods()`


def bill(
    messages: pl.DataFrame | pl.LazyFrame,
    settings: Settings | None = None,
    *,
    con: duckdb.DuckDBPyConnection | None = None,
) -> pl.DataFrame:
    """Charges for canonical messages (already validated and deduplicated by `analytics.read.ingest`),
    in the columns of contracts.md §2, sorted by business number, user, time and opening message."""
    settings = settings or Settings()
    return finish(apply_free_tiers(kernel(messages, settings), con=con))


# --------------------------------------------------------------------------------------------
# The rules as expressions: every property is read from the run's rule-set periods
# (`analytics.terms.rules`), looked up by the message's period code; no rule set is named here.


def _periods_where(settings: Settings, holds: Callable[[RuleSet], bool], column: str = "period") -> pl.Expr:
    """True for the rows whose period has the property `holds` (a literal where every period or
    none has it: no per-row work for what the rules hold constant)."""
    codes = [i for i, p in enumerate(settings.periods()) if holds(p)]
    if len(codes) in (0, len(settings.periods())):
        return pl.lit(bool(codes))
    return pl.col(column).is_in(codes)


def _per_period(settings: Settings, value: Callable[[RuleSet], Any], dtype: pl.DataType, column: str = "period") -> pl.Expr:
    """`value(period)` for every row, by its period code (a literal where every period agrees)."""
    values = {i: value(p) for i, p in enumerate(settings.periods())}
    if len(set(values.values())) == 1:
        return pl.lit(next(iter(values.values())), dtype=dtype)
    return looked_up(pl.col(column), values, dtype)


def _us(length: dt.timedelta) -> int:
    return length // dt.timedelta(microseconds=1)


def charge_period(book: rules.RuleBook) -> pl.Expr:
    """A charge's rule-set period, as its place in `book.periods`: the period of its `rule_set` in
    force on its `local_date` (the rule set's first period before it came into force, as a
    what-if run bills)."""
    code = pl.lit(None, dtype=_PERIOD)
    for place, period in enumerate(book.periods):  # oldest first: later periods of a name overwrite
        starts = pl.lit(True) if not period.amended else pl.col("local_date") >= period.effective_from
        code = pl.when((pl.col("rule_set") == period.name) & starts).then(pl.lit(place, dtype=_PERIOD)).otherwise(code)
    return code


def rule_set_dtype(settings: Settings) -> pl.Enum:
    return pl.Enum(list(settings.rule_book.names))


def counter_dtype(settings: Settings) -> pl.Enum:
    return pl.Enum([name for name, _tier in settings.rule_book.counters()])


# --------------------------------------------------------------------------------------------
# Step 1: one key's messages in billing order, with local time and rule set (§1, §2 Order).

_FEW_VALUES = pl.Categorical()  # business numbers, WABAs and countries: few values, carried as codes
# What a charge shows of its message, kept by input row (`orig`) and gathered for charge rows alone:
# only what orders and windows the messages is sorted.
_ATTRIBUTES = ["message_id", "user_id", "local_date", "business_phone", "waba_id", "user_country"]
# What a charge carries of its opening message when the input gives any (issue 17), null otherwise.
_EXTENSIONS = {"group_id": pl.String(), "tokens": pl.Int64(), "template_name": pl.String()}


def candidate_schema(settings: Settings) -> dict[str, pl.DataType]:
    """What `kernel` returns: the charge columns but `billable`, in codes where values are few, and
    what the monthly counters need: which counter (`free_tier_counter`, null when none), its scope
    and month, its size (`free_units`), and what a charge past it pays (`beyond_free_tier`).
    A candidate that waits for its counter has a null `pricing_type`."""
    return {
        "rule_set": rule_set_dtype(settings),
        "pricing_model": PRICING_MODEL,
        "category": CATEGORY,
        "pricing_type": PRICING_TYPE,
        "started_at": schema.INSTANT,
        "expires_at": schema.INSTANT,
        "business_phone": _FEW_VALUES,
        "waba_id": _FEW_VALUES,
        "user_id": pl.String(),
        "market": _FEW_VALUES,
        "message_count": pl.Int64(),
        "opening_message_id": pl.String(),
        "free_tier_counter": counter_dtype(settings),
        "free_tier_scope": pl.String(),
        "local_month": pl.Date(),
        "free_units": pl.Int64(),
        "beyond_free_tier": PRICING_TYPE,
        **_EXTENSIONS,
    }


# The candidates' columns whatever the rules (their Enum categories differ between rule books).
CANDIDATE_SCHEMA = candidate_schema(Settings())


def prepare(messages: pl.DataFrame | pl.LazyFrame, settings: Settings) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The messages that can matter, as a narrow frame in billing order, and their attributes.

    The narrow frame has one row per message except failed outbound ones (§2: ignored entirely),
    sorted by key and §2 order, with `orig`, the message's row in the input. It holds numbers and
    flags only: sorting and windowing them is most of the engine's speed. The attributes (message
    id, user id, local date, business number, WABA, country; by input row) are gathered for the
    charge rows at the end.
    """
    frame = messages.lazy() if isinstance(messages, pl.DataFrame) else messages
    names = frame.collect_schema().names()
    is_template = pl.col("message_type") == schema.TEMPLATE
    choices = settings.rule_book.choices
    slot_codes = _SLOT_CODES | {alias: _SLOT_CODES[billed] for alias, billed in choices.billed_category.items()}
    # Optional columns are read only where some row uses them: §9 the end Meta gave a free entry
    # point window (`fep_expires_at`), and issue 17's groups, senders and carried values.
    used = _columns_used(frame, names)
    reported = [pl.col(schema.FEP_EXPIRES_AT).cast(schema.INSTANT).dt.epoch("us").alias("fep_reported")] if used[schema.FEP_EXPIRES_AT] else []
    groups = used["group_id"]
    in_group = pl.col("group_id").is_not_null() if groups else pl.lit(False)
    one_to_one_outbound = (pl.col("direction") == "outbound") & ~in_group
    agent = one_to_one_outbound & (pl.col("sent_by") == schema.META_BUSINESS_AGENT).fill_null(False) if used["sent_by"] else pl.lit(False)
    issue_17 = [pl.col(c) for c in _EXTENSIONS if used[c]]
    if groups:
        issue_17 += [in_group.alias("group"), (is_template & (pl.col("template_category") == rules.AUTH).fill_null(False)).alias("group_auth")]
    if used["sent_by"]:
        issue_17.append(agent.alias("agent"))
    if settings.ai_provider:  # changes-2026-h2.md §6: listed on the message's local date
        issue_17.append((one_to_one_outbound & ~is_template & (pl.col("message_type") != schema.REACTION) & ~agent).alias("ai_eligible"))
    slot = looked_up(pl.col("template_category"), slot_codes, pl.UInt8)
    query = (
        frame.with_columns(user_country=markets.missing_user_country(names), waba_id=pl.col("waba_id").fill_null(schema.DEFAULT_WABA))
        .with_row_index("orig")
        .select(
            "message_id",
            "user_id",
            "orig",
            *reported,
            *issue_17,
            key_hash=_key_hash(groups),
            key_check=_key_check(groups),
            t=pl.col("timestamp").dt.epoch("us"),
            direction_rank=looked_up(pl.col("direction"), choices.direction_rank, pl.UInt8),
            failed=(pl.col("direction") == "outbound") & pl.col("status").eq_missing("failed"),
            local_date=local_time(settings).dt.date(),
            is_template=is_template,
            unknown_category=is_template & slot.is_null(),
            is_reaction=pl.col("message_type") == schema.REACTION,
            slot=pl.when(is_template).then(slot),
            takes_entry_point=(pl.col("direction") == "inbound") & pl.col("entry_point").is_not_null() & ~in_group,  # none in groups
            from_ctwa=(pl.col("direction") == "inbound") & (pl.col("entry_point") == rules.CTWA).fill_null(False),
            business_phone=pl.col("business_phone").cast(_FEW_VALUES),
            waba_id=pl.col("waba_id").cast(_FEW_VALUES),
            user_country=pl.col("user_country").cast(_FEW_VALUES),
        )
        .with_columns(period=_period_expr(settings))
        .with_columns(rule_set=_per_period(settings, lambda p: settings.rule_book.names.index(p.name), _PERIOD))
    )
    if settings.ai_provider:
        query = query.with_columns(ai_provider=pl.col("ai_eligible") & _ai_provider_listed(pl.col("user_country"), pl.col("local_date")))
        query = query.drop("ai_eligible")
    if groups:
        query = query.with_columns(group_unbilled=pl.col("group") & ~_periods_where(settings, lambda p: p.bills_groups))
    rows = query.collect(engine="streaming")
    _refuse_what_cannot_be_billed(rows, frame, settings)
    # The attributes in one chunk (the reader returns ~100): gathers across chunks are 8× slower.
    # The narrow frame is copied by the filter of failed messages anyway. Parts are taken as
    # columns: the reader's columns are chunked differently, and a `select` or `drop` first
    # realigns every column's chunks (20 ms a million messages).
    kept = _ATTRIBUTES + [c for c in _EXTENSIONS if used[c]]
    attributes = pl.DataFrame([rows.get_column(c).rechunk() for c in kept])
    refusals = ("unknown_category", "group_auth", "group_unbilled")
    narrow = pl.DataFrame([rows.get_column(c) for c in rows.columns if c not in kept and c not in refusals])
    del rows
    m = _in_billing_order(narrow.filter(~pl.col("failed")).drop("failed"), attributes)
    return (
        m.with_columns(
            key=((pl.col("key_hash") != pl.col("key_hash").shift(1)).fill_null(True).cum_sum() - 1).cast(pl.UInt32),
            seq=pl.int_range(pl.len(), dtype=pl.UInt32),
            inbound=pl.col("direction_rank") == choices.direction_rank["inbound"],
            outbound=pl.col("direction_rank") == choices.direction_rank["outbound"],
        ).drop("key_hash", "direction_rank"),
        attributes,
    )


def _ai_provider_listed(country: pl.Expr, on: pl.Expr) -> pl.Expr:
    """`rules.ai_provider_listed` as an expression: a few dozen dated countries, compared in turn."""
    code = country.cast(pl.String).str.strip_chars().str.to_uppercase()
    listed = pl.lit(False)
    for market in rules.ai_provider_markets():
        inside = (code == market.country) & (on >= market.effective_from)
        listed = listed | (inside & (on < market.until) if market.until is not None else inside)
    return listed.fill_null(False)


def _columns_used(frame: pl.LazyFrame, names: list[str]) -> dict[str, bool]:
    """Which optional columns some row uses (one pass over them; False for an absent column)."""
    probes = {c: pl.col(c).is_not_null().any() for c in (schema.FEP_EXPIRES_AT, *_EXTENSIONS) if c in names}
    if "sent_by" in names:
        probes["sent_by"] = (pl.col("sent_by") == schema.META_BUSINESS_AGENT).any()
    found = frame.select(**probes).collect().row(0, named=True) if probes else {}
    return {c: bool(found.get(c)) for c in (schema.FEP_EXPIRES_AT, *_EXTENSIONS, "sent_by")}


def key_columns(groups: bool) -> list[pl.Expr]:
    """§2 Key: (business_phone, user_id), and for a group message (business_phone, group_id)."""
    if not groups:
        return [pl.col("business_phone"), pl.col("user_id")]
    return [pl.col("business_phone"), pl.when(pl.col("group_id").is_null()).then(pl.col("user_id")).alias("user_id"), pl.col("group_id")]


def _key_hash(groups: bool = False) -> pl.Expr:
    """The 64-bit hash that groups a key's messages (`_in_billing_order` survives its collisions)."""
    return pl.struct(*key_columns(groups)).hash()


def _key_check(groups: bool) -> pl.Expr:
    """A second, independent hash of the key, that tells keys sharing a `_key_hash` apart."""
    if not groups:
        return pl.struct("user_id", "business_phone").hash(seed=7)
    return pl.struct(*reversed(key_columns(groups))).hash(seed=7)


def _in_billing_order(narrow: pl.DataFrame, attributes: pl.DataFrame) -> pl.DataFrame:
    """Sorted by key, then §2 order: timestamp, inbound first, message_id byte-wise.

    Keys are grouped by a 64-bit hash of (business_phone, user_id) and the sort is on numbers
    only; the rare runs of one key's messages at the same instant and direction are then put in
    message_id order. A second, independent hash checks the first: should two keys share a hash,
    the keys are numbered by their strings instead, so a collision costs time, not truth.
    """
    ordered = narrow.sort(["key_hash", "t", "direction_rank", "orig"])
    collided = (pl.col("key_hash") == pl.col("key_hash").shift(1)) & (pl.col("key_check") != pl.col("key_check").shift(1))
    if ordered.select(collided.any()).item():  # one hash, two keys: the check hash differs inside its run
        groups = "group_id" in attributes.columns
        keys = attributes.select(key_columns(groups)).gather(narrow["orig"])
        ranks = keys.select(pl.struct(pl.col("business_phone").cast(pl.String), *keys.columns[1:]).rank("dense"))
        ordered = narrow.with_columns(key_hash=ranks.to_series().cast(pl.UInt64)).sort(["key_hash", "t", "direction_rank", "orig"])
    ordered = ordered.drop("key_check")
    same_instant = (
        (pl.col("key_hash") == pl.col("key_hash").shift(1))
        & (pl.col("t") == pl.col("t").shift(1))
        & (pl.col("direction_rank") == pl.col("direction_rank").shift(1))
    ).fill_null(False)
    ties = ordered.select(
        position=pl.int_range(pl.len(), dtype=pl.UInt32),
        run=(~same_instant).cum_sum(),
        tied=same_instant | same_instant.shift(-1).fill_null(False),
        orig="orig",
    ).filter("tied")
    if ties.height == 0:
        return ordered
    # §2 Order: message_id, then user_id (the participants of one group message share its id)
    tied = attributes.select("message_id", "user_id").gather(ties["orig"])
    by_message_id = ties.hstack(tied).sort("run", "message_id", "user_id")
    order = pl.int_range(ordered.height, dtype=pl.UInt32, eager=True).scatter(ties["position"], by_message_id["position"])
    return ordered[order]


def _period_expr(settings: Settings) -> pl.Expr:
    """Each message's rule-set period (§1): the latest that starts on or before its local date;
    with a what-if rule set, that rule set's, its first period before it came into force."""
    periods = settings.periods()
    expr = pl.lit(None, dtype=_PERIOD) if settings.rules is None else pl.lit(0, dtype=_PERIOD)
    for code, period in enumerate(periods):  # oldest first, so later switches overwrite earlier ones
        expr = pl.when(pl.col("local_date") >= period.effective_from).then(pl.lit(code, dtype=_PERIOD)).otherwise(expr)
    return expr


def _refuse_what_cannot_be_billed(rows: pl.DataFrame, messages: pl.LazyFrame, settings: Settings) -> None:
    """Rows `analytics.read.ingest` would have quarantined are an error here, never silently skipped.
    The first such row is read again from `messages` to name it."""
    if rows.height == 0:
        return
    undirected, early, uncategorised = rows.select(
        pl.col("direction_rank").is_null().arg_max(), pl.col("rule_set").is_null().arg_max(), pl.col("unknown_category").arg_max()
    ).row(0)

    def message(row: int) -> dict[str, object]:
        return messages.with_row_index("orig").filter(pl.col("orig") == rows["orig"][row]).collect().row(0, named=True)

    if rows["direction_rank"][undirected] is None:
        first = message(undirected)
        raise ValueError(
            f"message {first['message_id']} has direction {first['direction']!r}: expected one of "
            f"{', '.join(schema.DIRECTIONS)} (analytics.read.ingest quarantines such rows)"
        )
    if rows["rule_set"][early] is None:
        first = message(early)
        raise ValueError(
            f"message {first['message_id']} at {first['timestamp']} is before {settings.rule_book.first_supported_date()} in its "
            f"WABA time zone: notification-based pricing is not modelled (analytics.read.ingest quarantines such rows)"
        )
    if rows["unknown_category"][uncategorised]:
        first = message(uncategorised)
        raise ValueError(
            f"template message {first['message_id']} has category {first['template_category']!r}: expected one of "
            f"{', '.join(schema.TEMPLATE_CATEGORIES)} (analytics.read.ingest quarantines such rows)"
        )
    if "group" not in rows.columns:
        return
    unbilled, authentication = rows.select(pl.col("group_unbilled").arg_max(), (pl.col("group") & pl.col("group_auth")).arg_max()).row(0)
    if rows["group_unbilled"][unbilled]:
        first = message(unbilled)
        if settings.rules is not None:
            raise NotBillableUnder(
                f"--rules {settings.rules} bills no groups (Meta bills group messages per message only), and the input has "
                f"some (group {first['group_id']}, message {first['message_id']}): bill under a per-message rule set, or without --rules"
            )
        raise ValueError(
            f"message {first['message_id']} (user_id {first['user_id']}) is a group message of group {first['group_id']} at "
            f"{first['timestamp']}, under a rule set that bills no groups (Meta: groups use per-message pricing); "
            "analytics.read.ingest quarantines such rows"
        )
    if rows["group"][authentication] and rows["group_auth"][authentication]:
        first = message(authentication)
        raise ValueError(
            f"message {first['message_id']} (user_id {first['user_id']}) is an authentication template in group "
            f"{first['group_id']}, which Meta does not support (analytics.read.ingest quarantines such rows)"
        )


# --------------------------------------------------------------------------------------------
# Step 2: the per-key kernel (§2–5 without the monthly counters).


def kernel(messages: pl.DataFrame | pl.LazyFrame, settings: Settings) -> pl.DataFrame:
    """Charge candidates for whole keys: one row per conversation (CBP) or charged message (PMP).

    Pricing types that depend on a monthly counter are left as `free_tier_counter` (which
    counter) for `apply_free_tiers`; everything else is final. Rows come in output order: keys
    by (business_phone, user_id) string order, then billing order.
    """
    m, attributes = prepare(messages, settings)
    if m.height == 0:
        return _empty_candidates(settings)
    m = _customer_service_window(m, settings)
    m = _free_entry_points(m, settings)
    m = _cbp_conversations(m, settings)
    return _charge_candidates(m, attributes, settings)


def _ffill(value: pl.Expr, segment: str = "key") -> pl.Expr:
    """The latest non-null `value` at or before each message within its segment (a key, or a key's
    FEP epoch): segments are contiguous in billing order, so two plain forward fills do it, one of
    the value and one of the segment it came from, instead of a grouped window."""
    came_from = pl.when(value.is_not_null()).then(pl.col(segment)).forward_fill()
    return pl.when(came_from == pl.col(segment)).then(value.forward_fill())


def _bfill(value: pl.Expr, segment: str = "key") -> pl.Expr:
    """The next non-null `value` at or after each message within its segment."""
    came_from = pl.when(value.is_not_null()).then(pl.col(segment)).backward_fill()
    return pl.when(came_from == pl.col(segment)).then(value.backward_fill())


def _customer_service_window(m: pl.DataFrame, settings: Settings) -> pl.DataFrame:
    """§2 CSW: open at t iff t < the end set by the latest inbound message at or before t in order
    (its time plus its period's `customer_service_window`)."""
    csw = _per_period(settings, lambda p: _us(p.customer_service_window), pl.Int64)
    csw_until = _ffill(pl.when(pl.col("inbound")).then(pl.col("t") + csw))
    return m.with_columns(csw_open=(pl.col("t") < csw_until).fill_null(False))


def _free_entry_points(m: pl.DataFrame, settings: Settings) -> pl.DataFrame:
    """§2 FEP: offers, the outbound message that takes one up, and the windows they open.

    An offer (inbound with entry_point) is taken up by the first outbound message after it, if
    that comes before the offer ends; a later entry-point message replaces the offer. Take-ups
    inside an open FEP window open nothing (the choice `fep_reopens_inside_open_window`), so
    openings are a chain over take-ups, each window as long as its opener's period and entry
    point say (`Settings.fep_window_of`). `epoch` counts the FEP windows opened so far: an
    opening closes every other conversation of the key (§2 Precedence), so a conversation only
    absorbs messages of its own epoch.

    Only a message within the longest offer and the longest window of its key's latest offer (or
    before the latest end Meta reported, §9) can take an offer up or fall in a FEP window, so the
    windows are worked out on those alone (entry-point traffic is a small part of most traffic)
    and every other message is outside any.
    """
    longest = max(_us(p.fep_offer_window) + _us(max(settings.fep_window_of(p, rules.CTWA))) for p in settings.periods())
    latest_offer = _ffill(pl.when(pl.col("takes_entry_point")).then(pl.col("t")))
    reach_expr = (pl.col("t") < latest_offer + longest).fill_null(False)
    reported = pl.col("fep_reported") if "fep_reported" in m.columns else pl.lit(None, dtype=pl.Int64).alias("fep_reported")
    if "fep_reported" in m.columns:  # inside a window as long as Meta said, whatever the model
        reach_expr = reach_expr | (pl.col("t") < _ffill(reported)).fill_null(False)
    reach = m.select(reach_expr).to_series()
    reached = reach.arg_true()
    stretch = m.filter(reach).select("key", "seq", "t", "inbound", "outbound", "takes_entry_point", "from_ctwa", "period", reported)
    walk = settings.fep_model == rules.EXTEND or stretch["fep_reported"].is_not_null().any()
    windows = _fep_windows_walked(stretch, settings) if walk else _fep_windows(stretch, settings)
    m = m.with_columns(
        fep_open=_spread(windows["fep_open"], reached, m.height, False),
        in_fep=_spread(windows["in_fep"], reached, m.height, False),
        fep_opener=_spread(windows["fep_opener"], reached, m.height, None),
        fep_is_cbp=_spread(windows["fep_is_cbp"], reached, m.height, False),
        fep_end=_spread(windows["fep_end"], reached, m.height, None),
        fep_from_meta=_spread(windows["fep_from_meta"], reached, m.height, False),
    )
    return m.with_columns(
        epoch=((pl.col("key") != pl.col("key").shift(1)).fill_null(True) | pl.col("fep_open")).cum_sum(),
        next_fep_t=_bfill(pl.when(pl.col("fep_open")).then(pl.col("t"))),
    ).drop("takes_entry_point", "from_ctwa", "fep_reported", strict=False)


def _fep_window_lengths(settings: Settings) -> tuple[dict[int, int], dict[int, int]]:
    """(length, longest length) in microseconds of a window, by `period * 2 + from_ctwa` of its
    opener's period and its offer's entry point."""
    lengths, longest = {}, {}
    for code, period in enumerate(settings.periods()):
        for ctwa in (0, 1):
            length, up_to = settings.fep_window_of(period, rules.CTWA if ctwa else None)
            lengths[code * 2 + ctwa], longest[code * 2 + ctwa] = _us(length), _us(up_to)
    return lengths, longest


def _fep_windows(m: pl.DataFrame, settings: Settings) -> pl.DataFrame:
    """`fep_open`, `in_fep`, `fep_opener`, `fep_is_cbp` and `fep_end` of `_free_entry_points`
    where every window has the length it opens with, for whole stretches of keys' messages in
    billing order that start at an offer."""
    offer = _per_period(settings, lambda p: _us(p.fep_offer_window), pl.Int64)
    offer_until = _ffill(pl.when(pl.col("takes_entry_point")).then(pl.col("t") + offer))
    offer_seq = _ffill(pl.when(pl.col("takes_entry_point")).then(pl.col("seq")))
    offer_ctwa = _ffill(pl.when(pl.col("takes_entry_point")).then(pl.col("from_ctwa")))
    previous_outbound_seq = _ffill(pl.when(pl.col("outbound")).then(pl.col("seq"))).shift(1)
    previous_outbound_seq = pl.when(pl.col("key") == pl.col("key").shift(1)).then(previous_outbound_seq)
    lengths, _longest = _fep_window_lengths(settings)
    m = m.with_columns(
        takes_offer=(
            pl.col("outbound")
            & offer_until.is_not_null()
            & (previous_outbound_seq.is_null() | (previous_outbound_seq < offer_seq))
            & (pl.col("t") < offer_until)
        ).fill_null(False),
        window=looked_up(pl.col("period").cast(pl.Int32) * 2 + offer_ctwa.fill_null(False).cast(pl.Int32), lengths, pl.Int64),
    )
    if settings.rule_book.choices.fep_reopens_inside_open_window:
        fep_open = m["takes_offer"]
    else:
        fep_open = _chain_starts(m, "takes_offer", ["key"], "window")
    m = m.with_columns(fep_open=fep_open)
    fep_end = _ffill(pl.when(pl.col("fep_open")).then(pl.col("t") + pl.col("window")))
    return m.select(
        "fep_open",
        in_fep=(pl.col("outbound") & (pl.col("t") < fep_end)).fill_null(False),
        fep_opener=_ffill(pl.when(pl.col("fep_open")).then(pl.col("seq"))),
        fep_is_cbp=_ffill(pl.when(pl.col("fep_open")).then(_periods_where(settings, lambda p: p.is_cbp))).fill_null(False),
        fep_end=pl.when(pl.col("fep_open")).then(pl.col("t") + pl.col("window")),
        fep_from_meta=pl.lit(False),
    )


def _fep_windows_walked(m: pl.DataFrame, settings: Settings) -> pl.DataFrame:
    """The columns of `_fep_windows` where a window's end moves after it opens: user messages that
    extend it (§9 `extend-24h-per-user-message`) or the end Meta reported for a message inside it
    (§9: Meta's own window wins). Each message in turn, as `analytics.bill.reference.KeyState` does for
    these rules; it runs only on the messages near an offer or inside a reported window."""
    lengths, longest = _fep_window_lengths(settings)
    offers = [_us(p.fep_offer_window) for p in settings.periods()]
    extensions = [_us(p.ctwa_fep_extension) for p in settings.periods()]
    cbp = [p.is_cbp for p in settings.periods()]
    reopens = settings.rule_book.choices.fep_reopens_inside_open_window
    n = m.height
    fep_open, in_fep, fep_is_cbp, from_meta = [False] * n, [False] * n, [False] * n, [False] * n
    fep_opener: list[int | None] = [None] * n
    fep_end: list[int | None] = [None] * n
    key = None
    offer_until = start = until = up_to = opener = None
    offer_ctwa, extension, is_cbp = False, 0, False
    columns = ("key", "seq", "t", "inbound", "outbound", "takes_entry_point", "from_ctwa", "period", "fep_reported")
    for i, (k, _seq, t, inbound, outbound, entry, ctwa, period, reported) in enumerate(zip(*(m[c] for c in columns), strict=True)):
        if k != key:
            key, offer_until, start, until, up_to, opener = k, None, None, None, None, None
        inside = start is not None and start <= t < until
        if inbound:
            if entry:
                offer_until, offer_ctwa = t + offers[period], ctwa
            if inside and up_to is not None:
                until = min(max(until, t + extension), up_to)
                fep_end[opener] = until
        elif outbound:
            if offer_until is not None:
                taken_up = t < offer_until
                offer_until = None
                if taken_up and (reopens or not inside):
                    code = period * 2 + int(offer_ctwa)
                    start, until, opener = t, t + lengths[code], i
                    up_to = t + longest[code] if longest[code] > lengths[code] else None
                    extension, is_cbp = extensions[period], cbp[period]
                    fep_open[i], fep_end[i] = True, until
            if reported is not None and start is not None and start <= t < reported:
                until, up_to = reported, None
                fep_end[opener], from_meta[opener] = until, True
            if start is not None and start <= t < until:
                in_fep[i] = True
        if opener is not None:
            fep_opener[i], fep_is_cbp[i] = m["seq"][opener], is_cbp
    return pl.DataFrame(
        {
            "fep_open": fep_open,
            "in_fep": in_fep,
            "fep_opener": fep_opener,
            "fep_is_cbp": fep_is_cbp,
            "fep_end": fep_end,
            "fep_from_meta": from_meta,
        },
        schema={
            "fep_open": pl.Boolean,
            "in_fep": pl.Boolean,
            "fep_opener": pl.UInt32,
            "fep_is_cbp": pl.Boolean,
            "fep_end": pl.Int64,
            "fep_from_meta": pl.Boolean,
        },
    )


def _cbp_conversations(m: pl.DataFrame, settings: Settings) -> pl.DataFrame:
    """§3–4 where a CBP conversation can reach, and each message's `conversation` (`_conversation_of`).

    A CBP conversation is opened by a CBP message and lasts one window, so only the messages
    within the longest conversation window of their key's latest CBP message can open one or be
    absorbed by one (crossover into PMP included, §5). The slot chains run on those alone: in
    traffic that is mostly PMP, a small part of the messages. Elsewhere nothing opens, and a
    message belongs at most to a CBP FEP window (`_free_entry_points`, which runs on every message).
    """
    cbp_periods = [p for p in settings.periods() if p.is_cbp]
    window = max((_us(p.conversation_window) for p in cbp_periods), default=0)
    latest_cbp = _ffill(pl.when(_periods_where(settings, lambda p: p.is_cbp)).then(pl.col("t")))
    reach = m.select((pl.col("t") < latest_cbp + window).fill_null(False)).to_series()
    reached = reach.arg_true()
    if reached.len() == 0:
        opened = pl.DataFrame(schema={"opens_2022": pl.Boolean, "opens_slot": pl.Boolean, "opens_service": pl.Boolean, "conversation": pl.UInt32})
    else:
        within = m.filter(reach).with_columns(window=_per_period(settings, lambda p: _us(p.conversation_window), pl.Int64))
        within = _per_category_conversations(_one_slot_conversations(within, settings), settings)
        opened = within.select("opens_2022", "opens_slot", "opens_service", conversation=_conversation_of(within))

    return m.with_columns(
        opens_2022=_spread(opened["opens_2022"], reached, m.height, False),
        opens_slot=_spread(opened["opens_slot"], reached, m.height, False),
        opens_service=_spread(opened["opens_service"], reached, m.height, False),
        conversation=pl.when(reach)
        .then(_spread(opened["conversation"], reached, m.height, None))
        .when(pl.col("in_fep") & pl.col("fep_is_cbp"))
        .then(pl.col("fep_opener")),
    )


def _spread(values: pl.Series, rows: pl.Series, height: int, fill: bool | None) -> pl.Series:
    """`values`, worked out for the messages at positions `rows` only, as a column of all `height`
    messages: `fill` for every other one."""
    return pl.repeat(fill, height, dtype=values.dtype, eager=True).scatter(rows, values)


def _crosses(settings: Settings, opener_rule_set: pl.Expr, slot: str | None) -> pl.Expr:
    """§5 Crossover [choice]: may a conversation of `slot` opened under `opener_rule_set` absorb
    the row's message? Always under `all_categories`; under `utility`, only a utility
    conversation takes messages of a later rule set."""
    if settings.rule_book.choices.crossover == "all_categories" or slot == "utility":
        return pl.lit(True)
    return pl.col("rule_set") == opener_rule_set


def _one_slot_conversations(m: pl.DataFrame, settings: Settings) -> pl.DataFrame:
    """§3: one slot per key. Its last conversation carries over into later rule sets (§5 Crossover).
    (The `_2022` columns are named for the year the one-slot rules were in force.)"""
    one_slot = _periods_where(settings, lambda p: p.conversations == rules.ONE_SLOT)
    m = m.with_columns(eligible_2022=pl.col("outbound") & ~pl.col("in_fep") & one_slot)
    m = m.with_columns(opens_2022=_chain_starts(m, "eligible_2022", ["epoch"], "window"))
    opened_until = _ffill(pl.when(pl.col("opens_2022")).then(pl.col("t") + pl.col("window")), "epoch")
    opener_rule_set = _ffill(pl.when(pl.col("opens_2022")).then(pl.col("rule_set")), "epoch")
    return m.with_columns(
        conversation_2022=_ffill(pl.when(pl.col("opens_2022")).then(pl.col("seq")), "epoch"),
        in_2022=(pl.col("outbound") & ~pl.col("in_fep") & (pl.col("t") < opened_until) & _crosses(settings, opener_rule_set, None)).fill_null(False),
    ).drop("eligible_2022")


def _per_category_conversations(m: pl.DataFrame, settings: Settings) -> pl.DataFrame:
    """§4: a slot per template category, and service conversations for what no slot absorbs.

    Template chains are independent per category. A non-template opens a service conversation
    only when no conversation of any category is open, so service openings are a chain over the
    non-templates that no template conversation covers. A conversation keeps absorbing after a
    switch to PMP (§5 Crossover): the `open_*` flags are computed for every later message.
    """
    free = pl.col("outbound") & ~pl.col("in_fep") & ~pl.col("in_2022")
    per_category = _periods_where(settings, lambda p: p.conversations == rules.PER_CATEGORY)
    m = m.with_columns(eligible_2023=free & per_category)
    m = m.with_columns(opens_slot=_chain_starts(m.with_columns(e=pl.col("eligible_2023") & pl.col("is_template")), "e", ["epoch", "slot"], "window"))
    for name, code in _SLOT_CODES.items():
        opener = pl.col("opens_slot") & (pl.col("slot") == code)
        opened_until = _ffill(pl.when(opener).then(pl.col("t") + pl.col("window")), "epoch")
        opener_rule_set = _ffill(pl.when(opener).then(pl.col("rule_set")), "epoch")
        m = m.with_columns(
            _ffill(pl.when(opener).then(pl.col("seq")), "epoch").alias(f"{name}_conversation"),
            ((pl.col("t") < opened_until) & free & _crosses(settings, opener_rule_set, name)).fill_null(False).alias(f"{name}_open"),
        )
    any_template_open = pl.any_horizontal([f"{name}_open" for name in _SLOT_CODES])
    m = m.with_columns(e=pl.col("eligible_2023") & ~pl.col("is_template") & ~any_template_open)
    m = m.with_columns(opens_service=_chain_starts(m, "e", ["epoch"], "window")).drop("e")
    service_opener = pl.col("opens_service")
    service_until = _ffill(pl.when(service_opener).then(pl.col("t") + pl.col("window")), "epoch")
    service_rule_set = _ffill(pl.when(service_opener).then(pl.col("rule_set")), "epoch")
    return m.with_columns(
        service_conversation=_ffill(pl.when(service_opener).then(pl.col("seq")), "epoch"),
        service_open=((pl.col("t") < service_until) & free & _crosses(settings, service_rule_set, rules.SERVICE)).fill_null(False),
    ).drop("eligible_2023")


def _chain_starts(m: pl.DataFrame, eligible: str, group: list[str], window: str) -> pl.Series:
    """Which eligible messages open a window, greedily in order within each group; `window` names
    the column with the length (µs) of the window each message would open.

    The first eligible message opens; every later one inside [start, start + its window) is
    absorbed; the first one at or after that end opens the next. See the module docstring.
    """
    rows = m.select(pl.int_range(pl.len(), dtype=pl.UInt32).alias("row"), *group, "t", window, eligible).filter(pl.col(eligible))
    opens = pl.repeat(False, m.height, eager=True).rename("opens")
    if rows.height == 0:
        return opens
    if not rows.select(_ascending(group).all()).item():  # billing order already groups the keys' epochs
        rows = rows.sort([*group, "row"])
    longest = rows[window].max()
    new_group = pl.any_horizontal([pl.col(c) != pl.col(c).shift(1) for c in group]).fill_null(True)
    first = (new_group | (pl.col("t") - pl.col("t").shift(1) >= longest)).fill_null(True)
    rows = rows.select("row", "t", window, first=first).with_columns(
        burst=pl.col("first").cum_sum(), until=pl.when("first").then(pl.col("t") + pl.col(window)).forward_fill()
    )
    opening_rows = [rows.filter("first")["row"]]
    # Bursts that outlast their first window hold several conversations: the rest of each burst
    # from the first message past its first window on.
    pending = rows.filter(~pl.col("first") & (pl.col("t") >= pl.col("until")))
    if pending.height:
        opening_rows.append(_chain_in_bursts(pending, window, longest))
    opening = pl.concat(opening_rows)
    return opens.scatter(opening, True)


def _ascending(columns: list[str]) -> pl.Expr:
    """True where a row's `columns` are, in that order, at or after the previous row's (nulls:
    false, but for the first row)."""
    at_or_after = pl.col(columns[-1]) >= pl.col(columns[-1]).shift(1)
    for c in reversed(columns[:-1]):
        at_or_after = (pl.col(c) > pl.col(c).shift(1)) | ((pl.col(c) == pl.col(c).shift(1)) & at_or_after)
    return at_or_after.fill_null(False) | (pl.int_range(pl.len()) == 0)


def _chain_in_bursts(pending: pl.DataFrame, window: str, longest: int) -> pl.Series:
    """The `row`s that open a conversation among `pending`: the rest of each long burst (`burst`),
    in order, whose first message opens.

    Each message points to the one its conversation would hand over to, the first of its burst at
    or after its `t` + `window` (a sorted search), and the openers are the messages reached from
    each burst's first by following pointers. Pointer doubling follows them in log₂ of the longest
    chain rounds, whatever the number of back-to-back conversations (one year of hourly messages:
    365 conversations, 9 rounds).
    """
    n = pending.height
    first = (pl.col("burst") != pl.col("burst").shift(1)).fill_null(True)
    # Times made one ascending sequence: a burst's own gaps (each shorter than `longest`), and a
    # gap longer than any window between bursts, so that no search leaves its burst but at its end.
    gap = pl.when(first).then(longest + 1).otherwise(pl.col("t") - pl.col("t").shift(1))
    if pending.select(gap.cast(pl.Float64).sum()).item() >= 2.0**62:  # could overflow: round by round
        return _chain_round_by_round(pending, window)
    chain = pending.select(
        "row",
        first=first,
        position=gap.cum_sum(),
        reach=gap.cum_sum() + pl.col(window),
        burst_end=pl.when(first.shift(-1).fill_null(True)).then(pl.int_range(1, n + 1, dtype=pl.UInt32)).backward_fill(),
    )
    after = chain["position"].search_sorted(chain["reach"], side="left").cast(pl.UInt32)
    # A pointer past its burst's end goes to `n`, which points to itself: the chain's end.
    jump = chain.select(pl.when(after < pl.col("burst_end")).then(after).otherwise(n)).to_series()
    jump = jump.cast(pl.UInt32).append(pl.Series([n], dtype=pl.UInt32))
    roots = chain["first"].arg_true().cast(pl.UInt32)
    jumps = [jump]
    while not (jumps[-1].gather(roots) == n).all():  # a root's 2^k-th successor is still in its burst
        jumps.append(jumps[-1].gather(jumps[-1]))
    # Reached from a root: in 2^k steps for the largest k first, then every smaller step.
    reached = pl.repeat(False, n + 1, eager=True).scatter(roots, True)
    for jump in reversed(jumps[:-1]):
        reached = reached.scatter(jump.filter(reached), True)
    return chain["row"].filter(reached.head(n))


def _chain_round_by_round(pending: pl.DataFrame, window: str) -> pl.Series:
    """What `_chain_in_bursts` finds, one round per back-to-back conversation: each round opens
    the next conversation of every burst at once."""
    opening_rows = []
    while pending.height:
        first = pending["burst"] != pending["burst"].shift(1).fill_null(-1)
        pending = pending.with_columns(opened_until=pl.when(first).then(pl.col("t") + pl.col(window)).forward_fill())
        opening_rows.append(pending.filter(first)["row"])
        pending = pending.filter(pl.col("t") >= pl.col("opened_until"))
    return pl.concat(opening_rows)


# --------------------------------------------------------------------------------------------
# Step 3: rows, categories and pricing types (§3–5), before the monthly counters.


def _charge_candidates(m: pl.DataFrame, attributes: pl.DataFrame, settings: Settings) -> pl.DataFrame:
    """One row per charge candidate, in output order (`_key_order`).

    A message gives at most one row: it opens a CBP conversation (of its own slot, one-slot, of
    service, or a CBP FEP window), or it is a PMP message that is charged or falls in a PMP FEP
    window; the two never meet. So one filter in billing order yields every row, and the
    few-valued columns (category, pricing type, counter) are Enum codes until `finish`.
    """
    is_cbp = _periods_where(settings, lambda p: p.is_cbp)
    cbp = (pl.col("fep_open") & pl.col("fep_is_cbp")) | pl.col("opens_2022") | pl.col("opens_slot") | pl.col("opens_service")
    pmp = (pl.col("in_fep") & ~pl.col("fep_is_cbp")) | (pl.col("outbound") & ~is_cbp & ~pl.col("in_fep") & pl.col("conversation").is_null())
    absorbed = m.select("conversation").drop_nulls().group_by("conversation").len()  # a conversation's messages
    messages_in = pl.zeros(m.height, pl.UInt32, eager=True).scatter(absorbed["conversation"], absorbed["len"])
    rows = m.filter(cbp | pmp).select(
        "key",
        "seq",
        "orig",
        "period",
        "rule_set",
        "t",
        "is_template",
        "is_reaction",
        "slot",
        "csw_open",
        "fep_open",
        "in_fep",
        "fep_end",
        "next_fep_t",
        "opens_2022",
        "opens_service",
        *[c for c in ("group", "agent", "ai_provider") if c in m.columns],
        cbp=cbp,
    )
    del m
    if rows.height == 0:
        return _empty_candidates(settings)
    rows = rows.with_columns(
        local_date=attributes["local_date"].gather(rows["orig"]),
        message_count=pl.when("cbp").then(messages_in.gather(rows["seq"])).otherwise(1),
    )
    slot_category = looked_up(pl.col("slot"), {code: name for name, code in _SLOT_CODES.items()}, CATEGORY)
    window = _per_period(settings, lambda p: _us(p.conversation_window), pl.Int64)
    rows = rows.with_columns(
        category=pl.when(~pl.col("cbp"))
        .then(_per_message_category(rows.columns, slot_category, settings))
        .when(pl.col("fep_open"))
        .then(_category(rules.FEP_CATEGORY))
        .when(pl.col("opens_2022"))
        .then(pl.when(pl.col("csw_open")).then(_category(rules.USER_INITIATED)).otherwise(_category(rules.BUSINESS_INITIATED)))
        .when(pl.col("opens_service"))
        .then(_category(rules.SERVICE))
        .otherwise(slot_category),
        expires_at=pl.when(pl.col("cbp")).then(
            pl.when(pl.col("fep_open")).then(pl.col("fep_end")).otherwise(pl.min_horizontal(pl.col("t") + window, pl.col("next_fep_t")))
        ),
    )
    rows = rows.with_columns(_pricing(settings))
    groups = "group" in rows.columns
    if not groups:  # with groups, one sort of the output below puts them among the one-to-one charges
        rows = rows[_key_order(rows["key"], _key_ranks(rows, attributes))]
    rows = rows.hstack(attributes.select("business_phone", "waba_id", "user_country").gather(rows["orig"]))
    rows = rows.with_columns(category=_authentication_international(settings), market=markets.markets_of(rows["user_country"], rows["local_date"]))
    names = settings.rule_book.names
    candidates = rows.select(
        rule_set=looked_up(pl.col("rule_set"), dict(enumerate(names)), rule_set_dtype(settings)),
        pricing_model=pl.when(is_cbp).then(pl.lit(rules.CBP, dtype=PRICING_MODEL)).otherwise(pl.lit(rules.PMP, dtype=PRICING_MODEL)),
        category="category",
        pricing_type="pricing_type",
        started_at=pl.from_epoch("t", time_unit="us").dt.replace_time_zone(schema.UTC),
        expires_at=pl.from_epoch("expires_at", time_unit="us").dt.replace_time_zone(schema.UTC),
        business_phone="business_phone",
        waba_id="waba_id",
        user_id=attributes["user_id"].gather(rows["orig"]),
        market="market",
        message_count=pl.col("message_count").cast(pl.Int64),
        opening_message_id=attributes["message_id"].gather(rows["orig"]),
        free_tier_counter="free_tier_counter",
        free_tier_scope=pl.when(pl.col("free_tier_counter").is_in(_counters_where(settings, lambda t: t.scope == "business_phone")))
        .then(pl.col("business_phone"))
        .when(pl.col("free_tier_counter").is_not_null())
        .then(pl.col("waba_id"))
        .cast(pl.String),
        local_month=_month_start("local_date"),
        free_units=looked_up(pl.col("free_tier_counter"), {name: t.size for name, t in settings.rule_book.counters()}, pl.Int64),
        beyond_free_tier="beyond_free_tier",
        **{c: attributes[c].gather(rows["orig"]) if c in attributes.columns else pl.lit(None, dtype=t) for c, t in _EXTENSIONS.items()},
    )
    if groups:  # the order of conform_charges: business number and user as strings, time, opening message
        order = [pl.col("business_phone").cast(pl.String), "user_id", "started_at", "opening_message_id"]
        candidates = candidates.sort(order)
    return candidates


def _per_message_category(columns: list[str], slot_category: pl.Expr, settings: Settings) -> pl.Expr:
    """A PMP row's category: the template's billed category (with `group_` in front in a group),
    or for a non-template `group_service` in a group, the period's Meta Business Agent category
    for an agent's reply, its AI Provider category for an AI Provider's listed message, else
    `service` (`analytics.bill.reference._non_template_category`)."""
    template = slot_category
    non_template = _category(rules.SERVICE)
    if "ai_provider" in columns:
        names_it = _periods_where(settings, lambda p: p.ai_provider_category == rules.GENERAL_PURPOSE_AI)
        non_template = pl.when(pl.col("ai_provider") & names_it).then(_category(rules.GENERAL_PURPOSE_AI)).otherwise(non_template)
    if "agent" in columns:
        names_it = _periods_where(settings, lambda p: p.meta_business_agent_category == rules.META_BUSINESS_AGENT)
        non_template = pl.when(pl.col("agent") & names_it).then(_category(rules.META_BUSINESS_AGENT)).otherwise(non_template)
    if "group" in columns:
        in_group = {code: rules.GROUP_PREFIX + name for name, code in _SLOT_CODES.items() if name != rules.AUTH}
        template = pl.when(pl.col("group")).then(looked_up(pl.col("slot"), in_group, CATEGORY)).otherwise(template)
        non_template = pl.when(pl.col("group")).then(_category(rules.GROUP_SERVICE)).otherwise(non_template)
    return pl.when(pl.col("is_template")).then(template).otherwise(non_template)


def _counters_where(settings: Settings, holds: Callable[[rules.FreeTier], bool]) -> list[str]:
    return [name for name, tier in settings.rule_book.counters() if holds(tier)]


def _pricing(settings: Settings) -> list[pl.Expr]:
    """§3-5 from the periods' properties (as `analytics.bill.reference.KeyState._pricing_type`):
    `pricing_type` (null where a free tier's counter decides), `free_tier_counter` (the counter a
    candidate takes a place in: a waiting one, or a free-entry-point one the choice
    `fep_counts_toward_free_tier` counts) and `beyond_free_tier` (what a charge past the free
    units pays: `regular`, or `free_exempt` for an exempt business's service, §9)."""
    periods = settings.periods()
    category = pl.col("category")

    def category_in(lists: Callable[[RuleSet], tuple[str, ...]]) -> pl.Expr:
        found = pl.lit(False)
        for code, period in enumerate(periods):
            named = [c for c in lists(period) if c in CATEGORY.categories]
            if named:
                found = pl.when(pl.col("period") == code).then(category.is_in(named)).otherwise(found)
        return found

    counter = pl.lit(None, dtype=counter_dtype(settings))
    for code, period in enumerate(periods):
        for tier in period.free_tiers:
            named = [c for c in tier.categories if c in CATEGORY.categories]
            counter = (
                pl.when((pl.col("period") == code) & category.is_in(named))
                .then(pl.lit(f"{period.name}/{tier.name}", dtype=counter_dtype(settings)))
                .otherwise(counter)
            )
    is_cbp = _periods_where(settings, lambda p: p.is_cbp)
    free_reaction = pl.col("is_reaction") & ~pl.col("cbp") & _periods_where(settings, lambda p: p.reactions_free and not p.is_cbp)
    fep = (pl.col("cbp") & pl.col("fep_open")) | (~pl.col("cbp") & pl.col("in_fep"))
    exempt_until = settings.service_exempt_until
    exempt = category.is_in(list(rules.SERVICE_CATEGORIES)) & ~is_cbp & (pl.col("local_date") <= exempt_until) if exempt_until else pl.lit(False)
    beyond = pl.when(exempt).then(_pricing_type("free_exempt")).otherwise(_pricing_type("regular"))
    free_cs = (
        free_reaction | category_in(lambda p: p.free_categories) | (category_in(lambda p: p.free_in_customer_service_window) & pl.col("csw_open"))
    )
    counts_fep = settings.rule_book.choices.fep_counts_toward_free_tier
    never_free = category_in(lambda p: p.never_free)  # regular even inside an FEP window
    return [
        pl.when(never_free)
        .then(_pricing_type("regular"))
        .when(fep)
        .then(_pricing_type("free_entry_point"))
        .when(free_cs)
        .then(_pricing_type("free_customer_service"))
        .when(counter.is_null())
        .then(beyond)
        .alias("pricing_type"),
        pl.when(~never_free & (fep & (pl.lit(counts_fep) & ~free_reaction) | ~fep & ~free_cs)).then(counter).alias("free_tier_counter"),
        beyond.alias("beyond_free_tier"),
    ]


def _month_start(column: str) -> pl.Expr:
    """The first day of a `pl.Date`'s month, as days since 1970 minus the day of the month: twice
    as fast as `dt.truncate("1mo")`, which works in calendar terms."""
    return (pl.col(column).to_physical() - pl.col(column).dt.day().cast(pl.Int32) + 1).cast(pl.Date)


def _category(name: str) -> pl.Expr:
    return pl.lit(name, dtype=CATEGORY)


def _pricing_type(name: str) -> pl.Expr:
    return pl.lit(name, dtype=PRICING_TYPE)


def _conversation_of(m: pl.DataFrame) -> pl.Series:
    """The position (`seq`) of the message that opened the CBP conversation each outbound message
    is attributed to: the FEP window of a CBP opener first, then a carried one-slot conversation,
    then the template's own slot, then (non-templates) the earliest-opened open conversation
    (§4.3), which is the one with the lowest position since positions follow billing order."""
    own_slot = pl.lit(None, dtype=pl.UInt32)
    for name, code in _SLOT_CODES.items():
        own_slot = pl.when((pl.col("slot") == code) & pl.col(f"{name}_open")).then(pl.col(f"{name}_conversation")).otherwise(own_slot)
    earliest_open = pl.min_horizontal([pl.when(pl.col(f"{c}_open")).then(pl.col(f"{c}_conversation")) for c in [*_SLOT_CODES, "service"]])
    return m.select(
        pl.when(pl.col("in_fep") & pl.col("fep_is_cbp"))
        .then(pl.col("fep_opener"))
        .when(pl.col("in_fep"))
        .then(None)
        .when(pl.col("in_2022"))
        .then(pl.col("conversation_2022"))
        .when(pl.col("is_template"))
        .then(own_slot)
        .otherwise(earliest_open)
    ).to_series()


def _key_ranks(rows: pl.DataFrame, attributes: pl.DataFrame) -> pl.Series:
    """Each key's place in (business_phone, user_id) string order, indexed by `key` (the keys of
    `rows`, numbered in order): only the distinct keys are ever compared as strings."""
    first = rows.select("key", "orig").filter(pl.col("key") != pl.col("key").shift(1).fill_null(-1))
    keys = attributes.select("business_phone", "user_id").gather(first["orig"])
    ranks = keys.select(pl.struct(pl.col("business_phone").cast(pl.String), "user_id").rank("ordinal").cast(pl.UInt32) - 1).to_series()
    return pl.zeros(int(first["key"].max()) + 1, pl.UInt32, eager=True).scatter(first["key"], ranks)


def _key_order(keys: pl.Series, ranks: pl.Series) -> pl.Series:
    """The row order that puts whole keys in `ranks` order and keeps each key's rows as they are:
    `keys` is sorted, so each key is one run and the runs move as blocks (no sort of the rows)."""
    runs = keys.rle().struct.unnest().with_columns(end=pl.col("len").cum_sum().cast(pl.UInt32))
    runs = runs.with_columns(start=pl.col("end") - pl.col("len").cast(pl.UInt32), rank=ranks.gather(runs["value"])).sort("rank")
    return runs.select(pl.int_ranges("start", "end", dtype=pl.UInt32).explode()).to_series()


def _authentication_international(settings: Settings) -> pl.Expr:
    """§4.5: authentication to a user abroad, from the business's start date for that country."""
    setting = settings.authentication_international
    if not setting.start_dates:
        return pl.col("category")
    country = pl.col("user_country").cast(pl.String)
    starts = country.replace_strict(setting.start_dates, default=None, return_dtype=pl.Date)
    applies = (
        (pl.col("category") == rules.AUTH)
        & (pl.col("local_date") >= starts).fill_null(False)
        & (country != pl.lit(setting.home_country, dtype=pl.String)).fill_null(True)
    )
    return pl.when(applies).then(_category(rules.AUTH_INTERNATIONAL)).otherwise(pl.col("category"))


def _empty_candidates(settings: Settings) -> pl.DataFrame:
    return pl.DataFrame(schema=candidate_schema(settings))


# --------------------------------------------------------------------------------------------
# Step 4: the monthly counters, across keys (§3.3, §4.4, §5), and the output.


def apply_free_tiers(candidates: pl.DataFrame, *, con: duckdb.DuckDBPyConnection | None = None) -> pl.DataFrame:
    """Candidates with every pricing type decided. Only the charges a monthly counter decides go
    through `queries/free_tiers.sql` (a window over all keys, which DuckDB parallelises and spills
    when it must); their decision is written back in place, so the order is kept."""
    counted = counted_charges(candidates)
    if counted.height == 0:
        return candidates
    con = con or duckdb.connect()
    con.register("counted_charges", ArrowStream(counted))
    try:
        decided = pl.DataFrame(con.sql(query("free_tiers")))
    finally:
        con.unregister("counted_charges")
    return decide(candidates, decided)


def counted_charges(candidates: pl.DataFrame) -> pl.DataFrame:
    """What `queries/free_tiers.sql` needs of the candidates a counter decides, with their `row`."""
    return (
        candidates.with_row_index("row")
        .filter(pl.col("free_tier_counter").is_not_null())
        .select(
            "row",
            pl.col("free_tier_counter").cast(pl.String),
            "free_tier_scope",
            "local_month",
            "started_at",
            pl.col("business_phone").cast(pl.String),
            "user_id",
            "opening_message_id",
            "free_units",
            placed_as=pl.col("pricing_type").cast(pl.String),
            beyond_free_tier=pl.col("beyond_free_tier").cast(pl.String),
        )
    )


def decide(candidates: Frame, decided: pl.DataFrame) -> Frame:
    """Write the free-tier decisions (`row`: place among the candidates, `pricing_type`) back into
    the candidates, in memory or read lazily and streamed to the output (`analytics.bill.partitioned`)."""
    dtype = candidates.lazy().collect_schema()["pricing_type"]
    pricing_type = pl.col("pricing_type")
    for value in decided["pricing_type"].unique(maintain_order=True):
        rows = decided.filter(pl.col("pricing_type") == value)["row"].cast(pl.UInt32)
        pricing_type = pl.when(pl.col("__row").is_in(rows.implode())).then(pl.lit(value, dtype=dtype)).otherwise(pricing_type)
    return candidates.with_row_index("__row").with_columns(pricing_type=pricing_type).drop("__row")


def finish(decided: Frame) -> Frame:
    """The charges table of contracts.md §2, in the kernel's order: business number and user (as
    strings), then billing order (time, then opening message id), as the reference sorts."""
    columns = decided.lazy().collect_schema()
    return decided.select(
        [_as(c, columns[c], t) if c in columns else pl.lit(None, dtype=t).alias(c) for c, t in schema.CHARGE_SCHEMA.items() if c != "billable"],
        billable=pl.col("pricing_type") == "regular",
    ).select(list(schema.CHARGE_SCHEMA))


def _as(name: str, dtype: pl.DataType, target: pl.DataType) -> pl.Expr:
    """Column `name` as `target`. An Enum's strings are looked up by code: 4× faster than
    Polars' cast, which builds each string again."""
    if isinstance(dtype, pl.Enum) and target == pl.String():
        return pl.lit(pl.Series(dtype.categories)).gather(pl.col(name).to_physical()).alias(name)
    return pl.col(name).cast(target)


def fep_windows(messages: pl.DataFrame | pl.LazyFrame, settings: Settings) -> pl.DataFrame:
    """Every free entry point window the messages open: its opener's `seq` in billing order, and
    `from_meta`, whether its end is one Meta reported (§9)."""
    m, _attributes = prepare(messages, settings)
    if m.height == 0:
        return pl.DataFrame(schema={"fep_opener": pl.UInt32, "from_meta": pl.Boolean})
    m = _free_entry_points(m, settings)
    return m.filter("fep_open").select("fep_opener", from_meta=pl.col("fep_from_meta").fill_null(False))


def rule_warnings(charges: pl.DataFrame | pl.LazyFrame, settings: Settings) -> list[str]:
    """One sentence for each rule the charges rest on that is not `meta_documented`, naming the
    rule set, its period and the source, and one for a free entry point model beyond Meta's word."""
    used = charges.lazy().group_by("rule_set").agg(first=pl.col("started_at").min(), last=pl.col("started_at").max()).collect()
    spans = {row["rule_set"]: (row["first"].date(), row["last"].date()) for row in used.iter_rows(named=True)}
    warnings = []
    periods = settings.periods()
    for code, period in enumerate(periods):
        span = spans.get(period.name)
        ends = next((p.effective_from for p in periods[code + 1 :] if p.name == period.name), None)
        if period.status == "meta_documented" or span is None or span[1] < period.effective_from or (ends and span[0] >= ends):
            continue
        what = f"{period.name} from {period.effective_from}" if period.amended else period.name
        warnings.append(f"{what} ({period.note}) is {period.status.replace('_', ' ')}, not read on Meta's own pages: {period.source}")
    if settings.fep_model != rules.FIXED_72H and spans:
        warnings.append(
            f"free entry point windows follow fep_model {settings.fep_model}, a model: Meta has not published what makes a "
            "click-to-WhatsApp window last longer than 72 h (billing-rules.md §9)"
        )
    return warnings
