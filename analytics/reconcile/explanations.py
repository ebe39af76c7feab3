"""The `explanation` column of reconciliation: one sentence per row, with the row's figures.

The English of `analytics.reconcile.matching`'s rows, apart from the matching, so the rules of
each reason read in one place. It stays in the reconcile stage, not in `analytics.present`, because
the sentence is a column of the reconciliation output (the CSV an analyst opens) and is written
from the per-row context columns (`_gap_seconds`, `_absorbed_by`, `_missing_wamids`, ...) that
`matching` and `aggregates` drop before returning: moving it to `present` would make this stage
import a later one. The summary text printed by the command is in
`analytics.present.reconciliation_text`.
"""

from __future__ import annotations

import polars as pl

from analytics.core.text import a, duration, plural, utc_time
from analytics.reconcile.outcomes import (
    AGREES,
    CATEGORY_CHANGED,
    CONVERSATION,
    COST_NOT_AVAILABLE,
    COST_TOLERANCE,
    FAILED,
    FREE_TIER_COUNTED_BILLABLE,
    GROUP,
    MESSAGE,
    MODELLED_CATEGORIES,
    NOT_MODELLED,
    PAID_EXEMPT,
    PRICING_NOT_REPORTED,
    PRICING_TYPE_DIFFERS,
    QUARANTINED,
    RATE_CARD_GAP,
    ROUNDING,
    SERVICE,
    STATUS_MISSING,
    VOLUME_DIFFERS,
    WINDOW_DIFFERS,
)
from analytics.settings import Settings
from analytics.terms import rules


def agrees_text() -> pl.Expr:
    return (
        pl.when(pl.col("level") == MESSAGE)
        .then(pl.lit("Meta billed it as we computed it."))
        .otherwise(pl.lit("Meta's conversation matches ours: opening message, window (within 60 s), category and billing."))
    )


def explained(rows: pl.DataFrame, explain, plain: pl.Expr, written: pl.Expr) -> pl.Series:
    """`explain(row)` for the rows where `written` holds; the cheap `plain` text for the others (most
    rows agree, and a text per row in Python is what costs)."""
    texts = rows.select(plain.alias("explanation"))["explanation"]
    others = rows.with_row_index("_position").filter(written)
    if others.height == 0:
        return texts
    return texts.scatter(others["_position"], pl.Series([explain(row) for row in others.iter_rows(named=True)], dtype=pl.String))


# --- Explanations of item rows ----------------------------------------------------------------------------


def explain_item(row: dict, settings: Settings) -> str:
    reason = row["reason"]
    what = _what(row)
    if reason == FREE_TIER_COUNTED_BILLABLE:
        return (
            f"Agrees. Meta marks the conversation billable, as it marks every conversation but free entry point ones, "
            f"free tier included (billing-rules.md §7); we count it {row['ours_pricing_type']}: no charge on either side."
        )
    if reason == NOT_MODELLED:
        return _explain_not_modelled(row)
    if reason == QUARANTINED:
        wamid = row.get("_quarantined_wamid") or row["message_id"]
        return f"Meta billed {what}; message {wamid} is in the input but was quarantined ({row['_quarantine_reason']}): fix the input and run again."
    if reason == STATUS_MISSING:
        return _explain_status_missing(row, what)
    if reason == PRICING_NOT_REPORTED:
        kind = "conversation" if row["ours_pricing_model"] == "CBP" else "message"
        return (
            f"We charge {a(row['ours_category'])} {kind} ({row['ours_pricing_type']}, {row['_rule_set']}) opened by "
            f"{row['message_id']} at {utc_time(row['ours_started_at'])}, and no report of Meta's mentions that message: "
            f"its status webhooks carried no pricing object, or they are not in the input."
        )
    if reason == CATEGORY_CHANGED:
        return _explain_category(row)
    if reason == PRICING_TYPE_DIFFERS:
        return _explain_pricing_type(row)
    if reason == WINDOW_DIFFERS:
        return (
            f"Meta's conversation opened at {utc_time(row['meta_started_at'])} (its expiration minus the window), ours at "
            f"{utc_time(row['ours_started_at'])}: {duration(row['_gap_seconds'])} apart, beyond the 60 s tolerance. "
            "Meta's conversation was probably opened by an earlier message, or closed, differently from ours."
        )
    return _explain_rule_model(row, settings)


