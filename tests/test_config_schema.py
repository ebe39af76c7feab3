"""The config file against its one schema (analytics/config_schema.py), through the command line:
each mistake exits 2 with one line naming the file, the key and what is expected, inputs untouched."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from analytics import config_schema

CONSOLE_SCRIPT = Path(sys.executable).with_name("wa-analytics")
TRAFFIC = Path(__file__).parent / "fixtures" / "ingest" / "messages.csv"


def wa_analytics(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([str(CONSOLE_SCRIPT), *map(str, argv)], capture_output=True, text=True, env=env, check=False)


def refused(tmp_path: Path, config_bytes: bytes, command: str = "charges") -> str:
    """Run `command` with a config file of `config_bytes`; assert exit 2, one line, nothing written
    and the inputs untouched; return the message."""
    config, traffic = tmp_path / "analytics.toml", tmp_path / "in.csv"
    config.write_bytes(config_bytes)
    traffic.write_bytes(TRAFFIC.read_bytes())
    out = tmp_path / "out.csv"
    run = wa_analytics(command, traffic, "--config", config, "-o", out)
    assert run.returncode == 2, run.stderr
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr
    assert run.stderr.startswith(f"wa-analytics: error: {config}: ")
    assert not out.exists()
    assert config.read_bytes() == config_bytes and traffic.read_bytes() == TRAFFIC.read_bytes()
    return run.stderr.strip()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[billing]\nfep_window_hours = -5\n", "[billing] fep_window_hours: expected a number of hours above 0 and at most 168, such as 72, got -5"),
        (
            '[billing]\nfep_window_hours = "abc"\n',
            "[billing] fep_window_hours: expected a number of hours above 0 and at most 168, such as 72, got 'abc'",
        ),
        ("[billing]\nfep_window_hours = 1000\n", "[billing] fep_window_hours: expected a number of hours above 0 and at most 168"),
        ("[billing]\nfep_window_hours = true\n", "[billing] fep_window_hours: expected a number of hours"),
        (
            '[billing]\nwaba_timezones = "oops"\n',
            '[billing] waba_timezones: expected a table of WABA id = time zone, such as { "104996122399160" = "America/Sao_Paulo" }, got \'oops\'',
        ),
        (
            '[billing]\nwaba_timezones = { "104996122399160" = "Mars/Olympus" }\n',
            '[billing] waba_timezones."104996122399160": expected an IANA time zone name',
        ),
        (
            '[billing]\ntimezone = "Mars/Olympus"\n',
            '[billing] timezone: expected an IANA time zone name such as "Europe/Rome" or "UTC", got \'Mars/Olympus\'',
        ),
        ('[biling]\ntimezone = "Europe/Rome"\n', "unknown table [biling]: did you mean [billing]? the config file holds [billing] and [pricing]"),
        ('timezone = "Europe/Rome"\n', "unknown table [timezone]"),
        (
            '[billing]\ntime_zone = "Europe/Rome"\n',
            "unknown key time_zone in [billing]: did you mean timezone? expected one of timezone, waba_timezones, rules, rules_file, fep_window_hours, fep_model, service_exempt_until",
        ),
        ('[billing]\nrules = "pmp-2027"\n', "unknown rule set 'pmp-2027': expected one of cbp-2022, cbp-2023, pmp-2025, pmp-2026-10"),
        ("[billing]\nrules = 2027\n", "[billing] rules: expected the name of a rule set"),
        ('[billing]\nrules_file = "none.toml"\n', "cannot read rules file"),
        (
            '[billing]\nfep_model = "fixed-24h"\n',
            '[billing] fep_model: expected one of "fixed-72h", "fixed-7d", "extend-24h-per-user-message", got \'fixed-24h\'',
        ),
        (
            '[billing]\nservice_exempt_until = "2026-10-01"\n',
            "[billing] service_exempt_until: expected a TOML date such as 2026-10-01 (no quotes), got '2026-10-01'",
        ),
        ("[billing]\nservice_exempt_until = 2026-10-01T00:00:00Z\n", "[billing] service_exempt_until: expected a TOML date"),
        (
            '[billing.authentication_international]\nhome_country = "Italy"\n',
            "[billing.authentication_international] home_country: expected an ISO 3166-1 alpha-2 country code",
        ),
        (
            '[billing.authentication_international]\nstart_dates = { IN = "soon" }\n',
            "[billing.authentication_international] start_dates.\"IN\": expected a date such as 2024-07-01, got 'soon'",
        ),
        (
            '[billing.authentication_international]\nstart_dates = { India = "2024-07-01" }\n',
            'start_dates."India": expected the key to be an ISO 3166-1 alpha-2 country code',
        ),
        (
            '[billing.authentication_intl]\nhome_country = "IT"\n',
            "unknown key authentication_intl in [billing]: did you mean authentication_international?",
        ),
        (
            "[billing]\nauthentication_international = 3\n",
            "[billing] authentication_international must be a table ([billing.authentication_international]), not a number",
        ),
        ("[pricing]\nmarkup_percent = -1\n", "[pricing] markup_percent: expected a number >= 0, such as 10, got -1"),
        ('[pricing]\nreport_unpriced = "yes"\n', "[pricing] report_unpriced: expected true or false, got 'yes'"),
        ('[pricing]\ncurrency = "euro"\n', "[pricing] currency: expected an ISO 4217 currency code such as \"EUR\", got 'euro'"),
        ("[pricing]\nportfolios = [1, 2]\n", "[pricing] portfolios: expected a table of WABA id = portfolio name"),
        ('[pricing]\nrate_cards = "cards"\n', "unknown key rate_cards in [pricing]: did you mean rate_card?"),
        ("[billing\n", "not valid TOML"),
        (b"\xff\xfe[billing]\n", "not a TOML config file: invalid UTF-8 at byte 0; save it as UTF-8 text"),
    ],
)
def test_a_config_the_schema_refuses_exits_2_naming_file_key_and_expectation(tmp_path, text, expected):
    message = refused(tmp_path, text if isinstance(text, bytes) else text.encode())
    assert expected in message


def test_pricing_commands_check_the_whole_file_too(tmp_path):
    message = refused(tmp_path, b"[billing]\nfep_window_hours = 0\n", command="costs")
    assert "[billing] fep_window_hours: expected a number of hours above 0" in message


def test_a_long_bad_value_is_quoted_short(tmp_path):
    message = refused(tmp_path, ('[billing]\ntimezone = "' + "A" * 500 + '"\n').encode())
    assert len(message) < 250 and "A" * 60 not in message


def test_a_missing_config_file_exits_2(tmp_path):
    run = wa_analytics("charges", TRAFFIC, "--config", tmp_path / "none.toml", "-o", tmp_path / "out.csv")
    assert run.returncode == 2
    assert f"{tmp_path / 'none.toml'}: cannot read the config file" in run.stderr


def test_the_readme_config_and_the_keys_being_added_pass(tmp_path):
    config = tmp_path / "analytics.toml"
    config.write_text(
        '[billing]\ntimezone = "Europe/Rome"\nwaba_timezones = { "104996122399160" = "America/Sao_Paulo" }\n'
        'fep_window_hours = 72\nfep_model = "extend-24h-per-user-message"\nservice_exempt_until = 2026-10-01\n'
        '[billing.authentication_international]\nhome_country = "IT"\nstart_dates = { IN = "2024-07-01", ID = 2024-06-01 }\n'
        '[pricing]\ncurrency = "eur"\nportfolios = { "104996122399150" = "retail" }\nmarkup_percent = 10\n'
        'markup_per_charge = "0.002"\nreport_unpriced = false\n'
    )
    document = config_schema.load(config)
    assert document["billing"]["service_exempt_until"] == dt.date(2026, 10, 1)  # type: ignore[index]
    run = wa_analytics("charges", TRAFFIC, "--config", config, "-o", tmp_path / "out.csv")
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "out.csv").read_text().count("\n") > 1


def test_check_returns_none_for_an_empty_file_and_the_first_problem_otherwise():
    assert config_schema.check({}) is None
    assert config_schema.check({"billing": {"fep_window_hours": 24.5}}) is None
    assert config_schema.check({"billing": {"fep_window_hours": 0}}) == (
        "[billing] fep_window_hours: expected a number of hours above 0 and at most 168, such as 72, got 0"
    )
    assert config_schema.check({"pricing": {}, "x": {}}) == ("unknown table [x]: the config file holds [billing] and [pricing] (see the README)")


MAX_PRICE = '[[pricing.max_price]]\nwaba_id = "104996122399150"\nper_1000 = 45.5\nfrom = 2026-10-01\n'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "[pricing]\nagent_tokens_per_message = 0\n",
            "[pricing] agent_tokens_per_message: expected a whole number of tokens above 0, such as 25000, got 0",
        ),
        ("[pricing]\nagent_tokens_per_message = 2.5e4\n", "[pricing] agent_tokens_per_message: expected a whole number of tokens above 0"),
        (
            MAX_PRICE.replace("per_1000 = 45.5", "per_1000 = 45.5001"),
            "[pricing.max_price number 1] per_1000: expected a price per 1,000 marketing messages above 0, at most 3 decimals",
        ),
        (
            MAX_PRICE.replace("per_1000 = 45.5", "per_1000 = 0"),
            "[pricing.max_price number 1] per_1000: expected a price per 1,000 marketing messages above 0",
        ),
        (
            MAX_PRICE.replace("from = 2026-10-01", 'from = "October"'),
            "[pricing.max_price number 1] from: expected a date such as 2026-10-01, got 'October'",
        ),
        (MAX_PRICE.replace("from = 2026-10-01\n", ""), "[[pricing.max_price]] number 1: missing from: expected [[pricing.max_price]] tables"),
        (MAX_PRICE + MAX_PRICE.replace("waba_id", "waba"), "unknown key waba in [pricing.max_price number 2]: did you mean waba_id?"),
        (MAX_PRICE + 'template = ""\n', "[pricing.max_price number 1] template: expected a template name (a string)"),
        ('[pricing]\nmax_price = { waba_id = "1" }\n', "[pricing] max_price: expected [[pricing.max_price]] tables, each with waba_id"),
    ],
)
def test_agent_tokens_and_max_prices_the_schema_refuses_exit_2_naming_the_table_and_key(tmp_path, text, expected):
    message = refused(tmp_path, text.encode(), command="costs")
    assert expected in message


def test_max_prices_and_agent_tokens_reach_the_settings(tmp_path):
    from analytics.settings import Settings

    config = tmp_path / "analytics.toml"
    config.write_text(
        "[pricing]\nagent_tokens_per_message = 20000\n" + MAX_PRICE + MAX_PRICE.replace("45.5", '"40.125"') + 'template = "spring_sale"\n'
    )
    settings = Settings.from_toml(config)
    assert settings.agent_tokens_per_message == 20_000
    assert [(m.waba_id, m.per_message, m.from_date, m.template) for m in settings.max_prices] == [
        ("104996122399150", Decimal("0.0455"), dt.date(2026, 10, 1), None),
        ("104996122399150", Decimal("0.040125"), dt.date(2026, 10, 1), "spring_sale"),
    ]
    assert Settings().agent_tokens_per_message == 25_000 and Settings().max_prices == ()


def test_an_amount_with_trailing_zeros_has_only_its_significant_decimals():
    """A max price or markup computed in Python (56.6 as Decimal("56.600000")) is 56.6: trailing zeros
    are no decimals, and a sixth significant one still is."""
    import datetime as dt
    from decimal import Decimal

    from analytics.core.errors import UsageError
    from analytics.settings import MaxPrice, Settings

    assert MaxPrice(waba_id="w", per_1000=Decimal("56.600000"), from_date=dt.date(2026, 10, 1)).per_1000 == Decimal("56.6")
    assert Settings(markup_percent=Decimal("12.50000000")).markup_percent == Decimal("12.5")
    with pytest.raises(UsageError, match="per_1000 56.6001 has more than 3 decimals"):
        MaxPrice(waba_id="w", per_1000=Decimal("56.6001"), from_date=dt.date(2026, 10, 1))
    with pytest.raises(UsageError, match="markup_percent 12.50001 has more than 4 decimals"):
        Settings(markup_percent=Decimal("12.50001"))
