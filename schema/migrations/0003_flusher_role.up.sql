-- The flusher creates the monthly partitions of counters_minute as it
-- needs them, and PostgreSQL lets only a table's owner add partitions. So
-- that the flusher needs no more than to write the rows it flushes, the
-- function that creates them runs with the rights of its owner, the role
-- that applies the migrations (SECURITY DEFINER), and only roles granted
-- EXECUTE may call it (deploy/README.md lists each role's grants). Its
-- search_path is pinned to its own schema, as a SECURITY DEFINER
-- function's must be, so that a caller's objects cannot stand in for its
-- tables.
DO $$
BEGIN
    EXECUTE format(
        'ALTER FUNCTION %I.counters_minute_create_partitions(timestamptz, timestamptz) SECURITY DEFINER SET search_path = %I, pg_temp',
        current_schema(), current_schema());
END
$$;

REVOKE EXECUTE ON FUNCTION counters_minute_create_partitions(timestamptz, timestamptz) FROM PUBLIC;