def _what(row: dict) -> str:
    category = row.get("meta_category")
    if row["level"] == CONVERSATION:
        conversation = f" {row['conversation_id']}" if row.get("conversation_id") else ""
        return f"{a(category) if category else 'a'} conversation{conversation}"
    category = category or "category unknown"
    kind = f", {row['meta_pricing_type']}" if row.get("meta_pricing_type") else ""
    return f"message {row['message_id']} ({category}{kind})"


def _explain_status_missing(row: dict, what: str) -> str:
    missing = ", ".join(row.get("_missing_wamids") or [])
    if row["level"] == CONVERSATION and row.get("_paired"):
        return (
            f"Meta's conversation {row['conversation_id']} opened at {utc_time(row['meta_started_at'])}, ours at "
            f"{utc_time(row['ours_started_at'])} ({duration(row['_gap_seconds'])} apart); Meta counts messages the input "
            f"does not have ({missing}): the webhooks of the message that opened it were probably lost."
        )
    if row["level"] == CONVERSATION and row.get("_explained"):
        return (
            f"Meta's {what} holds messages the input does not have ({missing}), probably the one that opened it (a "
            f"lost webhook); we count {row['_explained']} in our {row.get('_absorbed_by_category')} conversation "
            f"opened by {row.get('_absorbed_by')} at {utc_time(row.get('_absorbed_by_started_at'))}."
        )
    if row.get("_status") == FAILED:
        return (
            f"Meta billed {what}, but the input has {'its messages' if row['level'] == CONVERSATION else 'the message'} "
            "as failed, which is never billed: a delivered or read status is probably missing from the input."
        )
    return (
        f"Meta billed {what}, but the input has no status of "
        f"{'its messages' if row['level'] == CONVERSATION else 'the message'}: a lost webhook, or a message "
        "sent from another system. Add its statuses to the input."
    )


def _explain_category(row: dict) -> str:
    meta = row["meta_category"]
    ours = row["ours_category"] if row.get("_paired") else row.get("_ours_message_category")
    subject = f"message {row['message_id']}" if row["level"] == MESSAGE else f"conversation {row.get('conversation_id') or ''}".rstrip()
    if meta == SERVICE:
        return (
            f"Meta billed {subject} as a service (non-template) message, where the input has {a(ours)} template: "
            "check the message type in the send log."
        )
    if ours == SERVICE:
        return f"Meta billed {subject} as {a(meta)} template, where the input has a non-template message: check the message type in the send log."
    return (
        f"Meta billed {subject} as {meta}, where the input gives the template as {ours}: the template was probably "
        "recategorised (Meta bills the category at the time of sending; see template_category_update webhooks), "
        "or the send log or template list is out of date."
    )


def _explain_pricing_type(row: dict) -> str:
    ours, meta = row["ours_pricing_type"], row["meta_pricing_type"]
    if row.get("_subtype") == PAID_EXEMPT:
        return (
            f"Meta marks it {meta or 'billed'} with subtype paid_exempt: an eligible government or non-profit's service "
            f"message beyond the free tier, which Meta does not charge until 2027-12-31 (changes-2026-h2.md §4); we "
            f"computed {ours} ({row['_rule_set']}): set the business's service exemption ([billing] service_exempt_until in the "
            "config file)."
        )
    meta_text = meta or ("billable" if row["meta_billable"] else "not billable")
    text = f"Meta billed it {meta_text} where we computed {ours} ({row['_rule_set']})"
    if meta and row.get("meaning"):
        when = row["_meaning_date"].strftime("%Y-%m") if row.get("_meaning_date") else "then"
        text += f" (in {when} Meta's {meta} means {row['meaning']})"
    kinds = {ours, meta, *(row.get("agreeing_types") or [])}
    if "free_entry_point" in kinds or (row["meta_pricing_model"] == "CBP" and row["meta_billable"] is False):
        hint = (
            "the free entry point window differs: the user's Click-to-WhatsApp or Page entry may be missing from the "
            "input, or the window length differs (billing-rules.md §2, §8)"
        )
    elif "free_tier" in kinds and row.get("meaning_from") is not None:
        hint = (
            "the free tier of service messages is counted in another order: we give it to the first delivered in time "
            "order each month per business number, and Meta does not say which messages get it "
            "(changes-2026-h2.md §7, open question 2)"
        )
    elif "free_tier" in kinds:
        hint = "the monthly free tier counts differently (its size and scope, per WABA or per business number, are in data/rules/rule_sets.toml)"
    elif row.get("ours_category") == "utility":
        hint = (
            "whether the customer service window was open differs: the user's last message may be missing from the "
            "input, or free utility templates in the window began on another date for this business (billing-rules.md §8)"
        )
    elif (status := _rule_set_status(row.get("_rule_set"))) not in (None, "meta_documented"):
        hint = f"the rules of {row['_rule_set']} are {status}, not read on Meta's own page (billing-rules.md §1)"
    else:
        hint = "check the rule set in force (--timezone, --rules)"
    return f"{text}: {hint}."


