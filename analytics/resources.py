"""Files shipped with the package: SQL in `queries/`, reference data in `data/`.

In a wheel they live inside the package (`analytics/queries`, `analytics/data`, see the
force-include table in pyproject.toml); in a source checkout they sit beside `analytics/`. Every
read goes through `resource()`, so both work the same way.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parent.parent


def resource(*parts: str) -> Traversable:
    """The shipped file or folder at `parts`, e.g. `resource("data", "markets", "regions.csv")`."""
    packaged = files("analytics").joinpath(*parts)
    if packaged.is_file() or packaged.is_dir():
        return packaged
    return _CHECKOUT.joinpath(*parts)


@cache
def query(name: str) -> str:
    """The text of `queries/<name>.sql`, read once."""
    return resource("queries", f"{name}.sql").read_text(encoding="utf-8")
