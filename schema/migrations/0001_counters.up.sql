-- 0001 counters: the analytics tables the flusher (flush/) writes and the
-- reports read, and the flush log that makes each flush apply once.
--
-- Why counters_minute is partitioned: it is the big table. One row per
-- minute, metric, app, platform and reason makes a year hundreds of millions
-- of rows. Monthly range partitions on bucket let a report over a day or a
-- week scan one partition (partition pruning), keep each partition's indexes
-- small enough to stay cached, and turn retention into DROP TABLE of an old
-- month instead of a DELETE that bloats heap and indexes. Partitions are
-- created ahead by counters_minute_create_partitions(): this migration makes
-- the current and the next month, the flusher makes any month it is about to
-- write (and the next one) before it writes. There is no DEFAULT partition on
-- purpose: rows in it would block creating the month they belong to.
-- The hour and day rollups are 60 and 1440 times smaller and stay plain
-- tables. Every bucket is in UTC and truncated to its minute, hour or day.

CREATE TABLE counters_minute (
    bucket   timestamptz NOT NULL,
    metric   text        NOT NULL,
    app      text        NOT NULL,
    platform text        NOT NULL,
    reason   text        NOT NULL,
    value    bigint      NOT NULL,
    PRIMARY KEY (bucket, metric, app, platform, reason)
) PARTITION BY RANGE (bucket);

-- Reports read one metric over a time range; the primary key serves "every
-- metric of a time range".
CREATE INDEX counters_minute_metric_bucket_idx ON counters_minute (metric, bucket);

COMMENT ON TABLE counters_minute IS
    'Analytics counters per minute (UTC), added by the flusher. Partitioned by month on bucket: counters_minute_YYYYMM.';
COMMENT ON COLUMN counters_minute.bucket IS 'Start of the minute (UTC).';
COMMENT ON COLUMN counters_minute.metric IS 'Metric name (counters package constants), e.g. messages_sent.';
COMMENT ON COLUMN counters_minute.app IS 'App or tenant; empty when the metric has no app.';
COMMENT ON COLUMN counters_minute.platform IS 'Push platform (fcm, apns); empty when it does not apply.';
COMMENT ON COLUMN counters_minute.reason IS 'Reason (dead-letter, suppression, push failure); empty when it does not apply.';
COMMENT ON COLUMN counters_minute.value IS 'Sum of the increments in the minute.';

CREATE TABLE counters_hour (
    bucket   timestamptz NOT NULL,
    metric   text        NOT NULL,
    app      text        NOT NULL,
    platform text        NOT NULL,
    reason   text        NOT NULL,
    value    bigint      NOT NULL,
    PRIMARY KEY (bucket, metric, app, platform, reason)
);

CREATE INDEX counters_hour_metric_bucket_idx ON counters_hour (metric, bucket);

COMMENT ON TABLE counters_hour IS
    'Hourly rollup of counters_minute, written in the same transaction as the minutes: bucket is the start of the hour (UTC).';

CREATE TABLE counters_day (
    bucket   timestamptz NOT NULL,
    metric   text        NOT NULL,
    app      text        NOT NULL,
    platform text        NOT NULL,
    reason   text        NOT NULL,
    value    bigint      NOT NULL,
    PRIMARY KEY (bucket, metric, app, platform, reason)
);

CREATE INDEX counters_day_metric_bucket_idx ON counters_day (metric, bucket);

COMMENT ON TABLE counters_day IS
    'Daily rollup of counters_minute, written in the same transaction as the minutes: bucket is midnight UTC.';

-- counters_minute_create_partitions creates the monthly partitions of
-- counters_minute that cover from_ts to to_ts (UTC months, both ends
-- included) and do not exist yet, and returns how many it created. Callers
-- may race: an advisory transaction lock serializes them. Creating a
-- partition takes an ACCESS EXCLUSIVE lock on counters_minute for a moment,
-- so callers should set a lock_timeout and create months ahead of need.
CREATE FUNCTION counters_minute_create_partitions(from_ts timestamptz, to_ts timestamptz)
RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
    parent_schema text;
    month         timestamp; -- a UTC month start, without time zone
    last_month    timestamp;
    part          text;
    created       integer := 0;
BEGIN
    IF from_ts IS NULL OR to_ts IS NULL OR from_ts > to_ts THEN
        RAISE EXCEPTION 'counters_minute_create_partitions: bad range % .. %', from_ts, to_ts;
    END IF;
    month := date_trunc('month', from_ts AT TIME ZONE 'UTC');
    last_month := date_trunc('month', to_ts AT TIME ZONE 'UTC');
    IF last_month > month + interval '10 years' THEN
        RAISE EXCEPTION 'counters_minute_create_partitions: range % .. % is over ten years', from_ts, to_ts;
    END IF;

    -- Key: ASCII "nudgpart". Schema migrations lock a different key.
    PERFORM pg_advisory_xact_lock(7959378311877063284);

    SELECT n.nspname INTO parent_schema
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.oid = 'counters_minute'::regclass;

    WHILE month <= last_month LOOP
        part := 'counters_minute_' || to_char(month, 'YYYYMM');
        IF to_regclass(format('%I.%I', parent_schema, part)) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE %I.%I PARTITION OF counters_minute FOR VALUES FROM (%L) TO (%L)',
                parent_schema, part,
                month AT TIME ZONE 'UTC',
                (month + interval '1 month') AT TIME ZONE 'UTC');
            EXECUTE format('COMMENT ON TABLE %I.%I IS %L', parent_schema, part,
                'Partition of counters_minute for ' || to_char(month, 'YYYY-MM') || ' (UTC).');
            created := created + 1;
        END IF;
        month := month + interval '1 month';
    END LOOP;
    RETURN created;
END
$$;

COMMENT ON FUNCTION counters_minute_create_partitions(timestamptz, timestamptz) IS
    'Creates the missing monthly partitions of counters_minute covering from_ts .. to_ts (UTC). Returns how many were created.';

SELECT counters_minute_create_partitions(now(), now() + interval '1 month');

-- A flush moves one counters snapshot of one shard and minute from Redis. Its
-- id is recorded in the same transaction as the counters it adds, so a
-- replayed flush (a flusher died after commit, before deleting the snapshot)
-- is recognised and skipped. Rows older than the life of a snapshot in Redis
-- are pruned by the flusher.
CREATE TABLE flushes (
    flush_id   text        PRIMARY KEY,
    shard      integer     NOT NULL,
    minute     bigint,
    rows       integer     NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX flushes_applied_at_idx ON flushes (applied_at);

COMMENT ON TABLE flushes IS 'Flushes applied to the counters tables: each flush id is applied once.';
COMMENT ON COLUMN flushes.minute IS 'The minute bucket flushed, in unix minutes.';
COMMENT ON COLUMN flushes.rows IS 'Counter rows the flush added to counters_minute.';

-- Distinct active users per day and app: a gauge persisted from the merged
-- HyperLogLogs in Redis. The flusher sets it, never adds to it.
CREATE TABLE daily_active_users (
    day        date        NOT NULL,
    app        text        NOT NULL,
    users      bigint      NOT NULL CHECK (users >= 0),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (day, app)
);

CREATE INDEX daily_active_users_app_day_idx ON daily_active_users (app, day);

COMMENT ON TABLE daily_active_users IS
    'Distinct active users per UTC day and app (HyperLogLog estimate, about 0.8% standard error). A gauge: set by the flusher, not added.';
