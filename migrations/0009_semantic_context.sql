-- A cached answer's scope includes the fingerprint of everything besides the question
-- that reached the model (the user's data, the conversation so far, the system
-- prompt): the same question over other data is another scope. Entries stored before
-- this migration have the empty fingerprint, which no request has: they are never
-- served again and age out.

ALTER TABLE semantic_entries ADD COLUMN context text NOT NULL DEFAULT '';

DROP INDEX semantic_entries_key;
CREATE UNIQUE INDEX semantic_entries_key ON semantic_entries
    (agent, model, params, context, user_id, embedder, md5(norm)) NULLS NOT DISTINCT;
