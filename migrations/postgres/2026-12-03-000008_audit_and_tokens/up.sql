-- The audit log: one row per change of state (procs, secrets by name, schedules,
-- users, tokens, console sessions, cancelled runs). Rows are only ever inserted; the
-- API has no way to change or remove one, only the retention purge removes old rows.
CREATE TABLE audit_events (
    id       BIGSERIAL PRIMARY KEY,
    at       TIMESTAMP NOT NULL,
    actor    TEXT NOT NULL,
    address  TEXT,
    action   TEXT NOT NULL,
    kind     TEXT NOT NULL,
    object   TEXT NOT NULL,
    details  TEXT NOT NULL
);
-- The API reads newest first by id, filtered by actor, by object or by time.
CREATE INDEX audit_events_at ON audit_events (at);
CREATE INDEX audit_events_actor ON audit_events (actor, id);
CREATE INDEX audit_events_object ON audit_events (kind, object, id);

-- Tokens get a name (unique per user, so one can be rotated beside another), an
-- optional expiry and the time each was last used. Existing tokens are named after
-- their id.
ALTER TABLE api_tokens ADD COLUMN name TEXT;
UPDATE api_tokens SET name = 'token-' || substr(id, 1, 8);
ALTER TABLE api_tokens ALTER COLUMN name SET NOT NULL;
ALTER TABLE api_tokens ADD COLUMN expires_at TIMESTAMP;
ALTER TABLE api_tokens ADD COLUMN last_used_at TIMESTAMP;
CREATE UNIQUE INDEX api_tokens_user_email_name ON api_tokens (user_email, name);
