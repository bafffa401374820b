-- A reservation costs about one write, not a durable commit (issue 13's bar: at most
-- 1.3x a bare UPDATE ... RETURNING). Applies as a non-superuser owner.
--
-- PgBudget reserves through kasama_budget_hold, which commits asynchronously
-- (synchronous_commit off for its own transaction): the hold is written to the WAL
-- but the call does not wait for the flush, which the WAL writer does within one to
-- three wal_writer_delays (200 ms each by default). What a PostgreSQL crash (or a
-- failover, or one backend killed, which makes the server recover) can forget is the
-- holds reserved in that last fraction of a second: until they settle they do not
-- count against the caps. Spend is always durable: a settlement commits synchronously
-- whatever the database's synchronous_commit (flushing every hold before it), books
-- its cost even when its hold is gone, and leaves a durable record of the settled
-- hold (ai_budget_settled), so a retry books nothing twice.
--
-- Reservations no longer lock the user's day line: they take a transaction-scoped
-- advisory lock on the user (pg_advisory_xact_lock(1801548641, hashtext(user::text)),
-- and on the nil uuid for the global caps, user first), which queues one user's
-- reservations from every instance without writing a row, and read what is spent and
-- held in one statement (one snapshot: a settlement, which deletes its hold and books
-- its cost in one transaction, is seen whole or not at all). That statement sees the
-- reservations committed while this one waited only under READ COMMITTED: under
-- another isolation level a reservation raises instead of deciding on a stale
-- snapshot.

-- Every settlement deletes a hold: vacuum the table after a thousand of them rather
-- than after a fifth of it has died.
ALTER TABLE ai_budget_holds SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000);
-- The global caps sum the live holds: found through their expiry (the next few
-- minutes), not through their day (which also finds every settled hold not yet
-- vacuumed).
DROP INDEX ai_budget_holds_day;

CREATE TABLE ai_budget_settled (
    id uuid PRIMARY KEY,
    -- The hold's day: records are swept two days later.
    day date NOT NULL
);
ALTER TABLE ai_budget_settled ENABLE ROW LEVEL SECURITY;
ALTER TABLE ai_budget_settled FORCE ROW LEVEL SECURITY;
CREATE POLICY ai_budget_settled_service ON ai_budget_settled FOR ALL
    USING ((SELECT app_is_service())) WITH CHECK ((SELECT app_is_service()));
GRANT SELECT, INSERT, DELETE ON ai_budget_settled TO kasama_app;

CREATE OR REPLACE FUNCTION kasama_budget_reserve(
    p_hold uuid, p_user uuid, p_day date, p_amount bigint, p_whole boolean,
    p_ttl_ms bigint, p_user_day_cap bigint, p_user_month_cap bigint,
    p_global_day_cap bigint, p_global_month_cap bigint
) RETURNS text
LANGUAGE plpgsql
SET search_path = public, pg_temp
-- A bitmap scan visits every settled hold not yet vacuumed (it cannot skip the index
-- entries an earlier scan found dead); a plain index scan skips them, so a user's
-- busy day costs no more than a quiet one.
SET enable_bitmapscan = off
AS $$
DECLARE
    v_month date := date_trunc('month', p_day::timestamp)::date;
    v_nil uuid := '00000000-0000-0000-0000-000000000000';
    -- numeric: spent + held + amount may pass bigint's range.
    v_day_spent numeric;
    v_month_spent numeric;
    v_day_held numeric;
    v_month_held numeric;
    v_refused text;
    v_service text := coalesce(current_setting('app.service', true), '');
