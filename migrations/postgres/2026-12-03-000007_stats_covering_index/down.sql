ALTER TABLE executions RESET (autovacuum_vacuum_scale_factor,
    autovacuum_vacuum_insert_scale_factor);
DROP INDEX executions_stats;
