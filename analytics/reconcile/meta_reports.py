"""What Meta (and a provider) reported about the bill, read into tidy tables for reconciliation.

billing-rules.md §7 lists what Meta reports; formats-research.md §1.1, §1.3 and §1.5 give the shapes.
Two tables come out, whatever the source:

- `PRICING_SCHEMA`, Meta's per-message billing: one row per status or event that carried a pricing
  or conversation object. Sources (`meta_source`):
  - `webhook`: status webhooks, as `analytics.read.webhooks` keeps them (`WebhookRows.billing`, turned
    into this table by `webhook_pricing`);
  - `gupshup_message_event`: Gupshup v2 `message-event`s with `pricing{policy, category, type}` and
    `conversation{id, expiresAt, type}` (Gupshup's names for Meta's fields);
  - `gupshup_billing_event`: Gupshup `billing-event`s, v2 (`payload.deductions`, `payload.references`)
    and v3 (Meta's envelope, `changes[].field == "billing-event"`, `value.billing`).
- `ANALYTICS_SCHEMA`, Meta's aggregates: one row per data point of a Graph API
  `conversation_analytics` (CBP) or `pricing_analytics` (PMP) response, with or without the outer
  key (one of Meta's own examples lacks it), `cost` a number or a string or absent (WABAs on a
  partner's credit line get no cost), an optional top-level `currency`, and tiers such as
  `0:750000` or `0:MAX` split into `tier_from` and `tier_to` (null for MAX).

Values are put in the words of the charges table (contracts.md §2): categories and pricing types
lower case; Gupshup's deduction `type` FTC (free tier conversation) is `free_tier` of the
`conversationType` category, FEP is `free_entry_point` (category `referral_conversion` under CBP),
a category name is that category (`regular` when billable); `FREE_ENTRY`, the name Meta's docs
give to a conversation type its responses call `FREE_ENTRY_POINT`, is `free_entry_point`. Meta's
own spelling stays where it differs only by a choice of ours: `marketing_lite` is kept (we bill it
as marketing, the rules file's choice `marketing_lite_billed_as`; reconciliation compares it so).

Nothing is dropped silently: a row that cannot be used keeps its source position and says why in
`problem` (a placeholder value copied from documentation, an unreadable number); values of other
kinds (webhook traffic, inbound Gupshup messages, other webhook fields) are counted in
`MetaReports.skipped`. A file with nothing this module reads, or one that is an error response or
another analytics endpoint (message counts, template analytics: no billing by category), stops the
run with an `InputError` that says which file and what to request instead.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from functools import cache
from pathlib import Path
from typing import Any

import polars as pl

from analytics.core.errors import InputError
from analytics.core.json_files import json_lines, not_valid_json, read_text
from analytics.core.resources import resource
from analytics.core.schema import INSTANT
from analytics.read.webhooks import category_of, looks_like_webhook

# Where a row of Meta's per-message billing came from.
WEBHOOK = "webhook"
GUPSHUP_MESSAGE_EVENT = "gupshup_message_event"
GUPSHUP_BILLING_EVENT = "gupshup_billing_event"
# Which Graph API report an analytics row came from, and the pricing model it reports on.
CONVERSATION_ANALYTICS = "conversation_analytics"
PRICING_ANALYTICS = "pricing_analytics"
REPORT_PRICING_MODEL = {CONVERSATION_ANALYTICS: "CBP", PRICING_ANALYTICS: "PMP"}

PRICING_MODELS = ("CBP", "PMP", "NBP")  # NBP: notification-based pricing, before 2022-02 (not modelled)
PRICING_TYPES = ("regular", "free_tier", "free_entry_point", "free_customer_service")
# Meta's and Gupshup's names for a pricing type, where they differ from ours (module docstring).
PRICING_TYPE_ALIASES = {"free_entry": "free_entry_point", "fep": "free_entry_point", "ftc": "free_tier"}
FEP_CATEGORY = "referral_conversion"  # a CBP free entry point conversation's category
# Granularity of a data point, from its length in seconds (DAILY and MONTHLY in the WABA time zone,
# so a day may last 23 or 25 hours and a month 28 to 31 days).
HALF_HOUR, DAILY, MONTHLY = "HALF_HOUR", "DAILY", "MONTHLY"
_GRANULARITY_ALIASES = {"DAY": DAILY, "MONTH": MONTHLY}
COST_SCALE = 6
COST_DTYPE = pl.Decimal(38, COST_SCALE)

PRICING_SCHEMA: dict[str, pl.DataType] = {
    "meta_source": pl.String(),
    "message_id": pl.String(),
    "status": pl.String(),  # the status (webhook, message event) that carried it; null for billing events
    "time": INSTANT,  # the status's time, or the event's
    "business_phone": pl.String(),
    "user_id": pl.String(),
    "pricing_model": pl.String(),  # CBP, PMP or NBP, upper case
    "category": pl.String(),
    "pricing_type": pl.String(),
    "billable": pl.Boolean(),
    "conversation_id": pl.String(),
    "conversation_expires_at": INSTANT,
    "conversation_origin": pl.String(),
    "pricing_subtype": pl.String(),  # webhook `pricing.subtype`, e.g. paid_exempt (exempt service)
    "recipient_type": pl.String(),  # `group` for a group send (one row per participant)
    "recipient_participant_id": pl.String(),
    "source_file": pl.String(),
    "source_row": pl.Int64(),
    "problem": pl.String(),
}
ANALYTICS_SCHEMA: dict[str, pl.DataType] = {
    "report": pl.String(),  # conversation_analytics or pricing_analytics
    "pricing_model": pl.String(),
    "granularity": pl.String(),
    "start": INSTANT,
    "end": INSTANT,
    "phone_number": pl.String(),
    "country": pl.String(),  # ISO 3166-1 alpha-2
    "category": pl.String(),
    "pricing_type": pl.String(),
    "direction": pl.String(),  # conversation_direction (CBP), lower case
    "tier": pl.String(),
    "tier_from": pl.Int64(),
    "tier_to": pl.Int64(),  # null for MAX
    "volume": pl.Int64(),  # conversations (CBP) or messages (PMP)
    "cost": COST_DTYPE,  # null when Meta gives none (partner credit line)
    "currency": pl.String(),
    "source_file": pl.String(),
    "source_row": pl.Int64(),  # the data point's position in the file, from 1
    "problem": pl.String(),
}

# Gupshup's v2 envelope: {app, timestamp (ms), version, type, payload}.
GUPSHUP_V2_TYPES = ("message-event", "billing-event", "message", "user-event")
GUPSHUP_BILLING_FIELD = "billing-event"

NOT_PRICING_ANALYTICS = (
    "is Meta's {} response, which carries no billing by category: request conversation_analytics "
    "(CBP, before 2025-07-01) or pricing_analytics (PMP) with metric_types COST and VOLUME or CONVERSATION"
)
NOTHING_READ = "holds no conversation_analytics or pricing_analytics response and no Gupshup message or billing event"


@dataclass(frozen=True)
class MetaReports:
    """What the report files hold: Meta's aggregates, per-message billing, and what was skipped."""

    analytics: pl.DataFrame  # ANALYTICS_SCHEMA
    pricing: pl.DataFrame  # PRICING_SCHEMA (Gupshup events; webhooks come through ingest)
    skipped: dict[str, int] = field(default_factory=dict)


