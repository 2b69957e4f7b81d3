-- What an execution needs to survive a restart: where to report its end, and how
-- many attempts it has made.
ALTER TABLE executions ADD COLUMN callback_url TEXT;
ALTER TABLE executions ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
