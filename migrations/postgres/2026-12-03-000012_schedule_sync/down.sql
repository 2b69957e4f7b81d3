DROP INDEX schedules_updated_at;
