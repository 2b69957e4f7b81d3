ALTER TABLE schedule_fires DROP COLUMN claimed_at;
ALTER TABLE schedule_fires DROP COLUMN outcome;
ALTER TABLE schedules DROP COLUMN concurrency_policy;
