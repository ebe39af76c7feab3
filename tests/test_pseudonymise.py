"""Keyed pseudonyms for users, keeping the country (and so the market). Synthetic numbers only."""

from __future__ import annotations

import re

import polars as pl
import pytest

from analytics.core.errors import UsageError
from analytics.read.pseudonymise import KEY_VARIABLE, key_from_env, pseudonym, pseudonymise

KEY = b"test-key-0123456789abcdef"
OTHER_KEY = b"another-key-0123456789abcdef"
PSEUDONYM = re.compile(r"^p_[0-9a-f]{32}$")


def _messages() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "message_id": ["m1", "m2", "m3", "m4"],
            "user_id": ["393330001234", "393330001234", "US.13491208655302741918", "4915100001234"],
            "user_phone": [None, None, "+1 809 555 0100", None],
            "user_country": [None, None, None, "fr"],
        },
        schema={c: pl.String for c in ("message_id", "user_id", "user_phone", "user_country")},
    )


def test_pseudonyms_have_the_documented_form():
    result = pseudonymise(_messages(), KEY)
    assert all(PSEUDONYM.match(v) for v in result["user_id"])
    assert result["user_phone"].to_list()[0] is None
    assert PSEUDONYM.match(result["user_phone"][2])


def test_pseudonymisation_keeps_user_country():
    assert pseudonymise(_messages(), KEY)["user_country"].to_list() == ["IT", "IT", "DO", "DE"]


def test_pseudonymisation_leaves_no_digit_string_of_the_phone():
    result = pseudonymise(_messages(), KEY)
    cells = " ".join(str(v) for row in result.select("user_id", "user_phone").iter_rows() for v in row)
    for digits in ("393330001234", "3330001234", "18095550100", "8095550100", "4915100001234", "13491208655302741918"):
        assert digits not in cells


def test_pseudonyms_are_stable_for_a_key_and_differ_across_keys():
    first, again = pseudonymise(_messages(), KEY), pseudonymise(_messages(), KEY)
    other = pseudonymise(_messages(), OTHER_KEY)
    assert first.equals(again)
    assert first["user_id"][0] == first["user_id"][1]
    assert set(first["user_id"]).isdisjoint(other["user_id"])


def test_the_same_user_gets_the_same_pseudonym_across_files_and_spellings():
    january = pl.DataFrame({"user_id": ["393330001234"]})
    february = pl.DataFrame({"user_id": ["US.1"], "user_phone": ["+39 333 000 1234"]})
    assert pseudonymise(january, KEY)["user_id"][0] == pseudonymise(february, KEY)["user_phone"][0]
    assert pseudonym("+39 333 000 1234", KEY) == pseudonym("393330001234", KEY)


def test_pseudonymise_is_lazy_for_a_lazy_frame():
    result = pseudonymise(_messages().lazy(), KEY)
    assert isinstance(result, pl.LazyFrame)
    assert result.collect().equals(pseudonymise(_messages(), KEY))


def test_message_ids_are_kept_unless_asked():
    assert pseudonymise(_messages(), KEY)["message_id"].to_list() == ["m1", "m2", "m3", "m4"]
    hidden = pseudonymise(_messages(), KEY, columns=("user_id", "user_phone", "message_id"))
    assert all(PSEUDONYM.match(v) for v in hidden["message_id"])


def test_pseudonymising_twice_keeps_the_country():
    once = pseudonymise(_messages(), KEY)
    assert pseudonymise(once, KEY)["user_country"].equals(once["user_country"])


def test_key_from_env(monkeypatch):
    monkeypatch.setenv(KEY_VARIABLE, "0123456789abcdef0123")
    assert key_from_env() == b"0123456789abcdef0123"


@pytest.mark.parametrize("value", [None, "", "short"])
def test_key_from_env_explains_what_to_set(monkeypatch, value):
    if value is None:
        monkeypatch.delenv(KEY_VARIABLE, raising=False)
    else:
        monkeypatch.setenv(KEY_VARIABLE, value)
    with pytest.raises(UsageError, match=f"export {KEY_VARIABLE}="):
        key_from_env()


def test_a_short_key_is_refused():
    with pytest.raises(UsageError):
        pseudonymise(_messages(), b"short")


def test_group_participants_are_users_and_the_group_id_is_pseudonymised_too():
    # A group message: one row per participant, the participant as user_id; the group keeps one pseudonym.
    group = (
        _messages()
        .head(2)
        .with_columns(message_id=pl.lit("g1"), user_id=pl.Series(["393330000401", "393330000402"]), group_id=pl.lit("120363000000000010"))
    )
    result = pseudonymise(group, KEY)
    assert result["user_id"].to_list() == [pseudonym("393330000401", KEY), pseudonym("393330000402", KEY)]
    assert result["group_id"].to_list() == [pseudonym("120363000000000010", KEY)] * 2
    assert result["user_country"].to_list() == ["IT", "IT"]
