-- Canonical messages split into hash buckets of whole keys, so each bucket can be billed alone.
-- Parameters: $files (canonical-message Parquet files), $buckets (how many buckets).
-- Grain: one row per message, every canonical column plus `bucket` (0 .. $buckets - 1).
WITH messages AS (
    SELECT * FROM read_parquet($files)
),

final AS (
    SELECT
        *,
        hash(business_phone, user_id) % $buckets AS bucket
    FROM messages
)

SELECT * FROM final
