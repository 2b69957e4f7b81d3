-- The console's overview (GET /api/v1/stats) counts runs by the time they were created,
-- over a range: an index on created_at reads only the range. With the name beside it,
-- the history list (newest first, by created_at then name) reads in index order.
CREATE INDEX executions_created_at ON executions (created_at, name);
-- The history list filtered by proc and status (GET /api/v1/executions?proc=&status=),
-- newest first.
CREATE INDEX executions_proc_status_created_at ON executions (proc_name, status, created_at, name);
