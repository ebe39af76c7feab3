-- Where each charge stands in its volume-tier counter (pricing-research.md P-8; contracts.md §3).
-- Input: relation `priceable_charges`: charges with, from analytics.price.pricing.priceable, `portfolio`,
--   `family` (utility, or authentication for both authentication categories) and `month` (YYYY-MM in
--   the WABA time zone), and `billable`, `pricing_model`, `market` and the columns of delivery order:
--   started_at, business_phone, user_id, opening_message_id. Any other column passes through.
--   Relation `tiered_families`: the (market, family) pairs the rate card has tiers for
--   (analytics.price.pricing.tiered_families).
-- Parameters: none.
-- Run by: analytics.spark, as a Spark SQL window. analytics.pricing.tier_positions is the same
--   window in Polars (a third of DuckDB's CPU), held equal to this file in tests/test_pricing.py.
-- Grain: one row per charge of `priceable_charges`, its columns and `tier_position`: for a billable
--   PMP charge of a tiered (market, family), its place in the month of its counter (portfolio,
--   market, family, month) in delivery order, from 1; null for every other charge.
WITH tiered AS (
    SELECT DISTINCT market, family FROM tiered_families
),

marked AS (
    SELECT
        charge.*,
        -- never null: a null here would drop the charge from both branches below
        COALESCE(charge.billable AND charge.pricing_model = 'PMP' AND tiered.family IS NOT NULL, FALSE) AS in_tier_counter
    FROM priceable_charges AS charge
    LEFT JOIN tiered ON charge.market = tiered.market AND charge.family = tiered.family
),

counted AS (
    SELECT
        * EXCLUDE (in_tier_counter),
        CAST(row_number() OVER (
            PARTITION BY portfolio, market, family, month
            ORDER BY started_at, business_phone, user_id, opening_message_id
        ) AS BIGINT) AS tier_position
    FROM marked
    WHERE in_tier_counter
),

uncounted AS (
    SELECT
        * EXCLUDE (in_tier_counter),
        CAST(NULL AS BIGINT) AS tier_position
    FROM marked
    WHERE NOT in_tier_counter
),

final AS (
    SELECT * FROM counted
    UNION ALL
    SELECT * FROM uncounted
)

SELECT * FROM final