def read_reports(paths: Sequence[str | Path], *, strict: bool = True) -> MetaReports:
    """Every analytics response and Gupshup event in `paths` (JSON, a JSON array, or JSONL), by shape.

    With `strict`, a file that holds none of them is an InputError; without, it adds nothing (to
    look for provider events among webhook traffic, as `wa-analytics reconcile` does with INPUTs).
    """
    analytics: list[pl.DataFrame] = []
    pricing: list[dict] = []
    skipped: Counter[str] = Counter()
    for path in paths:
        found = 0
        for position, value in _json_values(Path(path)):
            if isinstance(value, _Broken):
                if strict:
                    raise InputError(value.reason, path=str(path), row=position)
                skipped["lines that are not JSON"] += 1
                continue
            try:
                kind = analytics_kind(value)
            except InputError as error:
                raise InputError(str(error), path=str(path)) from None
            if kind is not None:
                analytics.append(read_analytics(value, source_file=str(path), first_row=_next_row(analytics, path)))
                found += 1
                continue
            rows, value_skipped = gupshup_rows(value, source_file=str(path), source_row=position)
            pricing.extend(rows)
            skipped.update(value_skipped)
            found += len(rows)
            if not rows and not value_skipped:
                skipped["JSON values of another kind"] += 1
        if strict and not found:
            raise InputError(
                NOTHING_READ + _skipped_text(skipped),
                path=str(path),
                fix="Pass Graph API analytics responses or Gupshup events with --analytics, and webhook traffic as INPUT",
            )
    frames = [f for f in analytics if f.height] or [pl.DataFrame(schema=ANALYTICS_SCHEMA)]
    return MetaReports(
        analytics=pl.concat(frames),
        pricing=pl.DataFrame(pricing, schema=PRICING_SCHEMA),
        skipped=dict(skipped),
    )


