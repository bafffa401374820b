-- Budgets shared by every app instance: what each user (and everyone together) spent
-- per UTC day and month, and the holds of calls in flight. Applies as a non-superuser
-- owner.
--
-- A reservation is one call of kasama_budget_reserve: it locks the user's day row
-- (so one user's reservations and settlements queue on it, whichever instance they
-- come from), reads what is spent and held, and refuses or inserts the hold. Holds
-- carry an expiry: a hold left by an instance that died stops counting at its expiry.
-- A settlement deletes the hold and books the exact cost in the same transaction, so
-- a settlement retried after a lost reply finds no hold and books nothing twice.
--
-- Locks are always taken user rows first, then the global rows, so concurrent
-- reservations and settlements never deadlock.

CREATE TABLE ai_budget_spend (
    -- The nil uuid is everyone together.
    user_id uuid NOT NULL,
    period text NOT NULL CHECK (period IN ('day', 'month')),
    -- The UTC day, or the first day of the UTC month.
    starts date NOT NULL,
    spent_nanos bigint NOT NULL DEFAULT 0 CHECK (spent_nanos >= 0),
    PRIMARY KEY (user_id, period, starts)
);
CREATE INDEX ai_budget_spend_starts ON ai_budget_spend (starts);

CREATE TABLE ai_budget_holds (
    id uuid PRIMARY KEY,
    user_id uuid NOT NULL,
    day date NOT NULL,
    amount_nanos bigint NOT NULL CHECK (amount_nanos >= 0),
    expires_at timestamptz NOT NULL
);
CREATE INDEX ai_budget_holds_user ON ai_budget_holds (user_id, day);
CREATE INDEX ai_budget_holds_day ON ai_budget_holds (day);
CREATE INDEX ai_budget_holds_expiry ON ai_budget_holds (expires_at);

-- Users read their own lines (a service transaction reads and writes all).
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['ai_budget_spend', 'ai_budget_holds'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY %I ON %I FOR SELECT USING (user_id = (SELECT app_user_id()) OR (SELECT app_is_service()))',
            t || '_read', t);
        EXECUTE format(
            'CREATE POLICY %I ON %I FOR ALL USING ((SELECT app_is_service())) WITH CHECK ((SELECT app_is_service()))',
            t || '_service', t);
    END LOOP;
END
$$;
GRANT SELECT, INSERT, UPDATE, DELETE ON ai_budget_spend, ai_budget_holds TO kasama_app;

-- Books `cost` on the user's and everyone's day and month lines. Called in a service
-- transaction, with the user's day row already locked by the caller or locked here
-- first.
CREATE FUNCTION kasama_budget_book(p_user uuid, p_day date, p_cost bigint) RETURNS void
LANGUAGE plpgsql
SET search_path = public, pg_temp
AS $$
DECLARE
    v_month date := date_trunc('month', p_day::timestamp)::date;
    v_nil uuid := '00000000-0000-0000-0000-000000000000';
BEGIN
    IF p_cost <= 0 THEN
        RETURN;
    END IF;
    INSERT INTO ai_budget_spend AS s (user_id, period, starts, spent_nanos)
    VALUES (p_user, 'day', p_day, p_cost), (p_user, 'month', v_month, p_cost)
    ON CONFLICT (user_id, period, starts)
        DO UPDATE SET spent_nanos = LEAST(s.spent_nanos::numeric + EXCLUDED.spent_nanos, 9223372036854775807)::bigint;
    INSERT INTO ai_budget_spend AS s (user_id, period, starts, spent_nanos)
    VALUES (v_nil, 'day', p_day, p_cost), (v_nil, 'month', v_month, p_cost)
    ON CONFLICT (user_id, period, starts)
        DO UPDATE SET spent_nanos = LEAST(s.spent_nanos::numeric + EXCLUDED.spent_nanos, 9223372036854775807)::bigint;
END
$$;

-- Whether a cap refuses: without `whole`, once spent + held reaches it (a soft cap);
-- with it, when spent + held + amount would pass it. Numeric: the sum may pass
-- bigint's range.
CREATE FUNCTION kasama_budget_refuses(
    p_spent numeric, p_held numeric, p_amount bigint, p_whole boolean, p_cap bigint
) RETURNS boolean
LANGUAGE sql IMMUTABLE
AS $$
    SELECT CASE WHEN p_whole THEN p_spent + p_held + p_amount > p_cap
                ELSE p_spent + p_held >= p_cap END
$$;

