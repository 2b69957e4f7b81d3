DROP TABLE notification_deliveries;
ALTER TABLE schedules DROP COLUMN notify;
ALTER TABLE executions DROP COLUMN notify;