def _next_row(frames: list[pl.DataFrame], path: str | Path) -> int:
    """Data points are numbered across the responses of one file."""
    return 1 + sum(f.height for f in frames if f.height and f["source_file"][0] == str(path))


def _skipped_text(skipped: Counter[str]) -> str:
    if not skipped:
        return ""
    return " (found: " + ", ".join(f"{what} ({count:,})" for what, count in sorted(skipped.items())) + ")"


# --- JSON files: one document, an array, or one value a line ------------------------------------


@dataclass(frozen=True)
class _Broken:
    reason: str


def _json_values(path: Path) -> Iterator[tuple[int, Any]]:
    """(position, value): the document's items (from 1) or the file's lines (line numbers)."""
    text = read_text(path)
    if not text.strip():
        return
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        lines = list(json_lines(text))
        if len(lines) == 1 or not any(isinstance(value, dict) for _, value, _ in lines):
            raise InputError(
                not_valid_json(error),
                path=str(path),
                fix="Give one JSON document, a JSON array, or one JSON value a line (JSONL)",
            ) from None
        for number, value, line_error in lines:
            if line_error is not None:
                yield number, _Broken(f"line {number} is not JSON ({line_error.msg} at column {line_error.colno})")
            else:
                yield number, value
        return
    if isinstance(document, list) and analytics_kind(document) is None:
        yield from enumerate(document, start=1)
    else:
        yield 1, document


# --- Graph API analytics --------------------------------------------------------------------------


def analytics_kind(document: Any) -> str | None:
    """`conversation_analytics` or `pricing_analytics` for such a response (with or without the
    outer key), else None. Raises InputError for Meta's other analytics endpoints and for an error
    response, which hold nothing to reconcile."""
    if not isinstance(document, dict):
        return None
    if isinstance(document.get("error"), dict):
        message = document["error"].get("message") or document["error"]
        fix = (
            "WABAs on a partner's credit line get no cost: request metric_types without COST"
            if "cost" in str(message).lower()
            else "Save the response of a successful request"
        )
        raise InputError(f"the file is an error response from Meta: {message}", fix=fix)
    for kind in (CONVERSATION_ANALYTICS, PRICING_ANALYTICS):
        if isinstance(document.get(kind), dict):
            return kind
    if isinstance(document.get("analytics"), dict):
        raise InputError(NOT_PRICING_ANALYTICS.format("message analytics (`analytics`: sent and delivered counts)"))
    points = [p for item in _list(document.get("data")) for p in _list(_object(item).get("data_points"))]
    if not points or not all(isinstance(p, dict) for p in points):
        return None
    keys = set().union(*(p.keys() for p in points))
    if "conversation" in keys:
        return CONVERSATION_ANALYTICS
    if "volume" in keys:
        return PRICING_ANALYTICS
    if "template_id" in keys:
        raise InputError(NOT_PRICING_ANALYTICS.format("template_analytics"))
    return None


def read_analytics(source: str | Path | dict, *, source_file: str | None = None, first_row: int = 1) -> pl.DataFrame:
    """One `conversation_analytics` or `pricing_analytics` response (a file or its parsed JSON) as
    ANALYTICS_SCHEMA rows, one per data point in the response's order (module docstring)."""
    if not isinstance(source, dict):
        path = Path(source)
        source_file = source_file or str(path)
        values = list(_json_values(path))
        if len(values) != 1 or not isinstance(values[0][1], dict):
            raise InputError("expected one analytics response (a JSON object)", path=source_file)
        source = values[0][1]
    try:
        kind = analytics_kind(source)
    except InputError as error:
        raise InputError(str(error), path=source_file) from None
    if kind is None:
        raise InputError(
            "not a conversation_analytics or pricing_analytics response: expected "
            '{"<field>": {"data": [{"data_points": [...]}]}} or {"data": [{"data_points": [...]}]}',
            path=source_file,
        )
    body = source[kind] if isinstance(source.get(kind), dict) else source
    currency = _text(source.get("currency")) or _text(body.get("currency"))
    rows = []
    position = first_row
    for item in _list(body.get("data")):
        item = _object(item)
        granularity = _text(item.get("granularity")) or _text(body.get("granularity"))
        for point in _list(item.get("data_points")):
            rows.append(_data_point(point, kind, granularity, currency, source_file, position))
            position += 1
    return pl.DataFrame(rows, schema=ANALYTICS_SCHEMA)


