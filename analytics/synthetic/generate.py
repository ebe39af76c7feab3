"""Synthetic WhatsApp Business Platform traffic: realistic, seeded, as big as asked.

The sample traffic is that of an Italian retailer with three business phone numbers in two WABAs:
an Italian WABA with a customer-care number (support, order notifications, one-time passwords,
Click-to-WhatsApp ads) and a marketing number, and a LatAm WABA with one number that does
everything for Brazil, Mexico, Argentina, Colombia and the Dominican Republic. Most users are in
Italy, then Germany, Spain, France, the rest of Western Europe, Latin America and the United
States; a few in India and Indonesia mostly receive one-time passwords, and a handful live in
Zimbabwe (a market that changes region on 2025-10-01), the Dominican Republic (+1 809, priced as
Rest of Latin America) and countries Meta does not list (Luxembourg, Malta: market Other). User
numbers are valid for their country but synthetic: a fixed mobile prefix followed by the user's
running number (Italy: `39 333` + 7 digits), so they never point at real people; 3% of users are
known only by a business-scoped user id (`IT.7000000000000000042`), with their phone or only their
country beside it. The traffic has what a bill depends on: support sessions started by users and
answered within minutes, or the next morning when they write at night (an automatic reply goes out
at once); order confirmations inside the customer service window and shipping updates one to four
days later, mostly outside it; bursts of one to three authentication codes (two to five in India
and Indonesia); a few marketing campaigns a month (more in November and December), each delivered
in one to two hours with many messages in the same second, some of them `marketing_lite`;
Click-to-WhatsApp and Page call-to-action entries answered within 24 h, followed by templates both
inside and outside the 72 h free entry point window; reactions; 2% failed and 3% unconfirmed
(`sent`) deliveries; 0.5% webhook-style duplicate rows; busier business hours and weekdays; and, on
the evening before every rule-set switch inside the range (2025-07-01, 2026-10-01, ...), a campaign,
order notifications and support sessions that keep conversations and service windows open across
the switch. From 2026 (README, "New kinds of traffic"): every template has a `template_name`
(`TEMPLATE_NAMES`; a campaign's names its date and region); from `GROUPS_FROM` (2026-06-01) a few
Groups API groups of 3 to 8 participants from several markets get group templates (marketing and
utility, never authentication), their participants' messages and the business's answers, one row
per participant of an outbound group message, some participants failed; and from 2026-08-01 Meta
Business Agent writes 30% of the customer-care number's replies (`sent_by`, 20,000-25,000
`tokens`). It comes to about 1.6 messages per user per month, close to half of them marketing templates
(the shipped sample, 2,500 users over the eleven months from January 2026, has 44,329 rows, 1,242
of them group rows).
`write_traffic(..., with_defects=True)` appends the six broken lines described in `DEFECTS`, which
ingest must quarantine.

Every random number comes from a named, seeded stream (`_Draws`, on Arrow's seeded generator: no
dependency beyond the package's own), so the same arguments give byte-identical output with the
same pyarrow. Traffic is made in vectorised blocks: one block of users (`chunk_users`) at a time,
one frame per pattern and month, no Python loop over users or messages. Users are independent of
each other except through the campaign calendar, which depends on the seed alone, so
`generate_to_parquet` writes any size with memory bounded by one block (by default about 1 M rows
and at most about 1 GB).
"""

from __future__ import annotations

import calendar
import csv
import datetime as dt
import gzip
import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow.compute as pc
import pyarrow.parquet as pq

from analytics.core import outputs
from analytics.core.errors import UsageError
from analytics.core.schema import MESSAGE_SCHEMA, META_BUSINESS_AGENT
from analytics.terms.rules import rule_sets

DAY = 86_400
HOUR = 3_600
MINUTE = 60

# Users per block when not told: 600,000 user-months, about 1 M rows (50,000 users over a year), at
# most about 1 GB of memory at the peak.
CHUNK_USER_MONTHS = 600_000


# --- The business -------------------------------------------------------------------------------


@dataclass(frozen=True)
class BusinessNumber:
    phone_number_id: str
    waba_id: str
    use: str


BUSINESS_NUMBERS = (
    BusinessNumber("104996122399101", "104996122399150", "Italian WABA: customer care, orders, OTP, Click-to-WhatsApp"),
    BusinessNumber("104996122399102", "104996122399150", "Italian WABA: marketing campaigns"),
    BusinessNumber("104996122399201", "104996122399160", "LatAm WABA: everything for Latin American users"),
)
CARE, PROMO, LATAM = 0, 1, 2


@dataclass(frozen=True)
class Country:
    """Where users live. Phone numbers are `calling_code + mobile_prefix + running number` (zero
    padded to `number_digits`); every such number is valid for the country but synthetic."""

    iso: str
    calling_code: str
    mobile_prefix: str
    number_digits: int
    per_mille: int  # share of users
    utc_offset: int  # hours, standard time: places the weekday x hour profile
    latam: bool  # served by the LatAm WABA
    otp_weight: float  # how much more often than others this user gets one-time passwords
    marketing_opt_in: float


COUNTRIES = (
    Country("IT", "39", "333", 7, 553, 1, False, 1.0, 0.70),
    Country("DE", "49", "1520", 7, 90, 1, False, 1.0, 0.70),
    Country("ES", "34", "61", 7, 70, 1, False, 1.0, 0.70),
    Country("FR", "33", "61", 7, 60, 1, False, 1.0, 0.70),
    Country("AT", "43", "664", 7, 15, 1, False, 1.0, 0.70),  # Rest of Western Europe
    Country("CH", "41", "79", 7, 15, 1, False, 1.0, 0.70),  # Rest of Western Europe
    Country("BE", "32", "47", 7, 10, 1, False, 1.0, 0.70),  # Rest of Western Europe
    Country("PT", "351", "91", 7, 10, 0, False, 1.0, 0.70),  # Rest of Western Europe
    Country("BR", "55", "1190", 7, 50, -3, True, 1.0, 0.70),
    Country("MX", "52", "551", 7, 35, -6, True, 1.0, 0.70),
    Country("AR", "54", "9115", 7, 20, -3, True, 1.0, 0.70),
    Country("CO", "57", "300", 7, 20, -5, True, 1.0, 0.70),
    Country("US", "1", "2125", 6, 20, -5, False, 1.0, 0.60),  # North America
    Country("IN", "91", "987", 7, 12, 5, False, 12.0, 0.10),
    Country("ID", "62", "8123", 7, 8, 7, False, 12.0, 0.10),
    Country("ZW", "263", "77", 7, 3, 2, False, 1.0, 0.50),  # Other, Rest of Africa from 2025-10-01
    Country("DO", "1", "8092", 6, 4, -4, True, 1.0, 0.70),  # +1 809: Rest of Latin America
    Country("LU", "352", "621", 6, 3, 1, False, 1.0, 0.70),  # not in Meta's table: Other
    Country("MT", "356", "79", 6, 2, 1, False, 1.0, 0.70),  # not in Meta's table: Other
)
assert sum(c.per_mille for c in COUNTRIES) == 1000
BSUID_SHARE = 0.03  # users known by a business-scoped user id
BSUID_WITH_PHONE = 2 / 3  # of those, the share whose phone is known; the others carry only a country
_BSUID_BASE = 7_000_000_000_000_000_000  # BSUID digits: this plus the user's running number


