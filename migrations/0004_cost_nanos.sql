-- Exact cost: money in nano-dollars (1e-9 $) instead of micro-dollars.
--
-- Prices are quoted per 1,000 tokens; in micro-dollars per 1,000 tokens they are whole
-- numbers, and then one token costs exactly that many nano-dollars. Storing nano-dollars
-- makes every request's cost an exact integer, so sums are exact, with no rounding per
-- request. Existing rows are converted (×1000).

ALTER TABLE ai_interactions RENAME COLUMN cost_micros TO cost_nanos;
ALTER TABLE ai_interactions RENAME COLUMN saved_micros TO saved_nanos;
ALTER TABLE ai_interactions RENAME CONSTRAINT ck_cost_micros TO ck_cost_nanos;
ALTER TABLE ai_interactions RENAME CONSTRAINT ck_saved_micros TO ck_saved_nanos;
UPDATE ai_interactions SET cost_nanos = cost_nanos * 1000, saved_nanos = saved_nanos * 1000
WHERE cost_nanos <> 0 OR saved_nanos <> 0;

-- AI cost over [p_from, p_to) for p_user, or for everyone when p_user is NULL (RLS
-- limits a user to their own rows). Returns the Rust `CostAnalysis` without its
-- recommendations, which the caller derives from these figures.
CREATE OR REPLACE FUNCTION get_ai_cost_analysis(p_user uuid, p_from timestamptz, p_to timestamptz)
RETURNS jsonb
LANGUAGE sql STABLE
AS $$
WITH i AS (
    SELECT * FROM ai_interactions
    WHERE (p_user IS NULL OR user_id = p_user) AND created_at >= p_from AND created_at < p_to
),
agents AS (
    SELECT agent_type, count(*) AS requests, count(*) FILTER (WHERE cache_hit) AS cache_hits,
           sum(cost_nanos) AS cost_nanos, sum(latency_ms)::float8 / count(*) AS average_latency_ms
    FROM i GROUP BY agent_type
),
days AS (
    SELECT (created_at AT TIME ZONE 'UTC')::date AS date, count(*) AS requests, sum(cost_nanos) AS cost_nanos
    FROM i GROUP BY 1
),
agg AS (
    SELECT count(*) AS total,
           count(*) FILTER (WHERE success) AS ok,
           count(*) FILTER (WHERE cache_hit) AS hits,
           coalesce(sum(cost_nanos), 0) AS cost,
           coalesce(sum(saved_nanos), 0) AS saved,
           coalesce(sum(input_tokens), 0) AS tin,
           coalesce(sum(output_tokens), 0) AS tout,
           sum(latency_ms)::float8 / nullif(count(*), 0) AS lat
    FROM i
)
SELECT jsonb_build_object(
    'user_id', p_user,
    'from', p_from,
    'to', p_to,
    'total_requests', agg.total,
    'successful_requests', agg.ok,
    'cache_hits', agg.hits,
    'cache_hit_rate', CASE WHEN agg.total = 0 THEN 0::float8 ELSE agg.hits::float8 / agg.total END,
    'total_cost_nanos', agg.cost,
    'saved_nanos', agg.saved,
    'input_tokens', agg.tin,
    'output_tokens', agg.tout,
    'average_latency_ms', agg.lat,
    'per_agent', coalesce((
        SELECT jsonb_agg(to_jsonb(a) ORDER BY a.cost_nanos DESC, a.agent_type::text COLLATE "C")
        FROM agents a), '[]'),
    'daily_trend', coalesce((SELECT jsonb_agg(to_jsonb(d) ORDER BY d.date) FROM days d), '[]'),
    'recommendations', '[]'::jsonb
)
FROM agg
$$;

