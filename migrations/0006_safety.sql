-- Safe on a real PostgreSQL: keys that match, a change feed that names the parent
-- table, partition maintenance in UTC that loses nothing, retention, and a read-only
-- role. Applies as a non-superuser owner (no superuser-only statement in here).

-- 1. An answer points at an assessment of the same user, even through raw SQL.
ALTER TABLE assessments ADD CONSTRAINT assessments_id_user_key UNIQUE (id, created_at, user_id);
ALTER TABLE assessment_answers DROP CONSTRAINT fk_assessment_id;
ALTER TABLE assessment_answers ADD CONSTRAINT fk_assessment_id
    FOREIGN KEY (assessment_id, assessment_created_at, user_id)
    REFERENCES assessments (id, created_at, user_id) ON DELETE CASCADE;

-- 2. The change feed names the table the trigger was declared on (its first
-- argument), not the partition the row lives in (TG_TABLE_NAME is
-- `assessments_p202611` for a row of a partitioned table). Rows moved by partition
-- maintenance (`kasama.moving` = 'on' in that transaction) send nothing: they did not
-- change.
CREATE OR REPLACE FUNCTION kasama_notify_change() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    r record;
BEGIN
    IF current_setting('kasama.moving', true) = 'on' THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'DELETE' THEN
        r := OLD;
    ELSE
        r := NEW;
    END IF;
    PERFORM pg_notify('kasama_changes', json_build_object(
        't', coalesce(TG_ARGV[0], TG_TABLE_NAME),
        'op', lower(TG_OP),
        'id', r.id,
        'user', r.user_id,
        'seq', nextval('kasama_change_seq'),
        'ts', (extract(epoch FROM clock_timestamp()) * 1000000)::bigint
    )::text);
    RETURN NULL;
END
$$;

DROP TRIGGER assessments_notify ON assessments;
CREATE TRIGGER assessments_notify AFTER INSERT OR UPDATE OR DELETE ON assessments
    FOR EACH ROW EXECUTE FUNCTION kasama_notify_change('assessments');
DROP TRIGGER progress_notify ON progress;
CREATE TRIGGER progress_notify AFTER INSERT OR UPDATE OR DELETE ON progress
    FOR EACH ROW EXECUTE FUNCTION kasama_notify_change('progress');
DROP TRIGGER goals_notify ON goals;
CREATE TRIGGER goals_notify AFTER INSERT OR UPDATE OR DELETE ON goals
    FOR EACH ROW EXECUTE FUNCTION kasama_notify_change('goals');
DROP TRIGGER notifications_notify ON notifications;
CREATE TRIGGER notifications_notify AFTER INSERT OR UPDATE OR DELETE ON notifications
    FOR EACH ROW EXECUTE FUNCTION kasama_notify_change('notifications');
DROP TRIGGER learning_paths_notify ON learning_paths;
CREATE TRIGGER learning_paths_notify AFTER INSERT OR UPDATE OR DELETE ON learning_paths
    FOR EACH ROW EXECUTE FUNCTION kasama_notify_change('learning_paths');

CREATE OR REPLACE FUNCTION kasama_ai_interactions_feed(enabled boolean) RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
BEGIN
    -- Recreated either way, so a trigger made by an older version gets its argument.
    DROP TRIGGER IF EXISTS ai_interactions_notify ON ai_interactions;
    IF enabled THEN
        CREATE TRIGGER ai_interactions_notify AFTER INSERT OR UPDATE OR DELETE ON ai_interactions
            FOR EACH ROW EXECUTE FUNCTION kasama_notify_change('ai_interactions');
    END IF;
END
$$;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'ai_interactions_notify'
               AND tgrelid = 'ai_interactions'::regclass) THEN
        PERFORM kasama_ai_interactions_feed(true);
    END IF;
END
$$;

-- 3. Partition maintenance. Bounds are computed in UTC whatever the session's or the
-- server's TimeZone (the function runs with TimeZone = UTC; `+ interval '7 days'` in
-- a DST zone would otherwise move a bound by an hour). While rows move out of a
-- DEFAULT partition, that partition is locked ACCESS EXCLUSIVE and the answers table
-- SHARE ROW EXCLUSIVE, so a writer waits for the move instead of having its answer
-- cascaded away; writers take the same locks in the same order (assessments first),
-- so the wait cannot deadlock. app.service and kasama.moving are set for the call and
-- restored before it returns.
CREATE OR REPLACE FUNCTION kasama_ensure_partitions(months_ahead integer DEFAULT 3, weeks_ahead integer DEFAULT 8)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    prev_service text := coalesce(current_setting('app.service', true), '');
    prev_moving text := coalesce(current_setting('kasama.moving', true), '');
    created integer := 0;
    lo timestamptz;
    hi timestamptz;
    part text;
    stash assessment_answers[];
    p record;
    misaligned text[] := '{}';
    mis text;