def _rule_sets_with(settings: Settings, conversations: str) -> str:
    return " and ".join(sorted({p.name for p in settings.rule_book.periods if p.conversations == conversations}))


def _switch_to(settings: Settings, conversations: str) -> str:
    return str(next(p.effective_from for p in settings.rule_book.periods if p.conversations == conversations))


def _rule_set_status(name: str | None) -> str | None:
    """The status of a rule set (meta_documented, reported, ...) as its data says, None if unknown."""
    statuses = {p.status for p in rules.shipped().periods if p.name == name}
    return None if not statuses else "meta_documented" if statuses == {"meta_documented"} else "partly reported"


def _explain_not_modelled(row: dict) -> str:
    category, pricing_type = row.get("meta_category"), row.get("meta_pricing_type")
    billed = ", ".join(v for v in (category, pricing_type) if v) or "no category"
    to = f" to group participant {row['_participant']}" if row.get("_recipient_type") == GROUP and row.get("_participant") else ""
    if category is not None and category not in MODELLED_CATEGORIES:
        return (
            f"Meta billed message {row['message_id']}{to} as category {category} ({billed}), which this package does not "
            "know (a category Meta added?): reported, not compared."
        )
    meaning = f" ({row['meaning']})" if row.get("meaning") else ""
    return f"Meta's pricing type {pricing_type}{meaning} has no counterpart among our charges: reported, not compared."


def _explain_rule_model(row: dict, settings: Settings) -> str:
    meta_model, ours_model = row.get("meta_pricing_model"), row.get("ours_pricing_model")
    if row.get("_missing_meta"):
        if row.get("_meta_conversation"):
            where = f"in its conversation {row['_meta_conversation']}"
            wamids = row.get("_meta_conversation_wamids") or []
            if wamids and wamids[0] != row["message_id"]:
                where += f", which {wamids[0]} opened"
        else:
            where = f"as a {row.get('_meta_model') or 'per-message'} item"
        return (
            f"We opened {a(row['ours_category'])} {'conversation' if ours_model == 'CBP' else 'charge'} with "
            f"{row['message_id']} at {utc_time(row['ours_started_at'])}; Meta counts that message {where}, "
            "so Meta saw one conversation where we count two."
        )
    if row.get("_paired") and meta_model and ours_model and meta_model != ours_model:
        if meta_model == "PMP":
            return (
                f"Meta bills it per message (PMP) where we computed a conversation under {row['_rule_set']}: check "
                "--timezone (the WABA time zone sets when per-message pricing began, 2025-07-01) and --rules."
            )
        return (
            f"Meta counts it in a conversation (CBP) where we bill it per message under {row['_rule_set']}: a "
            "conversation open at the switch to per-message pricing keeps absorbing messages (billing-rules.md §5), "
            "or --timezone puts the switch elsewhere."
        )
    if not row.get("_paired"):
        opener = row.get("_absorbed_by")
        if opener:
            message = row.get("_explained") or row["message_id"]
            return (
                f"Meta bills {message} {'on its own (PMP)' if meta_model == 'PMP' else 'in a conversation of its own'}; "
                f"we count it in our {row.get('_absorbed_by_category')} conversation opened by {opener} at "
                f"{utc_time(row.get('_absorbed_by_started_at'))} ({row.get('_absorbed_by_rule_set')}), still open then "
                "(billing-rules.md §4, §5 crossover)."
            )
        return f"Meta billed {_what(row)}; the input has the message ({row.get('_direction')}) but we charge nothing for it."
    meta, ours = row.get("meta_category"), row.get("ours_category")
    pair = {meta, ours}
    if pair == {rules.AUTH, rules.AUTH_INTERNATIONAL}:
        return (
            f"Meta billed {meta} where we computed {ours}: set the business's authentication-international countries "
            "and start dates ([billing.authentication_international] in the config file, billing-rules.md §4.5)."
        )
    if rules.FEP_CATEGORY in pair:
        return (
            f"Meta billed {meta} where we computed {ours}: the free entry point window is modelled differently — the "
            "user's entry may be missing from the input, or the window was shorter (billing-rules.md §2, §8)."
        )
    era_2022 = {meta in rules.INITIATOR_CATEGORIES, ours in rules.INITIATOR_CATEGORIES}
    if era_2022 == {True, False} and rules.FEP_CATEGORY not in pair:
        return (
            f"Meta billed {meta} where we computed {ours} under {row['_rule_set']}: one side uses the categories of "
            f"{_rule_sets_with(settings, rules.ONE_SLOT)} (user- and business-initiated), the other those of "
            f"{_rule_sets_with(settings, rules.PER_CATEGORY)}; the switch was {_switch_to(settings, rules.PER_CATEGORY)} in the "
            "WABA time zone (check --timezone)."
        )
    if pair <= {"user_initiated", "business_initiated"}:
        return (
            f"Meta says {meta} where we computed {ours}: whether a customer service window was open differs — the "
            "user's message that opened it may be missing from the input."
        )
    if meta not in MODELLED_CATEGORIES:
        return f"Meta billed category {meta}, which this package does not know (a category Meta added?)."
    if meta == "general_purpose_ai":
        return (
            f"Meta billed {meta} (an AI provider's message, changes-2026-h2.md §6) where we computed {ours}: set "
            "[billing] ai_provider = true in the config file if the business is an AI provider, and check the user's country."
        )
    if meta == "meta_business_agent" or ours == "meta_business_agent":
        return (
            f"Meta billed {meta} where we computed {ours}: who wrote the reply differs — give sent_by "
            "(meta_business_agent) in the send log or the canonical file for Meta Business Agent's replies."
        )
    return f"Meta billed {meta} where we computed {ours} under {row['_rule_set']}: a rule modelled differently."