def max_users() -> int:
    """The most users whose synthetic numbers stay distinct: each country's running numbers must fit."""
    return min(10**c.number_digits // c.per_mille * 1000 for c in COUNTRIES)


def synthetic_number_pattern() -> str:
    """A regular expression every generated user phone (digits, no `+`) matches: tests hold the
    generator to it, so no real-looking number slips in."""
    alternatives = "|".join(f"{c.calling_code}{c.mobile_prefix}\\d{{{c.number_digits}}}" for c in COUNTRIES)
    return f"^(?:{alternatives})$"


# --- How much happens, and when ---------------------------------------------------------------

# Per user and month (before seasonality).
SUPPORT_SESSIONS = 0.12
WEB_ORDERS = 0.03  # orders placed on the website, no chat before
ORDER_AFTER_SUPPORT = 0.30  # share of support sessions that end in an order, confirmed in the window
OTP_BURSTS = 0.035
CTWA_ENTRIES = 0.02
CAMPAIGN_REPLY = 0.035  # share of campaign recipients who write back
CAMPAIGN_REACTION = 0.015
CAMPAIGN_ORDER = 0.02
SEASON = {1: 0.9, 2: 0.85, 3: 0.95, 4: 1.0, 5: 1.0, 6: 0.95, 7: 1.0, 8: 0.7, 9: 1.0, 10: 1.05, 11: 1.6, 12: 1.35}

# Outbound delivery outcome; inbound rows are `received`.
FAILED_SHARE = 0.02
SENT_SHARE = 0.03  # delivery never confirmed
READ_SHARE = 0.50
DUPLICATE_SHARE = 0.005  # webhook retries: the same row again

# Local clock: users' activity by weekday (Monday first) and hour; the business answers 08-20 Mon-Sat.
WEEKDAY_ACTIVITY = (1.0, 1.0, 1.0, 1.0, 0.95, 0.7, 0.55)
HOUR_ACTIVITY = (
    0.12, 0.06, 0.04, 0.03, 0.03, 0.05, 0.12, 0.3, 0.6, 0.9, 1.0, 1.0,
    0.9, 0.85, 0.9, 0.95, 1.0, 1.0, 0.9, 0.8, 0.7, 0.55, 0.35, 0.2,
)  # fmt: skip
BUSINESS_OPENS, BUSINESS_CLOSES = 8, 20
EVE_OF_SWITCH = 4 * HOUR  # the eve-of-switch campaign starts this long before the switch (20:00 UTC)

MESSAGE_TYPES = ("text", "image", "interactive", "reaction", "template")
TEXT, IMAGE, INTERACTIVE, REACTION, TEMPLATE = range(5)
CATEGORIES = ("marketing", "utility", "authentication", "marketing_lite")
MARKETING, UTILITY, AUTHENTICATION, MARKETING_LITE = range(4)
ENTRY_POINTS = ("ctwa", "page_cta")

# The traffic of 2026 (README, "New kinds of traffic"). Groups from GROUPS_FROM: Meta bills Groups API
# traffic per message ("Groups API Pricing", Updated: May 21, 2026), under every per-message rule set
# (pmp-2025 from 2025-07-01), so any date after that would do; June 2026 leaves the first five
# months of the sample as before. Meta Business Agent from 2026-08-01, the day Meta starts billing
# it per token (changes-2026-h2.md §2).
GROUPS_FROM = dt.date(2026, 6, 1)
USERS_PER_GROUP = 250  # one group per this many users of a block
GROUP_SIZES = (3, 8)  # participants of a group, at most Meta's 8 ("Groups API", Updated: Jun 16, 2026)
GROUP_TEMPLATES = (("group_offer", MARKETING, 2), ("group_update", UTILITY, 1))  # name, category, per group and month
GROUP_INBOUND = 4.0  # participants' messages per group and month, at most (uniform 0 .. this)
GROUP_REPLY = 0.8  # share of participants' messages the business answers in the group
GROUP_FAILED_SHARE = 0.05  # participants a group message is not delivered to
AGENT_FROM = dt.date(2026, 8, 1)
AGENT_SHARE = 0.3  # of the customer-care number's non-template replies, written by Meta Business Agent
AGENT_TOKENS = (20_000, 25_000)  # tokens per Meta Business Agent reply (Meta: "about 20,000-25,000")
# Template names (`template_name`) by category, for templates outside a campaign; campaigns' are
# `promo_<local date>_<region>` (eu, latam), `_lite` for marketing_lite, `eve_of_switch_<date>`.
TEMPLATE_NAMES = {"marketing": "whatsapp_offer", "marketing_lite": "whatsapp_offer_lite", "utility": "order_update", "authentication": "login_code"}


# --- Public API --------------------------------------------------------------------------------


def generate_traffic(*, users: int, start: dt.date, months: int, seed: int, chunk_users: int | None = None) -> pl.DataFrame:
    """Canonical messages (schema.MESSAGE_SCHEMA) of `users` users from `start` (00:00 UTC) for
    `months` calendar months, sorted by timestamp and message id. Same arguments, same frame.

    Users are made in blocks of `chunk_users` (default: about a million rows a block); the block
    size is part of the arguments, as each block draws its own numbers."""
    blocks = _chunks(users=users, start=start, months=months, seed=seed, chunk_users=chunk_users)
    frames = [frame for _, frame in blocks]
    return frames[0] if len(frames) == 1 else pl.concat(frames).sort("timestamp", "message_id")


def generate_to_parquet(path: str | Path, *, users: int, start: dt.date, months: int, seed: int, chunk_users: int | None = None) -> int:
    """Write the traffic of `generate_traffic` (same rows, same arguments) to Parquet one block of
    `chunk_users` users at a time, so memory stays bounded; rows are sorted within each block only.
    Returns the number of rows written."""
    rows = 0
    writer: pq.ParquetWriter | None = None
    with outputs.atomic(path) as partial:
        try:
            for _, frame in _chunks(users=users, start=start, months=months, seed=seed, chunk_users=chunk_users):
                table = frame.to_arrow()
                if writer is None:
                    writer = pq.ParquetWriter(str(partial), table.schema, compression="zstd")
                writer.write_table(table)
                rows += frame.height
        finally:
            if writer is not None:
                writer.close()
        if writer is None:  # no traffic: an empty table, not a missing file
            pl.DataFrame(schema=MESSAGE_SCHEMA).write_parquet(partial, compression="zstd")
    return rows


@dataclass(frozen=True)
class Defect:
    """A kind of broken line `write_traffic(..., with_defects=True)` appends: ingest must quarantine
    exactly these, and keep every other row."""

    kind: str
    reason: str
    count: int
    id_prefix: str

    @property
    def message_ids(self) -> tuple[str, ...]:
        return tuple(f"{self.id_prefix}{i}" for i in range(1, self.count + 1))


DEFECTS = (
    Defect("missing_user_id", "required value user_id is missing", 2, "wamid.SYNBAD-user-"),
    Defect("template_without_category", "template message without template_category", 2, "wamid.SYNBAD-category-"),
    Defect("timestamp_without_zone", "timestamp without time zone (e.g. 2026-03-01 10:00:00)", 1, "wamid.SYNBAD-zone-"),
    Defect("unknown_direction", "direction is neither inbound nor outbound ('outgoing')", 1, "wamid.SYNBAD-direction-"),
)

_FORMATS = ".csv, .csv.gz or .parquet"


def write_traffic(frame: pl.DataFrame, path: str | Path, *, with_defects: bool = False) -> None:
    """Write canonical messages as CSV (`.csv`, `.csv.gz`, timestamps ISO 8601 with `Z`) or Parquet
    (`.parquet`), by the file's extension. `with_defects` (CSV only) appends the broken lines of
    `DEFECTS` after the good ones. Gzip output carries no time stamp, so it is byte-identical too."""
    name = str(path).lower()
    if name.endswith(".parquet"):
        if with_defects:
            raise UsageError(f"{path}: broken lines can only be written to CSV (a Parquet column has one type)")
        with outputs.atomic(path) as partial:
            frame.write_parquet(partial, compression="zstd")
        return
    if not (name.endswith(".csv") or name.endswith(".csv.gz")):
        raise UsageError(f"{path}: cannot tell the output format from the extension; use {_FORMATS}")
    text = io.BytesIO()
    frame.write_csv(text, datetime_format="%Y-%m-%dT%H:%M:%SZ")
    if with_defects:
        text.write(_defect_lines(frame).encode("utf-8"))
    data = text.getvalue()
    with outputs.atomic(path) as partial:
        if name.endswith(".gz"):
            with open(partial, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
                gz.write(data)
        else:
            partial.write_bytes(data)


# --- Seeded draws ------------------------------------------------------------------------------


class _Draws:
    """Uniform numbers in named streams: each (seed, path, name) is its own seeded stream, so adding
    or changing one draw never shifts the numbers of another. A name may be drawn once."""

    def __init__(self, seed: int, *path: object):
        self._path = (str(seed), *map(str, path))
        self._used: set[str] = set()

    def child(self, *more: object) -> _Draws:
        return _Draws(*self._path, *more)  # type: ignore[arg-type]

    def uniform(self, n: int, name: str) -> pl.Series:
        if name in self._used:
            raise AssertionError(f"stream {name!r} drawn twice under {'/'.join(self._path)}")
        self._used.add(name)
        digest = hashlib.blake2b("/".join((*self._path, name)).encode(), digest_size=8).digest()
        return pl.Series(name, pc.random(n, initializer=int.from_bytes(digest, "little") >> 1))

    def between(self, n: int, low: float, high: float, name: str) -> pl.Series:
        return low + self.uniform(n, name) * (high - low)

    def chance(self, n: int, p: float | pl.Series, name: str) -> pl.Series:
        return self.uniform(n, name) < p

    def exponential(self, n: int, mean: float, name: str) -> pl.Series:
        return -mean * (1.0 - self.uniform(n, name)).log()

    def lognormal(self, n: int, median: float, sigma: float, name: str) -> pl.Series:
        radius = (-2.0 * (1.0 - self.uniform(n, name + ".r")).log()).sqrt()  # Box-Muller
        normal = radius * (2.0 * 3.141592653589793 * self.uniform(n, name + ".a")).cos()
        return median * (sigma * normal).exp()

    def pick(self, n: int, weights: Sequence[float], name: str) -> pl.Series:
        """Index into `weights`, drawn with those weights."""
        total = sum(weights)
        bounds = pl.Series([sum(weights[: i + 1]) / total for i in range(len(weights) - 1)], dtype=pl.Float64)
        return bounds.search_sorted(self.uniform(n, name), side="right").cast(pl.Int8)

    def pick_users(self, n: int, weights: pl.Series, name: str) -> pl.Series:
        """`n` user indexes drawn with replacement, each with probability proportional to its weight."""
        cumulative = weights.cast(pl.Float64).cum_sum()
        targets = self.uniform(n, name) * cumulative[-1]
        return cumulative.search_sorted(targets, side="right").clip(0, weights.len() - 1).cast(pl.Int64)

    def count(self, expected: float, name: str) -> int:
        """`expected` rounded up or down at random, so fractions add up over months and blocks."""
        return int(expected + self.uniform(1, name)[0])


# --- Calendar ----------------------------------------------------------------------------------


def _add_months(day: dt.date, months: int) -> dt.date:
    year, month = divmod(day.month - 1 + months, 12)
    year += day.year
    return dt.date(year, month + 1, min(day.day, calendar.monthrange(year, month + 1)[1]))


def _epoch(day: dt.date) -> int:
    return calendar.timegm(day.timetuple())


@dataclass(frozen=True)
class _Period:
    """One month of the range: [start, end) in Unix seconds; `month` sets the season."""

    index: int
    start: int
    end: int
    month: int

    @property
    def season(self) -> float:
        return SEASON[self.month]


def _periods(start: dt.date, months: int) -> list[_Period]:
    return [_Period(i, _epoch(_add_months(start, i)), _epoch(_add_months(start, i + 1)), _add_months(start, i).month) for i in range(months)]


def _rule_set_switches(start: int, end: int) -> list[int]:
    """Instants (00:00 UTC) at which a new rule set takes over, strictly inside the range."""
    return [t for t in (_epoch(r.effective_from) for r in rule_sets()[1:]) if start < t < end]


def _hour_of_day(ts: pl.Expr, offset: pl.Expr) -> pl.Expr:
    return ((ts + offset) // HOUR) % 24


def _weekday(ts: pl.Expr, offset: pl.Expr) -> pl.Expr:
    return ((ts + offset) // DAY + 3) % 7  # 1970-01-01 was a Thursday; Monday is 0


def _business_open(ts: pl.Expr, offset: pl.Expr) -> pl.Expr:
    hour = _hour_of_day(ts, offset)
    return (_weekday(ts, offset) < 6) & (hour >= BUSINESS_OPENS) & (hour < BUSINESS_CLOSES)


def _next_opening(ts: pl.Expr, offset: pl.Expr) -> pl.Expr:
    """When the business next opens after `ts` (UTC seconds), in the user's local clock."""
    local_day = (ts + offset) // DAY
    day = pl.when(_hour_of_day(ts, offset) < BUSINESS_OPENS).then(local_day).otherwise(local_day + 1)
    day = pl.when((day + 3) % 7 == 6).then(day + 1).otherwise(day)  # closed on Sunday
    return day * DAY + BUSINESS_OPENS * HOUR - offset


def _busy_instants(draws: _Draws, period: _Period, offsets: pl.Series, name: str) -> pl.Series:
    """One instant (UTC seconds, inside the period) per user offset (hours), drawn with the weekday
    x hour profile read on the user's local clock."""
    n = offsets.len()
    hour_u, second_u = draws.uniform(n, name + ".hour"), draws.uniform(n, name + ".second")
    utc = pl.int_range(period.start, period.end, HOUR, eager=True, dtype=pl.Int64)
    instants = pl.Series(name, [0] * n, dtype=pl.Int64)
    for offset in offsets.unique().sort().to_list():  # one profile per time zone, a handful at most
        local = utc + offset * HOUR
        weight = pl.Series(HOUR_ACTIVITY).gather((local // HOUR) % 24) * pl.Series(WEEKDAY_ACTIVITY).gather((local // DAY + 3) % 7)
        cumulative = weight.cum_sum()
        where = (offsets == offset).arg_true()
        hour = cumulative.search_sorted(hour_u.gather(where) * cumulative[-1], side="right").clip(0, utc.len() - 1)
        second = (second_u.gather(where) * HOUR).floor().cast(pl.Int64)
        instants = instants.scatter(where, utc.gather(hour) + second)
    return instants


# --- Users -------------------------------------------------------------------------------------


def _country_slots(seed: int) -> pl.DataFrame:
    """1,000 slots, `per_mille` per country, shuffled by the seed: user g lives in slot g % 1000.
    A user's running number in its country follows from its index alone, so blocks are independent."""
    country = pl.Series([i for i, c in enumerate(COUNTRIES) for _ in range(c.per_mille)], dtype=pl.Int64)
    order = _Draws(seed, "countries").uniform(country.len(), "shuffle").arg_sort()
    slots = pl.DataFrame({"country": country.gather(order)})
    return slots.with_columns(rank=pl.int_range(pl.len()).over("country"))


def _users(seed: int, first: int, n: int, draws: _Draws) -> pl.DataFrame:
    """Users `first` .. `first + n - 1`: local index `uid`, identity columns and behaviour weights."""
    slots = _country_slots(seed)
    index = pl.int_range(first, first + n, eager=True, dtype=pl.Int64)
    slot = (index % 1000).cast(pl.UInt32)
    country = slots["country"].gather(slot)
    table = pl.DataFrame(
        {
            "country": range(len(COUNTRIES)),
            "iso": [c.iso for c in COUNTRIES],
            "calling_code": [c.calling_code for c in COUNTRIES],
            "prefix_scaled": [int(c.mobile_prefix) * 10**c.number_digits for c in COUNTRIES],
            "per_mille": [c.per_mille for c in COUNTRIES],
            "offset": [c.utc_offset for c in COUNTRIES],
            "latam": [c.latam for c in COUNTRIES],
            "otp_weight": [c.otp_weight for c in COUNTRIES],
            "opt_in_share": [c.marketing_opt_in for c in COUNTRIES],
        }
    )
    users = table.select(pl.all().gather(country.cast(pl.UInt32))).with_columns(
        uid=pl.int_range(n, dtype=pl.Int64),
        index=index,
        running=(index // 1000) * pl.col("per_mille") + slots["rank"].gather(slot),
    )
    phone = pl.col("calling_code") + (pl.col("prefix_scaled") + pl.col("running")).cast(pl.String)
    bsuid = draws.chance(n, BSUID_SHARE, "bsuid")
    bsuid_phone = draws.chance(n, BSUID_WITH_PHONE, "bsuid_phone")
    return users.with_columns(
        bsuid=bsuid,
        bsuid_phone=bsuid_phone,
        engagement=draws.exponential(n, 1.0, "engagement") + 0.05,
        opt_in=draws.uniform(n, "opt_in") < pl.col("opt_in_share"),
        phone=phone,
    ).select(
        "uid",
        "offset",
        "latam",
        "otp_weight",
        "engagement",
        "opt_in",
        care=pl.when(pl.col("latam")).then(LATAM).otherwise(CARE).cast(pl.Int8),
        promo=pl.when(pl.col("latam")).then(LATAM).otherwise(PROMO).cast(pl.Int8),
        user_id=pl.when(pl.col("bsuid")).then(pl.col("iso") + "." + (pl.col("index") + _BSUID_BASE).cast(pl.String)).otherwise(pl.col("phone")),
        user_phone=pl.when(pl.col("bsuid") & pl.col("bsuid_phone")).then("+" + pl.col("phone")),
        user_country=pl.when(pl.col("bsuid") & ~pl.col("bsuid_phone")).then(pl.col("iso")),
    )


# --- Messages: each pattern returns rows (uid, phone, ts, inbound, kind, category, entry) -------

_ROW_SCHEMA = {
    "uid": pl.Int64,
    "phone": pl.Int8,
    "ts": pl.Int64,
    "inbound": pl.Boolean,
    "kind": pl.Int8,
    "category": pl.Int8,
    "entry": pl.Int8,
    "campaign": pl.Int32,  # the campaign's index in the calendar, for its template's name; null elsewhere
}


def _emit(
    events: pl.DataFrame,
    at: str,
    *,
    inbound: bool,
    kind: int | str,
    category: int | None = None,
    entry: str | None = None,
    where: str | None = None,
) -> pl.DataFrame:
    """One message per event (or per event whose boolean column `where` is true) at column `at`."""
    chosen = events if where is None else events.filter(pl.col(where))
    return chosen.select(
        pl.col("uid"),
        pl.col("phone"),
        pl.col(at).cast(pl.Float64).floor().cast(pl.Int64).alias("ts"),
        pl.lit(inbound).alias("inbound"),
        (pl.col(kind) if isinstance(kind, str) else pl.lit(kind)).cast(pl.Int8).alias("kind"),
        pl.lit(category, pl.Int8).alias("category"),
        (pl.col(entry) if entry else pl.lit(None)).cast(pl.Int8).alias("entry"),
    )


def _gather(users: pl.DataFrame, column: str, uid: pl.Series) -> pl.Series:
    return users[column].gather(uid)


def _sessions(draws: _Draws, users: pl.DataFrame, events: pl.DataFrame, *, no_reply: float = 0.04):
    """Conversations a user starts: 1-3 inbound messages at `t0` (the first may carry `entry`), an
    answer in minutes during business hours or the next morning after an immediate automatic reply,
    sometimes more replies, a reaction, and a follow-up hours to two days later.

    Returns (rows, ends): `ends` has per event `uid`, `phone`, `end` (last message) and
    `has_reply`, for patterns that go on after the session (orders, templates after an ad)."""
    n = events.height
    e = events.with_columns(
        offset=_gather(users, "offset", events["uid"]).cast(pl.Int64),
        first_kind=pl.when(pl.col("entry").is_null())
        .then(draws.pick(n, (0.70, 0.15, 0.15), "first_kind"))
        .otherwise(pl.when(draws.chance(n, 0.15, "entry_kind")).then(INTERACTIVE).otherwise(TEXT)),
        has_in2=draws.chance(n, 0.35, "has_in2"),
        in2=pl.col("t0") + 2 + draws.exponential(n, 60, "in2"),
        in2_kind=pl.when(draws.chance(n, 0.2, "in2_kind")).then(IMAGE).otherwise(TEXT),
        has_in3=draws.chance(n, 0.12, "has_in3"),
        in3_gap=2 + draws.exponential(n, 90, "in3"),
    ).with_columns(
        has_in3=pl.col("has_in2") & pl.col("has_in3"),
        in3=pl.col("in2") + pl.col("in3_gap"),
    )
    e = e.with_columns(
        last_in=pl.when(pl.col("has_in3"))
        .then(pl.col("in3"))
        .when(pl.col("has_in2"))
        .then(pl.col("in2"))
        .otherwise(pl.col("t0"))
        .floor()
        .cast(pl.Int64)
    )
    busy_queue = draws.chance(n, 0.08, "busy_queue")
    e = e.with_columns(
        answered=~draws.chance(n, no_reply, "no_reply"),
        open=_business_open(pl.col("last_in"), pl.col("offset") * HOUR),
        auto_at=pl.col("last_in") + draws.between(n, 1, 5, "auto_delay"),
        open_delay=pl.when(busy_queue)
        .then(draws.between(n, HOUR, 8 * HOUR, "queue_delay"))
        .otherwise(5 + draws.lognormal(n, 6 * MINUTE, 1.0, "reply_delay")),
        morning_delay=draws.lognormal(n, 20 * MINUTE, 0.8, "morning_delay"),
        next_open=_next_opening(pl.col("last_in"), pl.col("offset") * HOUR),
    ).with_columns(
        has_auto=pl.col("answered") & ~pl.col("open"),
        agent_at=pl.when(pl.col("open"))
        .then(pl.col("last_in") + pl.col("open_delay"))
        .otherwise(pl.col("next_open") + pl.col("morning_delay"))
        .clip(upper_bound=pl.col("last_in") + 23 * HOUR + 50 * MINUTE),  # non-templates need the window
    )
    e = e.with_columns(
        has_agent=pl.col("answered") & (pl.col("open") | (pl.col("next_open") < pl.col("last_in") + 23 * HOUR)),
        agent_kind=pl.when(draws.chance(n, 0.2, "agent_kind")).then(INTERACTIVE).otherwise(TEXT),
        r2_at=(pl.col("agent_at") + 3 + draws.exponential(n, 45, "r2")).clip(upper_bound=pl.col("last_in") + DAY - 1),
        r2_kind=draws.pick(n, (0.4, 0.3, 0.3), "r2_kind"),
        user_reaction_at=pl.col("agent_at") + 1 + draws.exponential(n, 10 * MINUTE, "user_reaction"),
        follow_at=pl.col("agent_at") + draws.between(n, 2 * HOUR, 40 * HOUR, "follow"),
        follow_reply_gap=(5 + draws.lognormal(n, 12 * MINUTE, 1.0, "follow_reply")).clip(upper_bound=20 * HOUR),
        r2=draws.chance(n, 0.4, "has_r2"),
        user_reaction=draws.chance(n, 0.06, "has_user_reaction"),
        business_reaction=draws.chance(n, 0.03, "has_business_reaction"),
        follow=draws.chance(n, 0.25, "has_follow"),
    ).with_columns(
        r2=pl.col("r2") & pl.col("has_agent"),
        user_reaction=pl.col("user_reaction") & pl.col("has_agent"),
        business_reaction=pl.col("business_reaction") & pl.col("has_agent"),
        follow=pl.col("follow") & pl.col("has_agent"),
        follow_reply_at=pl.col("follow_at") + pl.col("follow_reply_gap"),
    )
    rows = [
        _emit(e, "t0", inbound=True, kind="first_kind", entry="entry"),
        _emit(e, "in2", inbound=True, kind="in2_kind", where="has_in2"),
        _emit(e, "in3", inbound=True, kind=TEXT, where="has_in3"),
        _emit(e, "auto_at", inbound=False, kind=INTERACTIVE, where="has_auto"),
        _emit(e, "agent_at", inbound=False, kind="agent_kind", where="has_agent"),
        _emit(e, "agent_at", inbound=False, kind=REACTION, where="business_reaction"),  # same second as the answer
        _emit(e, "r2_at", inbound=False, kind="r2_kind", where="r2"),
        _emit(e, "user_reaction_at", inbound=True, kind=REACTION, where="user_reaction"),
        _emit(e, "follow_at", inbound=True, kind=TEXT, where="follow"),
        _emit(e, "follow_reply_at", inbound=False, kind=TEXT, where="follow"),
    ]
    ends = e.select(
        "uid",
        "phone",
        has_reply=pl.col("has_agent") | pl.col("has_auto"),
        end=pl.max_horizontal(
            pl.col("last_in"),
            pl.when(pl.col("has_auto")).then(pl.col("auto_at")),
            pl.when(pl.col("has_agent")).then(pl.col("agent_at")),
            pl.when(pl.col("r2")).then(pl.col("r2_at")),
            pl.when(pl.col("follow")).then(pl.col("follow_reply_at")),
        )
        .floor()
        .cast(pl.Int64),
    )
    return pl.concat(rows), ends


def _orders(draws: _Draws, users: pl.DataFrame, events: pl.DataFrame, *, ship_after: tuple[float, float] = (DAY, 4 * DAY)) -> pl.DataFrame:
    """Order notifications (utility templates) for events `uid`, `phone`, `t0` (confirmation time):
    a shipping update `ship_after` later, often a delivery notice 1-3 days after that, and now and
    then a user who asks where the parcel is."""
    n = events.height
    e = events.with_columns(
        shipped=draws.chance(n, 0.92, "shipped"),  # the rest are cancelled or collected in store
        ship_at=pl.col("t0") + draws.between(n, *ship_after, "ship_at"),
        delivered=draws.chance(n, 0.5, "delivered_notice"),
        question=draws.chance(n, 0.07, "where_is_my_parcel"),
        delivered_gap=draws.between(n, DAY, 3 * DAY, "delivered_at"),
        question_gap=draws.lognormal(n, 90 * MINUTE, 1.0, "question_at"),
    ).with_columns(
        delivered=pl.col("delivered") & pl.col("shipped"),
        question=pl.col("question") & pl.col("shipped"),
        delivered_at=pl.col("ship_at") + pl.col("delivered_gap"),
        question_at=pl.col("ship_at") + pl.col("question_gap"),
    )
    questions = e.filter(pl.col("question")).select("uid", "phone", t0=pl.col("question_at").floor().cast(pl.Int64), entry=pl.lit(None, pl.Int8))
    question_rows, _ = _sessions(draws.child("parcel_questions"), users, questions)
    return pl.concat(
        [
            _emit(e, "t0", inbound=False, kind=TEMPLATE, category=UTILITY),
            _emit(e, "ship_at", inbound=False, kind=TEMPLATE, category=UTILITY, where="shipped"),
            _emit(e, "delivered_at", inbound=False, kind=TEMPLATE, category=UTILITY, where="delivered"),
            question_rows,
        ]
    )


def _one_time_passwords(draws: _Draws, users: pl.DataFrame, events: pl.DataFrame) -> pl.DataFrame:
    """Authentication templates in bursts of 1-3 within minutes (2-5 where `otp_weight` is high:
    codes that do not arrive get asked for again)."""
    n = events.height
    heavy = _gather(users, "otp_weight", events["uid"]) > 1
    extra = (
        draws.chance(n, 0.35, "retry1").cast(pl.Int64)
        + draws.chance(n, 0.12, "retry2").cast(pl.Int64)
        + heavy.cast(pl.Int64) * (1 + draws.chance(n, 0.4, "retry3").cast(pl.Int64))
    )
    e = events.with_columns(codes=1 + extra, gap=draws.between(n, 25, 120, "gap"))
    e = e.with_columns(code=pl.int_ranges(0, pl.col("codes"))).explode("code")
    e = e.with_columns(at=pl.col("t0") + pl.col("code") * pl.col("gap") + draws.between(e.height, 0, 20, "jitter"))
    return _emit(e, "at", inbound=False, kind=TEMPLATE, category=AUTHENTICATION)


def _click_to_whatsapp(draws: _Draws, users: pl.DataFrame, events: pl.DataFrame) -> pl.DataFrame:
    """Entries from an ad (`ctwa`) or a Page button (`page_cta`): a session, usually answered within
    24 h (a free entry point), then templates over the next days, inside or outside the 72 h window;
    some buy. Unanswered entries get a marketing template a day or more later."""
    rows, ends = _sessions(draws.child("session"), users, events, no_reply=0.12)
    n = ends.height
    e = ends.with_columns(
        offer1=draws.chance(n, 0.7, "offer1") & pl.col("has_reply"),
        offer1_at=pl.col("end") + draws.between(n, 6 * HOUR, 6 * DAY, "offer1_at"),
        offer2=draws.chance(n, 0.35, "offer2") & pl.col("has_reply"),
        offer2_at=pl.col("end") + draws.between(n, 6 * HOUR, 6 * DAY, "offer2_at"),
        chase=draws.chance(n, 0.6, "chase") & ~pl.col("has_reply"),
        chase_at=pl.col("end") + draws.between(n, 25 * HOUR, 96 * HOUR, "chase_at"),
        bought=draws.chance(n, 0.25, "bought") & pl.col("has_reply"),
        t0=(pl.col("end") + draws.between(n, 10 * MINUTE, 48 * HOUR, "order_at")).floor().cast(pl.Int64),
    )
    orders = _orders(draws.child("orders"), users, e.filter(pl.col("bought")).select("uid", "phone", "t0"))
    return pl.concat(
        [
            rows,
            _emit(e, "offer1_at", inbound=False, kind=TEMPLATE, category=MARKETING, where="offer1"),
            _emit(e, "offer2_at", inbound=False, kind=TEMPLATE, category=MARKETING, where="offer2"),
            _emit(e, "chase_at", inbound=False, kind=TEMPLATE, category=MARKETING, where="chase"),
            orders,
        ]
    )


@dataclass(frozen=True)
class _Campaign:
    name: str
    start: int
    duration: int
    share: float  # of opted-in users of its region
    category: int
    latam: bool


def _campaign_calendar(seed: int, periods: Sequence[_Period], end: int) -> list[_Campaign]:
    """The business's campaigns, from the seed alone (every block of users sees the same ones): a
    few a month per region on Tuesday to Thursday at 10:00 or 18:00 local time, a Black Friday and a
    Christmas one, and one on the evening before each rule-set switch."""
    draws = _Draws(seed, "campaigns")
    campaigns: list[_Campaign] = []
    for period in periods:
        for latam, regular, offset in ((False, 3, 1), (True, 2, -3)):
            extra = {11: 1, 12: 1 if not latam else 0}.get(period.month, 0)
            days = [d for d in range(period.start, period.end, DAY) if ((d // DAY) + 3) % 7 in (1, 2, 3)]
            days = days or list(range(period.start, period.end, DAY))
            for k in range(regular + extra):
                u = draws.uniform(5, f"{period.index}/{'latam' if latam else 'eu'}/{k}").to_list()
                day = days[int(u[0] * len(days))]
                if k == regular:  # the seasonal one, bigger: Black Friday (November's last Friday), Christmas
                    fridays = [d for d in range(period.start, period.end, DAY) if ((d // DAY) + 3) % 7 == 4]
                    day = fridays[-1] if period.month == 11 and fridays else day
                hour = 10 if u[1] < 0.6 else 18
                share = min(0.85, (0.25 + 0.15 * u[2]) * period.season * (1.4 if k == regular else 1.0))
                campaigns.append(
                    _Campaign(
                        name=f"{period.index}-{'latam' if latam else 'eu'}-{k}",
                        start=day + (hour - offset) * HOUR,
                        duration=int((1 + u[3]) * HOUR),
                        share=share,
                        category=MARKETING_LITE if u[4] < 0.25 else MARKETING,
                        latam=latam,
                    )
                )
    for switch in _rule_set_switches(periods[0].start, end):
        campaigns.append(_Campaign(f"eve-{switch}", switch - EVE_OF_SWITCH, 100 * MINUTE, 0.15, MARKETING, False))
    return [c for c in campaigns if periods[0].start <= c.start < end]


def _campaigns(draws: _Draws, users: pl.DataFrame, calendar_: Sequence[_Campaign]) -> pl.DataFrame:
    """Marketing waves: each campaign reaches a share of its region's opted-in users within its
    delivery window; some recipients write back, react, or order."""
    waves: list[pl.DataFrame] = []
    for index, campaign in enumerate(calendar_):
        d = draws.child(campaign.name)
        chosen = d.chance(users.height, campaign.share, "audience") & users["opt_in"]
        chosen = chosen & (users["latam"] == campaign.latam)
        audience = users.filter(chosen)
        n = audience.height
        waves.append(
            audience.select(
                "uid",
                phone=pl.col("promo"),
                care=pl.col("care"),
                ts=campaign.start + (d.uniform(n, "delivery") * campaign.duration).floor().cast(pl.Int64),
                category=pl.lit(campaign.category, pl.Int8),
                campaign=pl.lit(index, pl.Int32),
            )
        )
    no_waves = {"uid": pl.Int64, "phone": pl.Int8, "care": pl.Int8, "ts": pl.Int64, "category": pl.Int8, "campaign": pl.Int32}
    sent = pl.concat(waves) if waves else pl.DataFrame(schema=no_waves)
    n = sent.height
    e = sent.with_columns(
        reply=draws.chance(n, CAMPAIGN_REPLY, "reply"),
        reply_at=pl.col("ts") + 30 + draws.lognormal(n, 25 * MINUTE, 1.2, "reply_at"),
        reaction=draws.chance(n, CAMPAIGN_REACTION, "reaction"),
        reaction_at=pl.col("ts") + 5 + draws.lognormal(n, 8 * MINUTE, 1.0, "reaction_at"),
        order=draws.chance(n, CAMPAIGN_ORDER, "order"),
        order_at=pl.col("ts") + 10 * MINUTE + draws.lognormal(n, 3 * HOUR, 1.0, "order_at"),
    )
    replies = e.filter(pl.col("reply")).select("uid", "phone", t0=pl.col("reply_at").floor().cast(pl.Int64), entry=pl.lit(None, pl.Int8))
    reply_rows, _ = _sessions(draws.child("replies"), users, replies)
    orders = e.filter(pl.col("order")).select("uid", phone=pl.col("care"), t0=pl.col("order_at").floor().cast(pl.Int64))
    templates = e.select(
        "uid",
        "phone",
        "ts",
        inbound=pl.lit(False),
        kind=pl.lit(TEMPLATE, pl.Int8),
        category="category",
        entry=pl.lit(None, pl.Int8),
        campaign="campaign",
    )
    return pl.concat(
        [
            templates,
            _emit(e, "reaction_at", inbound=True, kind=REACTION, where="reaction"),
            reply_rows,
            _orders(draws.child("orders"), users, orders),
        ],
        how="diagonal",
    )


def _campaign_template_names(calendar_: Sequence[_Campaign]) -> list[str]:
    """The template name of each campaign (`TEMPLATE_NAMES`): its local date and region."""
    names = []
    for campaign in calendar_:
        offset = -3 if campaign.latam else 1  # the hours of `_campaign_calendar`
        day = dt.datetime.fromtimestamp(campaign.start + offset * HOUR, dt.UTC).strftime("%Y%m%d")
        if campaign.name.startswith("eve-"):
            names.append(f"eve_of_switch_{day}")
        else:
            names.append(f"promo_{day}_{'latam' if campaign.latam else 'eu'}{'_lite' if campaign.category == MARKETING_LITE else ''}")
    return names


def _start_events(draws: _Draws, users: pl.DataFrame, period: _Period, rate: float, weights: pl.Series, phone: str, name: str) -> pl.DataFrame:
    """Users picked for a pattern in one month (about `rate` per user, weighted), and when they start."""
    n = draws.count(rate * users.height * period.season, name + ".count")
    uid = draws.pick_users(n, weights, name + ".users")
    return pl.DataFrame(
        {
            "uid": uid,
            "phone": users[phone].gather(uid),
            "t0": _busy_instants(draws, period, users["offset"].gather(uid).cast(pl.Int64), name + ".t0"),
            "entry": pl.Series([None] * n, dtype=pl.Int8),
        }
    )


def _month(draws: _Draws, users: pl.DataFrame, period: _Period) -> list[pl.DataFrame]:
    """Everything users start in one month: support, web orders, one-time passwords, ad entries."""
    engagement = users["engagement"]
    support = _start_events(draws, users, period, SUPPORT_SESSIONS, engagement, "care", "support")
    support_rows, ends = _sessions(draws.child("support"), users, support)
    bought = ends.with_columns(
        buys=draws.chance(ends.height, ORDER_AFTER_SUPPORT, "buys_after_support") & pl.col("has_reply"),
        t0=(pl.col("end") + 60 + draws.lognormal(ends.height, 40 * MINUTE, 1.0, "confirm_delay")).clip(upper_bound=pl.col("end") + 20 * HOUR),
    ).filter(pl.col("buys"))
    web = _start_events(draws, users, period, WEB_ORDERS, engagement, "care", "web_orders")
    orders = pl.concat([bought.select("uid", "phone", pl.col("t0").floor().cast(pl.Int64)), web.select("uid", "phone", "t0")])
    otp = _start_events(draws, users, period, OTP_BURSTS, engagement * users["otp_weight"], "care", "otp")
    shoppers = engagement * (users["otp_weight"] == 1).cast(pl.Float64)  # ads run where the shop sells
    ads = _start_events(draws, users, period, CTWA_ENTRIES, shoppers, "care", "ctwa")
    ads = ads.with_columns(entry=draws.pick(ads.height, (0.9, 0.1), "entry_point"))
    return [
        support_rows,
        _orders(draws.child("orders"), users, orders),
        _one_time_passwords(draws.child("otp"), users, otp),
        _click_to_whatsapp(draws.child("ctwa"), users, ads),
    ]


def _eve_of_switch(draws: _Draws, users: pl.DataFrame, switch: int) -> list[pl.DataFrame]:
    """Activity open across a rule-set switch: order confirmations in the evening before with a
    same-day shipping update after midnight, and support sessions started late in the evening."""
    n_orders = draws.count(0.025 * users.height, "orders.count")
    uid = draws.pick_users(n_orders, users["engagement"], "orders.users")
    confirmations = pl.DataFrame(
        {
            "uid": uid,
            "phone": users["care"].gather(uid),
            "t0": (switch - draws.between(n_orders, HOUR, 6 * HOUR, "orders.t0")).floor().cast(pl.Int64),
        }
    )
    n_sessions = draws.count(0.02 * users.height, "sessions.count")
    uid = draws.pick_users(n_sessions, users["engagement"], "sessions.users")
    sessions = pl.DataFrame(
        {
            "uid": uid,
            "phone": users["care"].gather(uid),
            "t0": (switch - draws.between(n_sessions, 10 * MINUTE, 5 * HOUR, "sessions.t0")).floor().cast(pl.Int64),
            "entry": pl.Series([None] * n_sessions, dtype=pl.Int8),
        }
    )
    session_rows, _ = _sessions(draws.child("sessions"), users, sessions)
    return [_orders(draws.child("orders"), users, confirmations, ship_after=(10 * HOUR, 20 * HOUR)), session_rows]


# --- Blocks of users to canonical messages -----------------------------------------------------


def _chunks(*, users: int, start: dt.date, months: int, seed: int, chunk_users: int | None):
    """(block index, canonical messages of that block), block after block."""
    if chunk_users is None:
        chunk_users = max(1_000, CHUNK_USER_MONTHS // max(months, 1))
    if users < 1 or months < 1 or chunk_users < 1:
        raise UsageError(f"users ({users}), months ({months}) and chunk_users ({chunk_users}) must be at least 1")
    if users > max_users():
        raise UsageError(f"{users:,} users is more than the {max_users():,} synthetic phone numbers available")
    periods = _periods(start, months)
    campaigns = _campaign_calendar(seed, periods, periods[-1].end)
    for chunk, first in enumerate(range(0, users, chunk_users)):
        yield chunk, _chunk(seed, chunk, first, min(chunk_users, users - first), periods, campaigns)


def _chunk(seed: int, chunk: int, first: int, n: int, periods: list[_Period], campaigns: list[_Campaign]) -> pl.DataFrame:
    draws = _Draws(seed, "chunk", chunk)
    users = _users(seed, first, n, draws.child("users"))
    start, end = periods[0].start, periods[-1].end
    parts: list[pl.DataFrame] = [_campaigns(draws.child("campaigns"), users, campaigns)]
    for period in periods:
        parts.extend(_month(draws.child("month", period.index), users, period))
    for switch in _rule_set_switches(start, end):
        parts.extend(_eve_of_switch(draws.child("switch", switch), users, switch))
    rows = (
        pl.concat([p.select([(pl.col(c) if c in p.columns else pl.lit(None)).cast(t).alias(c) for c, t in _ROW_SCHEMA.items()]) for p in parts])
        .with_row_index("made")
        .filter((pl.col("ts") >= start) & (pl.col("ts") < end))
        .sort("ts", "inbound", "uid", "phone", "made", descending=[False, True, False, False, False])
    )
    frame = _canonical(draws.child("delivery"), users, rows, chunk, _campaign_template_names(campaigns))
    frame = _business_agent(draws.child("business_agent"), frame)
    groups = _groups(draws.child("groups"), users, periods, chunk)
    if groups.height == 0:
        return frame
    return pl.concat([frame, groups]).sort("timestamp", "message_id", maintain_order=True)


def _canonical(draws: _Draws, users: pl.DataFrame, rows: pl.DataFrame, chunk: int, campaign_names: Sequence[str]) -> pl.DataFrame:
    """Rows (sorted) in the contract's columns: ids in time order, delivery outcomes, duplicates
    next to their original, template names (`TEMPLATE_NAMES`, campaigns' from `campaign_names`)."""
    n = rows.height
    rows = rows.with_columns(seq=pl.int_range(n, dtype=pl.Int64), outcome=draws.uniform(n, "status"))
    rows = pl.concat([rows, rows.filter(draws.chance(n, DUPLICATE_SHARE, "duplicate"))]).sort("seq")
    status = (
        pl.when(pl.col("inbound"))
        .then(pl.lit("received"))
        .when(pl.col("outcome") < FAILED_SHARE)
        .then(pl.lit("failed"))
        .when(pl.col("outcome") < FAILED_SHARE + SENT_SHARE)
        .then(pl.lit("sent"))
        .when(pl.col("outcome") < 1 - READ_SHARE)
        .then(pl.lit("delivered"))
        .otherwise(pl.lit("read"))
    )
    phone_ids = {i: b.phone_number_id for i, b in enumerate(BUSINESS_NUMBERS)}
    waba_ids = {i: b.waba_id for i, b in enumerate(BUSINESS_NUMBERS)}
    frame = rows.select(
        message_id=pl.lit(f"wamid.SYN{chunk:05d}") + pl.col("seq").cast(pl.String).str.zfill(10),
        timestamp=(pl.col("ts") * 1_000_000).cast(MESSAGE_SCHEMA["timestamp"]),
        direction=pl.when(pl.col("inbound")).then(pl.lit("inbound")).otherwise(pl.lit("outbound")),
        business_phone=pl.col("phone").replace_strict(phone_ids, return_dtype=pl.String),
        waba_id=pl.col("phone").replace_strict(waba_ids, return_dtype=pl.String),
        user_id=users["user_id"].gather(rows["uid"]),
        user_phone=users["user_phone"].gather(rows["uid"]),
        user_country=users["user_country"].gather(rows["uid"]),
        message_type=pl.col("kind").replace_strict(dict(enumerate(MESSAGE_TYPES)), return_dtype=pl.String),
        template_category=pl.col("category").replace_strict(dict(enumerate(CATEGORIES)), default=None, return_dtype=pl.String),
        status=status,
        entry_point=pl.col("entry").replace_strict(dict(enumerate(ENTRY_POINTS)), default=None, return_dtype=pl.String),
        fep_expires_at=pl.lit(None),  # only Meta's status webhooks say where a window ends
        template_name=pl.when(pl.col("kind") == TEMPLATE).then(
            pl.col("campaign")
            .replace_strict(dict(enumerate(campaign_names)), default=None, return_dtype=pl.String)
            .fill_null(pl.col("category").replace_strict({CATEGORIES.index(c): n for c, n in TEMPLATE_NAMES.items()}, return_dtype=pl.String))
        ),
    )
    names = frame.collect_schema().names()
    return frame.select([(pl.col(c) if c in names else pl.lit(None)).cast(t).alias(c) for c, t in MESSAGE_SCHEMA.items()])


# --- The traffic of 2026: Meta Business Agent and groups ----------------------------------------


def _business_agent(draws: _Draws, frame: pl.DataFrame) -> pl.DataFrame:
    """From `AGENT_FROM`, a share (`AGENT_SHARE`) of the customer-care number's non-template replies
    (not reactions) is written by Meta Business Agent: `sent_by = meta_business_agent`, `tokens`
    drawn in `AGENT_TOKENS`. A webhook duplicate is the same message: it gets its original's values."""
    n = frame.height
    reply = (
        (pl.col("direction") == "outbound")
        & ~pl.col("message_type").is_in(["template", "reaction"])
        & (pl.col("business_phone") == BUSINESS_NUMBERS[CARE].phone_number_id)
        & (pl.col("timestamp") >= dt.datetime.combine(AGENT_FROM, dt.time(), dt.UTC))
    )
    drawn = frame.with_columns(
        _agent=draws.chance(n, AGENT_SHARE, "agent"),
        _tokens=draws.between(n, *AGENT_TOKENS, "tokens").round().cast(pl.Int64),
    )
    chosen = reply & pl.col("_agent").first().over("message_id")
    return drawn.with_columns(
        sent_by=pl.when(chosen).then(pl.lit(META_BUSINESS_AGENT)).otherwise(pl.col("sent_by")),
        tokens=pl.when(chosen).then(pl.col("_tokens").first().over("message_id")).otherwise(pl.col("tokens")),
    ).drop("_agent", "_tokens")


def _groups(draws: _Draws, users: pl.DataFrame, periods: Sequence[_Period], chunk: int) -> pl.DataFrame:
    """Groups API traffic from `GROUPS_FROM` (canonical messages, README "New kinds of traffic"):
    one group per `USERS_PER_GROUP` users, of 3 to 8 participants from one region (the care number
    for Europe, the LatAm number for Latin America), so most groups mix markets. Each month each
    group gets `GROUP_TEMPLATES` (marketing and utility, never authentication: Meta does not support
    it in groups) at business hours, up to `GROUP_INBOUND` messages from participants, and the
    business's answers to most of them within the hour. An outbound group message is one row per
    participant with the same `message_id`; `GROUP_FAILED_SHARE` of participants are not delivered to."""
    months = [p for p in periods if p.end > _epoch(GROUPS_FROM)]
    n_groups = draws.count(users.height / USERS_PER_GROUP, "count")
    if not months or n_groups == 0:
        return pl.DataFrame(schema=MESSAGE_SCHEMA)
    slots = GROUP_SIZES[1]
    size = GROUP_SIZES[0] + (draws.uniform(n_groups, "size") * (GROUP_SIZES[1] - GROUP_SIZES[0] + 1)).floor().cast(pl.Int64)
    group = pl.Series("group", [g for g in range(n_groups) for _ in range(slots)], dtype=pl.Int64)
    slot = pl.Series("slot", list(range(slots)) * n_groups, dtype=pl.Int64)
    members = pl.DataFrame({"group": group, "slot": slot, "uid": draws.pick_users(group.len(), pl.Series([1.0] * users.height), "members")})
    members = members.with_columns(latam=users["latam"].gather(members["uid"]), offset=users["offset"].gather(members["uid"]).cast(pl.Int64))
    region = members.filter(pl.col("slot") == 0).select("group", region="latam", offset="offset").with_columns(size=size)
    members = (
        members.join(region, on="group", maintain_order="left")
        .filter((pl.col("latam") == pl.col("region")) & (pl.col("slot") < pl.col("size")))
        .unique(["group", "uid"], keep="first", maintain_order=True)
        .select("group", "uid")
    )
    region = region.join(members.group_by("group").len(), on="group", maintain_order="left").filter(pl.col("len") >= 2).drop("len", "size")
    events: list[pl.DataFrame] = []
    for period in months:
        d = draws.child("month", period.index)
        start = max(period.start, _epoch(GROUPS_FROM))
        days = (period.end - start) // DAY
        for name, category, count in GROUP_TEMPLATES:
            for k in range(count):
                m = region.height
                local = (d.uniform(m, f"{name}.{k}.day") * days).floor().cast(pl.Int64) * DAY + (
                    (9 + d.uniform(m, f"{name}.{k}.hour") * 9) * HOUR
                ).floor().cast(pl.Int64)
                events.append(
                    region.select(
                        "group",
                        ts=start + local - pl.col("offset") * HOUR,
                        inbound=pl.lit(False),
                        category=pl.lit(category, pl.Int8),
                        name=pl.lit(name),
                    )
                )
        inbound = region.select("group", "offset", n=(d.uniform(region.height, "inbound.count") * (GROUP_INBOUND + 1)).floor().cast(pl.Int64))
        inbound = inbound.with_columns(k=pl.int_ranges(0, "n")).explode("k").drop_nulls("k")
        m = inbound.height
        inbound = inbound.with_columns(
            ts=(start + d.uniform(m, "inbound.at") * (period.end - start)).floor().cast(pl.Int64),
            sender=d.uniform(m, "inbound.sender"),
            reply=d.chance(m, GROUP_REPLY, "reply"),
            reply_at=2 * MINUTE + d.exponential(m, 15 * MINUTE, "reply.at"),
        )
        events.append(inbound.select("group", "ts", "sender", inbound=pl.lit(True)))
        replies = inbound.filter("reply").select("group", ts=(pl.col("ts") + pl.col("reply_at")).floor().cast(pl.Int64), inbound=pl.lit(False))
        events.append(replies)
    last = periods[-1].end
    messages = (
        pl.concat(events, how="diagonal")
        .filter(pl.col("ts") < last)
        .sort("ts", "group", "inbound", descending=[False, False, True], maintain_order=True)
    )
    messages = messages.with_columns(seq=pl.int_range(pl.len(), dtype=pl.Int64))
    sizes = members.group_by("group").len()
    inbound_rows = (
        messages.filter("inbound")
        .join(sizes, on="group", maintain_order="left")
        .with_columns(pick=(pl.col("sender") * pl.col("len")).floor().cast(pl.Int64))
        .join(members.with_columns(pick=pl.int_range(pl.len()).over("group")), on=["group", "pick"], maintain_order="left")
    )
    outbound_rows = messages.filter(~pl.col("inbound")).join(members, on="group", maintain_order="left_right")
    rows = pl.concat(
        [
            inbound_rows.select("group", "seq", "ts", "inbound", "uid", "category", "name"),
            outbound_rows.select("group", "seq", "ts", "inbound", "uid", "category", "name"),
        ]
    )
    rows = rows.sort("seq", "uid")
    outcome = draws.uniform(rows.height, "status")
    status = (
        pl.when(pl.col("inbound"))
        .then(pl.lit("received"))
        .when(outcome < GROUP_FAILED_SHARE)
        .then(pl.lit("failed"))
        .when(outcome < (1 + GROUP_FAILED_SHARE) / 2)
        .then(pl.lit("delivered"))
        .otherwise(pl.lit("read"))
    )
    rows = rows.join(region.select("group", latam="region"), on="group", maintain_order="left").sort("seq", "uid")
    rows = rows.with_columns(phone=pl.when(pl.col("latam")).then(LATAM).otherwise(CARE).cast(pl.Int8))
    phone_ids = {i: b.phone_number_id for i, b in enumerate(BUSINESS_NUMBERS)}
    waba_ids = {i: b.waba_id for i, b in enumerate(BUSINESS_NUMBERS)}
    frame = rows.select(
        message_id=pl.lit(f"wamid.SYNG{chunk:05d}") + pl.col("seq").cast(pl.String).str.zfill(10),
        timestamp=(pl.col("ts") * 1_000_000).cast(MESSAGE_SCHEMA["timestamp"]),
        direction=pl.when(pl.col("inbound")).then(pl.lit("inbound")).otherwise(pl.lit("outbound")),
        business_phone=pl.col("phone").replace_strict(phone_ids, return_dtype=pl.String),
        waba_id=pl.col("phone").replace_strict(waba_ids, return_dtype=pl.String),
        user_id=users["user_id"].gather(rows["uid"]),
        user_phone=users["user_phone"].gather(rows["uid"]),
        user_country=users["user_country"].gather(rows["uid"]),
        message_type=pl.when(pl.col("name").is_not_null()).then(pl.lit("template")).otherwise(pl.lit("text")),
        template_category=pl.col("category").replace_strict(dict(enumerate(CATEGORIES)), default=None, return_dtype=pl.String),
        status=status,
        group_id=pl.lit(f"GRP.SYN{chunk:05d}-") + pl.col("group").cast(pl.String).str.zfill(4),
        template_name="name",
    )
    names = frame.collect_schema().names()
    return frame.select([(pl.col(c) if c in names else pl.lit(None)).cast(t).alias(c) for c, t in MESSAGE_SCHEMA.items()])


# --- Broken lines for the quarantine ------------------------------------------------------------


def _defect_lines(frame: pl.DataFrame) -> str:
    """CSV lines (no header) for `DEFECTS`, built on the frame's first message so that each line is
    wrong in exactly one way."""
    when = frame["timestamp"][0] if frame.height else dt.datetime(2026, 1, 1, 10, tzinfo=dt.UTC)
    user = frame["user_id"][0] if frame.height else f"{COUNTRIES[0].calling_code}{COUNTRIES[0].mobile_prefix}{0:07d}"
    number = BUSINESS_NUMBERS[CARE]
    iso, zoneless = when.strftime("%Y-%m-%dT%H:%M:%SZ"), when.strftime("%Y-%m-%d %H:%M:%S")
    business = [number.phone_number_id, number.waba_id]
    text = ["", iso, "inbound", *business, user, "", "", "text", "", "received", ""]
    template = ["", iso, "outbound", *business, user, "", "", "template", "utility", "delivered", ""]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for defect in DEFECTS:
        for message_id in defect.message_ids:
            if defect.kind == "missing_user_id":
                line = [message_id, *text[1:5], "", *text[6:]]
            elif defect.kind == "template_without_category":
                line = [message_id, *template[1:9], "", *template[10:]]
            elif defect.kind == "timestamp_without_zone":
                line = [message_id, zoneless, *text[2:]]
            elif defect.kind == "unknown_direction":
                line = [message_id, iso, "outgoing", *template[3:]]
            else:  # pragma: no cover - DEFECTS and this function change together
                raise AssertionError(defect.kind)
            writer.writerow(line)
    return out.getvalue()
