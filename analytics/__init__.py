"""What WhatsApp Business Platform traffic costs, why, and what it would cost if you messaged differently.

Follow one message through the stage folders in this order: `read` (files to canonical messages),
`terms` (Meta's rules, markets and rate cards as data), `bill` (`reference`, the plain state
machine that is the oracle; `charges`, the fast engine), `price` (charges to money), `whatif`
(what it would cost otherwise), `reconcile` (Meta's own figures against ours) and `present`
(roll-ups, charts, the report); `core` sits below them all, `pipeline` (Spark) above billing and
pricing, and `cli` on top.
"""

__version__ = "0.1.0"
