-- kasama schema: enums, helper functions, tables, partitions, indexes, triggers.
--
-- Conventions: CHECK constraints are named ck_<field> and foreign keys fk_<field>, so
-- the repository reports a violation as InvalidInput naming that field.

-- The role the application's login role is granted (see README, "Database roles").
-- Roles are cluster-wide: another database may have created it concurrently.
DO $$
BEGIN
    CREATE ROLE kasama_app NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;

CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TYPE subscription_tier AS ENUM ('free', 'premium', 'enterprise');
CREATE TYPE difficulty_level AS ENUM ('beginner', 'intermediate', 'advanced');
CREATE TYPE agent_type AS ENUM (
    'assessment_analyst', 'learning_coach', 'progress_tracker',
    'insight_generator', 'communication_advisor'
);
CREATE TYPE notification_type AS ENUM ('achievement', 'reminder', 'insight', 'system', 'social');
CREATE TYPE priority_level AS ENUM ('low', 'medium', 'high');

-- The acting user of the current transaction (NULL when none). A reverted setting
-- reads back as '' rather than NULL, hence nullif.
CREATE FUNCTION app_user_id() RETURNS uuid
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT nullif(current_setting('app.user_id', true), '')::uuid $$;

-- Whether the current transaction acts as the service (every user's rows).
CREATE FUNCTION app_is_service() RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT coalesce(current_setting('app.service', true), '') = 'on' $$;

CREATE FUNCTION set_updated_at() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

-- array_to_string is only STABLE in general; for text[] it is immutable.
CREATE FUNCTION kasama_tags_text(text[]) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT array_to_string($1, ' ') $$;

-- ---------------------------------------------------------------- profiles
CREATE TABLE profiles (
    id                uuid PRIMARY KEY,
    email             text NOT NULL CONSTRAINT ck_email CHECK (length(email) BETWEEN 3 AND 254 AND position('@' IN email) > 1),
    display_name      text NOT NULL CONSTRAINT ck_display_name CHECK (length(display_name) BETWEEN 1 AND 200),
    subscription_tier subscription_tier NOT NULL DEFAULT 'free',
    preferences       jsonb NOT NULL DEFAULT '{}',
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX profiles_email_key ON profiles (lower(email));
CREATE INDEX profiles_tier_idx ON profiles (subscription_tier);
CREATE INDEX profiles_created_at_idx ON profiles (created_at);

-- ---------------------------------------------------------------- assessments (monthly partitions)
CREATE TABLE assessments (
    id              uuid NOT NULL,
    user_id         uuid NOT NULL CONSTRAINT fk_user_id REFERENCES profiles (id) ON DELETE CASCADE,
    assessment_type text NOT NULL CONSTRAINT ck_assessment_type CHECK (assessment_type ~ '^[a-z0-9_]{1,64}$'),
    title           text NOT NULL CONSTRAINT ck_title CHECK (length(title) BETWEEN 1 AND 200),
    completed       boolean NOT NULL DEFAULT false,
    completed_at    timestamptz,
    score           integer CONSTRAINT ck_score CHECK (score BETWEEN 0 AND 100),
    insights        jsonb NOT NULL DEFAULT 'null',
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ck_completed_at CHECK (completed = (completed_at IS NOT NULL)),
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
CREATE TABLE assessments_default PARTITION OF assessments DEFAULT;
CREATE INDEX assessments_id_idx ON assessments (id);
CREATE INDEX assessments_user_type_completed_idx ON assessments (user_id, assessment_type, completed, created_at DESC);
CREATE INDEX assessments_user_created_idx ON assessments (user_id, created_at DESC);
CREATE INDEX assessments_completed_at_idx ON assessments (completed_at) WHERE completed;

CREATE TABLE assessment_answers (
    id                    uuid PRIMARY KEY,
    assessment_id         uuid NOT NULL,
    assessment_created_at timestamptz NOT NULL,
    user_id               uuid NOT NULL CONSTRAINT fk_user_id REFERENCES profiles (id) ON DELETE CASCADE,
    question_id           text NOT NULL CONSTRAINT ck_question_id CHECK (length(question_id) BETWEEN 1 AND 100),
    answer                jsonb NOT NULL,
    score                 integer CONSTRAINT ck_score CHECK (score BETWEEN 0 AND 100),
    created_at            timestamptz NOT NULL DEFAULT now(),
    -- A foreign key to a partitioned table names its whole primary key.
    CONSTRAINT fk_assessment_id FOREIGN KEY (assessment_id, assessment_created_at)
        REFERENCES assessments (id, created_at) ON DELETE CASCADE,
    CONSTRAINT assessment_answers_question_key UNIQUE (assessment_id, question_id)
);
CREATE INDEX assessment_answers_user_idx ON assessment_answers (user_id);
CREATE INDEX assessment_answers_fk_idx ON assessment_answers (assessment_id, assessment_created_at);

-- ---------------------------------------------------------------- practices (shared catalogue)
CREATE TABLE practices (
    id               uuid PRIMARY KEY,
    title            text NOT NULL CONSTRAINT ck_title CHECK (length(title) BETWEEN 1 AND 200),
    description      text NOT NULL DEFAULT '',
    category         text NOT NULL CONSTRAINT ck_category CHECK (length(category) BETWEEN 1 AND 64),
    difficulty       difficulty_level NOT NULL,
    tags             text[] NOT NULL DEFAULT '{}' CONSTRAINT ck_tags CHECK (cardinality(tags) <= 20),
    duration_minutes integer NOT NULL CONSTRAINT ck_duration_minutes CHECK (duration_minutes BETWEEN 1 AND 600),
    search_vector    tsvector GENERATED ALWAYS AS (
        to_tsvector('english', title || ' ' || description || ' ' || kasama_tags_text(tags))
    ) STORED,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX practices_search_idx ON practices USING gin (search_vector);
CREATE INDEX practices_title_trgm_idx ON practices USING gin (title gin_trgm_ops);
CREATE INDEX practices_tags_idx ON practices USING gin (tags);
CREATE INDEX practices_category_difficulty_idx ON practices (category, difficulty);
CREATE INDEX practices_difficulty_idx ON practices (difficulty);
CREATE INDEX practices_title_idx ON practices ((title COLLATE "C"), id);

-- ---------------------------------------------------------------- goals
CREATE TABLE goals (
    id           uuid PRIMARY KEY,
    user_id      uuid NOT NULL CONSTRAINT fk_user_id REFERENCES profiles (id) ON DELETE CASCADE,
    title        text NOT NULL CONSTRAINT ck_title CHECK (length(title) BETWEEN 1 AND 200),
    description  text NOT NULL DEFAULT '',
    category     text NOT NULL CONSTRAINT ck_category CHECK (length(category) BETWEEN 1 AND 64),
    target_date  date,
    progress     integer NOT NULL DEFAULT 0 CONSTRAINT ck_progress CHECK (progress BETWEEN 0 AND 100),
    completed    boolean NOT NULL DEFAULT false,
    completed_at timestamptz,
    milestones   jsonb NOT NULL DEFAULT '[]' CONSTRAINT ck_milestones CHECK (jsonb_typeof(milestones) = 'array'),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ck_completed_at CHECK (completed = (completed_at IS NOT NULL)),
    -- Lets progress rows reference (goal, user) so a goal of another user cannot be named.
    CONSTRAINT goals_id_user_key UNIQUE (id, user_id)
);
CREATE INDEX goals_user_created_idx ON goals (user_id, created_at DESC);
CREATE INDEX goals_user_open_idx ON goals (user_id) WHERE NOT completed;

-- ---------------------------------------------------------------- learning paths
CREATE TABLE learning_paths (
    id           uuid PRIMARY KEY,
    user_id      uuid NOT NULL CONSTRAINT fk_user_id REFERENCES profiles (id) ON DELETE CASCADE,
    title        text NOT NULL CONSTRAINT ck_title CHECK (length(title) BETWEEN 1 AND 200),
    description  text NOT NULL DEFAULT '',
    practice_ids uuid[] NOT NULL CONSTRAINT ck_practice_ids CHECK (cardinality(practice_ids) BETWEEN 1 AND 100),
    current_step integer NOT NULL DEFAULT 0 CONSTRAINT ck_current_step CHECK (current_step BETWEEN 0 AND cardinality(practice_ids)),
    progress     integer NOT NULL DEFAULT 0 CONSTRAINT ck_progress CHECK (progress BETWEEN 0 AND 100),
    completed    boolean NOT NULL DEFAULT false,
    completed_at timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ck_completed_at CHECK (completed = (completed_at IS NOT NULL)),
    CONSTRAINT learning_paths_id_user_key UNIQUE (id, user_id)
);
CREATE INDEX learning_paths_user_created_idx ON learning_paths (user_id, created_at DESC);
CREATE INDEX learning_paths_practices_idx ON learning_paths USING gin (practice_ids);

-- ---------------------------------------------------------------- progress log
CREATE TABLE progress (
    id               uuid PRIMARY KEY,
    user_id          uuid NOT NULL CONSTRAINT fk_user_id REFERENCES profiles (id) ON DELETE CASCADE,
    practice_id      uuid CONSTRAINT fk_practice_id REFERENCES practices (id),
    goal_id          uuid,
    learning_path_id uuid,
    duration_minutes integer NOT NULL DEFAULT 0 CONSTRAINT ck_duration_minutes CHECK (duration_minutes BETWEEN 0 AND 1440),
    rating           smallint CONSTRAINT ck_rating CHECK (rating BETWEEN 1 AND 5),
    mood_before      smallint CONSTRAINT ck_mood_before CHECK (mood_before BETWEEN 1 AND 10),
    mood_after       smallint CONSTRAINT ck_mood_after CHECK (mood_after BETWEEN 1 AND 10),
    notes            text CONSTRAINT ck_notes CHECK (length(notes) <= 10000),
    completed        boolean NOT NULL DEFAULT false,
    completed_at     timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ck_completed_at CHECK (completed = (completed_at IS NOT NULL)),
    CONSTRAINT ck_activity CHECK (num_nonnulls(practice_id, goal_id, learning_path_id) >= 1),
    CONSTRAINT fk_goal_id FOREIGN KEY (goal_id, user_id)
        REFERENCES goals (id, user_id) ON DELETE SET NULL (goal_id),
    CONSTRAINT fk_learning_path_id FOREIGN KEY (learning_path_id, user_id)
        REFERENCES learning_paths (id, user_id) ON DELETE SET NULL (learning_path_id)
);
CREATE INDEX progress_user_created_idx ON progress (user_id, created_at DESC);
CREATE INDEX progress_user_completed_idx ON progress (user_id, created_at) WHERE completed;
CREATE INDEX progress_practice_idx ON progress (practice_id);
CREATE INDEX progress_goal_idx ON progress (goal_id) WHERE goal_id IS NOT NULL;
CREATE INDEX progress_path_idx ON progress (learning_path_id) WHERE learning_path_id IS NOT NULL;
CREATE INDEX progress_created_idx ON progress (created_at);

-- ---------------------------------------------------------------- notifications
CREATE TABLE notifications (
    id         uuid PRIMARY KEY,
    user_id    uuid NOT NULL CONSTRAINT fk_user_id REFERENCES profiles (id) ON DELETE CASCADE,
    kind       notification_type NOT NULL,
    priority   priority_level NOT NULL DEFAULT 'medium',
    title      text NOT NULL CONSTRAINT ck_title CHECK (length(title) BETWEEN 1 AND 200),
    body       text NOT NULL DEFAULT '' CONSTRAINT ck_body CHECK (length(body) <= 10000),
    data       jsonb NOT NULL DEFAULT '{}',
    read       boolean NOT NULL DEFAULT false,
    read_at    timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ck_read_at CHECK (read = (read_at IS NOT NULL))
);
CREATE INDEX notifications_user_unread_idx ON notifications (user_id, created_at DESC) WHERE NOT read;
CREATE INDEX notifications_user_created_idx ON notifications (user_id, created_at DESC);
CREATE INDEX notifications_unread_idx ON notifications (read) WHERE NOT read;

-- ---------------------------------------------------------------- AI interactions (weekly partitions)
CREATE TABLE ai_interactions (
    id            uuid NOT NULL,
    user_id       uuid NOT NULL CONSTRAINT fk_user_id REFERENCES profiles (id) ON DELETE CASCADE,
    agent_type    agent_type NOT NULL,
    model         text NOT NULL CONSTRAINT ck_model CHECK (length(model) BETWEEN 1 AND 100),
    input         jsonb NOT NULL DEFAULT 'null',
    output        jsonb NOT NULL DEFAULT 'null',
    input_tokens  integer NOT NULL DEFAULT 0 CONSTRAINT ck_input_tokens CHECK (input_tokens >= 0),
    output_tokens integer NOT NULL DEFAULT 0 CONSTRAINT ck_output_tokens CHECK (output_tokens >= 0),
    cost_micros   bigint NOT NULL DEFAULT 0 CONSTRAINT ck_cost_micros CHECK (cost_micros >= 0),
    saved_micros  bigint NOT NULL DEFAULT 0 CONSTRAINT ck_saved_micros CHECK (saved_micros >= 0),
    latency_ms    integer NOT NULL DEFAULT 0 CONSTRAINT ck_latency_ms CHECK (latency_ms >= 0),
    cache_hit     boolean NOT NULL DEFAULT false,
    success       boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
CREATE TABLE ai_interactions_default PARTITION OF ai_interactions DEFAULT;
CREATE INDEX ai_interactions_user_created_idx ON ai_interactions (user_id, created_at DESC);
CREATE INDEX ai_interactions_created_idx ON ai_interactions (created_at);
CREATE INDEX ai_interactions_agent_created_idx ON ai_interactions (agent_type, created_at);

-- ---------------------------------------------------------------- updated_at triggers
CREATE TRIGGER profiles_updated_at BEFORE UPDATE ON profiles
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
CREATE TRIGGER assessments_updated_at BEFORE UPDATE ON assessments
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
CREATE TRIGGER practices_updated_at BEFORE UPDATE ON practices
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
CREATE TRIGGER goals_updated_at BEFORE UPDATE ON goals
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
CREATE TRIGGER learning_paths_updated_at BEFORE UPDATE ON learning_paths
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