BEGIN
    PERFORM set_config('app.service', 'on', true);
    IF p_amount < 0 THEN
        RAISE EXCEPTION 'kasama_budget_reserve: negative amount';
    END IF;
    IF p_user = v_nil THEN
        RAISE EXCEPTION 'kasama_budget_reserve: the nil uuid is not a user';
    END IF;
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'kasama_budget_reserve needs READ COMMITTED (this transaction is %)',
            current_setting('transaction_isolation')
            USING ERRCODE = 'feature_not_supported';
    END IF;
    -- Queues this user's reservations, from every instance, until this commits.
    PERFORM pg_advisory_xact_lock(1801548641, hashtext(p_user::text));
    IF p_user_day_cap IS NOT NULL OR p_user_month_cap IS NOT NULL THEN
        SELECT coalesce(sum(amount_nanos) FILTER (WHERE day = p_day), 0),
               coalesce(sum(amount_nanos), 0),
               coalesce((SELECT spent_nanos FROM ai_budget_spend
                          WHERE user_id = p_user AND period = 'day' AND starts = p_day), 0),
               coalesce((SELECT spent_nanos FROM ai_budget_spend
                          WHERE user_id = p_user AND period = 'month' AND starts = v_month), 0)
          INTO v_day_held, v_month_held, v_day_spent, v_month_spent
          FROM ai_budget_holds
         WHERE user_id = p_user AND day >= v_month AND expires_at > now();
        IF p_user_day_cap IS NOT NULL
           AND kasama_budget_refuses(v_day_spent, v_day_held, p_amount, p_whole, p_user_day_cap) THEN
            v_refused := 'user daily';
        ELSIF p_user_month_cap IS NOT NULL
           AND kasama_budget_refuses(v_month_spent, v_month_held, p_amount, p_whole, p_user_month_cap) THEN
            v_refused := 'user monthly';
        END IF;
    END IF;
    IF v_refused IS NULL AND (p_global_day_cap IS NOT NULL OR p_global_month_cap IS NOT NULL) THEN
        PERFORM pg_advisory_xact_lock(1801548641, hashtext(v_nil::text));
        SELECT coalesce(sum(amount_nanos) FILTER (WHERE day = p_day), 0),
               coalesce(sum(amount_nanos), 0),
               coalesce((SELECT spent_nanos FROM ai_budget_spend
                          WHERE user_id = v_nil AND period = 'day' AND starts = p_day), 0),
               coalesce((SELECT spent_nanos FROM ai_budget_spend
                          WHERE user_id = v_nil AND period = 'month' AND starts = v_month), 0)
          INTO v_day_held, v_month_held, v_day_spent, v_month_spent
          FROM ai_budget_holds
         WHERE day >= v_month AND expires_at > now();
        IF p_global_day_cap IS NOT NULL
           AND kasama_budget_refuses(v_day_spent, v_day_held, p_amount, p_whole, p_global_day_cap) THEN
            v_refused := 'global daily';
        ELSIF p_global_month_cap IS NOT NULL
           AND kasama_budget_refuses(v_month_spent, v_month_held, p_amount, p_whole, p_global_month_cap) THEN
            v_refused := 'global monthly';
        END IF;
    END IF;
    IF v_refused IS NULL THEN
        -- A hold of this id already (a retried reservation), or the mark a settlement
        -- left for a reservation that had not landed yet (a caller that gave up):
        -- nothing more is held.
        INSERT INTO ai_budget_holds (id, user_id, day, amount_nanos, expires_at)
        -- The hold's life starts now, not when the statement started waiting for the
        -- user's lock.
        VALUES (p_hold, p_user, p_day, p_amount,
                clock_timestamp() + make_interval(secs => p_ttl_ms / 1000.0))
        ON CONFLICT (id) DO NOTHING;
    ELSIF EXISTS (SELECT 1 FROM ai_budget_holds WHERE id = p_hold) THEN
        -- A retried reservation whose hold is there (and counted above): held.
        v_refused := NULL;
    END IF;
    PERFORM set_config('app.service', v_service, true);
    RETURN v_refused;
END
$$;