def explain_aggregate(row: dict, compare_cost: bool) -> str:
    reason, ours, meta = row["reason"], row["ours_volume"], row["meta_volume"]
    unit = "conversation" if row["pricing_model"] == "CBP" else "message"
    if reason == NOT_MODELLED:
        what = ", ".join(v for v in (row.get("meta_categories") or row.get("category"), row.get("pricing_type")) if v)
        return f"Meta counts {plural(meta, unit)} ({what}) of a category or pricing type this package does not know: reported, not compared."
    merged = ""
    if row.get("meta_categories") and row["meta_categories"] != row.get("category"):
        merged = f" (Meta's {row['meta_categories']} together, billed alike)"
    if reason == VOLUME_DIFFERS:
        if meta is None:
            return f"Meta's report has no data point where we count {plural(ours, unit)}{merged}: is this period, number or country in its request?"
        if ours is None:
            return f"Meta counts {plural(meta, unit)}{merged} where we have none: is this traffic in the input?"
        return (
            f"Meta counts {plural(meta, unit)}, we count {ours:,} ({row['volume_difference']:+,}){merged}: the message "
            "and conversation rows of this period say which items differ."
        )
    volumes = f"Volumes agree ({plural(meta, unit)}){merged}"
    if reason == AGREES:
        return f"{volumes} and so do costs." if compare_cost else f"{volumes}; costs not compared (no rate card)."
    if reason == COST_NOT_AVAILABLE:
        return f"{volumes}; Meta gives no cost here (a WABA on a partner's credit line): compare with the partner's invoice."
    if reason == RATE_CARD_GAP:
        return (
            f"{volumes}; our rate card has no rate for {plural(row['unpriced'], 'billable ' + unit)} here, so our cost is unknown "
            f"against Meta's {row['meta_cost']}: add the rate (--rate-card)."
        )
    if reason == ROUNDING:
        return f"{volumes}; costs differ by {row['cost_difference']}, within rounding ({COST_TOLERANCE})."
    share = f" ({row['cost_relative_difference']:+.1%})" if row.get("cost_relative_difference") is not None else ""
    return (
        f"{volumes}; our cost {row['ours_cost']} against Meta's {row['meta_cost']}{share}: the card's rates are not what "
        "Meta charged here (another card date or currency, volume tiers, or a provider's price)."
    )
