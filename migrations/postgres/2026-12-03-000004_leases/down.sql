ALTER TABLE execution_logs DROP COLUMN emitted_ns;
ALTER TABLE execution_logs DROP COLUMN pod;
DROP INDEX executions_open_by_lease;
DROP INDEX executions_open_by_owner;
ALTER TABLE executions DROP COLUMN lease_expires_at;
ALTER TABLE executions DROP COLUMN owner;
