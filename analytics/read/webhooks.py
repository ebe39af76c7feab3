"""Meta Cloud API webhook payloads into raw canonical message rows (contracts.md §1).

`read_webhooks` reads JSONL (one payload a line), a JSON array of payloads, or one payload, and
returns every column of `analytics.core.schema.MESSAGE_SCHEMA` as text, plus `source_file`,
`source_row` and `problem`. Ingest parses the timestamp (Unix seconds, kept as found), validates,
and quarantines every row whose `problem` is set. Nothing is dropped silently: a line that is not
JSON, or not a webhook, becomes a row that says so; changes of other fields are counted in
`WebhookRows.skipped`. Shapes and eras: ../shared/domain/formats-research.md §1.1, §1.2.

Inbound (`value.messages[]`): one row each, status `received`. A message received in a group
carries `group_id` (Meta, "Group messages webhook reference", Updated Jun 17, 2026,
https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/messages/group/):
it is an inbound row of its sender (`from`, the participant) with the group's id in `group_id`.
- `user_id` is `from`, else the BSUID (`from_user_id`, else the contact's `user_id`); `wa_id`,
  `from` and `recipient_id` may be empty strings, read as missing.
- `user_phone` is the contact's `wa_id`, as E.164 (`+` and the digits), only when `user_id` is a
  BSUID; `user_country` is the contact's `profile.country_code` (or `country_code`) upper-cased.
- `entry_point` [choice]: `ctwa` when `referral.source_type` is `ad` (Click-to-WhatsApp);
  `page_cta` for `post` and any other referral. Meta documents only these two sources and
  billing-rules.md §2 treats both alike, so an unknown source is still an entry point.
- `type: system` [choice]: Meta's notice that the user changed number or BSUID is not a message
  from the user, so it must not open a customer service window (§2): its row carries a problem.

Outbound (`value.statuses[]`) are folded into one row per wamid (per wamid and participant for a
group message) across the whole file, and across
all the files of one run (`fold_files`: daily dumps split one message's statuses), since the
statuses of one message arrive in separate payloads and retries repeat (`fold_statuses`):
- `status`: the best reached, failed > read > delivered > sent (`played` counts as read; `deleted`
  and unknown values do not count, but still make billing rows).
- `timestamp` (contracts.md §1): the `delivered` time, else `read`, else `sent`, else `failed` (a
  message that only failed keeps its failure time; it is never billed). Among repeats of one status,
  the earliest. `source_row` is the row of the status that gave the timestamp.
- `user_id` is `recipient_id`, else `recipient_user_id` (BSUID); phone and country as inbound.
- Group sends (`recipient_type: group`; Meta, "Status messages webhook reference", Updated Sep 14,
  2026: `recipient_id` is the group's id, `recipient_participant_id` the participant): one row per
  participant, the participant as `user_id`, the group's id as `group_id`, the status that
  participant reached (one participant's `failed` is that participant's row only); a participant
  known only by BSUID is `recipient_participant_user_id` (pywa's fixture of P3). A group status
  without `recipient_participant_id` carries a problem: no participant can be billed for it.
- `fep_expires_at`: the end Meta gave the free entry point window the message was delivered in,
  `conversation.expiration_timestamp` (on `sent`, Unix seconds as found), when some status of the
  message says it is inside one (`pricing.type` `free_entry_point`, or category or
  `conversation.origin.type` `referral_conversion`); else null. From Graph API v24 the `conversation`
  object is omitted except inside such a window (P3 of changes-2026-h2.md), so its absence is normal.

`message_type` / `template_category` of an outbound row, first source that settles it:
1. The send log (`read_send_log`), joined on message_id (every participant of a group message): its `message_type` (a row naming a
   template_name or template_category without a type is a template). The category is its
   `template_category`, else its `template_name` (and `language`, when given) looked up in the
   template list (`read_templates`); a name whose languages disagree settles nothing.
2. Meta's billed category from the statuses (`billed_category`, billing-rules.md §7). Categories
   are read lower case, `authentication-international` (Meta's spelling from 2026) as
   `authentication_international`. PMP: `service` and `general_purpose_ai` (an AI provider's
   message, charged per non-template message) and `group_service` are a non-template (`text`, the
   type is not said); `marketing`, `utility`, `authentication`, `marketing_lite` a template of that
   category, and `group_marketing`, `group_utility` a `marketing` / `utility` template (a group
   delivery's category is its template's with `group_` in front); `authentication_international` an `authentication` template; `referral_conversion` (free
   entry point) and anything else, unknown. CBP, or no `pricing_model`: a `service` conversation
   (`pricing.category` or `conversation.origin.type`) is a non-template, since templates never ride
   a service conversation (§4.2); `marketing`, `utility`, `authentication` and the 2022 categories settle
   nothing, since a non-template rides any open conversation (§4.3).
   A template whose category step 1 could not find also takes the PMP billed category.
3. Still unknown: `problem` says which file would settle it (`UNKNOWN_TYPE`, or what the template
   list lacks).

The send log also fills, for the statuses it names, `template_name`, `sent_by` and `tokens`.
Meta documents no webhook field that marks a Meta Business Agent reply or its tokens (neither the
status webhook reference of Sep 14, 2026 nor the group messages reference of Jun 17, 2026 names
one), so `sent_by` and `tokens` come only from the send log or the canonical file.

`billing` keeps Meta's own figures, one row per (wamid, status, group participant) with a `pricing`
or `conversation` object (the first seen), for reconciliation (§7): `pricing.type` (or its alias
`pricing_type`), `billable` (deprecated by Meta; reconciliation reads it only where `type` is
absent), category, `pricing.subtype` (e.g. `paid_exempt`), the conversation, and for group sends
`recipient_type` and `recipient_participant_id`. Categories are kept as Meta writes them (lower
case): reconciliation reads `group_*` and `general_purpose_ai` as the categories of our charges.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from analytics.core.errors import InputError, found_names, library_reason
from analytics.core.json_files import json_lines, loads_or_none, not_valid_json, read_text
from analytics.core.schema import MESSAGE_SCHEMA, TEMPLATE

WABA_OBJECT = "whatsapp_business_account"
MESSAGES_FIELD = "messages"
NO_TRAFFIC = "messages (no messages or statuses)"  # a `messages` change carrying only errors

# Outbound folding: the best status reached wins; the timestamp comes from the first of TIME_SOURCES.
STATUS_ALIASES = {"played": "read"}  # a voice message played has been read
STATUS_RANK = {"sent": 1, "delivered": 2, "read": 3, "failed": 4}
RANK_STATUS = {rank: status for status, rank in STATUS_RANK.items()}
TIME_SOURCES = {"delivered": 0, "read": 1, "sent": 2, "failed": 3}

# Meta's billed category read as a message type (billing-rules.md §7).
PMP = "PMP"
SERVICE = "service"
NON_TEMPLATE_TYPE = "text"  # a service message's own type is never said; any non-template bills alike
PMP_TEMPLATE_CATEGORIES = {
    "marketing": "marketing",
    "utility": "utility",
    "authentication": "authentication",
    "marketing_lite": "marketing_lite",
    "authentication_international": "authentication",
    "group_marketing": "marketing",
    "group_utility": "utility",
}
# PMP categories that name a non-template message: service, a group's, and an AI provider's message,
# which Meta charges per delivered non-template message (changes-2026-h2.md §6, "AI Providers").
PMP_NON_TEMPLATE_CATEGORIES = (SERVICE, "group_service", "general_purpose_ai")
CATEGORY_SPELLINGS = {"authentication-international": "authentication_international"}
CTWA_SOURCE = "ad"
# Meta says a message is inside a free entry point window (billing-rules.md §7, §9).
FREE_ENTRY_POINT = "free_entry_point"
FEP_CATEGORY = "referral_conversion"

UNKNOWN_TYPE = (
    "outbound message type unknown: status webhooks do not name the template; pass --send-log "
    "(CSV message_id,message_type,template_name|template_category) and --templates (Meta's template JSON) to fill it"
)
NO_TEMPLATE_NAMED = (
    "template category unknown: the send log marks it a template but names none; give template_name or template_category in the send log"
)
GROUP_WITHOUT_PARTICIPANT = (
    "group status without recipient_participant_id: no participant it was delivered to can be billed; "
    "give the statuses as Meta sends them (one per participant)"
)
GROUP = "group"
SYSTEM_NOTICE = (
    "inbound system notice (user changed number or BSUID), not a message from the user: left out so that it opens no customer service window"
)
# What the send log and template list could not settle; `{}` is the template name.
TEMPLATE_WITHOUT_LIST = "template '{}' has no known category: pass --templates (Meta's template JSON) or give template_category in the send log"
TEMPLATE_NOT_LISTED = "template '{}' is not in the template list: add it to --templates or give template_category in the send log"
TEMPLATE_LANGUAGES_DISAGREE = (
    "template '{}' has different categories by language ({}): add a language column to the send log or give template_category"
)
WEBHOOK_SHAPE = 'expected an object with "object": "whatsapp_business_account" and an "entry" list'

RAW_MESSAGE_SCHEMA: dict[str, pl.DataType] = {
    **{column: pl.String() for column in MESSAGE_SCHEMA},
    "source_file": pl.String(),
    "source_row": pl.Int64(),
    "problem": pl.String(),
}
BILLING_SCHEMA: dict[str, pl.DataType] = {
    "message_id": pl.String(),
    "status": pl.String(),
    "timestamp": pl.String(),
    "business_phone": pl.String(),
    "waba_id": pl.String(),
    "user_id": pl.String(),
    "pricing_model": pl.String(),
    "pricing_category": pl.String(),
    "pricing_type": pl.String(),
    "billable": pl.Boolean(),
    "conversation_id": pl.String(),
    "conversation_expires_at": pl.String(),
    "conversation_origin": pl.String(),
    "pricing_subtype": pl.String(),
    "recipient_type": pl.String(),
    "recipient_participant_id": pl.String(),
    "source_file": pl.String(),
    "source_row": pl.Int64(),
}
_STATUS_SCHEMA: dict[str, pl.DataType] = {
    **{c: pl.String() for c in ("message_id", "status", "timestamp", "business_phone", "waba_id", "user_id")},
    **{c: pl.String() for c in ("user_phone", "user_country", "group_id")},
    **{c: t for c, t in BILLING_SCHEMA.items() if c.startswith(("pricing", "billable", "conversation", "recipient"))},
    "has_billing": pl.Boolean(),
    "source_row": pl.Int64(),
}
SEND_LOG_COLUMNS = ("message_id", "message_type", "template_name", "language", "template_category", "sent_by", "tokens")
# What a send log must give besides message_id: at least one of these.
SEND_LOG_FACTS = ("message_type", "template_name", "template_category", "sent_by", "tokens")
TEMPLATE_COLUMNS = ("template_name", "language", "template_category")


@dataclass(frozen=True)
class WebhookRows:
    """What one webhook file holds.

    - `messages`: raw canonical rows (RAW_MESSAGE_SCHEMA), every message column as text.
    - `billing`: Meta's billing fields per (wamid, status) (BILLING_SCHEMA), for reconciliation.
    - `skipped`: changes of other webhook fields, by field name, for the run summary.
    """

    messages: pl.DataFrame
    billing: pl.DataFrame
    skipped: dict[str, int] = field(default_factory=dict)


def looks_like_webhook(obj: object) -> bool:
    """A parsed JSON value shaped like a WhatsApp webhook payload (another `object` is not one)."""
    if not isinstance(obj, dict):
        return False
    if "object" in obj:
        return obj["object"] == WABA_OBJECT
    return isinstance(obj.get("entry"), list)


@dataclass(frozen=True)
class WebhookFile:
    """One webhook file read, its statuses not yet folded (`fold_files` folds those of all files).

    - `rows`: inbound messages and problem rows (RAW_MESSAGE_SCHEMA);
    - `statuses`: every status record (`_STATUS_SCHEMA`) with `source_file`.
    """

    path: str
    rows: pl.DataFrame
    statuses: pl.DataFrame
    skipped: dict[str, int] = field(default_factory=dict)


def read_webhooks(path: str | Path, *, send_log: pl.DataFrame | None = None, templates: pl.DataFrame | None = None) -> WebhookRows:
    """Rows of one webhook file (module docstring); `send_log` and `templates` fill outbound types."""
    (rows,) = fold_files([collect_webhooks(path)], send_log=send_log, templates=templates)
    return rows


def collect_webhooks(path: str | Path) -> WebhookFile:
    """Inbound messages, problems and status records of one webhook file, statuses unfolded."""
    collected = _Collected()
    for source_row, where, payload in _payloads(Path(path)):
        if isinstance(payload, _NotAWebhook):
            collected.problem(source_row, f"{where} {payload.reason}")
        else:
            collected.payload(payload, source_row, where)
    rows = pl.concat(
        [pl.DataFrame(collected.inbound, schema=RAW_MESSAGE_SCHEMA), pl.DataFrame(collected.problems, schema=RAW_MESSAGE_SCHEMA)]
    ).with_columns(source_file=pl.lit(str(path)))
    statuses = pl.DataFrame(collected.statuses, schema=_STATUS_SCHEMA).with_columns(source_file=pl.lit(str(path)))
    return WebhookFile(path=str(path), rows=rows, statuses=statuses, skipped=dict(collected.skipped))


def fold_files(files: Sequence[WebhookFile], *, send_log: pl.DataFrame | None = None, templates: pl.DataFrame | None = None) -> list[WebhookRows]:
    """Each file's rows, with the statuses of ALL the files folded together: a message sent in one
    daily dump and delivered in the next is one outbound row, not two that conflict. A folded row
    belongs to the file of the status that gave its timestamp; files count in the order given."""
    if not files:
        return []
    statuses = pl.concat([f.statuses.with_columns(file_order=pl.lit(i, dtype=pl.Int32)) for i, f in enumerate(files)])
    outbound = fill_message_types(fold_statuses(statuses), send_log=send_log, templates=templates)
    missing = [c for c in RAW_MESSAGE_SCHEMA if c not in outbound.columns]  # optional columns the statuses do not carry
    outbound = outbound.with_columns([pl.lit(None, dtype=RAW_MESSAGE_SCHEMA[c]).alias(c) for c in missing]).select(list(RAW_MESSAGE_SCHEMA))
    billing = billing_rows(statuses)
    return [
        WebhookRows(
            messages=pl.concat([f.rows, outbound.filter(pl.col("source_file") == f.path)]).sort("source_row", maintain_order=True),
            billing=billing.filter(pl.col("source_file") == f.path),
            skipped=f.skipped,
        )
        for f in files
    ]


# --- the file: payloads with their row numbers -------------------------------------------------


@dataclass(frozen=True)
class _NotAWebhook:
    reason: str


def _payloads(path: Path) -> Iterator[tuple[int, str, dict | _NotAWebhook]]:
    """(source_row, where, payload) for JSONL, a JSON array, or a single payload."""
    text = read_text(path)
    if not text.strip():
        return
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        if not _is_json_lines(text):
            raise InputError(
                f"{not_valid_json(error)} and not JSON Lines",
                path=str(path),
                fix="Give webhook payloads as JSONL (one a line), a JSON array, or one JSON object",
            ) from None
        yield from _json_lines(text)
        return
    if isinstance(document, list):
        for index, item in enumerate(document, start=1):
            yield index, f"item {index} of the JSON array", _webhook_or_reason(item)
    else:
        yield 1, "the JSON document", _webhook_or_reason(document)


def _is_json_lines(text: str) -> bool:
    """One line, or some line that is a JSON object on its own (a broken pretty-printed file has none)."""
    lines = [line for line in text.split("\n") if line.strip()]
    return len(lines) == 1 or any(isinstance(loads_or_none(line), dict) for line in lines)


def _json_lines(text: str) -> Iterator[tuple[int, str, dict | _NotAWebhook]]:
    for number, value, error in json_lines(text):
        if error is not None:
            yield number, f"line {number}", _NotAWebhook(f"is not JSON ({error.msg} at column {error.colno})")
        else:
            yield number, f"line {number}", _webhook_or_reason(value)


def _webhook_or_reason(value: object) -> dict | _NotAWebhook:
    if looks_like_webhook(value):
        return value  # type: ignore[return-value]
    return _NotAWebhook(f"is not a WhatsApp webhook payload ({WEBHOOK_SHAPE}; found {_describe(value)})")


def _describe(value: object) -> str:
    if isinstance(value, dict):
        keys = ", ".join(map(str, list(value)[:5])) + (", ..." if len(value) > 5 else "")
        return f"an object with keys {keys}" if value else "an empty object"
    if value is None:
        return "null"
    return {list: "a list", str: "a string", bool: "a boolean"}.get(type(value), "a number")


# --- payloads: envelope, inbound messages, statuses --------------------------------------------


@dataclass
class _Collected:
    inbound: list[dict] = field(default_factory=list)
    statuses: list[dict] = field(default_factory=list)
    problems: list[dict] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)

    def problem(self, source_row: int, reason: str) -> None:
        self.problems.append({"source_row": source_row, "problem": reason})

    def payload(self, payload: dict, source_row: int, where: str) -> None:
        entries = payload.get("entry")
        if not isinstance(entries, list):
            self.problem(source_row, f'{where}: "entry" is missing or not a list')
            return
        for e, entry in enumerate(entries):
            changes = entry.get("changes") if isinstance(entry, dict) else None
            if not isinstance(changes, list):
                self.problem(source_row, f'{where}: entry[{e}] has no "changes" list')
                continue
            for c, change in enumerate(changes):
                self.change(change, entry, source_row, f"{where}: entry[{e}].changes[{c}]")

    def change(self, change: object, entry: dict, source_row: int, path: str) -> None:
        if not isinstance(change, dict):
            self.problem(source_row, f"{path} is not an object")
            return
        if change.get("field") != MESSAGES_FIELD:
            self.skipped[str(change.get("field", "(no field)"))] += 1
            return
        value = change.get("value")
        if not isinstance(value, dict):
            self.problem(source_row, f"{path}.value is not an object")
            return
        envelope = _Envelope.of(entry, value)
        if value.get("messages") is None and value.get("statuses") is None:
            self.skipped[NO_TRAFFIC] += 1
        for _, message in self.items(value, "messages", source_row, path):
            self.inbound.append(inbound_row(message, envelope) | {"source_row": source_row})
        for where, status in self.items(value, "statuses", source_row, path):
            if _text(status.get("id")) is None:
                self.problem(source_row, f"{where} has no id (wamid): it cannot be matched to its message")
            else:
                self.statuses.append(status_record(status, envelope) | {"source_row": source_row})

    def items(self, value: dict, key: str, source_row: int, path: str) -> Iterator[tuple[str, dict]]:
        """(where, item) for the objects of `value[key]`; anything else there is a problem row."""
        items = value.get(key)
        if items is None:
            return
        if not isinstance(items, list):
            self.problem(source_row, f"{path}.value.{key} is not a list")
            return
        for i, item in enumerate(items):
            if isinstance(item, dict):
                yield f"{path}.value.{key}[{i}]", item
            else:
                self.problem(source_row, f"{path}.value.{key}[{i}] is not an object")


@dataclass(frozen=True)
class _Envelope:
    waba_id: str | None
    business_phone: str | None
    contacts: tuple[dict, ...]

    @classmethod
    def of(cls, entry: dict, value: dict) -> _Envelope:
        metadata = _object(value.get("metadata"))
        contacts = value.get("contacts") if isinstance(value.get("contacts"), list) else []
        return cls(
            waba_id=_text(entry.get("id")),
            business_phone=_text(metadata.get("phone_number_id")) or _text(metadata.get("display_phone_number")),
            contacts=tuple(c for c in contacts if isinstance(c, dict)),
        )


def inbound_row(message: dict, envelope: _Envelope) -> dict:
    """One `value.messages[]` item as a raw canonical row."""
    user_id, user_phone, user_country = user_identity(_text(message.get("from")), _text(message.get("from_user_id")), envelope.contacts)
    message_type = _text(message.get("type"))
    return {
        "message_id": _text(message.get("id")),
        "timestamp": _text(message.get("timestamp")),
        "direction": "inbound",
        "business_phone": envelope.business_phone,
        "waba_id": envelope.waba_id,
        "user_id": user_id,
        "user_phone": user_phone,
        "user_country": user_country,
        "message_type": message_type,
        "template_category": None,
        "status": "received",
        "entry_point": entry_point(message.get("referral")),
        "group_id": _text(message.get("group_id")),
        "problem": SYSTEM_NOTICE if message_type == "system" else None,
    }


def entry_point(referral: object) -> str | None:
    """`ctwa` for a Click-to-WhatsApp ad, `page_cta` for any other referral [choice, module docstring]."""
    if not isinstance(referral, dict):
        return None
    return "ctwa" if (_text(referral.get("source_type")) or "").lower() == CTWA_SOURCE else "page_cta"


def status_record(status: dict, envelope: _Envelope) -> dict:
    """One `value.statuses[]` item, with Meta's billing fields, before folding."""
    pricing = _object(status.get("pricing"))
    conversation = _object(status.get("conversation"))
    recipient_type = _lower(status.get("recipient_type"))
    participant = _text(status.get("recipient_participant_id"))
    if recipient_type == GROUP:  # the group is the recipient, the participant the user
        group_id = _text(status.get("recipient_id"))
        user_id, user_phone, user_country = user_identity(participant, _text(status.get("recipient_participant_user_id")), envelope.contacts)
    else:
        group_id = None
        user_id, user_phone, user_country = user_identity(
            _text(status.get("recipient_id")), _text(status.get("recipient_user_id")), envelope.contacts
        )
    pricing_type = pricing.get("type") if pricing.get("type") is not None else pricing.get("pricing_type")
    return {
        "message_id": _text(status.get("id")),
        "status": _lower(status.get("status")),
        "timestamp": _text(status.get("timestamp")),
        "business_phone": envelope.business_phone,
        "waba_id": envelope.waba_id,
        "user_id": user_id,
        "user_phone": user_phone,
        "user_country": user_country,
        "group_id": group_id,
        "recipient_type": recipient_type,
        "recipient_participant_id": participant,
        "pricing_model": _text(pricing.get("pricing_model")),
        "pricing_category": category_of(pricing.get("category")),
        "pricing_type": _lower(pricing_type),
        "pricing_subtype": _lower(pricing.get("subtype")),
        "billable": _boolean(pricing.get("billable")),
        "conversation_id": _text(conversation.get("id")),
        "conversation_expires_at": _text(conversation.get("expiration_timestamp")),
        "conversation_origin": category_of(_object(conversation.get("origin")).get("type")),
        "has_billing": isinstance(status.get("pricing"), dict) or isinstance(status.get("conversation"), dict),
    }


