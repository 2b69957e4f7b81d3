-- Notifications beyond mail: the targets (webhooks, Slack) of each execution and
-- schedule as JSON (URLs in full: a Slack URL is a credential, shown only masked),
-- and one delivery log row per target told of a run's end.
-- A pending row nobody has moved on for a while (its replica died) is taken over.
ALTER TABLE executions ADD COLUMN notify TEXT NOT NULL DEFAULT '[]';
ALTER TABLE schedules ADD COLUMN notify TEXT NOT NULL DEFAULT '[]';
CREATE TABLE notification_deliveries (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    execution_id  TEXT NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    kind          TEXT NOT NULL,
    target        TEXT NOT NULL,
    status        TEXT NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    -- Which target: its index in the execution's notify list, or -1 for callback_url.
    target_index  INTEGER NOT NULL,
    last_status_code INTEGER,
    last_error    TEXT,
    created_at    TIMESTAMP NOT NULL,
    updated_at    TIMESTAMP NOT NULL,
    delivered_at  TIMESTAMP
);
CREATE INDEX notification_deliveries_execution ON notification_deliveries (execution_id, id);
CREATE INDEX notification_deliveries_pending ON notification_deliveries (status, updated_at);
