-- A schedule's concurrency policy (Allow or Forbid), and what became of each fire.
ALTER TABLE schedules ADD COLUMN concurrency_policy TEXT NOT NULL DEFAULT 'Allow';
ALTER TABLE schedule_fires ADD COLUMN outcome TEXT NOT NULL DEFAULT 'claimed';
ALTER TABLE schedule_fires ADD COLUMN claimed_at TIMESTAMP;