def category_of(value: Any) -> str | None:
    """Meta's pricing or conversation category, lower case, in the project's spelling: Meta writes
    `authentication-international` with a hyphen in status webhooks (P3, 2026), `_international`
    elsewhere and before."""
    category = _lower(value)
    return CATEGORY_SPELLINGS.get(category, category) if category is not None else None


def user_identity(phone: str | None, bsuid: str | None, contacts: tuple[dict, ...]) -> tuple[str | None, ...]:
    """(user_id, user_phone, user_country): the phone when known, else the BSUID with the contact's phone."""
    contact = _contact_of(phone, bsuid, contacts)
    profile = _object(contact.get("profile"))
    country = _text(profile.get("country_code")) or _text(contact.get("country_code"))
    user_country = country.upper() if country else None
    if phone is not None:
        return phone, None, user_country
    contact_phone = _text(contact.get("wa_id"))
    bsuid = bsuid or _text(contact.get("user_id"))
    if bsuid is None:
        return contact_phone, None, user_country
    return bsuid, _e164(contact_phone), user_country


def _contact_of(phone: str | None, bsuid: str | None, contacts: tuple[dict, ...]) -> dict:
    """The contact for this user; the only contact when the message names nobody."""
    for contact in contacts:
        if (phone and _text(contact.get("wa_id")) == phone) or (bsuid and _text(contact.get("user_id")) == bsuid):
            return contact
    if phone is None and bsuid is None and len(contacts) == 1:
        return contacts[0]
    return {}


