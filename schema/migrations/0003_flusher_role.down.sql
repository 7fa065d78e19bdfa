GRANT EXECUTE ON FUNCTION counters_minute_create_partitions(timestamptz, timestamptz) TO PUBLIC;
ALTER FUNCTION counters_minute_create_partitions(timestamptz, timestamptz) SECURITY INVOKER RESET search_path;