BEGIN
    IF months_ahead IS NULL OR weeks_ahead IS NULL
       OR months_ahead < 0 OR months_ahead > 120 OR weeks_ahead < 0 OR weeks_ahead > 520 THEN
        RAISE EXCEPTION 'months_ahead must be 0..120 and weeks_ahead 0..520'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('kasama_ensure_partitions'));
    PERFORM set_config('app.service', 'on', true);
    PERFORM set_config('kasama.moving', 'on', true);

    -- Repair: a weekly partition whose bounds are not its name's UTC week (0003's
    -- function, run in a DST zone, put its upper bound an hour off, which made every
    -- later week overlap or left an hour of rows in DEFAULT) is detached and made anew
    -- with the right bounds; its rows, and DEFAULT's in that week, move into it.
    FOR p IN
        SELECT c.relname::text AS name, pg_get_expr(c.relpartbound, c.oid) AS bound
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'ai_interactions'::regclass
          AND c.relname ~ '^ai_interactions_p[0-9]{8}$'
    LOOP
        lo := to_timestamp(substring(p.name FROM '([0-9]{8})$'), 'YYYYMMDD');
        hi := lo + interval '7 days';
        CONTINUE WHEN p.bound = format('FOR VALUES FROM (%L) TO (%L)', lo, hi);
        LOCK TABLE ai_interactions_default IN ACCESS EXCLUSIVE MODE;
        EXECUTE format('ALTER TABLE ai_interactions DETACH PARTITION %I', p.name);
        EXECUTE format('ALTER TABLE %I RENAME TO %I', p.name, p.name || '_misaligned');
        misaligned := misaligned || p.name;
    END LOOP;
    FOREACH mis IN ARRAY misaligned LOOP
        lo := to_timestamp(substring(mis FROM '([0-9]{8})$'), 'YYYYMMDD');
        hi := lo + interval '7 days';
        EXECUTE format('CREATE TABLE %I (LIKE ai_interactions INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', mis);
        EXECUTE format(
            'WITH moved AS (DELETE FROM ai_interactions_default WHERE created_at >= $1 AND created_at < $2 RETURNING *) '
            'INSERT INTO %I SELECT * FROM moved', mis) USING lo, hi;
        EXECUTE format(
            'WITH moved AS (DELETE FROM %I WHERE created_at >= $1 AND created_at < $2 RETURNING *) '
            'INSERT INTO %I SELECT * FROM moved', mis || '_misaligned', mis) USING lo, hi;
        EXECUTE format('ALTER TABLE ai_interactions ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', mis, lo, hi);
        created := created + 1;
    END LOOP;
    -- What is left of an old table belongs to a neighbouring week: route it through
    -- the parent (into its partition, or DEFAULT, which the loop below drains).
    FOREACH mis IN ARRAY misaligned LOOP
        EXECUTE format('INSERT INTO ai_interactions SELECT * FROM %I', mis || '_misaligned');
        EXECUTE format('DROP TABLE %I', mis || '_misaligned');
    END LOOP;

    -- assessments: monthly
    FOR lo IN
        SELECT DISTINCT m FROM (
            SELECT date_trunc('month', now()) + make_interval(months => i) AS m
            FROM generate_series(0, months_ahead) AS i
            UNION
            SELECT date_trunc('month', created_at) FROM assessments_default
        ) s ORDER BY m
    LOOP
        hi := lo + interval '1 month';
        part := 'assessments_p' || to_char(lo, 'YYYYMM');
        CONTINUE WHEN to_regclass(part) IS NOT NULL;
        LOCK TABLE assessments_default IN ACCESS EXCLUSIVE MODE;
        LOCK TABLE assessment_answers IN SHARE ROW EXCLUSIVE MODE;
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

    -- ai_interactions: weekly, Monday-aligned (00:00 UTC)
    FOR lo IN
        SELECT DISTINCT w FROM (
            SELECT date_trunc('week', now()) + make_interval(weeks => i) AS w
            FROM generate_series(0, weeks_ahead) AS i
            UNION
            SELECT date_trunc('week', created_at) FROM ai_interactions_default
        ) s ORDER BY w
    LOOP
        hi := lo + interval '7 days';
        part := 'ai_interactions_p' || to_char(lo, 'YYYYMMDD');
        CONTINUE WHEN to_regclass(part) IS NOT NULL;
        LOCK TABLE ai_interactions_default IN ACCESS EXCLUSIVE MODE;
        EXECUTE format('CREATE TABLE %I (LIKE ai_interactions INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part);
        EXECUTE format(
            'WITH moved AS (DELETE FROM ai_interactions_default WHERE created_at >= $1 AND created_at < $2 RETURNING *) '
            'INSERT INTO %I SELECT * FROM moved', part) USING lo, hi;
        EXECUTE format('ALTER TABLE ai_interactions ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', part, lo, hi);
        created := created + 1;
    END LOOP;

    PERFORM set_config('app.service', prev_service, true);
    PERFORM set_config('kasama.moving', prev_moving, true);
    RETURN created;
END
$$;
REVOKE ALL ON FUNCTION kasama_ensure_partitions(integer, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION kasama_ensure_partitions(integer, integer) TO kasama_app;

-- 4. Retention: detaches and drops every partition whose whole range ends at or
-- before `before` (assessments with their answers; AI interactions). Never touches
-- the DEFAULT partitions. Returns the names of the dropped partitions, oldest first.
CREATE FUNCTION kasama_drop_partitions_before(before timestamptz)
RETURNS text[]
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    prev_service text := coalesce(current_setting('app.service', true), '');
    prev_moving text := coalesce(current_setting('kasama.moving', true), '');
    dropped text[] := '{}';
    p record;
BEGIN
    IF before IS NULL OR before > now() THEN
        RAISE EXCEPTION 'before must be a time in the past'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('kasama_ensure_partitions'));
    PERFORM set_config('app.service', 'on', true);
    PERFORM set_config('kasama.moving', 'on', true);
    FOR p IN
        SELECT c.relname AS name, i.inhparent::regclass::text AS parent,
               CASE WHEN i.inhparent = 'assessments'::regclass
                    THEN to_timestamp(substring(c.relname FROM '_p([0-9]{6})$'), 'YYYYMM') + interval '1 month'
                    ELSE to_timestamp(substring(c.relname FROM '_p([0-9]{8})$'), 'YYYYMMDD') + interval '7 days'
               END AS ends
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent IN ('assessments'::regclass, 'ai_interactions'::regclass)
          AND c.relname ~ '_p[0-9]{6,8}$'
        ORDER BY 3, 1
    LOOP
        CONTINUE WHEN p.ends > before;
        -- Same lock order as writers and moves (assessments, then answers), so an
        -- answer written meanwhile cannot make the DETACH fail.
        EXECUTE format('LOCK TABLE %I IN ACCESS EXCLUSIVE MODE', p.name);
        IF p.parent = 'assessments' THEN
            LOCK TABLE assessment_answers IN SHARE ROW EXCLUSIVE MODE;
            EXECUTE format(
                'DELETE FROM assessment_answers a USING %I d '
                'WHERE a.assessment_id = d.id AND a.assessment_created_at = d.created_at', p.name);
        END IF;
        EXECUTE format('ALTER TABLE %I DETACH PARTITION %I', p.parent, p.name);
        EXECUTE format('DROP TABLE %I', p.name);
        dropped := dropped || p.name::text;
    END LOOP;
    PERFORM set_config('app.service', prev_service, true);
    PERFORM set_config('kasama.moving', prev_moving, true);
    RETURN dropped;
END
$$;
REVOKE ALL ON FUNCTION kasama_drop_partitions_before(timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION kasama_drop_partitions_before(timestamptz) TO kasama_app;

-- 5. An optional read-only role for reporting: reads every row of every table,
-- writes nothing. Grant it to a login role of your own (see README, "Database roles").
DO $$
BEGIN
    CREATE ROLE kasama_readonly NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;
GRANT USAGE ON SCHEMA public TO kasama_readonly;
GRANT SELECT ON
    profiles, assessments, assessment_answers, practices, goals, learning_paths,
    progress, notifications, ai_interactions
TO kasama_readonly;
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['profiles', 'assessments', 'assessment_answers', 'goals',
                             'learning_paths', 'progress', 'notifications', 'ai_interactions']
    LOOP
        EXECUTE format('CREATE POLICY %I ON %I FOR SELECT TO kasama_readonly USING (true)',
                       t || '_readonly', t);
    END LOOP;
END
$$;
