"""Time below every stage: an instant as the wall-clock time of its WABA's time zone.

Billing (`analytics.bill.charges`: months, switch instants), pricing (a charge's date picks its
rate), what-if scenarios (months), reconciliation (Meta's words of the day) and the rollups all
read an instant in the WABA's time zone, so the one expression that does it lives here, below
them all. It needs only the zones of the settings (`Zones`: `Settings` has them), not the
billing rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import polars as pl


class Zones(Protocol):
    """The time zones of a run: the default and, per WABA, its own (`Settings`)."""

    timezone: str
    waba_timezones: Mapping[str, str]


def local_time(settings: Zones, column: str = "timestamp") -> pl.Expr:
    """Wall-clock time of the instant `column` in its row's WABA time zone (§2 Months, §1 switch
    instants): a message's `timestamp`, or a charge's `started_at`."""

    def in_zone(tz: str) -> pl.Expr:
        return pl.col(column).dt.convert_time_zone(tz).dt.replace_time_zone(None)

    local = in_zone(settings.timezone)
    for waba_id, tz in settings.waba_timezones.items():
        local = pl.when(pl.col("waba_id") == waba_id).then(in_zone(tz)).otherwise(local)
    return local