-- Holds `p_amount` for the call `p_hold` unless a cap would be passed; returns NULL
-- when held (or when a hold of that id already exists: a retried reservation), else
-- the cap that refused ('user daily', 'user monthly', 'global daily',
-- 'global monthly'). A NULL cap is no cap. Without `p_whole` a cap refuses once what
-- is spent and held reaches it (a soft cap, as the in-memory ledger); with it, when
-- spent + held + p_amount would pass it.
CREATE FUNCTION kasama_budget_reserve(
    p_hold uuid, p_user uuid, p_day date, p_amount bigint, p_whole boolean,
    p_ttl_ms bigint, p_user_day_cap bigint, p_user_month_cap bigint,
    p_global_day_cap bigint, p_global_month_cap bigint
) RETURNS text
LANGUAGE plpgsql
SET search_path = public, pg_temp
AS $$
DECLARE
    v_month date := date_trunc('month', p_day::timestamp)::date;
    v_nil uuid := '00000000-0000-0000-0000-000000000000';
    -- numeric: spent + held + amount may pass bigint's range.
    v_spent numeric;
    v_held numeric;
    v_refused text;
    v_service text := coalesce(current_setting('app.service', true), '');
BEGIN
    PERFORM set_config('app.service', 'on', true);
    IF p_amount < 0 THEN
        RAISE EXCEPTION 'kasama_budget_reserve: negative amount';
    END IF;
    -- A hold of this id, or the mark a release left for a reservation that had not
    -- landed yet (a caller that gave up): nothing more is held.
    IF EXISTS (SELECT 1 FROM ai_budget_holds WHERE id = p_hold) THEN
        PERFORM set_config('app.service', v_service, true);
        RETURN NULL;
    END IF;

    -- The user's day row: its lock queues this user's reservations and settlements.
    INSERT INTO ai_budget_spend (user_id, period, starts) VALUES (p_user, 'day', p_day)
        ON CONFLICT DO NOTHING;
    SELECT spent_nanos INTO v_spent FROM ai_budget_spend
        WHERE user_id = p_user AND period = 'day' AND starts = p_day FOR UPDATE;
    IF p_user_day_cap IS NOT NULL THEN
        SELECT coalesce(sum(amount_nanos), 0) INTO v_held FROM ai_budget_holds
            WHERE user_id = p_user AND day = p_day AND expires_at > now();
        IF kasama_budget_refuses(v_spent, v_held, p_amount, p_whole, p_user_day_cap) THEN
            v_refused := 'user daily';
        END IF;
    END IF;
    IF v_refused IS NULL AND p_user_month_cap IS NOT NULL THEN
        SELECT coalesce(max(spent_nanos), 0) INTO v_spent FROM ai_budget_spend
            WHERE user_id = p_user AND period = 'month' AND starts = v_month;
        SELECT coalesce(sum(amount_nanos), 0) INTO v_held FROM ai_budget_holds
            WHERE user_id = p_user AND day >= v_month AND expires_at > now();
        IF kasama_budget_refuses(v_spent, v_held, p_amount, p_whole, p_user_month_cap) THEN
            v_refused := 'user monthly';
        END IF;
    END IF;
    IF v_refused IS NULL AND (p_global_day_cap IS NOT NULL OR p_global_month_cap IS NOT NULL) THEN
        INSERT INTO ai_budget_spend (user_id, period, starts) VALUES (v_nil, 'day', p_day)
            ON CONFLICT DO NOTHING;
        SELECT spent_nanos INTO v_spent FROM ai_budget_spend
            WHERE user_id = v_nil AND period = 'day' AND starts = p_day FOR UPDATE;
        IF p_global_day_cap IS NOT NULL THEN
            SELECT coalesce(sum(amount_nanos), 0) INTO v_held FROM ai_budget_holds
                WHERE day = p_day AND expires_at > now();
            IF kasama_budget_refuses(v_spent, v_held, p_amount, p_whole, p_global_day_cap) THEN
                v_refused := 'global daily';
            END IF;
        END IF;
        IF v_refused IS NULL AND p_global_month_cap IS NOT NULL THEN
            SELECT coalesce(max(spent_nanos), 0) INTO v_spent FROM ai_budget_spend
                WHERE user_id = v_nil AND period = 'month' AND starts = v_month;
            SELECT coalesce(sum(amount_nanos), 0) INTO v_held FROM ai_budget_holds
                WHERE day >= v_month AND expires_at > now();
            IF kasama_budget_refuses(v_spent, v_held, p_amount, p_whole, p_global_month_cap) THEN
                v_refused := 'global monthly';
            END IF;
        END IF;
    END IF;
    IF v_refused IS NULL THEN
        INSERT INTO ai_budget_holds (id, user_id, day, amount_nanos, expires_at)
        VALUES (p_hold, p_user, p_day, p_amount,
                now() + make_interval(secs => p_ttl_ms / 1000.0));
    END IF;
    PERFORM set_config('app.service', v_service, true);
    RETURN v_refused;
