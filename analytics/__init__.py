"""What WhatsApp Business Platform traffic costs, why, and what it would cost if you messaged differently.

Follow one message through the stage folders in this order: `read` (files to canonical messages),
`terms` (Meta's rules, markets and rate cards as data), `bill` (`reference`, the plain state
machine that is the oracle; `charges`, the fast engine), `price` (charges to money), `whatif`
(what it would cost otherwise), `reconcile` (Meta's own figures against ours) and `present`
(roll-ups, charts, the report); `core` sits below them all, `pipeline` (Spark) above billing and
pricing, and `cli` on top.

In a notebook, start from `analytics.load` (`analytics.pipeline.traffic`):

```python
import analytics as wa

t = wa.load("export/*.parquet", settings="analytics.toml")
t.chart.cost_by_category()
```
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Settings", "Traffic", "load"]

if TYPE_CHECKING:
    from analytics.pipeline.traffic import Traffic, load
    from analytics.settings import Settings


def __getattr__(name: str) -> Any:
    """`analytics.load`, `Traffic` and `Settings`, imported when first used: `import analytics`
    stays instant (the command line sets its signal handlers before Polars is imported)."""
    if name in ("load", "Traffic"):
        from analytics.pipeline import traffic

        return getattr(traffic, name)
    if name == "Settings":
        from analytics.settings import Settings

        return Settings
    raise AttributeError(f"module 'analytics' has no attribute {name!r}")


def __dir__() -> list[str]:
    return [*globals(), *__all__]
