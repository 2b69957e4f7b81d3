ALTER TABLE executions DROP COLUMN attempts;
ALTER TABLE executions DROP COLUMN callback_url;
