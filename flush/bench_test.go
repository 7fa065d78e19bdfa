package flush_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/counters"
	"github.com/nudgehq/nudge/keys"
)

// benchRows is the size of the flush the benchmarks measure: one shard's
// minute with this many distinct counters, half of them already in
// Postgres (round i writes counters i*n/2 .. i*n/2+n; the first half were
// written by round i-1, or by the seeding).
const benchRows = 100_000

func benchDims(k int) counters.Dims {
	return counters.Dims{Metric: counters.MessagesSent, App: "app-" + strconv.Itoa(k), Platform: "fcm"}
}

// fillMinute writes counters from..to-1 into the counters hash of minute
// of shard 0, as counters.Add would, in pipelined chunks.
func fillMinute(b *testing.B, bb *bundle, minute time.Time, from, to int) {
	b.Helper()
	ctx := context.Background()
	key := bb.ks.Counters(0, keys.Minute(minute))
	pipe := bb.rdb.Pipeline()
	fields := make([]any, 0, 2000)
	for k := from; k < to; k++ {
		fields = append(fields, counters.Field(benchDims(k)), 1)
		if len(fields) == cap(fields) || k == to-1 {
			pipe.HSet(ctx, key, fields...)
			fields = fields[:0]
		}
	}
	m := keys.Minute(minute)
	pipe.ZAdd(ctx, bb.ks.CounterIndex(0), redis.Z{Score: float64(m), Member: strconv.FormatInt(m, 10)})
	if _, err := pipe.Exec(ctx); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkFlush100k measures one flush of 100k distinct counters, half of
// them updates: Redis snapshot and read, parsing, and the Postgres
// transaction writing minute, hour and day rows.
func BenchmarkFlush100k(b *testing.B) {
	ctx := context.Background()
	bb := setup(b)
	minute := base
	bb.closeAll(minute)
	f := bb.flusher(b, nil)

	fillMinute(b, bb, minute, 0, benchRows/2) // seed the half already in Postgres
	if _, err := f.FlushOnce(ctx); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		fillMinute(b, bb, minute, i*benchRows/2, i*benchRows/2+benchRows)
		b.StartTimer()
		st, err := f.FlushOnce(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if st.Rows != benchRows {
			b.Fatalf("flushed %d rows, want %d", st.Rows, benchRows)
		}
	}
	b.ReportMetric(float64(benchRows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}

// BenchmarkRawCopyMerge is the floor for BenchmarkFlush100k: the same rows,
// already in memory, COPYed into a temporary table and merged with one
// INSERT ... ON CONFLICT per table, in one transaction. "minute" merges
// into counters_minute only; "all-tables" into minute, hour and day, as a
// flush does.
func BenchmarkRawCopyMerge(b *testing.B) {
	for _, bc := range []struct {
		name   string
		tables []string
	}{
		{"minute", []string{"counters_minute"}},
		{"all-tables", []string{"counters_minute", "counters_hour", "counters_day"}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			ctx := context.Background()
			bb := setup(b)
			bucket := base
			merge := func(from, to int) {
				err := pgx.BeginFunc(ctx, bb.db, func(tx pgx.Tx) error {
					if _, err := tx.Exec(ctx, `CREATE TEMPORARY TABLE raw_rows (
    metric text NOT NULL, app text NOT NULL, platform text NOT NULL, reason text NOT NULL, value bigint NOT NULL
) ON COMMIT DROP`); err != nil {
						return err
					}
					values := make([]any, 5)
					src := pgx.CopyFromSlice(to-from, func(i int) ([]any, error) {
						d := benchDims(from + i)
						values[0], values[1], values[2], values[3], values[4] = d.Metric, d.App, d.Platform, d.Reason, int64(1)
						return values, nil
					})
					if _, err := tx.CopyFrom(ctx, pgx.Identifier{"raw_rows"}, []string{"metric", "app", "platform", "reason", "value"}, src); err != nil {
						return err
					}
					for _, table := range bc.tables {
						// table is one of the constants above.
						if _, err := tx.Exec(ctx, "INSERT INTO "+table+` AS c (bucket, metric, app, platform, reason, value)
SELECT $1::timestamptz, metric, app, platform, reason, value FROM raw_rows
ON CONFLICT (bucket, metric, app, platform, reason) DO UPDATE SET value = c.value + EXCLUDED.value`, bucket); err != nil {
							return err
						}
					}
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
			}
			if _, err := bb.db.Exec(ctx, "SELECT counters_minute_create_partitions($1, $1)", bucket); err != nil {
				b.Fatal(err)
			}
			merge(0, benchRows/2)
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				merge(i*benchRows/2, i*benchRows/2+benchRows)
			}
			b.ReportMetric(float64(benchRows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}
