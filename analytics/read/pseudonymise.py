"""Replace who the users are by keyed pseudonyms, keeping what billing needs.

What it protects: the user's phone number and wa_id / business-scoped user id (`user_id`,
`user_phone`) become `p_` + 32 hex characters of HMAC-SHA256 under a secret key. Without the key
they cannot be reversed or confirmed by hashing guessed numbers (a plain hash of a phone number can:
there are few enough numbers to try them all). With the same key the same user gets the same
pseudonym in every file and month, so conversations, windows and joins still work; another key gives
unrelated pseudonyms. A phone is hashed as its digits, so `+39 333…` in `user_phone` and `39333…` as
a wa_id in `user_id` stay the same user. The participants of a group message are users like any
other (one row each, the participant as `user_id`). [choice] `group_id` is not a phone number, but
it names a group of the business's customers that the business's own records could be matched
against, so it is pseudonymised too, by the same key: the same group keeps one pseudonym, and
billing, which only needs to tell groups apart, is unchanged.

What it does not protect: the user's country (`user_country` is derived from the phone first, so
the market, billing-rules.md §2, survives), message timing, directions, templates and business
numbers all remain, and a user with rare traffic may be recognisable from them. Meta's message ids
(`wamid.…`) are base64 that embeds the recipient's phone number: pass `columns=(*PSEUDONYMISED_COLUMNS,
"message_id")` to replace them too (deduplication still works; matching ids against Meta's own
exports does not). Anyone holding the key can test whether a given number is in the data.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable
from typing import TypeVar

import polars as pl

from analytics.core.errors import UsageError
from analytics.terms.markets import phone_digits, with_user_country

Frame = TypeVar("Frame", pl.DataFrame, pl.LazyFrame)

KEY_VARIABLE = "WA_ANALYTICS_PSEUDONYM_KEY"
MIN_KEY_LENGTH = 16
PSEUDONYM_PREFIX = "p_"
PSEUDONYM_HEX_CHARS = 32  # 128 bits: no collisions among billions of users
PSEUDONYMISED_COLUMNS = ("user_id", "user_phone", "group_id")


def key_from_env(var: str = KEY_VARIABLE) -> bytes:
    """The pseudonymisation key from the environment variable `var`, at least 16 characters."""
    value = os.environ.get(var, "")
    if len(value) < MIN_KEY_LENGTH:
        problem = "is not set" if not value else f"is {len(value)} characters long, shorter than {MIN_KEY_LENGTH}"
        raise UsageError(
            f"the pseudonymisation key {var} {problem}. Set a secret of at least {MIN_KEY_LENGTH} characters "
            f"and keep it to pseudonymise later files the same way, e.g. "
            f"export {var}=$(python -c 'import secrets;print(secrets.token_hex(32))')"
        )
    return value.encode("utf-8")


def pseudonym(value: str, key: bytes) -> str:
    """`p_` + the first 32 hex characters of HMAC-SHA256(key, value); a phone is hashed as its digits."""
    canonical = phone_digits(value) or value
    digest = hmac.new(key, canonical.encode("utf-8"), hashlib.sha256).hexdigest()
    return PSEUDONYM_PREFIX + digest[:PSEUDONYM_HEX_CHARS]


def _hashed(key: bytes) -> Callable[[pl.Series], pl.Series]:
    def apply(values: pl.Series) -> pl.Series:
        return pl.Series([pseudonym(v, key) for v in values.to_list()], dtype=pl.String)

    return apply


def _pseudonym_lookup(frame: pl.LazyFrame, column: str, key: bytes) -> pl.LazyFrame:
    """Each distinct value of `column`, hashed once: (column, __column)."""
    distinct = frame.select(pl.col(column).cast(pl.String)).unique().drop_nulls()
    return distinct.with_columns(pl.col(column).map_batches(_hashed(key), return_dtype=pl.String).alias(f"__{column}"))


def pseudonymise(frame: Frame, key: bytes, *, columns: tuple[str, ...] = PSEUDONYMISED_COLUMNS) -> Frame:
    """Derive `user_country`, then replace `columns` (the present ones) by keyed pseudonyms.

    Each distinct value is hashed once and joined back; row order is kept through a row index (see
    `analytics.terms.markets` for why not the join's `maintain_order`).
    """
    if len(key) < MIN_KEY_LENGTH:
        raise UsageError(f"a pseudonymisation key needs at least {MIN_KEY_LENGTH} bytes, got {len(key)}")
    located = with_user_country(frame).lazy()
    present = [c for c in columns if c in located.collect_schema().names()]
    located = located.with_columns(pl.col(c).cast(pl.String) for c in present)
    hashed = located.with_row_index("__row")
    for column in present:
        hashed = hashed.join(_pseudonym_lookup(located, column, key), on=column, how="left")
    hashed = hashed.sort("__row").with_columns(pl.col(f"__{c}").alias(c) for c in present)
    result = hashed.drop("__row", *(f"__{c}" for c in present))
    return result.collect() if isinstance(frame, pl.DataFrame) else result