# --- statuses: fold, billing rows ---------------------------------------------------------------


def fold_statuses(statuses: pl.DataFrame) -> pl.DataFrame:
    """One outbound row per wamid (and group participant) from all its statuses (module docstring),
    with its billed category fields."""
    identity = ("business_phone", "waba_id", "user_id")
    is_group = pl.col("recipient_type") == GROUP
    ranked = (
        statuses.with_columns(
            reached=pl.col("status").replace(STATUS_ALIASES), _participant=pl.when(is_group).then(pl.col("recipient_participant_id"))
        )
        .with_columns(
            rank=pl.col("reached").replace_strict(STATUS_RANK, default=None, return_dtype=pl.Int8),
            time_source=pl.col("reached").replace_strict(TIME_SOURCES, default=None, return_dtype=pl.Int8),
            seconds=pl.col("timestamp").cast(pl.Int64, strict=False),
        )
        .sort(["message_id", "_participant", "time_source", "seconds", "file_order", "source_row"], nulls_last=True, maintain_order=True)
    )
    folded = ranked.group_by("message_id", "_participant", maintain_order=True).agg(
        pl.col("timestamp", "source_row", "source_file").first(),
        pl.col("rank").max(),
        *[pl.col(c).drop_nulls().first() for c in (*identity, "user_phone", "user_country", "group_id")],
        *[pl.col(c).drop_nulls().first() for c in ("pricing_model", "pricing_category", "conversation_origin")],
        *[pl.col(c).drop_nulls().unique(maintain_order=True).alias(f"{c}_seen") for c in identity],
        pl.col("status").drop_nulls().unique(maintain_order=True).alias("statuses_seen"),
        is_group=is_group.any(),
        in_fep_window=(
            (pl.col("pricing_type") == FREE_ENTRY_POINT)
            | (pl.col("pricing_category") == FEP_CATEGORY)
            | (pl.col("conversation_origin") == FEP_CATEGORY)
        ).any(),
        window_end=pl.col("conversation_expires_at").drop_nulls().first(),
    )
    problems = [
        pl.when(pl.col("rank").is_null()).then(
            pl.format("no sent, delivered, read or failed status for this message (seen: {})", _joined("statuses_seen"))
        ),
        *[
            pl.when(pl.col(f"{c}_seen").list.len() > 1).then(pl.format(f"statuses of this message disagree on {c}: {{}}", _joined(f"{c}_seen")))
            for c in identity
        ],
        pl.when(pl.col("is_group") & pl.col("_participant").is_null()).then(pl.lit(GROUP_WITHOUT_PARTICIPANT)),
    ]
    return folded.select(
        "message_id",
        "timestamp",
        pl.lit("outbound").alias("direction"),
        *identity,
        "user_phone",
        "user_country",
        pl.lit(None, pl.String).alias("message_type"),
        pl.lit(None, pl.String).alias("template_category"),
        pl.col("rank").replace_strict(RANK_STATUS, default=None, return_dtype=pl.String).alias("status"),
        pl.lit(None, pl.String).alias("entry_point"),
        pl.when(pl.col("in_fep_window")).then(pl.col("window_end")).alias("fep_expires_at"),
        "group_id",
        "pricing_model",
        "pricing_category",
        "conversation_origin",
        "source_file",
        "source_row",
        _problems(*problems).alias("problem"),
    )