def _data_point(point: Any, kind: str, granularity: str | None, currency: str | None, source_file: str | None, position: int) -> dict:
    point = _object(point)
    problems = []
    start, end = _instant(point.get("start")), _instant(point.get("end"))
    if start is None or end is None:
        problems.append("data point without a readable start and end (Unix seconds)")
    count_key = "conversation" if kind == CONVERSATION_ANALYTICS else "volume"
    volume = _integer(point.get(count_key))
    if volume is None:
        problems.append(f"data point without a readable {count_key} count ({point.get(count_key)!r})")
    cost, cost_problem = _cost(point.get("cost"))
    if cost_problem:
        problems.append(cost_problem)
    tier = _text(point.get("tier"))
    tier_from, tier_to = _tier(tier)
    conversation = kind == CONVERSATION_ANALYTICS
    if conversation:
        category, pricing_type = point.get("conversation_category"), point.get("conversation_type")
    else:
        category, pricing_type = point.get("pricing_category"), point.get("pricing_type")
    return {
        "report": kind,
        "pricing_model": REPORT_PRICING_MODEL[kind],
        "granularity": granularity_of(start, end, granularity),
        "start": start,
        "end": end,
        "phone_number": _text(point.get("phone_number")),
        "country": (_text(point.get("country")) or "").upper() or None,
        "category": _lower(category),
        "pricing_type": pricing_type_of(_lower(pricing_type)),
        "direction": _lower(point.get("conversation_direction")) if conversation else None,
        "tier": tier,
        "tier_from": tier_from,
        "tier_to": tier_to,
        "volume": volume,
        "cost": cost,
        "currency": currency.upper() if currency else None,
        "source_file": source_file,
        "source_row": position,
        "problem": "; ".join(problems) or None,
    }


def granularity_of(start: dt.datetime | None, end: dt.datetime | None, given: str | None = None) -> str | None:
    """HALF_HOUR, DAILY or MONTHLY: as the response says (`DAY`/`MONTH` are the `analytics`
    spellings), else from the data point's length."""
    if given:
        upper = given.strip().upper()
        return _GRANULARITY_ALIASES.get(upper, upper)
    if start is None or end is None:
        return None
    hours = (end - start) / dt.timedelta(hours=1)
    if hours == 0.5:
        return HALF_HOUR
    if 23 <= hours <= 25:
        return DAILY
    if 28 * 24 - 1 <= hours <= 31 * 24 + 1:
        return MONTHLY
    return None


def _tier(tier: str | None) -> tuple[int | None, int | None]:
    """`0:750000` -> (0, 750000); `0:MAX` -> (0, None); anything else -> (None, None)."""
    if tier is None or tier.count(":") != 1:
        return None, None
    lower, upper = tier.split(":")
    return _integer(lower), (None if upper.strip().upper() == "MAX" else _integer(upper))


