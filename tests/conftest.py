"""Fixtures shared by the tests: `bill` runs each test once per billing engine."""

from __future__ import annotations

import pytest

from analytics import charges, reference
from meta_fixtures import SHARED

ENGINES = {"reference": reference.bill, "charges": charges.bill}


@pytest.fixture(params=list(ENGINES))
def bill(request: pytest.FixtureRequest):
    """`bill(messages, config)` of each engine: the reference state machine and the fast engine."""
    return ENGINES[request.param]


def pytest_sessionstart(session: pytest.Session) -> None:
    """Many tests read ../shared in place (never copied here): without it, say so once."""
    if not SHARED.is_dir():
        pytest.exit(
            f"{SHARED} not found: the tests read Meta's payloads and rate cards in place from the shared folder "
            "beside the checkout. Clone next to it, or set WA_ANALYTICS_SHARED to its path.",
            returncode=4,
        )
