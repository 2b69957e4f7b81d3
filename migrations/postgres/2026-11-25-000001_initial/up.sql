-- The whole data model of DESIGN.md section 5. Ids and JSON are TEXT so that one
-- schema.rs serves PostgreSQL and SQLite.

CREATE TABLE users (
    email       TEXT PRIMARY KEY,
    is_admin    BOOLEAN NOT NULL DEFAULT FALSE,
    created_at  TIMESTAMP NOT NULL
);

CREATE TABLE user_groups (
    user_email  TEXT NOT NULL REFERENCES users (email) ON DELETE CASCADE,
    group_name  TEXT NOT NULL,
    PRIMARY KEY (user_email, group_name)
);

CREATE TABLE api_tokens (
    id            TEXT PRIMARY KEY,
    user_email    TEXT NOT NULL REFERENCES users (email) ON DELETE CASCADE,
    token_hash    TEXT NOT NULL UNIQUE,
    created_at    TIMESTAMP NOT NULL
);
CREATE INDEX api_tokens_user_email ON api_tokens (user_email);

CREATE TABLE procs (
    name        TEXT PRIMARY KEY,
    metadata    TEXT NOT NULL,
    updated_at  TIMESTAMP NOT NULL
);

-- One row per secret, each value sealed on its own (AES-256-GCM, bound to proc and name).
CREATE TABLE proc_secrets (
    proc_name    TEXT NOT NULL,
    secret_name  TEXT NOT NULL,
    sealed       BYTEA NOT NULL,
    updated_at   TIMESTAMP NOT NULL,
    PRIMARY KEY (proc_name, secret_name)
);

CREATE TABLE schedules (
    id                   TEXT PRIMARY KEY,
    proc_name            TEXT NOT NULL,
    args                 TEXT NOT NULL,
    cron                 TEXT NOT NULL,
    time_zone            TEXT NOT NULL DEFAULT 'UTC',
    notification_emails  TEXT NOT NULL DEFAULT '',
    tags                 TEXT NOT NULL,
    group_name           TEXT NOT NULL,
    user_email           TEXT NOT NULL,
    enabled              BOOLEAN NOT NULL DEFAULT TRUE,
    created_at           TIMESTAMP NOT NULL,
    updated_at           TIMESTAMP NOT NULL,
    UNIQUE (proc_name, args)
);

CREATE TABLE executions (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    proc_name    TEXT NOT NULL,
    image        TEXT NOT NULL,
    args         TEXT NOT NULL,
    status       TEXT NOT NULL,
    reason       TEXT,
    exit_code    INTEGER,
    executor     TEXT NOT NULL,
    user_email   TEXT NOT NULL,
    schedule_id  TEXT REFERENCES schedules (id) ON DELETE SET NULL,
    created_at   TIMESTAMP NOT NULL,
    updated_at   TIMESTAMP NOT NULL,
    started_at   TIMESTAMP,
    finished_at  TIMESTAMP
);
CREATE INDEX executions_proc_name_created_at ON executions (proc_name, created_at);
CREATE INDEX executions_status ON executions (status);
CREATE INDEX executions_schedule_id ON executions (schedule_id);

CREATE TABLE execution_logs (
    execution_id  TEXT NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    seq           BIGINT NOT NULL,
    line          TEXT NOT NULL,
    logged_at     TIMESTAMP NOT NULL,
    PRIMARY KEY (execution_id, seq)
);

CREATE TABLE schedule_fires (
    schedule_id   TEXT NOT NULL REFERENCES schedules (id) ON DELETE CASCADE,
    fire_at       TIMESTAMP NOT NULL,
    execution_id  TEXT,
    PRIMARY KEY (schedule_id, fire_at)
);
