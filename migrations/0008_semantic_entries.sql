-- Semantic-cache entries shared between app instances (`PgSemanticStore`): each
-- instance keeps its own bounded in-memory index, persists what it stores here, loads
-- the live entries at start-up, and hears of other instances' entries (and forgotten
-- users) over NOTIFY on `kasama_semantic`.
--
-- A row is one answer in one scope: agent, model, answer-changing parameters and, for
-- personal agents, the user (NULL for shared scopes). Rows of another embedder or
-- dimension are ignored by the reader. Expired rows are never loaded and are deleted
-- by the store's sweep, which also keeps the table under its row cap.

CREATE TABLE semantic_entries (
    id          uuid PRIMARY KEY,
    agent       text NOT NULL,
    model       text NOT NULL,
    params      text NOT NULL,
    user_id     uuid,
    embedder    text NOT NULL,
    norm        text NOT NULL,
    question    text NOT NULL,
    embedding   real[] NOT NULL,
    answer      jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    CONSTRAINT ck_expires_at CHECK (expires_at > created_at)
);

-- One entry per question (normalised, hashed: a long question must not overflow a
-- btree row) per scope and embedder; a shared scope's NULL user is one scope.
CREATE UNIQUE INDEX semantic_entries_key ON semantic_entries
    (agent, model, params, user_id, embedder, md5(norm)) NULLS NOT DISTINCT;
-- Warm start and catch-up: the newest live entries of one embedder.
CREATE INDEX semantic_entries_load ON semantic_entries (embedder, created_at DESC);
-- The sweep.
CREATE INDEX semantic_entries_expiry ON semantic_entries (expires_at);
CREATE INDEX semantic_entries_age ON semantic_entries (created_at);
-- Forgetting a user.
CREATE INDEX semantic_entries_user ON semantic_entries (user_id) WHERE user_id IS NOT NULL;

-- The pipeline stores and loads entries as the service; a user-scoped transaction
-- sees only that user's personal entries, never another user's or the shared ones.
ALTER TABLE semantic_entries ENABLE ROW LEVEL SECURITY;
ALTER TABLE semantic_entries FORCE ROW LEVEL SECURITY;
CREATE POLICY semantic_entries_owner ON semantic_entries
    USING ((user_id IS NOT NULL AND user_id = (SELECT app_user_id())) OR (SELECT app_is_service()))
    WITH CHECK ((user_id IS NOT NULL AND user_id = (SELECT app_user_id())) OR (SELECT app_is_service()));

GRANT SELECT, INSERT, UPDATE, DELETE ON semantic_entries TO kasama_app;