def billing_rows(statuses: pl.DataFrame) -> pl.DataFrame:
    """Meta's billing fields, one row per (wamid, status, group participant) that carried them, the
    first seen in file and row order (§7): a group send has one status per participant (P3)."""
    return (
        statuses.filter(pl.col("has_billing"))
        .sort(["file_order", "source_row"], maintain_order=True)
        .unique(["message_id", "status", "recipient_participant_id"], keep="first", maintain_order=True)
        .select(list(BILLING_SCHEMA))
    )


# --- outbound message types: send log, template list, Meta's billed category --------------------


def fill_message_types(outbound: pl.DataFrame, *, send_log: pl.DataFrame | None = None, templates: pl.DataFrame | None = None) -> pl.DataFrame:
    """`message_type` and `template_category` of folded outbound rows, by the precedence of the docstring."""
    frame = outbound.join(_logged(send_log), on="message_id", how="left", maintain_order="left")
    frame = _with_listed_categories(frame, templates)
    billed_type, billed_template_category = billed_category()
    logged_template = (pl.col("log_type") == TEMPLATE) | (
        pl.col("log_type").is_null() & pl.any_horizontal(pl.col("log_template", "log_category").is_not_null())
    )
    message_type = pl.when(logged_template).then(pl.lit(TEMPLATE)).otherwise(pl.coalesce("log_type", billed_type))
    logged_category = pl.when(logged_template).then(pl.coalesce("log_category", "listed_category"))
    frame = frame.with_columns(message_type=message_type).with_columns(
        template_category=pl.when(pl.col("message_type") == TEMPLATE).then(pl.coalesce(logged_category, billed_template_category))
    )
    category_unknown = (pl.col("message_type") == TEMPLATE) & pl.col("template_category").is_null()
    return frame.with_columns(
        template_name=pl.when(pl.col("message_type") == TEMPLATE).then(pl.col("log_template")),
        sent_by=pl.col("log_sent_by"),
        tokens=pl.col("log_tokens"),
        problem=_problems(
            pl.col("problem"),
            pl.when(pl.col("message_type").is_null()).then(pl.lit(UNKNOWN_TYPE)),
            pl.when(category_unknown).then(pl.coalesce("listing_problem", pl.lit(NO_TEMPLATE_NAMED))),
        ),
    )


