"""Stage 2, bill: canonical messages to charges (contracts.md §2). `reference` is the plain state machine, the oracle; `charges` the fast engine; `partitioned` bills inputs larger than memory."""
