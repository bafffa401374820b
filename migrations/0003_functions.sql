-- Partition maintenance and the four analytics functions.

-- Creates the monthly partitions of assessments (this month and `months_ahead` more)
-- and the weekly, Monday-aligned partitions of ai_interactions (this week and
-- `weeks_ahead` more), plus a partition for every month or week that has rows in a
-- DEFAULT partition, moving those rows into it. Idempotent; safe to run concurrently
-- (an advisory lock serialises callers). Returns the number of partitions created.
--
-- SECURITY DEFINER so the application role may call it on a timer without owning the
-- tables; app.service is set inside the call, so FORCE'd RLS lets it move answers.
-- (Migration 0006 replaces this function: bounds in UTC, locks, no change events.)
CREATE FUNCTION kasama_ensure_partitions(months_ahead integer DEFAULT 3, weeks_ahead integer DEFAULT 8)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    created integer := 0;
    lo timestamptz;
    hi timestamptz;
    part text;
    stash assessment_answers[];
BEGIN
    IF months_ahead < 0 OR months_ahead > 120 OR weeks_ahead < 0 OR weeks_ahead > 520 THEN
        RAISE EXCEPTION 'months_ahead must be 0..120 and weeks_ahead 0..520'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('kasama_ensure_partitions'));
    PERFORM set_config('app.service', 'on', true);

    -- assessments: monthly
    FOR lo IN
        SELECT DISTINCT m FROM (
            SELECT (date_trunc('month', now() AT TIME ZONE 'UTC') + make_interval(months => i)) AT TIME ZONE 'UTC' AS m
            FROM generate_series(0, months_ahead) AS i
            UNION
            SELECT date_trunc('month', created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
            FROM assessments_default
        ) s ORDER BY m
    LOOP
        hi := ((lo AT TIME ZONE 'UTC') + interval '1 month') AT TIME ZONE 'UTC';
        part := 'assessments_p' || to_char(lo AT TIME ZONE 'UTC', 'YYYYMM');
        CONTINUE WHEN to_regclass(part) IS NOT NULL;
        EXECUTE format('CREATE TABLE %I (LIKE assessments INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part);
        -- Answers reference their assessment: park them while it moves partition.
        SELECT array_agg(a) INTO stash
        FROM assessment_answers a
        JOIN assessments_default d ON d.id = a.assessment_id AND d.created_at = a.assessment_created_at
        WHERE d.created_at >= lo AND d.created_at < hi;
        IF stash IS NOT NULL THEN
            DELETE FROM assessment_answers WHERE id IN (SELECT (s).id FROM unnest(stash) AS s);
        END IF;
        EXECUTE format(
            'WITH moved AS (DELETE FROM assessments_default WHERE created_at >= $1 AND created_at < $2 RETURNING *) '
            'INSERT INTO %I SELECT * FROM moved', part) USING lo, hi;
        EXECUTE format('ALTER TABLE assessments ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', part, lo, hi);
        IF stash IS NOT NULL THEN
            INSERT INTO assessment_answers SELECT * FROM unnest(stash);
        END IF;
        created := created + 1;
    END LOOP;

    -- ai_interactions: weekly, Monday-aligned
    FOR lo IN
        SELECT DISTINCT w FROM (
            SELECT (date_trunc('week', now() AT TIME ZONE 'UTC') + make_interval(weeks => i)) AT TIME ZONE 'UTC' AS w
            FROM generate_series(0, weeks_ahead) AS i
            UNION
            SELECT date_trunc('week', created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
            FROM ai_interactions_default
        ) s ORDER BY w
    LOOP
        hi := lo + interval '7 days';
        part := 'ai_interactions_p' || to_char(lo AT TIME ZONE 'UTC', 'YYYYMMDD');
        CONTINUE WHEN to_regclass(part) IS NOT NULL;
        EXECUTE format('CREATE TABLE %I (LIKE ai_interactions INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part);
        EXECUTE format(
            'WITH moved AS (DELETE FROM ai_interactions_default WHERE created_at >= $1 AND created_at < $2 RETURNING *) '
            'INSERT INTO %I SELECT * FROM moved', part) USING lo, hi;
        EXECUTE format('ALTER TABLE ai_interactions ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', part, lo, hi);
        created := created + 1;
    END LOOP;
    RETURN created;
END
$$;
REVOKE ALL ON FUNCTION kasama_ensure_partitions(integer, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION kasama_ensure_partitions(integer, integer) TO kasama_app;

-- A user's statistics over [p_from, p_to). Same definitions as the Rust
-- `UserStatistics` docs; returns that struct as JSON. SECURITY INVOKER: RLS applies.
CREATE FUNCTION get_user_statistics(p_user uuid, p_from timestamptz, p_to timestamptz)
RETURNS jsonb
LANGUAGE sql STABLE
AS $$
WITH e AS (
    SELECT * FROM progress
    WHERE user_id = p_user AND created_at >= p_from AND created_at < p_to
),
days AS (
    SELECT DISTINCT (created_at AT TIME ZONE 'UTC')::date AS d FROM e WHERE completed
),
runs AS (
    SELECT max(d) AS last, count(*)::int AS n
    FROM (SELECT d, d - (row_number() OVER (ORDER BY d))::int AS g FROM days) s
    GROUP BY g
),
cats AS (
    SELECT p.category, count(*) AS n
    FROM e JOIN practices p ON p.id = e.practice_id
    WHERE e.completed
    GROUP BY p.category
    ORDER BY n DESC, p.category COLLATE "C"
    LIMIT 3
),
weeks AS (
    SELECT date_trunc('week', created_at AT TIME ZONE 'UTC')::date AS w,
           count(*) AS sessions,
           count(*) FILTER (WHERE completed) AS completed,
           sum(duration_minutes) AS minutes
    FROM e GROUP BY 1
),
agg AS (
    SELECT count(*) AS total,
           count(*) FILTER (WHERE completed) AS done,
           count(*) FILTER (WHERE completed AND practice_id IS NOT NULL) AS practices,
           sum(rating)::float8 / nullif(count(rating), 0) AS avg_rating,
           coalesce(sum(duration_minutes), 0) AS minutes,
           sum(mood_after - mood_before) FILTER (WHERE mood_after IS NOT NULL AND mood_before IS NOT NULL)::float8
             / nullif(count(*) FILTER (WHERE mood_after IS NOT NULL AND mood_before IS NOT NULL), 0) AS mood
    FROM e
)
SELECT jsonb_build_object(
    'user_id', p_user,
    'from', p_from,
    'to', p_to,
    'total_sessions', agg.total,
    'total_practices', agg.practices,
    'completion_rate', CASE WHEN agg.total = 0 THEN 0::float8 ELSE agg.done::float8 / agg.total END,
    'average_rating', agg.avg_rating,
    'session_minutes', agg.minutes,
    'current_streak_days', coalesce((
        SELECT n FROM runs
        WHERE last >= ((p_to - interval '1 microsecond') AT TIME ZONE 'UTC')::date - 1), 0),
    'longest_streak_days', coalesce((SELECT max(n) FROM runs), 0),
    'top_categories', coalesce((
        SELECT jsonb_agg(jsonb_build_object('category', category, 'count', n)
                         ORDER BY n DESC, category COLLATE "C") FROM cats), '[]'),
    'weekly_trend', coalesce((
        SELECT jsonb_agg(jsonb_build_object('week_start', w, 'sessions', sessions,
                                            'completed', completed, 'minutes', minutes) ORDER BY w)
        FROM weeks), '[]'),
    'mood_improvement', agg.mood,
    'learning_velocity', agg.done::float8 / (extract(epoch FROM (p_to - p_from))::float8 / 604800.0)
)
FROM agg
$$;

-- Up to p_limit practices to suggest to p_user (see the Rust `Recommendation` docs).
-- Returns [{practice_id, title, category, difficulty, score, in_top, fits, level}].
CREATE FUNCTION get_learning_recommendations(p_user uuid, p_limit integer)
RETURNS jsonb
LANGUAGE sql STABLE
AS $$
WITH done AS (
    SELECT practice_id, created_at FROM progress
    WHERE user_id = p_user AND completed AND practice_id IS NOT NULL
),
lvl AS (
    SELECT (CASE WHEN count(*) < 10 THEN 'beginner'
                 WHEN count(*) < 50 THEN 'intermediate'
                 ELSE 'advanced' END)::difficulty_level AS level
    FROM done
),
top AS (
    SELECT p.category FROM done d JOIN practices p ON p.id = d.practice_id
    GROUP BY p.category ORDER BY count(*) DESC, p.category COLLATE "C" LIMIT 3
),
scored AS (
    SELECT p.id, p.title, p.category, p.difficulty,
           p.category IN (SELECT category FROM top) AS in_top,
           p.difficulty = lvl.level AS fits,
           lvl.level
    FROM practices p, lvl
    WHERE p.id NOT IN (SELECT practice_id FROM done WHERE created_at >= now() - interval '30 days')
),
ranked AS (
    SELECT *, 2 * in_top::int + fits::int AS score FROM scored
    ORDER BY score DESC, title COLLATE "C", id
    LIMIT p_limit
)
SELECT coalesce(jsonb_agg(jsonb_build_object(
    'practice_id', id, 'title', title, 'category', category, 'difficulty', difficulty,
    'score', score, 'in_top', in_top, 'fits', fits, 'level', level)
    ORDER BY score DESC, title COLLATE "C", id), '[]')
FROM ranked
$$;

-- AI cost over [p_from, p_to) for p_user, or for everyone when p_user is NULL (RLS
-- limits a user to their own rows). Returns the Rust `CostAnalysis` without its
-- recommendations, which the caller derives from these figures.
CREATE FUNCTION get_ai_cost_analysis(p_user uuid, p_from timestamptz, p_to timestamptz)
RETURNS jsonb
LANGUAGE sql STABLE
AS $$
WITH i AS (
    SELECT * FROM ai_interactions
    WHERE (p_user IS NULL OR user_id = p_user) AND created_at >= p_from AND created_at < p_to
),
agents AS (
    SELECT agent_type, count(*) AS requests, count(*) FILTER (WHERE cache_hit) AS cache_hits,
           sum(cost_micros) AS cost_micros, sum(latency_ms)::float8 / count(*) AS average_latency_ms
    FROM i GROUP BY agent_type
),
days AS (
    SELECT (created_at AT TIME ZONE 'UTC')::date AS date, count(*) AS requests, sum(cost_micros) AS cost_micros
    FROM i GROUP BY 1
),
agg AS (
    SELECT count(*) AS total,
           count(*) FILTER (WHERE success) AS ok,
           count(*) FILTER (WHERE cache_hit) AS hits,
           coalesce(sum(cost_micros), 0) AS cost,
           coalesce(sum(saved_micros), 0) AS saved,
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
    'total_cost_micros', agg.cost,
    'saved_micros', agg.saved,
    'input_tokens', agg.tin,
    'output_tokens', agg.tout,
    'average_latency_ms', agg.lat,
    'per_agent', coalesce((
        SELECT jsonb_agg(to_jsonb(a) ORDER BY a.cost_micros DESC, a.agent_type::text COLLATE "C")
        FROM agents a), '[]'),
    'daily_trend', coalesce((SELECT jsonb_agg(to_jsonb(d) ORDER BY d.date) FROM days d), '[]'),
    'recommendations', '[]'::jsonb
)
FROM agg
$$;

-- Figures about the whole system, for the service (RLS: a user sees only their own
-- rows, so the counts would be theirs). Returns the Rust `SystemHealth` as JSON.
CREATE FUNCTION get_system_health_metrics()
RETURNS jsonb
LANGUAGE sql STABLE
AS $$
WITH recent AS (
    SELECT * FROM ai_interactions WHERE created_at >= now() - interval '1 hour'
)
SELECT jsonb_build_object(
    'measured_at', now(),
    'profiles', (SELECT count(*) FROM profiles),
    'active_users_24h', (
        SELECT count(*) FROM (
            SELECT user_id FROM progress WHERE created_at >= now() - interval '24 hours'
            UNION
            SELECT user_id FROM ai_interactions WHERE created_at >= now() - interval '24 hours'
        ) u),
    'ai_requests_1h', (SELECT count(*) FROM recent),
    'ai_error_rate_1h', (SELECT CASE WHEN count(*) = 0 THEN 0::float8
                                     ELSE (count(*) FILTER (WHERE NOT success))::float8 / count(*) END
                         FROM recent),
    'ai_average_latency_ms_1h', (SELECT sum(latency_ms)::float8 / nullif(count(*), 0) FROM recent),
    'unread_notifications', (SELECT count(*) FROM notifications WHERE NOT read),
    'database', jsonb_build_object(
        'connections', (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()),
        'size_bytes', pg_database_size(current_database()),
        'buffer_hit_ratio', (SELECT blks_hit::float8 / nullif(blks_hit + blks_read, 0)
                             FROM pg_stat_database WHERE datname = current_database()),
        'default_partition_rows',
            (SELECT count(*) FROM assessments WHERE tableoid = 'assessments_default'::regclass)
          + (SELECT count(*) FROM ai_interactions WHERE tableoid = 'ai_interactions_default'::regclass),
        'partitions', (SELECT count(*) FROM pg_inherits
                       WHERE inhparent IN ('assessments'::regclass, 'ai_interactions'::regclass))
    )
)
$$;

GRANT EXECUTE ON FUNCTION
    get_user_statistics(uuid, timestamptz, timestamptz),
    get_learning_recommendations(uuid, integer),
    get_ai_cost_analysis(uuid, timestamptz, timestamptz),
    get_system_health_metrics()
TO kasama_app;
