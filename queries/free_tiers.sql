-- Which counted charges a monthly free tier covers (billing-rules.md §3.3, §4.4, §5).
-- Input: relation `counted_charges`: the charges that a monthly counter decides, from
--   analytics.charges.counted_charges: `row` (its place among the candidates), `free_tier_counter`
--   (cbp-2022, cbp-2023-service, pmp-2026-10-service), `free_tier_scope` (the WABA, or the business
--   number for pmp-2026-10-service), `local_month` (WABA time zone) and the columns that order a
--   month: started_at, business_phone, user_id, opening_message_id. Any other column passes through.
-- Parameters: $cbp_2022_free, $cbp_2023_free_service, $pmp_2026_free_service (free units a month).
-- Grain: one row per counted charge: its pass-through columns and `pricing_type` (free_tier or regular).
WITH counted AS (
    SELECT
        *,
        row_number() OVER (
            PARTITION BY free_tier_counter, free_tier_scope, local_month
            ORDER BY started_at, business_phone, user_id, opening_message_id
        ) AS position_in_month,
        CASE free_tier_counter
            WHEN 'cbp-2022' THEN $cbp_2022_free
            WHEN 'cbp-2023-service' THEN $cbp_2023_free_service
            WHEN 'pmp-2026-10-service' THEN $pmp_2026_free_service
        END AS free_units
    FROM counted_charges
),

final AS (
    SELECT
        * EXCLUDE (
            free_tier_counter, free_tier_scope, local_month, started_at, business_phone, user_id,
            opening_message_id, position_in_month, free_units
        ),
        CASE WHEN position_in_month <= free_units THEN 'free_tier' ELSE 'regular' END AS pricing_type
    FROM counted
)

SELECT * FROM final