def billed_category() -> tuple[pl.Expr, pl.Expr]:
    """(message_type, template_category) that Meta's billed category settles, else nulls (docstring, step 2)."""
    is_pmp = pl.col("pricing_model").str.to_uppercase() == PMP
    category = pl.col("pricing_category")
    pmp_template = category.replace_strict(PMP_TEMPLATE_CATEGORIES, default=None, return_dtype=pl.String)
    service = (
        pl.when(is_pmp)
        .then(category.is_in(PMP_NON_TEMPLATE_CATEGORIES))
        .otherwise((category == SERVICE) | (pl.col("conversation_origin") == SERVICE))
    )
    message_type = pl.when(is_pmp & pmp_template.is_not_null()).then(pl.lit(TEMPLATE)).when(service.fill_null(False)).then(pl.lit(NON_TEMPLATE_TYPE))
    return message_type, pl.when(is_pmp).then(pmp_template)


def _logged(send_log: pl.DataFrame | None) -> pl.DataFrame:
    """The send log as log_* columns, one row per message_id."""
    if send_log is None:
        send_log = pl.DataFrame(schema=dict.fromkeys(SEND_LOG_COLUMNS, pl.String))
    return (
        _normalised_send_log(send_log)
        .unique("message_id", keep="first", maintain_order=True)
        .select(
            "message_id",
            log_type="message_type",
            log_template="template_name",
            log_language="language",
            log_category="template_category",
            log_sent_by="sent_by",
            log_tokens="tokens",
        )
    )


