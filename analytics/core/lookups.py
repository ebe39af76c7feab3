"""Code tables as Polars expressions, below every stage: billing maps its codes with them and
pricing its categories to rate-card families.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import polars as pl


def looked_up(value: pl.Expr, table: Mapping[Any, Any], dtype: pl.DataType) -> pl.Expr:
    """`table[value]` for every row (null for a value not in `table`), as a chain of comparisons:
    for the few entries of a code table this is faster than Polars' `replace`, which also
    materialises a whole string column (a third of the reader's peak memory)."""
    found = pl.lit(None, dtype=dtype)
    for key, result in table.items():
        found = pl.when(value == key).then(pl.lit(result, dtype=dtype)).otherwise(found)
    return found
