"""The summary `wa-analytics reconcile` prints: rows by level and status, agreement, reasons, notes.

Text for people, so it is in the presentation layer; `analytics.reconcile` returns the frames it
is written from (`Reconciliation`, `outcomes.agreement_by_category`).
"""

from __future__ import annotations

import polars as pl

from analytics.core.text import plural
from analytics.reconcile.outcomes import AGREES, LEVELS, REASONS, STATUSES, Reconciliation, agreement_by_category


def format_summary(result: Reconciliation) -> str:
    """For stderr: rows by level and status, agreement by category, differences by reason, notes."""
    rows = result.rows
    lines = [f"Reconciliation: {plural(rows.height, 'row')} compared"]
    for level in LEVELS:
        of_level = rows.filter(pl.col("level") == level)
        if of_level.height == 0:
            continue
        counts = dict(of_level.group_by("status").len().iter_rows())
        parts = ", ".join(f"{status} {counts[status]:,}" for status in STATUSES if counts.get(status))
        lines.append(f"  {level:<13} {of_level.height:>9,}: {parts}")
    agreement = agreement_by_category(rows)
    if agreement.height:
        lines.append("Agreement by category (rows that match / rows compared):")
        for row in agreement.iter_rows(named=True):
            lines.append(f"  {row['level']:<13} {row['category']:<30} {row['agreement']:>7.1%}  ({row['matched']:,} of {row['compared']:,})")
    reasons = rows.filter(pl.col("reason") != AGREES).group_by("reason").len().sort("len", "reason", descending=[True, False])
    if reasons.height:
        lines.append("Reasons other than agreement:")
        for reason, count in reasons.iter_rows():
            lines.append(f"  {count:>9,}  {reason}: {REASONS.get(reason, '')}")
    if result.unreadable.height:
        lines.append(f"{result.unreadable.height:,} of Meta's rows could not be compared:")
        for row in result.unreadable.head(5).iter_rows(named=True):
            where = f"{row['source_file']}, row {row['source_row']}" if row["source_file"] else "(no file)"
            lines.append(f"  {where}: {row['problem']}")
        if result.unreadable.height > 5:
            lines.append(f"  ... and {result.unreadable.height - 5:,} more")
    if result.notes:
        lines.append("Notes:")
        lines += [f"  - {note}" for note in result.notes]
    return "\n".join(lines)