def _cost(value: Any) -> tuple[Decimal | None, str | None]:
    """Meta's cost, a number or a string; absent is None (no cost given), unreadable a problem."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, None
    if isinstance(value, bool):
        return None, f"cost {value!r} is not a number"
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        return None, f"cost {value!r} is not a number"
    if not number.is_finite():
        return None, f"cost {value!r} is not a number"
    return number.quantize(Decimal(1).scaleb(-COST_SCALE)), None


# --- Gupshup events ---------------------------------------------------------------------------------


def gupshup_rows(value: Any, *, source_file: str | None, source_row: int) -> tuple[list[dict], Counter[str]]:
    """PRICING_SCHEMA rows of one JSON value: a Gupshup v2 event or a Meta-envelope payload holding
    v3 billing events; and what it holds that is not read, counted by kind."""
    skipped: Counter[str] = Counter()
    if not isinstance(value, dict):
        return [], skipped
    where = {"source_file": source_file, "source_row": source_row}
    if value.get("type") in GUPSHUP_V2_TYPES and isinstance(value.get("payload"), dict):
        if value["type"] == "billing-event":
            return [_billing_event(value["payload"], _epoch_ms(value.get("timestamp"))) | where], skipped
        if value["type"] == "message-event":
            row = _message_event(value["payload"], _epoch_ms(value.get("timestamp")))
            if row is not None:
                return [row | where], skipped
            skipped["Gupshup message events without pricing"] += 1
            return [], skipped
        skipped[f"Gupshup '{value['type']}' events (no billing)"] += 1
        return [], skipped
    if not looks_like_webhook(value):
        return [], skipped
    rows = []
    for entry in _list(value.get("entry")):
        entry = _object(entry)
        for change in _list(entry.get("changes")):
            change = _object(change)
            if change.get("field") == GUPSHUP_BILLING_FIELD:
                billing = _object(_object(change.get("value")).get("billing"))
                rows.append(_billing_event(billing, _instant(entry.get("time"))) | where)
            elif change.get("field") == "messages":
                skipped["webhook traffic (give it as INPUT)"] += 1
            else:
                skipped[f"webhook changes of field '{change.get('field')}'"] += 1
    return rows, skipped


def _billing_event(body: dict, time: dt.datetime | None) -> dict:
    """One billing event's `deductions` and `references` (v2 `payload`, v3 `value.billing`)."""
    deductions, references = _object(body.get("deductions")), _object(body.get("references"))
    model, category, pricing_type, billable, problems = deduction(
        model=deductions.get("model"),
        kind=deductions.get("type"),
        category=deductions.get("category"),
        conversation_type=deductions.get("conversationType"),
        billable=deductions.get("billable"),
    )
    message_id = _text(references.get("id"))
    if message_id is None:
        problems.append("billing event without references.id (the message it is for)")
    return {
        "meta_source": GUPSHUP_BILLING_EVENT,
        "message_id": message_id,
        "status": None,
        "time": time,
        "business_phone": None,
        "user_id": _text(references.get("destination")),
        "pricing_model": model,
        "category": category,
        "pricing_type": pricing_type,
        "billable": billable,
        "conversation_id": _text(references.get("conversationId")),
        "conversation_expires_at": None,
        "conversation_origin": None,
        "problem": "; ".join(problems) or None,
    }


def deduction(
    *, model: Any, kind: Any, category: Any, conversation_type: Any, billable: Any
) -> tuple[str | None, str | None, str | None, bool | None, list[str]]:
    """(pricing_model, category, pricing_type, billable, problems) of a Gupshup deduction.

    `type` is a pricing type (PMP, and CBP in some integrations), FEP, FTC (free tier: the category
    is `conversationType`) or a category name (CBP; `marketing_lite` also under PMP).
    """
    problems = []
    pricing_model = (_text(model) or "").upper() or None
    if pricing_model is not None and pricing_model not in PRICING_MODELS:
        problems.append(f"unknown deduction model {model!r} (expected {', '.join(PRICING_MODELS)})")
    is_billable = _boolean(billable)
    if is_billable is None and billable is not None:
        problems.append(f"billable {billable!r} is neither true nor false")
    kind_text = _lower(kind)
    named_type = pricing_type_of(kind_text)
    category_text = category_of(_text(category))
    if named_type in PRICING_TYPES:
        pricing_type = named_type
        if named_type == "free_tier":
            category_text = category_text or _lower(conversation_type)
        elif named_type == "free_entry_point" and category_text is None and pricing_model == "CBP":
            category_text = FEP_CATEGORY
    elif kind_text is not None and kind_text.isidentifier():
        category_text = category_text or kind_text  # a category name: marketing, service, marketing_lite
        pricing_type = "regular" if is_billable else None
    else:
        pricing_type = None
        problems.append(f"unknown deduction type {kind!r}")
    if category_text is None and not problems:
        problems.append("deduction without a category")
    return pricing_model, category_text, pricing_type, is_billable, problems


