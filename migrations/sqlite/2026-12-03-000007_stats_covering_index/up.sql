-- The console's overview (GET /api/v1/stats) reads, proc by proc, the runs created in a
-- range: with the status, the times and the starter beside (proc_name, created_at), it
-- reads them from the index alone (a covering index), without visiting the table.
CREATE INDEX executions_stats ON executions (proc_name, created_at, status, started_at, finished_at, user_email);
