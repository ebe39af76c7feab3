-- Which counted charges a monthly free tier covers (billing-rules.md §3.3, §4.4, §5, §9).
-- Input: relation `counted_charges`: the charges that take a place in a monthly counter, from
--   analytics.bill.charges.counted_charges: `row` (its place among the candidates), `free_tier_counter`
--   (a rule set's free tier, data/rules/rule_sets.toml), `free_tier_scope` (the WABA or the business
--   number, as the tier says), `local_month` (WABA time zone), `free_units` (the tier's size),
--   `placed_as` (the pricing type of a charge that takes a place without being decided by it: a
--   free-entry-point charge the rules count; null for the charges the counter decides),
--   `beyond_free_tier` (what a decided charge past the free units pays: regular, or free_exempt) and
--   the columns that order a month: started_at, business_phone, user_id, opening_message_id. Any
--   other column passes through.
-- Parameters: none.
-- Grain: one row per counted charge: its pass-through columns and `pricing_type`.
WITH counted AS (
    SELECT
        *,
        row_number() OVER (
            PARTITION BY free_tier_counter, free_tier_scope, local_month
            ORDER BY started_at, business_phone, user_id, opening_message_id
        ) AS position_in_month
    FROM counted_charges
),

final AS (
    SELECT
        * EXCLUDE (
            free_tier_counter, free_tier_scope, local_month, started_at, business_phone, user_id,
            opening_message_id, position_in_month, free_units, placed_as, beyond_free_tier
        ),
        CASE
            WHEN placed_as IS NOT NULL THEN placed_as
            WHEN position_in_month <= free_units THEN 'free_tier'
            ELSE beyond_free_tier
        END AS pricing_type
    FROM counted
)

SELECT * FROM final
