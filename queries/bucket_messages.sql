-- Canonical messages split into hash buckets of whole keys, so each bucket can be billed alone.
-- Parameters: $buckets (how many buckets). Reads the view `messages_to_split` (the canonical-message
-- Parquet files, with a null `group_id` where they have none), registered by analytics/bill/partitioned.py.
-- Grain: one row per message, every canonical column plus `bucket` (0 .. $buckets - 1).
-- The key (billing-rules.md §2): (business_phone, user_id), or (business_phone, group_id) for a group
-- message, so that every participant of a group lands in the group's bucket.
WITH messages AS (
    SELECT * FROM messages_to_split
),

final AS (
    SELECT
        *,
        hash(business_phone, CASE WHEN group_id IS NULL THEN user_id END, group_id) % $buckets AS bucket
    FROM messages
)

SELECT * FROM final