def _with_listed_categories(frame: pl.DataFrame, templates: pl.DataFrame | None) -> pl.DataFrame:
    """`listed_category` of the send log's template through the template list, and `listing_problem` when none."""
    name = pl.col("log_template")
    if templates is None:
        return frame.with_columns(
            listed_category=pl.lit(None, pl.String),
            listing_problem=pl.when(name.is_not_null()).then(pl.format(TEMPLATE_WITHOUT_LIST, name)),
        )
    listed = _normalised_templates(templates).unique().sort(TEMPLATE_COLUMNS, nulls_last=True)
    one_category = pl.when(pl.col("template_category").n_unique() == 1).then(pl.col("template_category").first())
    by_language = listed.group_by("template_name", "language").agg(language_category=one_category)
    by_name = listed.group_by("template_name").agg(
        name_category=one_category,
        name_categories=pl.concat_str(pl.col("language").fill_null("no language"), pl.lit(": "), pl.col("template_category")).str.join(", "),
    )
    frame = frame.join(
        by_language,
        left_on=["log_template", "log_language"],
        right_on=["template_name", "language"],
        how="left",
        maintain_order="left",
    ).join(by_name, left_on="log_template", right_on="template_name", how="left", maintain_order="left")
    listed_category = pl.coalesce("language_category", "name_category")
    return frame.with_columns(
        listed_category=listed_category,
        listing_problem=pl.when(name.is_null())
        .then(None)
        .when(pl.col("name_categories").is_null())
        .then(pl.format(TEMPLATE_NOT_LISTED, name))
        .when(listed_category.is_null())
        .then(pl.format(TEMPLATE_LANGUAGES_DISAGREE, name, "name_categories")),
    )


