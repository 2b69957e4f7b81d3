DROP INDEX executions_stats;
