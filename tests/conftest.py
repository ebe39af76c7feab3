"""Fixtures shared by the tests: `bill` runs each test once per billing engine."""

from __future__ import annotations

import pytest

from analytics import charges, reference

ENGINES = {"reference": reference.bill, "charges": charges.bill}


@pytest.fixture(params=list(ENGINES))
def bill(request: pytest.FixtureRequest):
    """`bill(messages, config)` of each engine: the reference state machine and the fast engine."""
    return ENGINES[request.param]
