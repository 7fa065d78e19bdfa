package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/counters"
	"github.com/nudgehq/nudge/flush"
	"github.com/nudgehq/nudge/keys"
	"github.com/nudgehq/nudge/schema"
)

// FlushRows is the size of a measured flush: this many distinct counters
// in one closed minute, half of them already in Postgres.
const FlushRows = 100_000

// FlushDims is the k-th distinct counter of the flush measurements.
func FlushDims(k int) counters.Dims {
	return counters.Dims{Metric: counters.MessagesSent, App: "app-" + strconv.Itoa(k), Platform: "fcm"}
}

// measureFlush times a flush of FlushRows counters (the first half already
// in Postgres, from the previous round), and the same rows COPYed into a
// temporary table and merged with INSERT ... ON CONFLICT, into
// counters_minute alone and into the minute, hour and day tables a flush
// writes. Each round has minutes and buckets of its own; medians.
func measureFlush(ctx context.Context, cfg Config, rdb *redis.Client, dbURL string, res *Result) error {
	n := cfg.size(FlushRows, FlushRows)
	db, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := schema.Up(ctx, db); err != nil {
		return err
	}
	prefix := newPrefix("flush")
	defer deletePrefix(context.Background(), rdb, prefix)
	ks := keys.New(prefix, 8)
	f, err := flush.New(rdb, db, flush.Config{Keyspace: ks, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return err
	}
	var nudge, raw, raw3 []float64
	// Minutes of an hour ago, closed; one per round, and each round's
	// raw merges into buckets of their own.
	base := time.Now().Add(-time.Hour).Truncate(time.Hour)
	for round := range cfg.size(3, 1) {
		minute := base.Add(time.Duration(round) * time.Minute)
		// Seed: the first half, flushed, then the measured flush of all.
		for _, rows := range []int{n / 2, n} {
			if err := fillMinute(ctx, rdb, ks, minute, rows); err != nil {
				return err
			}
			start := time.Now()
			st, err := f.FlushOnce(ctx)
			if err != nil {
				return err
			}
			if st.Rows != rows {
				return fmt.Errorf("flushed %d rows, want %d", st.Rows, rows)
			}
			if rows == n {
				nudge = append(nudge, float64(n)/time.Since(start).Seconds())
			}
		}
		for _, tables := range [][]string{{"counters_minute"}, {"counters_minute", "counters_hour", "counters_day"}} {
			// Buckets a day before the flushes', apart per round.
			bucket := minute.Add(-24 * time.Hour)
			if len(tables) == 3 {
				bucket = bucket.Add(-24 * time.Hour)
			}
			if _, err := db.Exec(ctx, "SELECT counters_minute_create_partitions($1, $1)", bucket); err != nil {
				return err
			}
			if err := CopyMerge(ctx, db, bucket, tables, n/2); err != nil {
				return err
			}
			start := time.Now()
			if err := CopyMerge(ctx, db, bucket, tables, n); err != nil {
				return err
			}
			rate := float64(n) / time.Since(start).Seconds()
			if len(tables) == 1 {
				raw = append(raw, rate)
			} else {
				raw3 = append(raw3, rate)
			}
		}
	}
	cfg.Logger.Info("flush", "rows/s", nudge, "raw rows/s", raw, "raw 3 tables rows/s", raw3)
	g, r, r3 := median(nudge), median(raw), median(raw3)
	res.FlushRowsPerS, res.FlushRawRowsPerS, res.FlushRatio = round(g, 0), round(r, 0), ratio(g, r)
	res.FlushRaw3TablesRowsPS, res.FlushRatio3Tables = round(r3, 0), ratio(g, r3)
	return nil
}

// fillMinute writes counters 0..rows-1 into minute's counters hash of
// shard 0, as counters.Add would, in pipelined chunks.
func fillMinute(ctx context.Context, rdb *redis.Client, ks keys.Keyspace, minute time.Time, rows int) error {
	key := ks.Counters(0, keys.Minute(minute))
	pipe := rdb.Pipeline()
	fields := make([]any, 0, 2000)
	for k := range rows {
		fields = append(fields, counters.Field(FlushDims(k)), 1)
		if len(fields) == cap(fields) || k == rows-1 {
			pipe.HSet(ctx, key, fields...)
			fields = fields[:0]
		}
	}
	m := keys.Minute(minute)
	pipe.Expire(ctx, key, counters.SafetyTTL)
	pipe.ZAdd(ctx, ks.CounterIndex(0), redis.Z{Score: float64(m), Member: strconv.FormatInt(m, 10)})
	pipe.Expire(ctx, ks.CounterIndex(0), counters.SafetyTTL)
	_, err := pipe.Exec(ctx)
	return err
}

// CopyMerge is the floor of a flush: rows 0..rows-1, already in memory,
// COPYed into a temporary table and merged into each of tables with one
// INSERT ... SELECT ... ON CONFLICT, in one transaction.
func CopyMerge(ctx context.Context, db *pgxpool.Pool, bucket time.Time, tables []string, rows int) error {
	return pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `CREATE TEMPORARY TABLE raw_rows (
    metric text NOT NULL, app text NOT NULL, platform text NOT NULL, reason text NOT NULL, value bigint NOT NULL
) ON COMMIT DROP`); err != nil {
			return err
		}
		values := make([]any, 5)
		src := pgx.CopyFromSlice(rows, func(i int) ([]any, error) {
			d := FlushDims(i)
			values[0], values[1], values[2], values[3], values[4] = d.Metric, d.App, d.Platform, d.Reason, int64(1)
			return values, nil
		})
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"raw_rows"}, []string{"metric", "app", "platform", "reason", "value"}, src); err != nil {
			return err
		}
		for _, table := range tables {
			// table is one of the caller's constants.
			if _, err := tx.Exec(ctx, "INSERT INTO "+table+` AS c (bucket, metric, app, platform, reason, value)
SELECT $1::timestamptz, metric, app, platform, reason, value FROM raw_rows
ON CONFLICT (bucket, metric, app, platform, reason) DO UPDATE SET value = c.value + EXCLUDED.value`, bucket); err != nil {
				return err
			}
		}
		return nil
	})
}