-- kasama_budget_reserve, committed asynchronously: PgBudget's reservation, a statement
-- of its own (autocommit). Inside a transaction that has already written it raises
-- (it would make those writes' commit asynchronous): call kasama_budget_reserve there.
CREATE FUNCTION kasama_budget_hold(
    p_hold uuid, p_user uuid, p_day date, p_amount bigint, p_whole boolean,
    p_ttl_ms bigint, p_user_day_cap bigint, p_user_month_cap bigint,
    p_global_day_cap bigint, p_global_month_cap bigint
) RETURNS text
LANGUAGE plpgsql
SET search_path = public, pg_temp
AS $$
BEGIN
    IF pg_current_xact_id_if_assigned() IS NOT NULL THEN
        RAISE EXCEPTION 'kasama_budget_hold commits asynchronously: call it outside a transaction that writes (or call kasama_budget_reserve)'
            USING ERRCODE = 'invalid_transaction_state';
    END IF;
    PERFORM set_config('synchronous_commit', 'off', true);
    RETURN kasama_budget_reserve(p_hold, p_user, p_day, p_amount, p_whole, p_ttl_ms,
        p_user_day_cap, p_user_month_cap, p_global_day_cap, p_global_month_cap);
END
$$;

-- Ends the hold `p_hold` of `p_user` (reserved for `p_day`) and books `p_cost` (0 for
-- a call never made or failed). Returns false for a hold already settled (a retry
-- after a lost reply), which books nothing. The cost is booked even when the hold is
-- gone (a reservation a crash forgot, or swept a day after it expired): money spent is
-- never lost. Commits synchronously, whatever the database's synchronous_commit. When the
-- reservation has not landed yet, an expired 0-amount mark is left under its id (the
-- nil user; swept a day later), so it can never land afterwards.
CREATE FUNCTION kasama_budget_settle(p_hold uuid, p_user uuid, p_day date, p_cost bigint)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = public, pg_temp
AS $$
DECLARE
    v_nil uuid := '00000000-0000-0000-0000-000000000000';
    v_service text := coalesce(current_setting('app.service', true), '');
BEGIN
    PERFORM set_config('app.service', 'on', true);
    IF p_cost < 0 THEN
        RAISE EXCEPTION 'kasama_budget_settle: negative cost';
    END IF;
    IF p_user = v_nil THEN
        RAISE EXCEPTION 'kasama_budget_settle: the nil uuid is not a user';
    END IF;
    -- Money is booked durably: a database (or role) set to asynchronous commit could
    -- otherwise forget, in a crash, a settlement already reported written.
    PERFORM set_config('synchronous_commit', 'on', true);
    -- Once per hold, durably (a concurrent retry waits here, then books nothing).
    INSERT INTO ai_budget_settled (id, day) VALUES (p_hold, p_day) ON CONFLICT (id) DO NOTHING;
    IF NOT FOUND THEN
        PERFORM set_config('app.service', v_service, true);
        RETURN false;
    END IF;
    -- Waits for a reservation of this id still in flight, then either marks the id (it
    -- had not landed) or ends the hold.
    INSERT INTO ai_budget_holds (id, user_id, day, amount_nanos, expires_at)
    VALUES (p_hold, v_nil, p_day, 0, now())
    ON CONFLICT (id) DO NOTHING;
    IF NOT FOUND THEN
        DELETE FROM ai_budget_holds WHERE id = p_hold AND user_id = p_user;
    END IF;
    PERFORM kasama_budget_book(p_user, p_day, p_cost);
    PERFORM set_config('app.service', v_service, true);
    RETURN true;
END
$$;

-- As before, and forgets settlement records two days after their hold's day.
CREATE OR REPLACE FUNCTION kasama_budget_sweep() RETURNS bigint
LANGUAGE plpgsql
SET search_path = public, pg_temp
AS $$
DECLARE
    v_today date := (now() AT TIME ZONE 'UTC')::date;
    n bigint;
    m bigint;
    k bigint;
    v_service text := coalesce(current_setting('app.service', true), '');
BEGIN
    PERFORM set_config('app.service', 'on', true);
    DELETE FROM ai_budget_holds WHERE expires_at < now() - interval '1 day';
    GET DIAGNOSTICS n = ROW_COUNT;
    DELETE FROM ai_budget_spend
        WHERE (period = 'day' AND starts < v_today - 2)
           OR (period = 'month' AND starts < date_trunc('month', (v_today - 40)::timestamp)::date);
    GET DIAGNOSTICS m = ROW_COUNT;
    DELETE FROM ai_budget_settled WHERE day < v_today - 2;
    GET DIAGNOSTICS k = ROW_COUNT;
    PERFORM set_config('app.service', v_service, true);
    RETURN n + m + k;
END
$$;

REVOKE ALL ON FUNCTION kasama_budget_settle(uuid, uuid, date, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION kasama_budget_hold(uuid, uuid, date, bigint, boolean, bigint, bigint, bigint, bigint, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    kasama_budget_settle(uuid, uuid, date, bigint),
    kasama_budget_hold(uuid, uuid, date, bigint, boolean, bigint, bigint, bigint, bigint, bigint)
TO kasama_app;