def _message_event(payload: dict, time: dt.datetime | None) -> dict | None:
    """A v2 message-event with a pricing or conversation object, else None."""
    pricing, conversation = payload.get("pricing"), payload.get("conversation")
    if not isinstance(pricing, dict) and not isinstance(conversation, dict):
        return None
    pricing, conversation = _object(pricing), _object(conversation)
    inner = _object(payload.get("payload"))
    status = _lower(payload.get("type"))
    # An `enqueued` event's id is Gupshup's; Meta's wamid is in payload.payload.whatsappMessageId.
    message_id = _text(inner.get("whatsappMessageId")) if status == "enqueued" else None
    message_id = message_id or _text(payload.get("id"))
    problems = [] if message_id else ["message event without an id"]
    model = (_text(pricing.get("policy")) or _text(pricing.get("pricing_model")) or "").upper() or None
    billable = _boolean(pricing.get("billable"))
    return {
        "meta_source": GUPSHUP_MESSAGE_EVENT,
        "message_id": message_id,
        "status": status,
        "time": _instant(inner.get("ts")) or time,
        "business_phone": None,
        "user_id": _text(payload.get("destination")),
        "pricing_model": model,
        "category": category_of(_text(pricing.get("category"))),
        "pricing_type": pricing_type_of(_lower(pricing.get("type"))),
        "billable": billable,
        "conversation_id": _text(conversation.get("id")),
        "conversation_expires_at": _instant(conversation.get("expiresAt")),
        "conversation_origin": _lower(conversation.get("type")),
        "problem": "; ".join(problems) or None,
    }


# --- status webhooks, as analytics.read.webhooks keeps them ------------------------------------------------


def webhook_pricing(billing: pl.DataFrame) -> pl.DataFrame:
    """`WebhookRows.billing` / `Ingested.billing` (webhooks.BILLING_SCHEMA) as PRICING_SCHEMA rows."""
    seconds = pl.col("timestamp").cast(pl.Int64, strict=False)
    expires = pl.col("conversation_expires_at").cast(pl.Int64, strict=False)
    return billing.select(
        meta_source=pl.lit(WEBHOOK),
        message_id="message_id",
        status="status",
        time=pl.from_epoch(seconds, time_unit="s").dt.replace_time_zone("UTC").cast(INSTANT),
        business_phone="business_phone",
        user_id="user_id",
        pricing_model=pl.col("pricing_model").str.to_uppercase(),
        category="pricing_category",
        pricing_type=pl.col("pricing_type").replace(PRICING_TYPE_ALIASES),
        billable="billable",
        conversation_id="conversation_id",
        conversation_expires_at=pl.from_epoch(expires, time_unit="s").dt.replace_time_zone("UTC").cast(INSTANT),
        conversation_origin="conversation_origin",
        pricing_subtype="pricing_subtype",
        recipient_type="recipient_type",
        recipient_participant_id="recipient_participant_id",
        source_file="source_file",
        source_row="source_row",
        problem=pl.when(pl.col("conversation_expires_at").is_not_null() & expires.is_null()).then(
            pl.format("conversation expiration_timestamp {} is not Unix seconds", "conversation_expires_at")
        ),
    ).cast(PRICING_SCHEMA)  # type: ignore[arg-type]


# --- what a status webhook's pricing type means, by date ---------------------------------------------


PRICING_TYPE_MEANINGS_SCHEMA: dict[str, pl.DataType] = {
    "effective_from": pl.Date(),
    "meta_pricing_type": pl.String(),
    "ours_pricing_type": pl.String(),
    "billable": pl.Boolean(),
    "meaning": pl.String(),
    "source": pl.String(),
}


@cache
def pricing_type_meanings() -> pl.DataFrame:
    """data/rules/webhook_pricing_types.csv, one row per (effective_from, Meta's pricing type, our
    pricing type that agrees with it): from `effective_from` (00:00 in the WABA time zone) until the
    next date of the table, Meta's `pricing.type` means `meaning` (source: Meta's status webhook
    reference, P3 of changes-2026-h2.md; on 2026-10-01 `free_customer_service` changed from "inside
    the customer service window" to "inside the free tier"). An empty `ours_pricing_type` is a type
    none of our charges corresponds to (reported by reconciliation as not_modelled)."""
    text = resource("data", "rules", "webhook_pricing_types.csv").read_text(encoding="utf-8")
    return pl.read_csv(io.StringIO(text), schema=PRICING_TYPE_MEANINGS_SCHEMA)


