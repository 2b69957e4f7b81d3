DROP INDEX schedule_fires_fire_at;
DROP INDEX executions_logs_unpurged;
ALTER TABLE executions DROP COLUMN logs_purged_at;
