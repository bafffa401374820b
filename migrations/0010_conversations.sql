-- Conversations: a user's threads with one agent kind, and their messages (user and
-- assistant turns; the system prompt is rendered per request, never stored).
--
-- Growth: messages are read as "the last N of one conversation" through
-- (conversation_id, created_at, id) and conversations are listed per user by
-- recent activity through (user_id, updated_at DESC, id DESC); neither read scans
-- more than it returns, however large the tables grow.
--
-- A message carries its conversation's owner (user_id, for row-level security
-- without a join); the foreign key on (conversation_id, user_id) makes it impossible
-- to store a message under any other user, even through raw SQL.

CREATE TABLE conversations (
    id         uuid PRIMARY KEY,
    user_id    uuid NOT NULL CONSTRAINT fk_user_id REFERENCES profiles (id) ON DELETE CASCADE,
    agent      agent_type NOT NULL,
    title      text NOT NULL CONSTRAINT ck_title CHECK (length(title) BETWEEN 1 AND 200),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT conversations_id_user_key UNIQUE (id, user_id)
);
CREATE INDEX conversations_user_updated_idx ON conversations (user_id, updated_at DESC, id DESC);

CREATE TABLE conversation_messages (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    conversation_id uuid NOT NULL,
    user_id         uuid NOT NULL,
    role            text NOT NULL CONSTRAINT ck_role CHECK (role IN ('user', 'assistant')),
    content         text NOT NULL CONSTRAINT ck_content CHECK (length(content) BETWEEN 1 AND 10000),
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT fk_conversation_id FOREIGN KEY (conversation_id, user_id)
        REFERENCES conversations (id, user_id) ON DELETE CASCADE
);
CREATE INDEX conversation_messages_recent_idx
    ON conversation_messages (conversation_id, created_at, id);
-- Erasing a user.
CREATE INDEX conversation_messages_user_idx ON conversation_messages (user_id);

-- Row-level security, enabled and forced, as for every user table (0002).
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['conversations', 'conversation_messages']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY %I ON %I USING (user_id = (SELECT app_user_id()) OR (SELECT app_is_service())) '
            'WITH CHECK (user_id = (SELECT app_user_id()) OR (SELECT app_is_service()))',
            t || '_owner', t);
        -- The read-only reporting role (0006) reads every row of every table.
        EXECUTE format('CREATE POLICY %I ON %I FOR SELECT TO kasama_readonly USING (true)',
                       t || '_readonly', t);
    END LOOP;
END
$$;

GRANT SELECT, INSERT, UPDATE, DELETE ON conversations, conversation_messages TO kasama_app;
GRANT SELECT ON conversations, conversation_messages TO kasama_readonly;
