DROP TABLE daily_active_users;
DROP TABLE flushes;
DROP FUNCTION counters_minute_create_partitions(timestamptz, timestamptz);
DROP TABLE counters_day;
DROP TABLE counters_hour;
-- Drops every partition with it.
DROP TABLE counters_minute;
