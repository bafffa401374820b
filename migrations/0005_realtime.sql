-- Realtime change feed: every committed change to a user table sends a compact NOTIFY
-- on the channel `kasama_changes`. Ids, not rows: the payload stays a few hundred
-- bytes whatever the row holds (NOTIFY payloads must stay under 8000 bytes).
-- NOTIFY is delivered only on commit, in commit order, and only to listeners
-- connected at the time: subscribers resync after a reconnect.

CREATE SEQUENCE kasama_change_seq;

-- SECURITY DEFINER: the application role needs no privilege on the sequence.
CREATE FUNCTION kasama_notify_change() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    r record;
BEGIN
    IF TG_OP = 'DELETE' THEN
        r := OLD;
    ELSE
        r := NEW;
    END IF;
    PERFORM pg_notify('kasama_changes', json_build_object(
        't', TG_TABLE_NAME,
        'op', lower(TG_OP),
        'id', r.id,
        'user', r.user_id,
        'seq', nextval('kasama_change_seq'),
        'ts', (extract(epoch FROM clock_timestamp()) * 1000000)::bigint
    )::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER assessments_notify AFTER INSERT OR UPDATE OR DELETE ON assessments
    FOR EACH ROW EXECUTE FUNCTION kasama_notify_change();
CREATE TRIGGER progress_notify AFTER INSERT OR UPDATE OR DELETE ON progress
    FOR EACH ROW EXECUTE FUNCTION kasama_notify_change();
CREATE TRIGGER goals_notify AFTER INSERT OR UPDATE OR DELETE ON goals
    FOR EACH ROW EXECUTE FUNCTION kasama_notify_change();
CREATE TRIGGER notifications_notify AFTER INSERT OR UPDATE OR DELETE ON notifications
    FOR EACH ROW EXECUTE FUNCTION kasama_notify_change();
CREATE TRIGGER learning_paths_notify AFTER INSERT OR UPDATE OR DELETE ON learning_paths
    FOR EACH ROW EXECUTE FUNCTION kasama_notify_change();

-- ai_interactions is the hottest table: its feed is off unless switched on.
CREATE FUNCTION kasama_ai_interactions_feed(enabled boolean) RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
BEGIN
    IF enabled THEN
        IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'ai_interactions_notify'
                       AND tgrelid = 'ai_interactions'::regclass) THEN
            CREATE TRIGGER ai_interactions_notify AFTER INSERT ON ai_interactions
                FOR EACH ROW EXECUTE FUNCTION kasama_notify_change();
        END IF;
    ELSE
        DROP TRIGGER IF EXISTS ai_interactions_notify ON ai_interactions;
    END IF;
END
$$;
REVOKE ALL ON FUNCTION kasama_ai_interactions_feed(boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION kasama_ai_interactions_feed(boolean) TO kasama_app;
