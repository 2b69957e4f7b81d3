-- Replicas: each unfinished execution is owned by one replica under a lease, and each
-- stored line remembers where it came from (the pod and the container's timestamp in
-- nanoseconds) so a new owner resumes a pod's log exactly after the last stored line.
ALTER TABLE executions ADD COLUMN owner TEXT;
ALTER TABLE executions ADD COLUMN lease_expires_at TIMESTAMP;
-- Beats (by owner) and claims (by expiry) only ever look at unfinished executions.
CREATE INDEX executions_open_by_owner ON executions (owner)
    WHERE status IN ('RECEIVED', 'CREATED', 'RUNNING');
CREATE INDEX executions_open_by_lease ON executions (lease_expires_at)
    WHERE status IN ('RECEIVED', 'CREATED', 'RUNNING');
ALTER TABLE execution_logs ADD COLUMN pod TEXT;
ALTER TABLE execution_logs ADD COLUMN emitted_ns BIGINT;
