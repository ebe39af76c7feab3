"""Stage 1, read: files (canonical CSV/Parquet/JSON, webhooks) to canonical messages, with rows that cannot be used set aside (`ingest`, `webhooks`), and pseudonymised user ids (`pseudonymise`)."""
