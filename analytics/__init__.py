"""What WhatsApp Business Platform traffic costs, why, and what it would cost if you messaged differently.

Follow one message through the modules in this order: `ingest` (files to canonical messages),
`markets` (phone to Meta market), `rules` (the billing rules as data), `reference` (the plain
state machine that is the oracle), `charges` (the fast engine; `partitioned` for inputs larger
than memory), `ratecards` and `pricing` (charges to money), `strategies`, `scenarios` and
`projection` (what it would cost otherwise), `meta_reports` and `reconcile` (Meta's
own figures against ours), then `cli`.
"""

__version__ = "0.1.0"
