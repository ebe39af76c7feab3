-- Our charges and Meta's analytics data points rolled up to the same buckets, side by side
-- (analytics.reconcile.matching, aggregate level; billing-rules.md §7).
-- Inputs: relation `our_charges`, one row per charge of ours already placed in a bucket of its
--   report: report_id, report, pricing_model, granularity, period_start and period_end (Unix
--   microseconds), the dimensions phone_number, country, category and pricing_type (null on both
--   sides where the report does not break down by it), billable, cost (exact, null when not
--   priced), unpriced (a billable charge without a rate), currency; relation `meta_points`, Meta's
--   data points with the same keys and dimensions, meta_category (as Meta wrote it), volume, cost
--   (null when Meta gives none) and currency.
-- Parameters: none.
-- Grain: one row per report, bucket and combination of dimensions that either side has, with both
--   sides' volume and cost (null where a side has no row, or no cost).
WITH ours AS (
    SELECT
        report_id, report, pricing_model, period_start, period_end,
        phone_number, country, category, pricing_type,
        min(granularity) AS granularity,
        count(*) AS volume,
        count(*) FILTER (WHERE unpriced) AS unpriced,
        CASE WHEN count(*) FILTER (WHERE unpriced) = 0 THEN sum(cost) END AS cost,
        min(currency) AS currency
    FROM our_charges
    GROUP BY report_id, report, pricing_model, period_start, period_end, phone_number, country, category, pricing_type
),

meta AS (
    SELECT
        report_id, report, pricing_model, period_start, period_end,
        phone_number, country, category, pricing_type,
        min(granularity) AS granularity,
        sum(volume)::BIGINT AS volume,
        -- Tiers and directions are summed over; a bucket has a cost only if every point has one.
        CASE WHEN count(cost) = count(*) THEN sum(cost) END AS cost,
        string_agg(DISTINCT meta_category, '+' ORDER BY meta_category) AS meta_categories,
        min(currency) AS currency
    FROM meta_points
    GROUP BY report_id, report, pricing_model, period_start, period_end, phone_number, country, category, pricing_type
),

compared AS (
    SELECT
        coalesce(m.report_id, o.report_id) AS report_id,
        coalesce(m.report, o.report) AS report,
        coalesce(m.pricing_model, o.pricing_model) AS pricing_model,
        coalesce(m.granularity, o.granularity) AS granularity,
        coalesce(m.period_start, o.period_start) AS period_start,
        coalesce(m.period_end, o.period_end) AS period_end,
        coalesce(m.phone_number, o.phone_number) AS phone_number,
        coalesce(m.country, o.country) AS country,
        coalesce(m.category, o.category) AS category,
        coalesce(m.pricing_type, o.pricing_type) AS pricing_type,
        o.volume AS ours_volume,
        m.volume AS meta_volume,
        o.cost AS ours_cost,
        m.cost AS meta_cost,
        coalesce(o.unpriced, 0) AS unpriced,
        m.meta_categories,
        m.currency AS meta_currency,
        o.currency AS ours_currency
    FROM meta AS m
    FULL OUTER JOIN ours AS o
        ON m.report_id = o.report_id
        AND m.period_start = o.period_start
        AND m.period_end = o.period_end
        AND m.phone_number IS NOT DISTINCT FROM o.phone_number
        AND m.country IS NOT DISTINCT FROM o.country
        AND m.category IS NOT DISTINCT FROM o.category
        AND m.pricing_type IS NOT DISTINCT FROM o.pricing_type
),

final AS (
    SELECT *
    FROM compared
    ORDER BY report_id, period_start, country NULLS FIRST, phone_number NULLS FIRST, category NULLS FIRST,
        pricing_type NULLS FIRST
)

SELECT * FROM final
