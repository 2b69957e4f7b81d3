DROP INDEX executions_open_by_lease;
DROP INDEX executions_open_by_owner;
CREATE INDEX executions_open_by_owner ON executions (owner)
    WHERE status IN ('RECEIVED', 'CREATED', 'RUNNING');
CREATE INDEX executions_open_by_lease ON executions (lease_expires_at)
    WHERE status IN ('RECEIVED', 'CREATED', 'RUNNING');
DROP INDEX executions_active_by_proc;
DROP INDEX executions_queued;