def _problems(*reasons: pl.Expr) -> pl.Expr:
    """Every reason that applies, joined by '; ', or null."""
    joined = pl.concat_str(list(reasons), separator="; ", ignore_nulls=True)
    return pl.when(joined != "").then(joined)


def _joined(list_column: str) -> pl.Expr:
    return pl.col(list_column).list.join(", ")


# --- send log and template list -----------------------------------------------------------------


def read_send_log(path: str | Path) -> pl.DataFrame:
    """The business's own send log, CSV: `message_id` plus `message_type`, `template_name` and/or
    `template_category`, optionally `language`, and optionally `sent_by` (empty, `business` or
    `meta_business_agent`) and `tokens` (what Meta billed a Meta Business Agent reply), which ingest
    checks as it checks the canonical columns. Returns SEND_LOG_COLUMNS as text, one row per message_id."""
    try:
        raw = pl.read_csv(path, infer_schema=False)
    except (OSError, pl.exceptions.PolarsError) as error:
        raise InputError(f"cannot read the send log as CSV ({library_reason(error)})", path=str(path)) from None
    names = [c.strip().lower() for c in raw.columns]
    repeated_names = sorted({n for n in names if names.count(n) > 1})
    if repeated_names:
        raise InputError(
            f"the send log has more than one {found_names(repeated_names[:1])} column (column names ignore case and spaces)",
            path=str(path),
            fix="Keep one of them",
        )
    raw = raw.rename(dict(zip(raw.columns, names, strict=False)))
    if "message_id" not in raw.columns or not set(SEND_LOG_FACTS) & set(raw.columns):
        raise InputError(
            f"the send log needs message_id and one of {', '.join(SEND_LOG_FACTS)}; found {found_names(raw.columns)}",
            path=str(path),
        )
    log = _normalised_send_log(raw).with_row_index("row", offset=2)  # row 1 is the header
    missing = log.filter(pl.col("message_id").is_null())
    if missing.height:
        fix = "Give every sent message its wamid"
        raise InputError("message_id is empty", path=str(path), row=missing["row"][0], fix=fix)
    log = log.drop("row").unique(maintain_order=True)
    repeated = log.filter(pl.col("message_id").is_duplicated())
    if repeated.height:
        message_id = repeated["message_id"][0]
        fix = "Keep one row per sent message"
        raise InputError(f"message_id {message_id} appears with different values", path=str(path), fix=fix)
    return log


