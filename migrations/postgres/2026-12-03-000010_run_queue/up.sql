-- The run queue: a run of a proc with max_concurrent_runs that finds no free slot is
-- stored QUEUED with no owner; the QUEUED rows of a proc, by (created_at, id), are its
-- queue. A promoted run keeps QUEUED with an owner until it is CREATED.
CREATE INDEX executions_queued ON executions (proc_name, created_at, id)
    WHERE status = 'QUEUED';
-- Runs holding a slot are counted by proc.
CREATE INDEX executions_active_by_proc ON executions (proc_name)
    WHERE status IN ('RECEIVED', 'QUEUED', 'CREATED', 'RUNNING');
-- Beats and claims now look at QUEUED runs too (a promoted run is owned).
DROP INDEX executions_open_by_owner;
DROP INDEX executions_open_by_lease;
CREATE INDEX executions_open_by_owner ON executions (owner)
    WHERE status IN ('RECEIVED', 'QUEUED', 'CREATED', 'RUNNING');
CREATE INDEX executions_open_by_lease ON executions (lease_expires_at)
    WHERE status IN ('RECEIVED', 'QUEUED', 'CREATED', 'RUNNING');
