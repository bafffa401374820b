-- Row-level security: enabled AND forced on every user table, so the table owner is
-- subject to it too (superusers always bypass RLS: the app must not connect as one).
--
-- A user-scoped transaction first runs
--     select set_config('app.user_id', <uuid>, true), set_config('app.service', '', true)
-- and sees only that user's rows; a service transaction sets app.service = 'on'.
-- The setting is transaction-local, so it never outlives the checkout of a pooled
-- connection. The settings are read through (select ...) so PostgreSQL evaluates
-- them once per statement, not once per row.

DO $$
DECLARE
    t text;
    owner_col text;
BEGIN
    FOR t, owner_col IN VALUES
        ('profiles', 'id'),
        ('assessments', 'user_id'),
        ('assessment_answers', 'user_id'),
        ('goals', 'user_id'),
        ('learning_paths', 'user_id'),
        ('progress', 'user_id'),
        ('notifications', 'user_id'),
        ('ai_interactions', 'user_id')
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY %I ON %I USING (%I = (SELECT app_user_id()) OR (SELECT app_is_service())) '
            'WITH CHECK (%I = (SELECT app_user_id()) OR (SELECT app_is_service()))',
            t || '_owner', t, owner_col, owner_col);
    END LOOP;
END
$$;

-- The catalogue: everyone reads, only the service writes.
ALTER TABLE practices ENABLE ROW LEVEL SECURITY;
ALTER TABLE practices FORCE ROW LEVEL SECURITY;
CREATE POLICY practices_read ON practices FOR SELECT USING (true);
CREATE POLICY practices_insert ON practices FOR INSERT WITH CHECK ((SELECT app_is_service()));
CREATE POLICY practices_update ON practices FOR UPDATE USING ((SELECT app_is_service()));
CREATE POLICY practices_delete ON practices FOR DELETE USING ((SELECT app_is_service()));

-- The application role: data access only, no DDL, no access to partitions directly.
GRANT USAGE ON SCHEMA public TO kasama_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON
    profiles, assessments, assessment_answers, practices, goals, learning_paths,
    progress, notifications, ai_interactions
TO kasama_app;
GRANT EXECUTE ON FUNCTION app_user_id(), app_is_service() TO kasama_app;
