"""Meta's reports made up from our own charges, and changed in known ways: the synthetic check.

`meta_pricing_objects` turns our own charges into the pricing objects Meta
would send (expirations rounded up to the minute, CBP `billable: true` on free tier), and
`meta_analytics_response` into an analytics response; `perturb` changes them, and our traffic, in
known ways (`Perturbation`). Reconciling the result must report exactly those perturbations.

The monthly report uses it on the shipped sample (which carries no figures of Meta's) and the
tests to check `analytics.reconcile` end to end. It is synthetic data, not reconciliation, so it
lives beside the synthetic traffic of `generate`; it reads our charges as `analytics.reconcile`
attributes them (`matching.conversation_of_messages`) and writes Meta's words
(`meta_reports.in_metas_words`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

import polars as pl

from analytics.core import schema
from analytics.core.times import local_time
from analytics.reconcile.matching import conversation_of_messages
from analytics.reconcile.meta_reports import (
    CONVERSATION_ANALYTICS,
    DAILY,
    HALF_HOUR,
    MONTHLY,
    PRICING_ANALYTICS,
    PRICING_SCHEMA,
    REPORT_PRICING_MODEL,
    WEBHOOK,
    in_metas_words,
)
from analytics.reconcile.outcomes import (
    CATEGORY_CHANGED,
    CONVERSATION,
    DIFFERENT,
    FREE_GROUP_CUSTOMER_SERVICE,
    GROUP_CATEGORIES,
    MESSAGE,
    MISSING_META,
    MISSING_OURS,
    PRICING_NOT_REPORTED,
    PRICING_TYPE_DIFFERS,
    STATUS_MISSING,
    WINDOW_DIFFERS,
)
from analytics.settings import Settings
from analytics.terms import rules


def conversation_id_of(opening_message_id: str) -> str:
    """A made-up Meta conversation id for our conversation opened by this message (stable)."""
    return hashlib.sha1(opening_message_id.encode()).hexdigest()[:32]


def meta_pricing_objects(charges: pl.DataFrame, messages: pl.DataFrame, settings: Settings | None = None) -> pl.DataFrame:
    """The pricing objects Meta would send for our own charges, as webhook rows (PRICING_SCHEMA).

    Each delivered outbound message gets a `sent` row and, unless it only reached `sent`, a row of
    its status. PMP: `pricing_model`, category (`marketing_lite` as Meta writes it), `type` in
    Meta's words of the day (`meta_reports.in_metas_words`) and `billable`, no conversation. CBP:
    the conversation's category, `billable` true unless it is a
    free entry point conversation (§7), a conversation id, and on the `sent` row only the expiration
    (opening + window, rounded up to the next whole minute, as Meta has been seen to do).
    """
    settings = settings or Settings()
    charge_columns = ["pricing_model", "category", "pricing_type", "started_at"]
    # A group message is one status per participant (P3), each the charge of that participant.
    in_group = pl.col("group_id").is_not_null() if "group_id" in messages.columns else pl.lit(False)
    groups = messages.filter(in_group & (pl.col("direction") == "outbound") & pl.col("status").ne_missing("failed"))
    one_to_one = messages.filter(~in_group)
    attributed = conversation_of_messages(charges, one_to_one, settings)
    rows = one_to_one.join(attributed, on="message_id", how="inner").join(
        charges.select("opening_message_id", *charge_columns, charge_business_phone="business_phone"),
        on="opening_message_id",
        how="left",
    )
    group_rows = groups.join(
        charges.select("opening_message_id", "user_id", *charge_columns, charge_business_phone="business_phone"),
        left_on=["message_id", "user_id"],
        right_on=["opening_message_id", "user_id"],
        how="inner",
    ).with_columns(opening_message_id=pl.col("message_id"))
    rows = pl.concat([rows, group_rows.select(rows.columns)])
    rows = in_metas_words(rows, local_date=local_time(settings, "started_at").dt.date(), pricing_type="pricing_type")
    cbp = pl.col("pricing_model") == "CBP"
    conversation_window, fep_window = settings.conversation_windows()
    window = pl.when(pl.col("category") == rules.FEP_CATEGORY).then(pl.lit(fep_window)).otherwise(pl.lit(conversation_window))
    nominal_end = pl.col("started_at") + window
    rounded_end = nominal_end.dt.truncate("1m") + pl.when(nominal_end.dt.truncate("1m") == nominal_end).then(pl.duration(minutes=0)).otherwise(
        pl.duration(minutes=1)
    )
    category = (
        pl.when(~cbp & (pl.col("category") == "marketing") & (pl.col("template_category") == "marketing_lite"))
        .then(pl.lit("marketing_lite"))
        .otherwise(pl.col("category"))
    )
    base = rows.select(
        meta_source=pl.lit(WEBHOOK),
        message_id="message_id",
        time="timestamp",
        business_phone="business_phone",
        user_id="user_id",
        pricing_model="pricing_model",
        category=category,
        pricing_type=pl.when(cbp).then(None).otherwise(pl.col("pricing_type")),
        billable=pl.when(cbp).then(pl.col("pricing_type") != "free_entry_point").otherwise(pl.col("pricing_type") == "regular"),
        conversation_id=pl.when(cbp).then(pl.col("opening_message_id").map_elements(conversation_id_of, return_dtype=pl.String)),
        conversation_origin=pl.when(cbp).then(pl.col("category")),
        _expires=pl.when(cbp).then(rounded_end),
        _status=pl.col("status").fill_null("delivered"),
        recipient_type=pl.when(pl.col("group_id").is_not_null()).then(pl.lit("group")) if "group_id" in rows.columns else pl.lit(None, pl.String),
        recipient_participant_id=pl.when(pl.col("group_id").is_not_null()).then(pl.col("user_id"))
        if "group_id" in rows.columns
        else pl.lit(None, pl.String),
    )
    sent = base.with_columns(status=pl.lit("sent"), conversation_expires_at=pl.col("_expires"))
    later = base.filter(pl.col("_status") != "sent").with_columns(status=pl.col("_status"), conversation_expires_at=pl.lit(None, schema.INSTANT))
    frame = pl.concat([sent, later], how="diagonal_relaxed").sort("message_id", "user_id", "status")
    frame = frame.with_columns(
        source_file=pl.lit("synthetic"),
        source_row=pl.int_range(1, pl.len() + 1, dtype=pl.Int64),
        problem=pl.lit(None, pl.String),
    )
    columns = frame.columns  # subtype: none in our own charges
    return frame.select([(pl.col(c) if c in columns else pl.lit(None)).cast(t).alias(c) for c, t in PRICING_SCHEMA.items()])


def meta_analytics_response(charges: pl.DataFrame, *, granularity: str = DAILY, timezone: str = "UTC", report: str = PRICING_ANALYTICS) -> dict:
    """What Meta's `pricing_analytics` (or `conversation_analytics`) would answer for our charges:
    one data point per bucket (WABA time zone), country, category and type, with `volume` (or
    `conversation`) and, when the charges are priced, `cost` as a number. `charges` need
    `user_country` (`with_user_country`)."""
    model = REPORT_PRICING_MODEL[report]
    every = {HALF_HOUR: "30m", DAILY: "1d", MONTHLY: "1mo"}[granularity]
    local = pl.col("started_at").dt.convert_time_zone(timezone).dt.truncate(every)
    priced = "cost" in charges.columns
    ours = charges.filter(pl.col("pricing_model") == model)
    if model == "PMP":  # in Meta's words of the day (from 2026-10-01 our free_tier is FREE_CUSTOMER_SERVICE)
        day = pl.col("started_at").dt.convert_time_zone(timezone).dt.date()
        # a free group delivery is Meta's free_group_customer_service (changes-2026-h2.md §4), whichever free type of ours
        free_group = pl.col("category").is_in(GROUP_CATEGORIES) & pl.col("pricing_type").is_in(["free_customer_service", "free_tier"])
        ours = ours.with_columns(pricing_type=pl.when(free_group).then(pl.lit(FREE_GROUP_CUSTOMER_SERVICE)).otherwise(pl.col("pricing_type")))
        ours = in_metas_words(ours, local_date=day, pricing_type="pricing_type")
    points = (
        ours.with_columns(start=local.dt.epoch("s"), end=local.dt.offset_by(every).dt.epoch("s"))
        .group_by("start", "end", "user_country", "category", "pricing_type")
        .agg(volume=pl.len(), **({"cost": pl.col("cost").sum()} if priced else {}))
        .sort("start", "user_country", "category", "pricing_type")
    )
    count_key = "conversation" if report == CONVERSATION_ANALYTICS else "volume"
    data_points = []
    for point in points.iter_rows(named=True):
        item = {
            "start": point["start"],
            "end": point["end"],
            "country": point["user_country"],
            f"{'conversation' if report == CONVERSATION_ANALYTICS else 'pricing'}_type": point["pricing_type"].upper(),
            f"{'conversation' if report == CONVERSATION_ANALYTICS else 'pricing'}_category": point["category"].upper(),
            count_key: point["volume"],
        }
        if priced:
            item["cost"] = float(point["cost"])
        data_points.append(item)
    return {report: {"data": [{"data_points": data_points}]}, "id": "synthetic"}


# Kinds of perturbation, and what reconciliation must say about each.
RECATEGORISED = "recategorised"
PRICING_TYPE_CHANGED = "pricing_type_changed"
PRICING_DROPPED = "pricing_dropped"
STATUS_DROPPED = "status_dropped"
WINDOW_SHIFTED = "window_shifted"
WINDOW_SHIFT = dt.timedelta(hours=2)


@dataclass(frozen=True)
class Perturbation:
    """One known change: what was done to which message, and the row reconciliation must report."""

    kind: str
    level: str
    message_id: str  # the wamid the output row carries (the opening message for a conversation)
    status: str
    reason: str


@dataclass(frozen=True)
class Perturbed:
    messages: pl.DataFrame  # our traffic, with the dropped messages gone
    meta_pricing: pl.DataFrame  # Meta's pricing objects, changed
    perturbations: tuple[Perturbation, ...]


_EXPECTED = {
    RECATEGORISED: (DIFFERENT, CATEGORY_CHANGED),
    PRICING_TYPE_CHANGED: (DIFFERENT, PRICING_TYPE_DIFFERS),
    PRICING_DROPPED: (MISSING_META, PRICING_NOT_REPORTED),
    STATUS_DROPPED: (MISSING_OURS, STATUS_MISSING),
    WINDOW_SHIFTED: (DIFFERENT, WINDOW_DIFFERS),
}
_OTHER_CATEGORY = {"marketing": "utility", "utility": "marketing", "authentication": "marketing"}


def perturb(messages: pl.DataFrame, meta_pricing: pl.DataFrame, charges: pl.DataFrame, *, seed: int = 0, per_kind: int = 2) -> Perturbed:
    """Change `per_kind` items of each kind, chosen by `seed` among those a change touches alone:

    - `recategorised`: Meta's category of a regular template message (PMP) or conversation (CBP)
      becomes another template category -> `different` / `category_changed`;
    - `pricing_type_changed`: a regular PMP message becomes `free_customer_service` (not billable),
      a regular CBP conversation not billable -> `different` / `pricing_type_differs`;
    - `pricing_dropped`: every pricing object of a message or conversation is gone ->
      `missing_meta` / `pricing_not_reported`;
    - `status_dropped`: a message is gone from our traffic (a lost webhook): a regular marketing,
      utility or authentication template that opened a charge alone (a PMP row, or a conversation of
      one message), in a key without entry points, so that nothing else changes ->
      `missing_ours` / `status_missing`;
    - `window_shifted`: a CBP conversation's expiration moves `WINDOW_SHIFT` later ->
      `different` / `window_differs`.

    Items at the very start or end of the traffic are not chosen (unmatched charges are only
    reported inside the period Meta's items cover). No item is changed twice.
    """
    first, last = charges["started_at"].min(), charges["started_at"].max()
    inner = charges.filter((pl.col("started_at") > first) & (pl.col("started_at") < last))
    entry_keys = messages.filter(pl.col("entry_point").is_not_null()).select("business_phone", "user_id").unique()
    regular_templates = inner.filter((pl.col("pricing_type") == "regular") & pl.col("category").is_in(list(_OTHER_CATEGORY)))
    chosen: set[str] = set()
    plan: list[Perturbation] = []

    def pick(kind: str, model: str, candidates: pl.DataFrame) -> list[str]:
        pool = candidates.filter((pl.col("pricing_model") == model) & ~pl.col("opening_message_id").is_in(list(chosen))).sort("opening_message_id")
        if pool.height == 0:
            return []
        taken = pool.sample(n=min(per_kind, pool.height), seed=seed + len(plan))["opening_message_id"].to_list()
        chosen.update(taken)
        level = CONVERSATION if model == "CBP" else MESSAGE
        plan.extend(Perturbation(kind, level, m, *_EXPECTED[kind]) for m in sorted(taken))
        return taken

    one_message = regular_templates.filter(pl.col("message_count") == 1).join(entry_keys, on=["business_phone", "user_id"], how="anti")
    for model in ("PMP", "CBP"):
        pick(RECATEGORISED, model, regular_templates)
        pick(PRICING_TYPE_CHANGED, model, regular_templates)
        pick(PRICING_DROPPED, model, inner)
        pick(STATUS_DROPPED, model, one_message)
    pick(WINDOW_SHIFTED, "CBP", inner)

    members = conversation_of_messages(charges, messages)
    targets = {p.message_id: p for p in plan}
    of_kind = {kind: [m for m, p in targets.items() if p.kind == kind] for kind in _EXPECTED}

    def wamids(kind: str) -> list[str]:
        return members.filter(pl.col("opening_message_id").is_in(of_kind[kind]))["message_id"].to_list()

    meta = meta_pricing.with_columns(
        category=pl.when(pl.col("message_id").is_in(wamids(RECATEGORISED)))
        .then(pl.col("category").replace(rules.shipped().choices.billed_category).replace(_OTHER_CATEGORY))
        .otherwise(pl.col("category")),
        pricing_type=pl.when(pl.col("message_id").is_in(wamids(PRICING_TYPE_CHANGED)) & (pl.col("pricing_model") == "PMP"))
        .then(pl.lit("free_customer_service"))
        .otherwise(pl.col("pricing_type")),
        billable=pl.when(pl.col("message_id").is_in(wamids(PRICING_TYPE_CHANGED))).then(False).otherwise(pl.col("billable")),
        conversation_expires_at=pl.when(pl.col("message_id").is_in(wamids(WINDOW_SHIFTED)))
        .then(pl.col("conversation_expires_at") + WINDOW_SHIFT)
        .otherwise(pl.col("conversation_expires_at")),
    ).filter(~pl.col("message_id").is_in(wamids(PRICING_DROPPED)))
    traffic = messages.filter(~pl.col("message_id").is_in(of_kind[STATUS_DROPPED]))
    return Perturbed(messages=traffic, meta_pricing=meta, perturbations=tuple(sorted(plan, key=lambda p: (p.kind, p.message_id))))