def _normalised_send_log(log: pl.DataFrame) -> pl.DataFrame:
    if "language" not in log.columns and "template_language" in log.columns:
        log = log.rename({"template_language": "language"})
    return _texts(log, SEND_LOG_COLUMNS, lower=("message_type", "template_category", "sent_by"))


def read_templates(path: str | Path) -> pl.DataFrame:
    """Meta's template JSON (one template object, a list, or `{"data": [...]}`) as TEMPLATE_COLUMNS,
    the category lower-cased (language codes such as `en_US` are kept as Meta writes them)."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"cannot read the template list as JSON ({error})", path=str(path)) from None
    if isinstance(document, dict):
        document = document["data"] if isinstance(document.get("data"), list) else [document]
    if not isinstance(document, list):
        raise InputError('expected a template object, a list of them, or {"data": [...]}', path=str(path))
    rows = [_template_row(template, index, path) for index, template in enumerate(document, start=1)]
    frame = pl.DataFrame(rows, schema=dict.fromkeys(TEMPLATE_COLUMNS, pl.String))
    return _normalised_templates(frame).unique(maintain_order=True)


def _template_row(template: object, index: int, path: str | Path) -> dict:
    template = _object(template)
    row = {
        "template_name": _text(template.get("name")),
        "language": _text(template.get("language")),
        "template_category": _text(template.get("category")),
    }
    if row["template_name"] is None or row["template_category"] is None:
        raise InputError(
            f"template {index} has no name or category",
            path=str(path),
            fix="Export templates from Meta (GET /{WABA_ID}/message_templates?fields=name,language,category)",
        )
    return row


def _normalised_templates(templates: pl.DataFrame) -> pl.DataFrame:
    return _texts(templates, TEMPLATE_COLUMNS, lower=("template_category",))


def _texts(frame: pl.DataFrame, columns: tuple[str, ...], *, lower: tuple[str, ...]) -> pl.DataFrame:
    """`columns` as stripped text (empty is null, missing columns null), `lower` ones lower-cased."""

    def text(column: str) -> pl.Expr:
        value = pl.col(column).cast(pl.String).str.strip_chars() if column in frame.columns else pl.lit(None, pl.String)
        value = value.str.to_lowercase() if column in lower else value
        return pl.when(value != "").then(value).alias(column)

    return frame.select(text(c) for c in columns)


# --- JSON values as text ------------------------------------------------------------------------


def _text(value: Any) -> str | None:
    """A JSON scalar as text: integers as their digits, empty strings as missing."""
    if isinstance(value, str):
        return None if not value or value.isspace() else value
    if value is None:
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


def _object(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _e164(phone: str | None) -> str | None:
    """A wa_id (digits without '+') as E.164; anything else as found."""
    return f"+{phone}" if phone is not None and phone.isascii() and phone.isdigit() else phone
