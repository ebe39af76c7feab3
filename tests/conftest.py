"""Fixtures shared by the tests: `bill` runs each test once per billing engine; tests that read
../shared are marked `shared` and skipped, counted, when it is missing (mandatory in CI)."""

from __future__ import annotations

import inspect
import os
import re
from pathlib import Path

import pytest
from meta_fixtures import SHARED

from analytics.bill import charges, reference

ENGINES = {"reference": reference.bill, "charges": charges.bill}
# What a test uses when it reads ../shared (tests/meta_fixtures.py): its source names one of these.
SHARED_NAMES = ("SHARED", "FIXTURES", "META_2026_04", "fenced_blocks", "gupshup_general_purpose_ai", "glific_billing_event")
REQUIRE_SHARED = "WA_ANALYTICS_REQUIRE_SHARED"  # set by .ci/run: a missing ../shared fails the run


@pytest.fixture(params=list(ENGINES))
def bill(request: pytest.FixtureRequest):
    """`bill(messages, config)` of each engine: the reference state machine and the fast engine."""
    return ENGINES[request.param]


def _source(obj: object) -> str:
    try:
        return inspect.getsource(getattr(obj, "__wrapped__", obj))
    except (OSError, TypeError):
        return ""


def _names_in(source: str, names: set[str]) -> bool:
    return any(re.search(rf"\b{re.escape(name)}\b", source) for name in names)


_MODULE_NAMES: dict[str, set[str]] = {}


def _shared_names(module: object) -> set[str]:
    """The names a test module can reach ../shared through: tests/meta_fixtures.py's, and the
    module's own paths below ../shared and functions that use any of these (transitively)."""
    key = getattr(module, "__name__", "")
    if key in _MODULE_NAMES:
        return _MODULE_NAMES[key]
    names = set(SHARED_NAMES)
    members = vars(module) if module is not None else {}
    for name, value in members.items():
        if isinstance(value, Path) and (value == SHARED or SHARED in value.parents):
            names.add(name)
    functions = {n: _source(v) for n, v in members.items() if inspect.isfunction(v) and v.__module__ == key}
    grown = True
    while grown:
        grown = False
        for name, source in functions.items():
            if name not in names and _names_in(source, names):
                names.add(name)
                grown = True
    _MODULE_NAMES[key] = names
    return names


def reads_shared(item: pytest.Item) -> bool:
    """Whether a test, or a fixture of its own module it asks for, reaches ../shared."""
    module = getattr(item, "module", None)
    names = _shared_names(module)
    sources = [_source(getattr(item, "function", None))]
    sources += [_source(getattr(module, name, None)) for name in getattr(item, "fixturenames", ())]
    callspec = getattr(item, "callspec", None)
    if callspec is not None:
        sources += [repr(v) for v in callspec.params.values()]
    return any(_names_in(source, names) or str(SHARED) in source for source in sources)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    marked = [item for item in items if reads_shared(item)]
    for item in marked:
        item.add_marker(pytest.mark.shared)
    if SHARED.is_dir():
        return
    if os.environ.get(REQUIRE_SHARED):
        pytest.exit(
            f"{SHARED} not found, and {REQUIRE_SHARED} makes the {len(marked)} tests that read it mandatory: clone next "
            "to the shared folder, or set WA_ANALYTICS_SHARED to its path.",
            returncode=4,
        )
    skip = pytest.mark.skip(reason=f"{SHARED} not found: Meta's payloads and rate cards are read in place from there")
    for item in marked:
        item.add_marker(skip)
    config.stash[_SKIPPED] = len(marked)


_SKIPPED = pytest.StashKey[int]()


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    skipped = config.stash.get(_SKIPPED, 0)
    if skipped:
        terminalreporter.write_line(f"{skipped} tests that read ../shared were skipped: {SHARED} not found (set WA_ANALYTICS_SHARED to its path)")