def with_pricing_type_meaning(frame: pl.DataFrame, *, local_date: pl.Expr, pricing_type: str) -> pl.DataFrame:
    """`frame` with what Meta's pricing type in column `pricing_type` meant on `local_date` (a date in
    the WABA time zone), by `pricing_type_meanings()`:
    - `meaning_from`: the effective date of the meanings in force (null before the table's first date);
    - `agreeing_types`: our pricing types that agree with Meta's (empty: none of ours corresponds;
      null: Meta's type is not in the table, or no meaning is in force);
    - `meaning`: the meaning in words (alternatives joined by "; or ")."""
    table = pricing_type_meanings()
    meaning_from = pl.lit(None, pl.Date)
    for effective_from in table["effective_from"].unique().sort():
        meaning_from = pl.when(local_date >= effective_from).then(pl.lit(effective_from)).otherwise(meaning_from)
    by_type = table.group_by("effective_from", "meta_pricing_type", maintain_order=True).agg(
        agreeing_types=pl.col("ours_pricing_type").drop_nulls(),
        meaning=pl.col("meaning").str.join("; or "),
    )
    return (
        frame.drop("meaning_from", "agreeing_types", "meaning", strict=False)
        .with_columns(meaning_from=meaning_from)
        .join(
            by_type,
            left_on=["meaning_from", pricing_type],
            right_on=["effective_from", "meta_pricing_type"],
            how="left",
            maintain_order="left",
        )
    )


def concat_pricing(frames: Iterable[pl.DataFrame]) -> pl.DataFrame:
    """Several PRICING_SCHEMA tables as one."""
    frames = [f.select(list(PRICING_SCHEMA)) for f in frames if f.height]
    return pl.concat(frames) if frames else pl.DataFrame(schema=PRICING_SCHEMA)


def in_metas_words(frame: pl.DataFrame, *, local_date: pl.Expr, pricing_type: str) -> pl.DataFrame:
    """`frame` with our pricing type in column `pricing_type` replaced by the word Meta uses for it on
    `local_date` (`pricing_type_meanings()` read backwards: from 2026-10-01 our `free_tier` is Meta's
    `free_customer_service`); unchanged where the table says nothing (before 2025-07-01)."""
    table = pricing_type_meanings().filter(pl.col("ours_pricing_type").is_not_null())
    meaning_from = pl.lit(None, pl.Date)
    for effective_from in table["effective_from"].unique().sort():
        meaning_from = pl.when(local_date >= effective_from).then(pl.lit(effective_from)).otherwise(meaning_from)
    words = table.unique(["effective_from", "ours_pricing_type"], keep="first", maintain_order=True).select(
        _meaning_from="effective_from", _ours_type="ours_pricing_type", _metas_word="meta_pricing_type"
    )
    return (
        frame.with_columns(_meaning_from=meaning_from)
        .join(
            words,
            left_on=["_meaning_from", pricing_type],
            right_on=["_meaning_from", "_ours_type"],
            how="left",
            maintain_order="left",
        )
        .with_columns(pl.coalesce("_metas_word", pricing_type).alias(pricing_type))
        .drop("_meaning_from", "_metas_word")
    )


# --- JSON values -------------------------------------------------------------------------------------


def pricing_type_of(value: str | None) -> str | None:
    return PRICING_TYPE_ALIASES.get(value, value) if value is not None else None


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        return value.strip() or None
    if value is None or isinstance(value, dict | list):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _lower(value: Any) -> str | None:
    text = _text(value)
    return text.lower() if text is not None else None


def _boolean(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    return {"true": True, "false": False}.get((_text(value) or "").lower())


def _integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    text = _text(value)
    return int(text) if text is not None and text.lstrip("-").isdigit() else None


def _instant(value: Any) -> dt.datetime | None:
    """Unix seconds (a number or its digits) as a UTC instant."""
    seconds = _integer(value)
    return dt.datetime.fromtimestamp(seconds, dt.UTC) if seconds is not None else None


def _epoch_ms(value: Any) -> dt.datetime | None:
    """Gupshup's envelope `timestamp`, Unix milliseconds, as a UTC instant."""
    millis = _integer(value)
    return dt.datetime.fromtimestamp(millis / 1000, dt.UTC) if millis is not None else None


def _object(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []
