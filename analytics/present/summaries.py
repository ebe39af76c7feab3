"""Run summaries for people: what ingest read, the traffic at a glance, what billing charged, a rate card imported.

The text `wa-analytics ingest`, `summary`, `charges` and `rate-card import` print on stderr (or,
for `summary`, stdout). Each stage returns the figures (`ingest.IngestSummary`,
`ingest.describe_traffic`, the charges themselves and `charges.rule_warnings`/`fep_windows`,
`ratecards.ImportedCard`); the sentences and tables people read are written here, in the
presentation layer, so a stage's module holds its computation only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import polars as pl

from analytics.bill.charges import fep_windows, rule_warnings
from analytics.core import schema
from analytics.core.schema import TEMPLATE_CATEGORIES
from analytics.core.text import plural
from analytics.read.ingest import NON_TEMPLATE, IngestSummary, TrafficSummary
from analytics.settings import Settings
from analytics.terms.ratecards import ImportedCard

# --- ingest ------------------------------------------------------------------------------------------------


def format_ingest_summary(summary: IngestSummary, *, quarantine_path: str | Path | None = None) -> str:
    """The run summary, for stderr."""
    lines = [f"Read {plural(summary.rows_read, 'row')} from {plural(len(summary.files), 'file')}:"]
    lines += [f"  {f.path} ({f.kind}): {plural(f.rows, 'row')}" for f in summary.files]
    lines.append(f"Used {plural(summary.rows_used, 'row')}.")
    if summary.statuses_folded:
        repeats = f"{plural(summary.duplicates_dropped, 'identical repeat')} (webhook retries included), " if summary.duplicates_dropped else ""
        lines.append(
            f"Dropped {plural(summary.rows_dropped, 'row')}: {repeats}"
            f"{plural(summary.statuses_folded, 'status update')} folded into their message's row."
        )
    elif summary.duplicates_dropped:
        lines.append(f"Dropped {plural(summary.duplicates_dropped, 'identical repeat')} of a message_id (kept once).")
    if summary.rows_quarantined:
        where = f" (written to {quarantine_path})" if quarantine_path else ""
        lines.append(f"Quarantined {plural(summary.rows_quarantined, 'row')}{where}:")
        width = len(f"{max(summary.quarantined.values()):,}")
        lines += [f"  {count:>{width},}  {reason}" for reason, count in summary.quarantined.items()]
    else:
        lines.append("Quarantined no rows.")
    if summary.unknown_markets:
        users = sum(u.users for u in summary.unknown_markets)
        rows = sum(u.rows for u in summary.unknown_markets)
        lines.append(
            f"Market unknown for {plural(users, 'user')} ({plural(rows, 'row')}): kept with market Unknown, "
            "but costs cannot price their paid messages; by reason:"
        )
        lines += [f"  {plural(u.users, 'user')} ({plural(u.rows, 'row')}): {u.reason} (first: {u.first})" for u in summary.unknown_markets]
    if summary.unconfirmed_deliveries:
        lines.append(f"{plural(summary.unconfirmed_deliveries, 'outbound message')} with status sent (delivery not confirmed): billed as delivered.")
    if summary.group_messages:
        lines.append(f"{plural(summary.group_messages, 'group message row')} (group_id: one row per participant of a message sent to a group).")
    if summary.business_agent_messages:
        unknown = summary.business_agent_without_tokens
        tokens = f", {unknown:,} of them without tokens (costs estimate those)" if unknown else ""
        lines.append(f"{plural(summary.business_agent_messages, 'message')} sent by Meta Business Agent{tokens}.")
    if summary.notes:
        lines.append("Notes:")
        lines += [f"  - {note}" for note in summary.notes]
    return "\n".join(lines)


# --- summary: the traffic at a glance ------------------------------------------------------------------------


def format_traffic(traffic: TrafficSummary, *, top_markets: int = 5) -> str:
    if not traffic.messages:
        return "No messages."
    period = f"{traffic.first:%Y-%m-%d %H:%M} to {traffic.last:%Y-%m-%d %H:%M} ({traffic.timezone})"
    shown = traffic.markets[:top_markets]
    lines = [
        f"Period:            {period}",
        f"Messages:          {traffic.messages:,} ({traffic.inbound:,} inbound, {traffic.outbound:,} outbound)",
        f"Business numbers:  {traffic.business_phones:,}",
        f"WABAs:             {traffic.wabas:,}",
        f"Users:             {traffic.users:,}",
        f"Markets (top {len(shown)} of {len(traffic.markets)}, by messages):",
        f"  {'market':<28} {'messages':>12} {'users':>10}",
        *[f"  {market:<28} {count:>12,} {users:>10,}" for market, count, users in shown],
        f"Messages by month ({traffic.timezone}) and kind:",
        *_month_table(traffic.by_month),
    ]
    return "\n".join(lines)


def _month_table(by_month: pl.DataFrame) -> list[str]:
    """Months down, (direction, kind) across, with totals: plain text, right-aligned numbers."""
    counts = {(m, d, k): n for m, d, k, n in by_month.iter_rows()}
    months = sorted({m for m, _, _ in counts})
    columns = sorted({(d, k) for _, d, k in counts}, key=lambda c: (c[0], _kind_rank(c[1]), str(c[1])))
    body = [
        [f"{sum(counts.get((m, *c), 0) for m in months):,}" if m is None else f"{counts.get((m, *c), 0):,}" for c in columns] for m in [*months, None]
    ]
    row_totals = [f"{sum(counts.get((m, *c), 0) for c in columns):,}" for m in months]
    row_totals.append(f"{sum(counts.values()):,}")
    headers = [(d if i == 0 or columns[i - 1][0] != d else "", str(k)) for i, (d, k) in enumerate(columns)]
    widths = [max(len(h[0]), len(h[1]), *(len(r[i]) for r in body)) for i, h in enumerate(headers)]
    total_width = max(len("total"), *(len(t) for t in row_totals))
    labels = [*months, "total"]

    def line(first: str, cells: Sequence[str], last: str) -> str:
        text = "  " + f"{first:<8}" + "".join(f"  {c:>{w}}" for c, w in zip(cells, widths, strict=False)) + f"  {last:>{total_width}}"
        return text.rstrip()

    return [
        line("", [h[0] for h in headers], ""),
        line("month", [h[1] for h in headers], "total"),
        *[line(label, cells, total) for label, cells, total in zip(labels, body, row_totals, strict=False)],
    ]


_KIND_ORDER = (*TEMPLATE_CATEGORIES, NON_TEMPLATE)


def _kind_rank(kind: str | None) -> int:
    return _KIND_ORDER.index(kind) if kind in _KIND_ORDER else len(_KIND_ORDER)


# --- charges -----------------------------------------------------------------------------------------------


def describe_charges(charges: pl.DataFrame | pl.LazyFrame, settings: Settings | None = None) -> str:
    """The run summary of a billing: charges by rule set, category and pricing type, and a warning
    wherever a result rests on a rule that Meta has not published itself, naming the rule
    (data/rules/rule_sets.toml `status`), or on a model of an unpublished mechanism (§9 `fep_model`)."""
    settings = settings or Settings()
    counts = (
        charges.lazy()
        .group_by("rule_set", "category", "pricing_type")
        .agg(
            charges=pl.len(),
            billable=pl.col("billable").sum(),
            messages=pl.col("message_count").sum(),
            first=pl.col("started_at").min(),
            last=pl.col("started_at").max(),
        )
        .sort("rule_set", "category", "pricing_type")
        .collect()
    )
    lines = [f"Charges: {counts['charges'].sum():,} ({counts['billable'].sum():,} billable)"]
    lines.append(f"  {'rule set':<12} {'category':<28} {'pricing type':<22} {'charges':>10} {'messages':>10}")
    for row in counts.iter_rows(named=True):
        lines.append(f"  {row['rule_set']:<12} {row['category']:<28} {row['pricing_type']:<22} {row['charges']:>10,} {row['messages']:>10,}")
    lines.extend(f"warning: {text}" for text in rule_warnings(charges, settings))
    return "\n".join(lines)


def describe_fep_windows(messages: pl.DataFrame | pl.LazyFrame, billed: pl.DataFrame | pl.LazyFrame, settings: Settings) -> str:
    """How the free entry point windows of a run were decided (§9): how many took the end Meta
    reported (`fep_expires_at`), how many were modelled (and how, `fep_model`). Empty when the
    charges have no free-entry-point charge."""
    if billed.lazy().filter(pl.col("pricing_type") == "free_entry_point").select(pl.len()).collect().item() == 0:
        return ""
    model = f"fep_model {settings.fep_model}" + (f", {settings.fep_window} for every window" if settings.fep_window else "")
    frame = messages.lazy()
    if schema.FEP_EXPIRES_AT not in frame.collect_schema().names():
        return f"Free entry point windows: every one modelled ({model}): the input carries no end reported by Meta."
    if frame.select(pl.col(schema.FEP_EXPIRES_AT).is_not_null().any()).collect().item() is not True:
        return f"Free entry point windows: every one modelled ({model}): the input carries no end reported by Meta."
    windows = fep_windows(frame, settings)
    from_meta = int(windows["from_meta"].sum())
    return (
        f"Free entry point windows: {windows.height:,}; {from_meta:,} with the end Meta reported (fep_expires_at), "
        f"{windows.height - from_meta:,} modelled ({model})."
    )


# --- rate-card import --------------------------------------------------------------------------------------


def format_imported_card(card: ImportedCard, path: str | Path) -> str:
    lines = [
        f"Imported {len(card.rows):,} rates for {len(card.markets)} markets ({', '.join(card.currencies)}), "
        f"{card.tier_bands} volume-tier bands: {path}"
    ]
    lines += [f"  - {note}" for note in card.notes]
    return "\n".join(lines)
