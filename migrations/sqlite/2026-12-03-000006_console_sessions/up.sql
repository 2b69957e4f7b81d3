-- Browser sessions of the web console: an email + access token exchanged for a
-- short-lived cookie. Only the SHA-256 of the cookie's value is kept; a session ends
-- with its token (revoking a user's tokens signs them out everywhere).
CREATE TABLE console_sessions (
    id_hash     TEXT PRIMARY KEY,
    user_email  TEXT NOT NULL REFERENCES users (email) ON DELETE CASCADE,
    token_id    TEXT NOT NULL REFERENCES api_tokens (id) ON DELETE CASCADE,
    created_at  TIMESTAMP NOT NULL,
    expires_at  TIMESTAMP NOT NULL
);
CREATE INDEX console_sessions_expires_at ON console_sessions (expires_at);
CREATE INDEX console_sessions_token_id ON console_sessions (token_id);
