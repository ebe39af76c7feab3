-- Monthly free tiers (billing-rules.md §3.3, §4.4, §5): which counted charges a free tier covers.
-- Input: relation `counted_charges` from analytics.charges.kernel, the charges a counter decides:
--   `free_tier_counter` (cbp-2022, cbp-2023-service, pmp-2026-10-service), `free_tier_scope` (the
--   WABA, or the business number for pmp-2026-10-service), `local_month` (WABA time zone).
-- Parameters: $cbp_2022_free, $cbp_2023_free_service, $pmp_2026_free_service (free units a month).
-- Grain: one row per counted charge: opening_message_id, pricing_type (free_tier or regular).
WITH counted AS (
    SELECT
        opening_message_id,
        free_tier_counter,
        row_number() OVER (
            PARTITION BY free_tier_counter, free_tier_scope, local_month
            ORDER BY started_at, business_phone, user_id, opening_message_id
        ) AS position_in_month
    FROM counted_charges
),

with_free_units AS (
    SELECT
        *,
        CASE free_tier_counter
            WHEN 'cbp-2022' THEN $cbp_2022_free
            WHEN 'cbp-2023-service' THEN $cbp_2023_free_service
            WHEN 'pmp-2026-10-service' THEN $pmp_2026_free_service
        END AS free_units
    FROM counted
),

final AS (
    SELECT
        opening_message_id,
        CASE WHEN position_in_month <= free_units THEN 'free_tier' ELSE 'regular' END AS pricing_type
    FROM with_free_units
)

SELECT * FROM final
