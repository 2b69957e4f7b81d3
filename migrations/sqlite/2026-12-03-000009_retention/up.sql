-- Retention (PROCTOR_EXECUTION_RETENTION_DAYS, PROCTOR_LOG_RETENTION_DAYS): the log
-- lines of a finished run may be removed before its record; the record then says when
-- (GET /api/v1/executions/{name}/logs answers 410 Gone naming that time).
ALTER TABLE executions ADD COLUMN logs_purged_at TIMESTAMP;
-- The purge's look for runs whose lines are due: only finished runs whose lines are
-- still there, oldest first. A run leaves this index once its lines are removed, so it
-- stays the size of the runs of the last PROCTOR_LOG_RETENTION_DAYS, and the look
-- never walks the months of records kept without their lines.
-- (The look for whole records due reads executions_created_at: a run is created
-- before it finishes, so `created_at < cutoff AND finished_at < cutoff` is a range of
-- that index; see BENCHMARKS.md for the plans on 1,000,000 runs.)
CREATE INDEX executions_logs_unpurged ON executions (finished_at)
    WHERE finished_at IS NOT NULL AND logs_purged_at IS NULL;
-- A schedule's fires are removed with the runs of their age (by fire_at).
CREATE INDEX schedule_fires_fire_at ON schedule_fires (fire_at);
-- The history list filtered by status alone (GET /api/v1/executions?status=), newest
-- first, read in index order: the index on status alone made it walk the newest runs
-- of every status and visit each row for its status (on 1,000,000 runs, a 1% status:
-- ~5,000 rows visited for a page of 50, p99 68 ms on SQLite under load). It serves
-- every look by status the old one did (the unfinished runs, in created_at order).
DROP INDEX executions_status;
CREATE INDEX executions_status_created_at ON executions (status, created_at, name);
