DROP INDEX executions_status_created_at;
CREATE INDEX executions_status ON executions (status);
DROP INDEX schedule_fires_fire_at;
DROP INDEX executions_logs_unpurged;
ALTER TABLE executions DROP COLUMN logs_purged_at;