END
$$;

-- Ends the hold `p_hold` and books `p_cost` (0 for a call never made or failed).
-- Returns whether the hold was there: false for a settlement already done (a retry
-- after a lost reply), which books nothing. When there is no hold, an expired
-- 0-amount mark is left under its id (the nil user; swept a day later), so a
-- reservation that had not landed yet when its caller gave up and released it can
-- never land afterwards.
CREATE FUNCTION kasama_budget_settle(p_hold uuid, p_cost bigint) RETURNS boolean
LANGUAGE plpgsql
SET search_path = public, pg_temp
AS $$
DECLARE
    v_user uuid;
    v_day date;
    v_nil uuid := '00000000-0000-0000-0000-000000000000';
    v_service text := coalesce(current_setting('app.service', true), '');
BEGIN
    PERFORM set_config('app.service', 'on', true);
    IF p_cost < 0 THEN
        RAISE EXCEPTION 'kasama_budget_settle: negative cost';
    END IF;
    -- Waits for a reservation of this id still in flight, then either marks the id
    -- (no hold: nothing to book) or finds the hold.
    INSERT INTO ai_budget_holds (id, user_id, day, amount_nanos, expires_at)
    VALUES (p_hold, v_nil, (now() AT TIME ZONE 'UTC')::date, 0, now())
    ON CONFLICT (id) DO NOTHING;
    IF FOUND THEN
        PERFORM set_config('app.service', v_service, true);
        RETURN false;
    END IF;
    SELECT user_id, day INTO v_user, v_day FROM ai_budget_holds WHERE id = p_hold;
    IF NOT FOUND OR v_user = v_nil THEN
        PERFORM set_config('app.service', v_service, true);
        RETURN false;
    END IF;
    -- The user's day row first (the order every reservation takes).
    PERFORM 1 FROM ai_budget_spend
        WHERE user_id = v_user AND period = 'day' AND starts = v_day FOR UPDATE;
    DELETE FROM ai_budget_holds WHERE id = p_hold;
    IF NOT FOUND THEN
        -- Settled by a concurrent retry meanwhile.
        PERFORM set_config('app.service', v_service, true);
        RETURN false;
    END IF;
    PERFORM kasama_budget_book(v_user, v_day, p_cost);
    PERFORM set_config('app.service', v_service, true);
    RETURN true;
END
$$;

-- Forgets holds expired over a day ago and lines no cap reads any more (days before
-- yesterday, months before the last one). Returns the rows removed.
CREATE FUNCTION kasama_budget_sweep() RETURNS bigint
LANGUAGE plpgsql
SET search_path = public, pg_temp
AS $$
DECLARE
    v_today date := (now() AT TIME ZONE 'UTC')::date;
    n bigint;
    m bigint;
    v_service text := coalesce(current_setting('app.service', true), '');
BEGIN
    PERFORM set_config('app.service', 'on', true);
    DELETE FROM ai_budget_holds WHERE expires_at < now() - interval '1 day';
    GET DIAGNOSTICS n = ROW_COUNT;
    DELETE FROM ai_budget_spend
        WHERE (period = 'day' AND starts < v_today - 2)
           OR (period = 'month' AND starts < date_trunc('month', (v_today - 40)::timestamp)::date);
    GET DIAGNOSTICS m = ROW_COUNT;
    PERFORM set_config('app.service', v_service, true);
    RETURN n + m;
END
$$;

REVOKE ALL ON FUNCTION kasama_budget_book(uuid, date, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION kasama_budget_refuses(numeric, numeric, bigint, boolean, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION kasama_budget_reserve(uuid, uuid, date, bigint, boolean, bigint, bigint, bigint, bigint, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION kasama_budget_settle(uuid, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION kasama_budget_sweep() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION kasama_budget_book(uuid, date, bigint) TO kasama_app;
GRANT EXECUTE ON FUNCTION kasama_budget_refuses(numeric, numeric, bigint, boolean, bigint) TO kasama_app;
GRANT EXECUTE ON FUNCTION
    kasama_budget_reserve(uuid, uuid, date, bigint, boolean, bigint, bigint, bigint, bigint, bigint),
    kasama_budget_settle(uuid, bigint),
    kasama_budget_sweep()
TO kasama_app;
